"""The per-task scoring suite of PROTOCOL.md s.4, assembled from the individual metrics.

`score_task` is a function of uint8 image tensors; the networks come in through a `Scorer`, which
also carries an optional cache (any object with `get(key) -> array | None` and `put(key, array)`)
so that results on image sets that recur across methods (the inputs of a task, the real faces of a
target group) are computed once. Keys hash the pixels, so a cache can never serve stale results.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from metrics import stats

AgeFn = Callable[[torch.Tensor], np.ndarray]
DescriptorFn = Callable[[torch.Tensor], tuple[np.ndarray, np.ndarray]]

RATE_METRICS = ("age_acc", "id_rate", "joint")
GENDER_NAMES = {"0": "male", "1": "female"}
RACE_NAMES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others", "unknown": "unknown"}


class ArrayCache(Protocol):
    """Storage for arrays computed from image sets, keyed by a content hash."""

    def get(self, key: str) -> np.ndarray | None: ...

    def put(self, key: str, value: np.ndarray) -> None: ...


def images_key(images: torch.Tensor, namespace: str) -> str:
    """sha256 of a uint8 (N, 3, H, W) tensor's shape and bytes, salted with `namespace`."""
    h = hashlib.sha256(f"{namespace}|{tuple(images.shape)}|".encode())
    h.update(images.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclasses.dataclass
class Scorer:
    """Networks and settings for scoring; see PROTOCOL.md s.4 for every definition.

    Attributes:
        ages: (N, 3, H, W) uint8 -> (N,) float64 estimated ages, NaN where the estimator failed.
        descriptors: (N, 3, H, W) uint8 -> ((N, D) float descriptors, (N,) bool failed).
        inception: TF-Inception feature extractor from `metrics.fid.load_inception`.
        namespaces: backbone identity per kind ("age", "id", "inception") mixed into cache keys.
    """

    ages: AgeFn
    descriptors: DescriptorFn
    inception: nn.Module
    id_threshold: float = 0.6
    batch_size: int = 64
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    kid_seed: int = 0
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    cache: ArrayCache | None = None
    namespaces: dict[str, str] = dataclasses.field(default_factory=dict)

    def _cached(self, kind: str, images: torch.Tensor, fn: Callable[[torch.Tensor], Any]) -> Any:
        if self.cache is None or len(images) == 0:
            return fn(images)
        key = f"{kind}-{images_key(images, self.namespaces.get(kind, kind))}"
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        value = fn(images)
        if isinstance(value, tuple):  # descriptors: pack (desc, failed) into one array
            packed = np.concatenate(
                [np.asarray(value[0], np.float64), np.asarray(value[1], np.float64)[:, None]], axis=1
            )
            self.cache.put(key, packed)
            return value
        self.cache.put(key, np.asarray(value))
        return value

    def estimate_ages(self, images: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) uint8 -> (N,) float64 ages (NaN: failed), cached by content."""
        return np.asarray(self._cached("age", images, lambda x: np.asarray(self.ages(x), np.float64)))

    def face_descriptors(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """(N, 3, H, W) uint8 -> ((N, D) float64 descriptors, (N,) bool failed), cached by content."""
        out = self._cached("id", images, self.descriptors)
        if isinstance(out, tuple):
            return np.asarray(out[0], np.float64), np.asarray(out[1], bool)
        return out[:, :-1], out[:, -1].astype(bool)

    def inception_features(self, images: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) uint8 -> (N, 2048) float64 pool3 features, cached by content."""
        from metrics.fid import inception_features

        return np.asarray(
            self._cached("inception", images, lambda x: inception_features(x, self.inception, self.batch_size).numpy()),
            np.float64,
        )


def verify_pairs(
    desc_a: np.ndarray, fail_a: np.ndarray, desc_b: np.ndarray, fail_b: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pair Euclidean distance (NaN when either side failed), same-person flag, failure flag."""
    failed = np.asarray(fail_a, bool) | np.asarray(fail_b, bool)
    dist = np.linalg.norm(np.asarray(desc_a, np.float64) - np.asarray(desc_b, np.float64), axis=1)
    dist = np.where(failed, np.nan, dist)
    with np.errstate(invalid="ignore"):
        same = ~failed & (dist < threshold)
    return dist, same, failed


def score_task(
    scorer: Scorer,
    inputs: torch.Tensor,
    fake: torch.Tensor,
    cycle: torch.Tensor | None,
    real_target: torch.Tensor,
    real_target_test: torch.Tensor,
    target_bounds: tuple[int, int],
    gender: np.ndarray,
    race: np.ndarray,
) -> dict[str, Any]:
    """Score one task (PROTOCOL.md s.4).

    Args:
        inputs: (N, 3, S, S) uint8, the test faces of the source group (S = evaluation size, 128).
        fake: (N, 3, S, S) uint8, the method's outputs, row-aligned with `inputs`.
        cycle: (N, 3, S, S) uint8 round trips, or None.
        real_target: (M, 3, S, S) uint8, all real faces of the target group (train and test), for FID/KID.
        real_target_test: (K, 3, S, S) uint8, real test faces of the target group (estimator ceiling).
        target_bounds: inclusive age bounds of the target group.
        gender, race: (N,) labels of the inputs ("0"/"1"; "0".."4"/"unknown").
    Returns:
        {"n", metric: value, ..., "ci95": {metric: [lo, hi]}, "breakdown": {"gender": ..., "race": ...}}.
    """
    n = len(inputs)
    if fake.shape != inputs.shape:
        raise ValueError(f"outputs {tuple(fake.shape)} do not match inputs {tuple(inputs.shape)}")
    idx = (
        stats.bootstrap_indices(n, scorer.bootstrap_resamples, scorer.bootstrap_seed)
        if n
        else np.zeros((0, 0), np.int64)
    )
    ci: dict[str, list[float]] = {}
    out: dict[str, Any] = {"n": n}

    def put(name: str, values: np.ndarray, valid: np.ndarray | None = None, index: np.ndarray = idx) -> None:
        r = stats.mean_with_ci(values, index, valid)
        out[name] = r["value"]
        ci[name] = r["ci95"]

    # Age.
    age_in = scorer.estimate_ages(inputs)
    age_out = scorer.estimate_ages(fake)
    in_target = stats.in_range(age_out, target_bounds)
    put("age_acc", in_target.astype(np.float64))
    put("age_mean", age_out, np.isfinite(age_out))
    put("age_gain", age_out - age_in, np.isfinite(age_out) & np.isfinite(age_in))
    out["age_fail"] = int((~np.isfinite(age_out)).sum())
    age_real = scorer.estimate_ages(real_target_test)
    real_idx = (
        stats.bootstrap_indices(len(age_real), scorer.bootstrap_resamples, scorer.bootstrap_seed)
        if len(age_real)
        else np.zeros((0, 0), np.int64)
    )
    put("age_acc_real", stats.in_range(age_real, target_bounds).astype(np.float64), index=real_idx)
    out["age_acc_rel"] = out["age_acc"] / out["age_acc_real"] if out["age_acc_real"] else float("nan")

    # Identity.
    d_in, f_in = scorer.face_descriptors(inputs)
    d_out, f_out = scorer.face_descriptors(fake)
    dist, same, failed = verify_pairs(d_in, f_in, d_out, f_out, scorer.id_threshold)
    put("id_rate", same.astype(np.float64))
    put("id_dist", dist, ~failed)
    out["id_fail"] = int(failed.sum())

    # Joint: in the target age group and verified as the input's person.
    joint = in_target & same
    put("joint", joint.astype(np.float64))

    # Realism.
    if n >= 2 and len(real_target) >= 2:
        from metrics.fid import fid_from_features, kid_from_features

        f_real = scorer.inception_features(real_target)
        f_fake = scorer.inception_features(fake)
        out["fid"] = fid_from_features(f_real, f_fake)
        out["kid_mean"], out["kid_std"] = kid_from_features(
            f_real, f_fake, scorer.kid_subsets, scorer.kid_subset_size, scorer.kid_seed
        )
    else:
        out["fid"] = out["kid_mean"] = out["kid_std"] = float("nan")
    out["n_real_target"] = len(real_target)

    # Consistency.
    if cycle is not None:
        put("cycle_l1", stats.cycle_l1(inputs.numpy(), cycle.numpy()))

    out["ci95"] = ci
    rates = {
        "age_acc": in_target.astype(np.float64),
        "id_rate": same.astype(np.float64),
        "joint": joint.astype(np.float64),
    }
    out["breakdown"] = {
        "gender": stats.breakdown(rates, gender, GENDER_NAMES),
        "race": stats.breakdown(rates, race, RACE_NAMES),
    }
    return out
