"""The per-task scoring suite of PROTOCOL.md s.4, assembled from the individual metrics.

`score_task` is a function of uint8 image tensors; the networks come in through a `Scorer`, which
also carries an optional cache (any object with `get(key) -> array | None` and `put(key, array)`)
so that results on image sets that recur across methods (the inputs of a task, the real faces of a
target group) are computed once. Keys hash the pixels, so a cache can never serve stale results.
"""

from __future__ import annotations

import dataclasses
import functools
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
    """sha256 of a uint8 (N, 3, H, W) tensor's shape and bytes, salted with `namespace` (one hash for
    every cache: `metrics.fid.content_key`)."""
    from metrics.fid import content_key

    return content_key(images, namespace)


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
    #: Show a progress bar (stderr) while a network runs over an image set that is not cached.
    progress: bool = False

    def _chunked(self, kind: str, images: torch.Tensor, fn: Callable[[torch.Tensor], Any]) -> Any:
        """`fn` over the set in chunks (rows are independent), with a progress bar when asked."""
        chunk = 512
        if not self.progress or len(images) <= chunk:
            return fn(images)
        from tqdm import tqdm

        parts = []
        with tqdm(total=len(images), desc=f"  {kind}", unit="img", leave=False) as bar:
            for s in range(0, len(images), chunk):
                parts.append(fn(images[s : s + chunk]))
                bar.update(len(images[s : s + chunk]))
        if isinstance(parts[0], tuple):
            return tuple(np.concatenate([np.asarray(p[i]) for p in parts]) for i in range(len(parts[0])))
        return np.concatenate([np.asarray(p) for p in parts])

    def _cached(self, kind: str, images: torch.Tensor, fn: Callable[[torch.Tensor], Any]) -> Any:
        if self.cache is None or len(images) == 0:
            return self._chunked(kind, images, fn)
        key = f"{kind}-{images_key(images, self.namespaces.get(kind, kind))}"
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        value = self._chunked(kind, images, fn)
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


@dataclasses.dataclass
class TaskContext:
    """One task's images and the per-face results metrics share (computed once, on first use).

    Images are (N, 3, S, S) uint8 (S = evaluation size, 128): `inputs` (test faces of the source
    group), `fake` (row-aligned outputs), `cycle` (round trips or None), `real_target` (all real faces
    of the target group, train and test, for FID/KID), `real_target_test` (real test faces of the
    target group, for the estimator's ceiling). `idx` holds the shared bootstrap resamples.
    """

    scorer: Scorer
    inputs: torch.Tensor
    fake: torch.Tensor
    cycle: torch.Tensor | None
    real_target: torch.Tensor
    real_target_test: torch.Tensor
    target_bounds: tuple[int, int]
    idx: np.ndarray
    ci: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    @functools.cached_property
    def age_in(self) -> np.ndarray:
        return self.scorer.estimate_ages(self.inputs)

    @functools.cached_property
    def age_out(self) -> np.ndarray:
        return self.scorer.estimate_ages(self.fake)

    @functools.cached_property
    def in_target(self) -> np.ndarray:
        return stats.in_range(self.age_out, self.target_bounds)

    @functools.cached_property
    def verification(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        d_in, f_in = self.scorer.face_descriptors(self.inputs)
        d_out, f_out = self.scorer.face_descriptors(self.fake)
        return verify_pairs(d_in, f_in, d_out, f_out, self.scorer.id_threshold)

    def mean(
        self, name: str, values: np.ndarray, valid: np.ndarray | None = None, index: np.ndarray | None = None
    ) -> float:
        """Mean with its bootstrap interval recorded in `ci[name]`; returns the value."""
        r = stats.mean_with_ci(values, self.idx if index is None else index, valid)
        self.ci[name] = r["ci95"]
        return r["value"]


def age_metrics(ctx: TaskContext) -> dict[str, Any]:
    """age_acc, age_mean, age_gain, age_fail, and the estimator's ceiling age_acc_real / age_acc_rel."""
    age_in = ctx.age_in
    age_out = ctx.age_out
    out: dict[str, Any] = {
        "age_acc": ctx.mean("age_acc", ctx.in_target.astype(np.float64)),
        "age_mean": ctx.mean("age_mean", age_out, np.isfinite(age_out)),
        "age_gain": ctx.mean("age_gain", age_out - age_in, np.isfinite(age_out) & np.isfinite(age_in)),
        "age_fail": int((~np.isfinite(age_out)).sum()),
    }
    age_real = ctx.scorer.estimate_ages(ctx.real_target_test)
    real_idx = _resamples(len(age_real), ctx.scorer)
    out["age_acc_real"] = ctx.mean(
        "age_acc_real", stats.in_range(age_real, ctx.target_bounds).astype(np.float64), index=real_idx
    )
    out["age_acc_rel"] = out["age_acc"] / out["age_acc_real"] if out["age_acc_real"] else float("nan")
    return out


def identity_metrics(ctx: TaskContext) -> dict[str, Any]:
    """id_rate (distance < threshold, failures count as not verified), id_dist, id_fail."""
    dist, same, failed = ctx.verification
    return {
        "id_rate": ctx.mean("id_rate", same.astype(np.float64)),
        "id_dist": ctx.mean("id_dist", dist, ~failed),
        "id_fail": int(failed.sum()),
    }


def joint_metric(ctx: TaskContext) -> dict[str, Any]:
    """joint: in the target age group and verified as the input's person (the headline)."""
    return {"joint": ctx.mean("joint", (ctx.in_target & ctx.verification[1]).astype(np.float64))}


def fid_metrics(ctx: TaskContext) -> dict[str, Any]:
    """fid, kid_mean, kid_std against all real faces of the target group (NaN with < 2 images)."""
    from metrics.fid import fid_from_features, kid_from_features

    out: dict[str, Any] = {"n_real_target": len(ctx.real_target)}
    if len(ctx.fake) < 2 or len(ctx.real_target) < 2:
        return {**out, "fid": float("nan"), "kid_mean": float("nan"), "kid_std": float("nan")}
    f_real = ctx.scorer.inception_features(ctx.real_target)
    f_fake = ctx.scorer.inception_features(ctx.fake)
    kid_mean, kid_std = kid_from_features(
        f_real, f_fake, ctx.scorer.kid_subsets, ctx.scorer.kid_subset_size, ctx.scorer.kid_seed
    )
    return {**out, "fid": fid_from_features(f_real, f_fake), "kid_mean": kid_mean, "kid_std": kid_std}


def cycle_metric(ctx: TaskContext) -> dict[str, Any]:
    """cycle_l1: mean |input - round trip| in [0, 1] pixel units (absent without round trips)."""
    if ctx.cycle is None:
        return {}
    return {"cycle_l1": ctx.mean("cycle_l1", stats.cycle_l1(ctx.inputs.numpy(), ctx.cycle.numpy()))}


TASK_METRICS: dict[str, Any] = {
    "age": age_metrics,
    "identity": identity_metrics,
    "joint": joint_metric,
    "fid": fid_metrics,
    "cycle": cycle_metric,
}
"""Task metrics by name (the names used in `evaluate.metrics`; agebench.registry.METRICS resolves to these)."""

DEFAULT_METRICS = tuple(TASK_METRICS)


def _resamples(n: int, scorer: Scorer) -> np.ndarray:
    if n == 0:
        return np.zeros((0, 0), np.int64)
    return stats.bootstrap_indices(n, scorer.bootstrap_resamples, scorer.bootstrap_seed)


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
    metric_names: tuple[str, ...] = DEFAULT_METRICS,
    per_face: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Score one task (PROTOCOL.md s.4) with the registered metrics `metric_names`.

    Args:
        inputs: (N, 3, S, S) uint8, the test faces of the source group (S = evaluation size, 128).
        fake: (N, 3, S, S) uint8, the method's outputs, row-aligned with `inputs`.
        cycle: (N, 3, S, S) uint8 round trips, or None.
        real_target: (M, 3, S, S) uint8, all real faces of the target group (train and test), for FID/KID.
        real_target_test: (K, 3, S, S) uint8, real test faces of the target group (estimator ceiling).
        target_bounds: inclusive age bounds of the target group.
        gender, race: (N,) labels of the inputs ("0"/"1"; "0".."4"/"unknown").
        metric_names: names in the METRICS registry (unknown names list the valid ones).
        per_face: when given, filled with (N,) float64 arrays row-aligned with `inputs` for the report's
            sample grids and age distributions: `age_in`, `age_out` (estimated ages, NaN: failed) when
            "age" is scored, `id_dist` (descriptor distance input-output, NaN: failed) when "identity" is.
    Returns:
        {"n", metric: value, ..., "ci95": {metric: [lo, hi]}, "breakdown": {"gender": ..., "race": ...}}.
    """
    if fake.shape != inputs.shape:
        raise ValueError(f"outputs {tuple(fake.shape)} do not match inputs {tuple(inputs.shape)}")
    unknown = [n for n in metric_names if n not in TASK_METRICS]
    if unknown:
        raise KeyError(f"unknown metric {unknown[0]!r}; valid metrics: {', '.join(sorted(TASK_METRICS))}")
    fns = [TASK_METRICS[name] for name in metric_names]
    ctx = TaskContext(
        scorer,
        inputs,
        fake,
        cycle,
        real_target,
        real_target_test,
        tuple(target_bounds),
        _resamples(len(inputs), scorer),
    )
    out: dict[str, Any] = {"n": len(inputs)}
    for fn in fns:
        out.update(fn(ctx))
    out["ci95"] = ctx.ci
    rates = {}
    if "age" in metric_names:
        rates["age_acc"] = ctx.in_target.astype(np.float64)
    if "identity" in metric_names:
        rates["id_rate"] = ctx.verification[1].astype(np.float64)
    if "joint" in metric_names:
        rates["joint"] = (ctx.in_target & ctx.verification[1]).astype(np.float64)
    if per_face is not None:
        if "age" in metric_names:
            per_face["age_in"] = ctx.age_in
            per_face["age_out"] = ctx.age_out
        if "identity" in metric_names:
            per_face["id_dist"] = ctx.verification[0]
    if rates:
        out["breakdown"] = {
            "gender": stats.breakdown(rates, gender, GENDER_NAMES),
            "race": stats.breakdown(rates, race, RACE_NAMES),
        }
    return out
