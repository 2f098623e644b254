"""`agebench fid` against torch-fidelity's `calculate_metrics` on the same two folders, interleaved in one run.

Two folders of N UTKFace faces each (20-29 and 50-59 years, spread over the sorted names; the 200x200
originals copied unchanged to a temporary folder, deleted at the end) are scored by both tools in turn,
ours then torch-fidelity's, `--rounds` times (A, B, A, B, ...), each run a fresh process with the same
thread settings, so that a busy machine's load falls on both alike:
- ours: `agebench fid REAL FAKE --json` (it has no feature cache), face check included. `AGEBENCH_CACHE`
  points to a fresh folder where Inception is first converted for the CPU runtime (a one-time step, like
  torch-fidelity's weights download; timed and printed apart);
- torch-fidelity 0.4.0: `calculate_metrics(input1=REAL, input2=FAKE, fid=True, kid=True)` with the same
  KID settings and the same TF-Inception weights (`metrics.fid.inception_state_dict`, saved to a file
  before timing), its defaults otherwise (batch 64, its DataLoader, torch eager).

Only faces in which YuNet finds a face are copied, so both tools score the same images (`agebench fid`
leaves faceless images out). Printed: each run's wall time with the load average before and after it, the
median of each tool and the ratio of the medians (target >= 2.5x) with each round's ratio, FID and KID of
each, FID's relative difference (target < 1e-4) and KID's absolute difference.

Usage: .venv/bin/python benchmarks/fid_vs_torch_fidelity.py [-n 200] [--rounds 3] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 2.5
TARGET_FID_RTOL = 1e-4

_TORCH_FIDELITY = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.filterwarnings("ignore")
    from torch_fidelity import calculate_metrics
    from metrics.fid import EXTRACTOR_NAME
    real, fake, weights, subsets, subset_size, seed = sys.argv[1:7]
    n = min(len(__import__("os").listdir(real)), len(__import__("os").listdir(fake)), int(subset_size))
    out = calculate_metrics(
        input1=real, input2=fake, cuda=False, fid=True, kid=True, kid_subsets=int(subsets),
        kid_subset_size=n, rng_seed=int(seed), feature_extractor=EXTRACTOR_NAME,
        feature_extractor_weights_path=weights, cache=False, verbose=False,
    )
    print(json.dumps({k: float(v) for k, v in out.items()}))
    """
)


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def pick(folder: Path, lo: int, hi: int, n: int) -> list[Path]:
    """Up to 2n names with age in [lo, hi], spread evenly over the sorted names (YuNet filters them next)."""
    names = sorted(p.name for p in folder.iterdir() if p.name.split("_", 1)[0].isdigit())
    sel = [f for f in names if lo <= int(f.split("_", 1)[0]) <= hi]
    step = max(1, len(sel) // (2 * n))
    return [folder / f for f in sel[::step][: 2 * n]]


def copy_faces(paths: list[Path], out: Path, n: int, face_check) -> int:
    """Copy the first n files in which YuNet finds a face into `out` (unchanged bytes); returns how many."""
    out.mkdir(parents=True)
    kept = 0
    for path in paths:
        with Image.open(path) as img:
            x = torch.from_numpy(np.array(img.convert("RGB"))).permute(2, 0, 1)[None].contiguous()
        if bool(face_check(x)[0]):
            shutil.copy(path, out / path.name)
            kept += 1
            if kept == n:
                break
    return kept


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str, str, str]:
    """(seconds, stdout, load before, load after) of a fresh process."""
    before = load()
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return seconds, proc.stdout, before, load()


def main(argv: list[str] | None = None) -> None:
    """Run the comparison (argv: command-line arguments, for tests)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "../shared/data/utkface/UTKFace", help="UTKFace folder")
    parser.add_argument("-n", type=int, default=200, help="faces per folder")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each tool, interleaved")
    args = parser.parse_args(argv)
    data = args.data.resolve()
    if not data.is_dir():
        raise SystemExit(f"--data {data}: not a folder (UTKFace's aligned crops are expected there)")
    from agebench.params.sections import EvaluateConfig
    from agebench.pipeline.score_folders import load_face_check
    from agebench.pipeline.scoring import default_cache_dir, scoring_threads
    from metrics.fid import inception_state_dict, load_inception_runtime

    cfg = EvaluateConfig()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"machine: {cores} CPU cores usable, scoring threads {scoring_threads()}, load average {load()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        face_check = load_face_check()
        counts = {}
        for name, (lo, hi) in (("real", (20, 29)), ("fake", (50, 59))):
            counts[name] = copy_faces(pick(data, lo, hi, args.n), root / name, args.n, face_check)
        print(f"faces: {counts['real']} aged 20-29 and {counts['fake']} aged 50-59, 200x200 UTKFace originals")
        weights = root / "inception_from_fid_helper.pth"
        torch.save(inception_state_dict(), weights)
        env = {**os.environ, "PYTHONPATH": str(REPO), "AGEBENCH_CACHE": str(root / "cache")}
        os.environ["AGEBENCH_CACHE"] = env["AGEBENCH_CACHE"]
        start = time.perf_counter()
        runtime = load_inception_runtime(threads=scoring_threads(), cache_dir=default_cache_dir() / "networks").runtime
        convert_s = time.perf_counter() - start
        print(f"one-time conversion of Inception for {runtime}: {convert_s:.1f} s (load {load()})")
        ours_cmd = [sys.executable, "-m", "agebench.cli", "fid", str(root / "real"), str(root / "fake"), "--json",
                    str(root / "ours.json")]  # fmt: skip
        tf_cmd = [sys.executable, "-c", _TORCH_FIDELITY, str(root / "real"), str(root / "fake"), str(weights),
                  str(cfg.kid_subsets), str(cfg.kid_subset_size), str(cfg.kid_seed)]  # fmt: skip
        ours_s, tf_s = [], []
        for k in range(args.rounds):
            seconds, _, l0, l1 = timed(ours_cmd, env)
            ours_s.append(seconds)
            print(f"round {k + 1}: agebench fid     {seconds:7.1f} s   load before {l0} / after {l1}", flush=True)
            seconds, tf_out, l0, l1 = timed(tf_cmd, env)
            tf_s.append(seconds)
            print(f"round {k + 1}: torch-fidelity   {seconds:7.1f} s   load before {l0} / after {l1}", flush=True)
            fid_ours = json.loads((root / "ours.json").read_text())["fid"]
            fid_tf = json.loads(tf_out.strip().splitlines()[-1])["frechet_inception_distance"]
            print(f"round {k + 1}: ratio {tf_s[-1] / ours_s[-1]:.2f}x, FID {fid_ours:.6f} vs {fid_tf:.6f}", flush=True)
        ours = json.loads((root / "ours.json").read_text())
        tf = json.loads(tf_out.strip().splitlines()[-1])
    if ours["n_real_no_face"] or ours["n_fake_no_face"]:
        print(f"WARNING: agebench fid left out {ours['n_real_no_face']} + {ours['n_fake_no_face']} faceless images")
    ours_med, tf_med = statistics.median(ours_s), statistics.median(tf_s)
    ratio = tf_med / ours_med
    fid_rel = abs(ours["fid"] / tf["frechet_inception_distance"] - 1)
    kid_abs = abs(ours["kid_mean"] - tf["kernel_inception_distance_mean"])
    print(f"agebench fid (no feature cache):  median {ours_med:7.1f} s of {len(ours_s)} runs")
    print(f"torch-fidelity calculate_metrics: median {tf_med:7.1f} s of {len(tf_s)} runs")
    print(f"speed ratio of the medians {ratio:.2f}x (target >= {TARGET_RATIO}x: "
          f"{'met' if ratio >= TARGET_RATIO else 'NOT met'}); per round "
          f"{', '.join(f'{b / a:.2f}x' for a, b in zip(ours_s, tf_s))}")  # fmt: skip
    verdict = "met" if fid_rel < TARGET_FID_RTOL else "NOT met"
    print(f"FID ours {ours['fid']:.6f} vs torch-fidelity {tf['frechet_inception_distance']:.6f}")
    print(f"  relative difference {fid_rel:.1e} (target < {TARGET_FID_RTOL:.0e}: {verdict})")
    print(f"KID ours {ours['kid_mean']:.7f} vs torch-fidelity {tf['kernel_inception_distance_mean']:.7f}")
    print(f"  absolute difference {kid_abs:.1e}")
    print(f"machine at end: load average {load()}")


if __name__ == "__main__":
    main()
