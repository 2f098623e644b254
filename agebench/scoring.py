"""Build the scoring networks and the on-disk result cache (shared by `evaluate`, `reference`, CLI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agebench.common import atomic_path
from agebench.config import EvaluateConfig, Params
from metrics.suite import Scorer


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


def backbone_keys(cfg: EvaluateConfig) -> list[str]:
    """Backbones whose provenance goes into a metrics file for this configuration."""
    keys = ["tf_inception"]
    keys += ["age_onnx", "age_landmarks5"] if cfg.age_backend == "onnx" else []
    keys += ["dlib_face_resnet", "dlib_landmarks5"] if cfg.id_backend == "dlib" else []
    return keys


def build_scorer(
    cfg: EvaluateConfig, cache_dir: str | Path | None = "data/cache", device: str = "cpu", base_dir: str | Path = "."
) -> Scorer:
    """Load the configured age, identity and Inception networks into a `Scorer`.

    device: where the dlib identity network and the Inception extractor run ("cpu", "cuda", ...); the age
    CNN (onnxruntime) and dlib's landmarks and chips stay on the CPU. On CUDA, TF32 convolutions are
    switched off so that features keep float32 parity with the CPU and torch-fidelity.
    base_dir: resolves a relative `facenet_weights` (the folder holding params.yaml).
    """
    import torch

    from metrics.backbones import BACKBONES, sha256_file
    from metrics.fid import load_inception

    if torch.device(device).type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

    if cfg.age_backend == "onnx":
        from metrics.age import estimate_ages, load_age_networks

        age_nets = load_age_networks()

        def ages(x):
            return estimate_ages(x, age_nets, batch_size=256).numpy()

        age_ns = BACKBONES["age_onnx"].sha256
    else:
        from metrics.optional import deepface_age_fn, deepface_age_weights_path

        ages = deepface_age_fn()
        age_ns = sha256_file(deepface_age_weights_path())
    if cfg.id_backend == "dlib":
        from metrics.identity import face_descriptors, load_identity_networks

        net, predictor = load_identity_networks()
        net = net.to(device)

        def descriptors(x):
            desc, failed = face_descriptors(x, net, predictor, batch_size=32)
            return np.asarray(desc, np.float64), np.asarray(failed, bool)

        id_ns, threshold = BACKBONES["dlib_face_resnet"].sha256, cfg.id_threshold
    else:
        from metrics.optional import facenet_descriptor_fn

        weights = str(Path(base_dir) / cfg.facenet_weights) if cfg.facenet_weights else ""
        descriptors = facenet_descriptor_fn(weights, device=device)
        id_ns, threshold = sha256_file(weights), cfg.facenet_threshold
    # Cache keys include the network file's digest, so results of different weights never mix.
    namespaces = {"age": age_ns, "id": id_ns, "inception": BACKBONES["tf_inception"].sha256}
    return Scorer(
        ages=ages,
        descriptors=descriptors,
        inception=load_inception().to(device),
        id_threshold=threshold,
        batch_size=cfg.batch_size,
        kid_subsets=cfg.kid_subsets,
        kid_subset_size=cfg.kid_subset_size,
        kid_seed=cfg.kid_seed,
        bootstrap_resamples=cfg.bootstrap_resamples,
        bootstrap_seed=cfg.bootstrap_seed,
        cache=DiskCache(cache_dir) if cache_dir else None,
        progress=True,
        namespaces=namespaces,
    )


def result_context(params: Params, method: str | None = None) -> dict:
    """What every metrics file records besides its numbers: resolved params, backbones, provenance."""
    from agebench.common import provenance
    from agebench.config import to_dict
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
