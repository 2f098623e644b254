"""Build the scoring networks and the on-disk result cache (shared by `evaluate`, `reference`, CLI)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from agebench.infra.common import atomic_path
from agebench.infra.errors import UserError
from agebench.params.sections import EvaluateConfig, Params
from metrics.fid import KidSettings
from metrics.scorer import DetectFn, Judge, Scorer
from metrics.stats import BootstrapSettings


class DiskCache:
    """An `ArrayCache` of .npy files in one folder (keys are content hashes, so never stale)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def get(self, key: str) -> np.ndarray | None:
        path = self.folder / f"{key}.npy"
        try:
            return np.load(path, allow_pickle=False)
        except (FileNotFoundError, ValueError, OSError):
            return None

    def put(self, key: str, value: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.folder / f"{key}.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.asarray(value), allow_pickle=False)


def cache_namespace(*parts: object) -> str:
    """A cache namespace from network digests and the preprocessing settings that shape a result.

    The cache outlives a checkout (`default_cache_dir`), so a key must change whenever anything but the
    pixels changes a cached value: the weights, the landmark model, padding/thresholds, the protocol.
    """
    import hashlib

    import agebench

    text = "|".join(str(p) for p in (f"protocol={agebench.PROTOCOL_VERSION}", *parts))
    return hashlib.sha256(text.encode()).hexdigest()


class ThreadsError(UserError, ValueError):
    """`$AGEBENCH_THREADS` or `$OMP_NUM_THREADS` is not a whole number >= 1."""


def scoring_threads() -> int:
    """CPU threads the scoring networks use: `$AGEBENCH_THREADS`, else `$OMP_NUM_THREADS`, else every core this
    process may run on (`os.sched_getaffinity`), so scoring uses the whole machine it was given."""
    for name in ("AGEBENCH_THREADS", "OMP_NUM_THREADS"):
        text = os.environ.get(name, "").strip()
        if text:
            if not text.isdigit() or int(text) < 1:
                raise ThreadsError(f"${name}={text!r}: expected a whole number of threads >= 1 (or unset it)")
            return int(text)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def kid_settings(cfg: EvaluateConfig) -> KidSettings:
    """KID's subset draw of `evaluate.kid_*`, as `metrics.fid` takes it."""
    return KidSettings(cfg.kid_subsets, cfg.kid_subset_size, cfg.kid_seed)


def inception_network(device: str = "cpu", runtime: str = "auto") -> Any:
    """TF-Inception for scoring (`metrics.fid.load_inception`): on the CPU through a converted runtime
    (`metrics.inception_runtime.accelerate`, the conversion kept in `default_cache_dir()/networks`), on CUDA
    the torch module. Called as `model(x)` like the torch module, with the same features to float32 rounding."""
    import warnings

    from metrics.fid import load_inception

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's TorchScript deprecation notices, not ours
        model = load_inception()
    return on_runtime(model, device, runtime)


def on_runtime(model: Any, device: str = "cpu", runtime: str = "auto") -> Any:
    """`metrics.fid.accelerate` with scoring's threads (`scoring_threads`) and converted-network folder
    (`default_cache_dir()/networks`); a module that is not TF-Inception (a test stub) comes back as it was."""
    from metrics.fid import accelerate

    return accelerate(model, device, runtime, threads=scoring_threads(), cache_dir=default_cache_dir() / "networks")


def age_namespace() -> str:
    """Cache namespace of the ONNX age estimator: both network files and its preprocessing (chip size, padding,
    normalisation, runtime: `metrics.age.preprocessing_key`)."""
    from metrics.age import preprocessing_key
    from metrics.backbones import BACKBONES

    return cache_namespace(BACKBONES["age_onnx"].sha256, BACKBONES["age_landmarks5"].sha256, preprocessing_key())


def inception_namespace(model: Any) -> str:
    """Cache namespace of an Inception extractor: the weights file, the resize and scaling, and the runtime
    that runs it (`metrics.fid.extractor_namespace`)."""
    from metrics.backbones import BACKBONES
    from metrics.fid import extractor_namespace

    return cache_namespace(BACKBONES["tf_inception"].sha256, extractor_namespace(model))


def backbone_keys(cfg: EvaluateConfig) -> list[str]:
    """Backbones whose provenance goes into a metrics file for this configuration."""
    keys = ["tf_inception", "yunet", "sface"]
    keys += ["age_onnx", "age_landmarks5"] if cfg.age_backend == "onnx" else []
    keys += ["dlib_face_resnet", "dlib_landmarks5"] if cfg.id_backend == "dlib" else []
    return keys


def nhwc(images: Any) -> np.ndarray:
    """(N, 3, H, W) uint8 tensor -> (N, H, W, 3) uint8 array (what the OpenCV judge reads)."""
    return np.ascontiguousarray(images.permute(0, 2, 3, 1).cpu().numpy())


def sface_parts() -> tuple[DetectFn, Judge, str]:
    """The protocol-2 judge for a `Scorer`: YuNet detection (face validity), the SFace `Judge`, YuNet's digest."""
    from metrics import sface
    from metrics.backbones import BACKBONES

    networks = sface.load_judge()

    def detect(x: Any) -> np.ndarray:
        return sface.detect(nhwc(x), networks).pack()

    def features(x: Any, packed: np.ndarray) -> np.ndarray:
        return sface.embed(nhwc(x), networks, sface.Detections.unpack(packed)).astype(np.float64)

    yunet = cache_namespace(
        BACKBONES["yunet"].sha256,
        f"pad={sface.PAD_FRACTION}",
        f"score={sface.YUNET_SCORE}",
        f"nms={sface.YUNET_NMS}",
        f"top_k={sface.YUNET_TOP_K}",
    )
    sface_ns = cache_namespace(BACKBONES["sface"].sha256, yunet, f"size={sface.SFACE_SIZE}")
    judge = Judge(features, "cosine", sface.SFACE_THRESHOLD, sface_ns)
    return detect, judge, yunet


def second_opinion(cfg: EvaluateConfig, device: str = "cpu", base_dir: str | Path = ".") -> tuple[str, Judge]:
    """The configured second-opinion judge (`evaluate.id_backend`): ("dlib", ...) or ("facenet", ...)."""
    from metrics.backbones import BACKBONES, sha256_file

    if cfg.id_backend == "dlib":
        from metrics.identity import face_descriptors, load_identity_networks

        net, predictor = load_identity_networks()
        net = net.to(device)

        def dlib_features(x: Any, _packed: np.ndarray) -> np.ndarray:
            desc, failed = face_descriptors(x, net, predictor, batch_size=32)
            desc = np.array(desc.numpy() if hasattr(desc, "numpy") else desc, np.float64)  # a copy
            desc[np.asarray(failed, bool)] = np.nan
            return desc

        from metrics import dlib_resnet, identity

        ns = cache_namespace(
            BACKBONES["dlib_face_resnet"].sha256,
            BACKBONES["dlib_landmarks5"].sha256,
            f"chip={dlib_resnet.CHIP_SIZE}|pad={identity.CHIP_PADDING}|min_side={identity.MIN_IMAGE_SIZE}",
            f"min_eyes={identity.MIN_EYE_DISTANCE}|device={str(device).split(':')[0]}",
        )
        return "dlib", Judge(dlib_features, "distance", cfg.id_threshold, ns)
    from metrics.optional import facenet_descriptor_fn

    weights = str(Path(base_dir) / cfg.facenet_weights) if cfg.facenet_weights else ""
    fn = facenet_descriptor_fn(weights, device=device)

    def facenet_features(x: Any, _packed: np.ndarray) -> np.ndarray:
        desc, failed = fn(x)
        desc = np.array(desc.numpy() if hasattr(desc, "numpy") else desc, np.float64)  # a copy
        desc[np.asarray(failed, bool)] = np.nan
        return desc

    return "facenet", Judge(facenet_features, "distance", cfg.facenet_threshold, sha256_file(weights))


def build_scorer(
    cfg: EvaluateConfig, cache_dir: str | Path | None = "data/cache", device: str = "cpu", base_dir: str | Path = "."
) -> Scorer:
    """Load the configured networks into a `Scorer`: age, YuNet + SFace (the judge), the second-opinion judge
    (`evaluate.id_backend`, registered under its name) and Inception.

    device: where the dlib identity network and the Inception extractor run ("cpu", "cuda", ...); the age
    CNN (onnxruntime), YuNet/SFace (OpenCV) and dlib's landmarks and chips stay on the CPU. On CUDA, TF32
    convolutions are switched off so that features keep float32 parity with the CPU and torch-fidelity.
    base_dir: resolves a relative `facenet_weights` (the folder holding params.yaml).
    """
    import torch

    from metrics.backbones import sha256_file

    if torch.device(device).type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

    if cfg.age_backend == "onnx":
        from metrics.age import estimate_ages, load_age_networks

        age_nets = load_age_networks(threads=scoring_threads())

        def ages(x):
            return estimate_ages(x, age_nets, batch_size=256).numpy()

        age_ns = age_namespace()
    else:
        from metrics.optional import deepface_age_fn, deepface_age_weights_path

        ages = deepface_age_fn()
        age_ns = sha256_file(deepface_age_weights_path())
    detect, sface_judge, detect_ns = sface_parts()
    second_name, second = second_opinion(cfg, device, base_dir)
    inception = inception_network(device)
    # Cache keys include the network file's digest and its preprocessing (and for Inception the runtime), so
    # results of different weights, chips, resizes or runtimes never mix.
    namespaces = {"age": age_ns, "detect": detect_ns, "inception": inception_namespace(inception)}
    return Scorer(
        ages=ages,
        detect=detect,
        judges={"sface": sface_judge, second_name: second},
        inception=inception,
        batch_size=cfg.batch_size,
        kid=kid_settings(cfg),
        bootstrap=BootstrapSettings(cfg.bootstrap_resamples, cfg.bootstrap_seed),
        cache=DiskCache(cache_dir) if cache_dir else None,
        progress=True,
        namespaces=namespaces,
    )


def result_context(params: Params, method: str | None = None) -> dict:
    """What every metrics file records besides its numbers: resolved params, backbones, provenance."""
    from agebench.infra.common import provenance
    from agebench.params.reading import to_dict
    from metrics.backbones import describe

    resolved = {
        "evaluate": to_dict(params.evaluate),
        "groups": to_dict(params.groups),
        "tasks": to_dict(params.tasks),
        "data": to_dict(params.data),
    }
    if method is not None:
        resolved = {"method": params.raw.get(method), **resolved}
    return {"params": resolved, "backbones": describe(backbone_keys(params.evaluate)), **provenance()}


def default_cache_dir() -> Path:
    """The content-keyed cache of real-face results: `$AGEBENCH_CACHE`, else `~/.cache/agebench`.

    Outside the workspace on purpose: `evaluate@*` and `reference` all read and write it, and a DVC out
    can belong to one stage only. Entries are keyed by pixel content and network digest, so a stale entry
    cannot be read for changed inputs, and deleting the folder only costs time.
    """
    return Path(os.environ.get("AGEBENCH_CACHE") or Path.home() / ".cache" / "agebench")


def scorer_for_params(params: Params, params_path: str | Path, cache: str | Path | None = None) -> Scorer:
    """The scorer of `evaluate`, `reference` and external rows, from params: metric names checked first
    (before any network loads), the configured device, the cache (`default_cache_dir` unless given), and
    relative weight paths resolved against the folder holding params.yaml."""
    from agebench.infra.devices import select_device
    from agebench.infra.registry import METRICS

    for metric in params.evaluate.metrics:
        METRICS.get(metric)
    device = select_device(params.evaluate.device)
    base = Path(params_path).resolve().parent
    return build_scorer(params.evaluate, cache or default_cache_dir(), str(device), base)
