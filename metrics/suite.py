"""The per-task scoring suite of PROTOCOL.md s.4 (protocol 3), assembled from peer metrics.

`score_task` is a function of uint8 image tensors; the networks come in through a `Scorer`, which
also carries an optional cache (`ArrayCache`: `get(key) -> array | None`, `put(key, array)`) so that
results on image sets that recur across methods (the inputs of a task, the real faces of a target
group) are computed once. Keys hash the pixels and the network's digest, so a cache is never stale.

Metrics are peers: each is a `Metric` that declares the per-face values it needs (names served by
`TaskContext.get`) and returns a `MetricResult` (values with intervals in `ctx.ci`, per-face arrays
for the report, 0/1 rates for the gender/race breakdowns). `score_task` runs whatever metrics its
caller resolved (agebench.infra.registry.METRICS) and knows none of them by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from metrics import keys, stats
from metrics.precision import K_NEAREST, kynkaenniemi_inside
from metrics.scorer import Scorer, Verification

GENDER_NAMES = {"0": "male", "1": "female"}
RACE_NAMES = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others", "unknown": "unknown"}


@dataclasses.dataclass
class TaskContext:
    """One task's images and the per-face values metrics share (computed once, on first use).

    Images are (N, 3, S, S) uint8 (S = evaluation size, 128): `inputs` (test faces of the source
    group), `fake` (row-aligned outputs), `cycle` (round trips or None), `real_target` (all real faces
    of the target group, train and test, for FID/KID), `real_target_test` (real test faces of the
    target group, for the estimator's ceiling and the real gap), `real_source_test` (real test faces of
    the source group for the real gap; None: `inputs`, which are exactly those faces for a pipeline task).
    `real_target_train` (M,) bool marks the rows of `real_target` that are train faces (the realism
    manifold; None: every row). `idx` holds the shared bootstrap resamples.
    `present` (N,) bool marks the outputs that exist (an external row may lack some): the networks never
    see the rows of a missing output, which fail every per-face metric as a no-face output does.
    `cycle_present` (N,) bool marks the round trips that exist.
    """

    scorer: Scorer
    inputs: torch.Tensor
    fake: torch.Tensor
    cycle: torch.Tensor | None
    real_target: torch.Tensor
    real_target_test: torch.Tensor
    target_bounds: tuple[int, int]
    idx: np.ndarray
    present: np.ndarray | None = None
    cycle_present: np.ndarray | None = None
    real_source_test: torch.Tensor | None = None
    real_target_train: np.ndarray | None = None
    #: Whether the caller gave a `present` mask (then `missing` and `fid_n` are reported).
    masked: bool = dataclasses.field(init=False, default=False)
    ci: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    #: Metrics whose `ci` entry is a Wilson interval (rates counted on few events), not a bootstrap one.
    wilson: list[str] = dataclasses.field(default_factory=list)
    _values: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.inputs)
        self.masked = self.present is not None
        self.present = np.ones(n, bool) if self.present is None else np.asarray(self.present, bool)
        self.cycle_present = np.ones(n, bool) if self.cycle_present is None else np.asarray(self.cycle_present, bool)
        for name, mask in (("present", self.present), ("cycle_present", self.cycle_present)):
            if mask.shape != (n,):
                raise ValueError(f"{name} mask has shape {mask.shape}; expected ({n},), one flag per input")
        m = len(self.real_target)
        train = np.ones(m, bool) if self.real_target_train is None else np.asarray(self.real_target_train, bool)
        if train.shape != (m,):
            raise ValueError(f"real_target_train mask has shape {train.shape}; expected ({m},), one per real face")
        self.real_target_train = train

    def on_present(self, images: torch.Tensor, fn: Callable[[torch.Tensor], np.ndarray], fill: Any) -> np.ndarray:
        """`fn` over the rows of `images` whose output is present, `fill` on the others: (N, ...) array.

        With every output present the whole set goes to `fn` unchanged (same cache keys, same numbers).
        """
        keep = self.present
        if keep.all():
            return np.asarray(fn(images))
        part = np.asarray(fn(images[torch.from_numpy(np.flatnonzero(keep))])) if keep.any() else None
        shape = (len(images),) + (part.shape[1:] if part is not None else ())
        out = np.full(shape, fill, dtype=part.dtype if part is not None else np.asarray(fill).dtype)
        if part is not None:
            out[keep] = part
        return out

    def available(self, name: str) -> bool:
        """Whether per-face value `name` can be served (see `get`)."""
        kind, _, judge = name.partition(":")
        if kind == "verification":
            return judge in self.scorer.judges
        return name in _PER_FACE

    def get(self, name: str) -> Any:
        """Per-face value `name`, computed once: "face_found" / "face_found_in" ((N,) bool, outputs / inputs),
        "age_in", "age_out" ((N,) float64, NaN: failed), "in_target" ((N,) bool, a found face whose age is in
        the target group), "verification:<judge>" (`Verification` of input vs output, failed where the
        output has no face), "cycle" (the round trips); protocol 3: "age_source_real" / "age_target_real"
        ((Ns,), (Nt,) ages of the real test faces of each group that YuNet found), "gap" (float G),
        "closure" ((N,) float64, NaN where the output has no face), "age_score" ((N,) in [0, 1]),
        "features_out" ((N, 2048) Inception features, NaN rows for missing outputs), "realistic" ((N,) bool)."""
        if name not in self._values:
            kind, _, judge = name.partition(":")
            if kind == "verification" and judge:
                v = self._verify_present(judge)
                # Face validity first: an output with no face (or none at all) is never verified.
                failed = v.failed | ~self.get("face_found")
                self._values[name] = Verification(np.where(failed, np.nan, v.score), v.same & ~failed, failed)
            elif name in _PER_FACE:
                self._values[name] = _PER_FACE[name](self)
            else:
                raise KeyError(
                    f"unknown per-face value {name!r}; known: {', '.join(sorted(_PER_FACE))}, verification:<judge>"
                )
        return self._values[name]

    def _verify_present(self, judge: str) -> Verification:
        """Input vs output verification on the present rows; missing outputs failed."""
        keep = self.present
        if keep.all():
            return self.scorer.verify(self.inputs, self.fake, judge)
        n = len(keep)
        score, same, failed = np.full(n, np.nan), np.zeros(n, bool), np.ones(n, bool)
        if keep.any():
            sel = torch.from_numpy(np.flatnonzero(keep))
            v = self.scorer.verify(self.inputs[sel], self.fake[sel], judge)
            score[keep], same[keep], failed[keep] = v.score, v.same, v.failed
        return Verification(score=score, same=same, failed=failed)

    def mean(
        self, name: str, values: np.ndarray, valid: np.ndarray | None = None, index: np.ndarray | None = None
    ) -> float:
        """Mean with its bootstrap interval recorded in `ci[name]`; returns the value."""
        r = stats.mean_with_ci(values, self.idx if index is None else index, valid)
        self.ci[name] = r["ci95"]
        return r["value"]

    def rate(
        self, name: str, outcomes: np.ndarray, valid: np.ndarray | None = None, index: np.ndarray | None = None
    ) -> float:
        """A 0/1 rate with its interval in `ci[name]`: Wilson when counted on few events (`stats.is_rare`),
        else the bootstrap one; returns the value."""
        r = stats.rate_with_ci(outcomes, self.idx if index is None else index, valid)
        self.ci[name] = r["ci95"]
        if r["interval"] == "wilson":
            self.wilson.append(name)
        return r["value"]


def _found_ages(ages: np.ndarray, found: np.ndarray) -> np.ndarray:
    """The estimated ages of the real faces that YuNet finds (and the estimator reads), in order."""
    return ages[found & np.isfinite(ages)]


def _source_ages(ctx: TaskContext) -> np.ndarray:
    """Ages of the real source-group test faces found (the task's inputs when none are given: same faces)."""
    if ctx.real_source_test is None:
        return _found_ages(ctx.get("age_in"), ctx.get("face_found_in"))
    images = ctx.real_source_test
    return _found_ages(ctx.scorer.estimate_ages(images), ctx.scorer.faces_found(images))


def _realistic(ctx: TaskContext) -> np.ndarray:
    """Improved precision (k = 3) of each output against the real target-group train faces (the FID features);
    a missing or no-face output is not realistic."""
    train = ctx.real_target_train
    if int(train.sum()) <= K_NEAREST or not ctx.present.any():
        return np.zeros(len(ctx.inputs), bool)
    real = ctx.scorer.inception_features(ctx.real_target)[train]
    inside = kynkaenniemi_inside(ctx.get("features_out"), real, K_NEAREST)
    return inside & ctx.get("face_found")


_PER_FACE: dict[str, Callable[[TaskContext], Any]] = {
    "face_found": lambda c: c.on_present(c.fake, c.scorer.faces_found, False).astype(bool),
    "face_found_in": lambda c: c.scorer.faces_found(c.inputs),
    "age_in": lambda c: c.scorer.estimate_ages(c.inputs),
    "age_out": lambda c: c.on_present(c.fake, c.scorer.estimate_ages, np.nan).astype(np.float64),
    "in_target": lambda c: stats.in_range(c.get("age_out"), c.target_bounds) & c.get("face_found"),
    "cycle": lambda c: c.cycle,
    "age_real_target_test": lambda c: c.scorer.estimate_ages(c.real_target_test),
    "age_source_real": _source_ages,
    "age_target_real": lambda c: _found_ages(c.get("age_real_target_test"), c.scorer.faces_found(c.real_target_test)),
    "gap": lambda c: stats.real_gap(c.get("age_source_real"), c.get("age_target_real")),
    "closure": lambda c: stats.gap_closure(
        c.get("age_in"), np.where(c.get("face_found"), c.get("age_out"), np.nan), c.get("gap")
    ),
    "age_score": lambda c: stats.age_scores(c.get("closure")),
    "features_out": lambda c: c.on_present(c.fake, c.scorer.inception_features, np.nan).astype(np.float64),
    "realistic": _realistic,
}


@dataclasses.dataclass
class MetricResult:
    """What a metric returns: `values` (name -> number; intervals go to `ctx.ci`), `per_face` ((N,) arrays
    row-aligned with the inputs, kept for the report), `rates` ((N,) 0/1 float arrays broken down by
    gender and race)."""

    values: dict[str, Any]
    per_face: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    rates: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Metric:
    """A registered task metric: the per-face values it `needs` (`TaskContext.get` names) and `compute`."""

    needs: tuple[str, ...]
    compute: Callable[[TaskContext], MetricResult]
    doc: str = ""

    def __call__(self, ctx: TaskContext) -> MetricResult:
        return self.compute(ctx)


def _face(ctx: TaskContext) -> MetricResult:
    found = ctx.get("face_found")
    return MetricResult(
        {
            keys.KEY_METRIC_FACE_FAIL: int((~found).sum()),
            keys.KEY_METRIC_FACE_FOUND_IN: ctx.rate(keys.KEY_METRIC_FACE_FOUND_IN, ctx.get("face_found_in") * 1.0),
        },
        per_face={keys.KEY_FACE_FOUND: found.astype(np.float64)},
    )


def _age(ctx: TaskContext) -> MetricResult:
    age_in, age_out, found = ctx.get("age_in"), ctx.get("age_out"), ctx.get("face_found")
    in_target = ctx.get("in_target")
    out_ok = np.isfinite(age_out) & found
    closure, score = ctx.get("closure"), ctx.get("age_score")
    values: dict[str, Any] = {
        # Protocol 3: the age change against the real gap G (per output closure and age_score).
        keys.KEY_METRIC_AGE_SCORE: ctx.mean(keys.KEY_METRIC_AGE_SCORE, score),
        keys.KEY_METRIC_GAP_CLOSURE: ctx.mean(keys.KEY_METRIC_GAP_CLOSURE, closure, np.isfinite(closure)),
        keys.KEY_METRIC_GAP: ctx.get("gap"),
        keys.KEY_METRIC_AGE_ACC: ctx.rate(keys.KEY_METRIC_AGE_ACC, in_target.astype(np.float64)),
        keys.KEY_METRIC_AGE_MEAN: ctx.mean(keys.KEY_METRIC_AGE_MEAN, age_out, out_ok),
        keys.KEY_METRIC_AGE_GAIN: ctx.mean(keys.KEY_METRIC_AGE_GAIN, age_out - age_in, out_ok & np.isfinite(age_in)),
        # Estimator failures on outputs that exist (a missing output is counted in `missing`).
        keys.KEY_METRIC_AGE_FAIL: int((~np.isfinite(age_out) & ctx.present).sum()),
    }
    age_real = ctx.get("age_real_target_test")
    real_idx = _resamples(len(age_real), ctx.scorer)
    values[keys.KEY_METRIC_AGE_ACC_REAL] = ctx.rate(
        keys.KEY_METRIC_AGE_ACC_REAL, stats.in_range(age_real, ctx.target_bounds).astype(np.float64), index=real_idx
    )
    acc, acc_real = values[keys.KEY_METRIC_AGE_ACC], values[keys.KEY_METRIC_AGE_ACC_REAL]
    values[keys.KEY_METRIC_AGE_ACC_REL] = acc / acc_real if acc_real else float("nan")
    return MetricResult(
        values,
        per_face={
            keys.KEY_FACE_AGE_IN: age_in,
            keys.KEY_FACE_AGE_OUT: age_out,
            "closure": closure,
            keys.KEY_FACE_AGE_SCORE: score,
        },
        rates={keys.KEY_METRIC_AGE_ACC: in_target.astype(np.float64)},
    )


def _realism(ctx: TaskContext) -> MetricResult:
    realistic = ctx.get("realistic").astype(np.float64)
    values: dict[str, Any] = {
        keys.KEY_METRIC_REALISM: ctx.rate(keys.KEY_METRIC_REALISM, realistic),
        keys.KEY_N_MANIFOLD: int(ctx.real_target_train.sum()),
    }
    return MetricResult(values, per_face={keys.KEY_FACE_REALISTIC: realistic})


def identity_metric(
    judge: str, suffix: str = "", per_face_key: str = keys.KEY_FACE_ID_SIM, mean_key: str = keys.KEY_METRIC_ID_SIM
) -> Metric:
    """id_rate{suffix} (verified by `judge`; failures count as not verified), the mean score over computed
    pairs (`mean_key`: id_sim for a cosine judge, id_dist for a distance judge) and id_fail{suffix}."""

    def compute(ctx: TaskContext) -> MetricResult:
        v = ctx.get(f"verification:{judge}")
        rate = keys.KEY_METRIC_ID_RATE + suffix
        values = {
            rate: ctx.rate(rate, v.same.astype(np.float64)),
            mean_key: ctx.mean(mean_key, v.score, ~v.failed),
            keys.KEY_METRIC_ID_FAIL + suffix: int(v.failed.sum()),
        }
        rates = {rate: v.same.astype(np.float64)} if not suffix else {}
        per_face = {per_face_key: v.score, keys.KEY_FACE_VERIFIED + suffix: v.same.astype(np.float64)}
        return MetricResult(values, per_face=per_face, rates=rates)

    return Metric((f"verification:{judge}", "face_found"), compute, f"identity by {judge}")


def joint_metric(judge: str, suffix: str = "") -> Metric:
    """joint{suffix} (protocol 3): joint_i = verified_i (by `judge`) x age_score_i x realistic_i, mean over all
    outputs. For the judge itself (no suffix) also `joint_decade`, version 2's joint (in the target age group
    and verified), reported, not ranked."""

    def compute(ctx: TaskContext) -> MetricResult:
        verified = ctx.get(f"verification:{judge}").same
        joint = verified * ctx.get("age_score") * ctx.get("realistic")
        name = keys.KEY_METRIC_JOINT + suffix
        values = {name: ctx.mean(name, joint)}
        if suffix:  # a second opinion: its joint only, kept out of the paired comparisons and breakdowns
            return MetricResult(values)
        decade = (ctx.get("in_target") & verified).astype(np.float64)
        values[keys.KEY_METRIC_JOINT_DECADE] = ctx.rate(keys.KEY_METRIC_JOINT_DECADE, decade)
        extra = {name: joint, keys.KEY_METRIC_JOINT_DECADE: decade}
        return MetricResult(values, per_face=extra, rates=extra)

    return Metric(("in_target", "age_score", "realistic", f"verification:{judge}"), compute, f"joint with {judge}")


def _fid(ctx: TaskContext) -> MetricResult:
    fake = ctx.fake
    values: dict[str, Any] = {keys.KEY_N_REAL_TARGET: len(ctx.real_target)}
    if not ctx.present.all():  # missing outputs are left out of the features, never scored as placeholders
        fake = fake[torch.from_numpy(np.flatnonzero(ctx.present))]
    if ctx.masked:
        values[keys.KEY_FID_N] = len(fake)
    r = ctx.scorer.fid_kid(ctx.real_target, fake)
    return MetricResult(
        {**values, **{k: r[k] for k in (keys.KEY_METRIC_FID, keys.KEY_METRIC_KID_MEAN, keys.KEY_METRIC_KID_STD)}}
    )


def _cycle(ctx: TaskContext) -> MetricResult:
    # No round trips at all: cycle_l1 is absent, never 0.
    if ctx.cycle is None or not ctx.cycle_present.any():
        return MetricResult({})
    l1 = stats.cycle_l1(ctx.inputs.numpy(), ctx.cycle.numpy())
    return MetricResult({keys.KEY_METRIC_CYCLE_L1: ctx.mean(keys.KEY_METRIC_CYCLE_L1, l1, ctx.cycle_present)})


face_metric = Metric(("face_found", "face_found_in"), _face, "face_fail: outputs where YuNet finds no face")
age_metric = Metric(
    ("age_in", "age_out", "face_found", "in_target", "closure", "age_score"),
    _age,
    "age_score, gap_closure (against the real gap), age_acc, age_mean, age_gain, ceiling",
)
realism_metric = Metric(("realistic",), _realism, "realism: improved precision (k = 3) against real train faces")
identity_sface = identity_metric("sface")
joint_sface = joint_metric("sface")
identity_dlib = identity_metric("dlib", "_dlib", per_face_key="id_dist", mean_key="id_dist_dlib")
joint_dlib = joint_metric("dlib", "_dlib")
identity_facenet = identity_metric("facenet", "_facenet", per_face_key="id_dist_facenet", mean_key="id_dist_facenet")
joint_facenet = joint_metric("facenet", "_facenet")
fid_metric = Metric((), _fid, "fid, kid_mean, kid_std against all real faces of the target group")
cycle_metric = Metric(("cycle",), _cycle, "cycle_l1")


def _resamples(n: int, scorer: Scorer) -> np.ndarray:
    if n == 0:
        return np.zeros((0, 0), np.int64)
    return scorer.bootstrap.indices(n)


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
    metrics: Sequence[Metric] | dict[str, Metric],
    per_face: dict[str, np.ndarray] | None = None,
    present: np.ndarray | None = None,
    cycle_present: np.ndarray | None = None,
    real_source_test: torch.Tensor | None = None,
    real_target_train: np.ndarray | None = None,
) -> dict[str, Any]:
    """Score one task (PROTOCOL.md s.4) with the given metrics (resolved by the caller from the registry).

    Args:
        inputs: (N, 3, S, S) uint8, the test faces of the source group (S = evaluation size, 128).
        fake: (N, 3, S, S) uint8, the method's outputs, row-aligned with `inputs`.
        cycle: (N, 3, S, S) uint8 round trips, or None.
        real_target: (M, 3, S, S) uint8, all real faces of the target group (train and test), for FID/KID.
        real_target_test: (K, 3, S, S) uint8, real test faces of the target group (estimator ceiling, real gap).
        target_bounds: inclusive age bounds of the target group.
        gender, race: (N,) labels of the inputs ("0"/"1"; "0".."4"/"unknown").
        metrics: `Metric`s (or name -> Metric, names used in error messages only).
        per_face: when given, filled with the metrics' (N,) per-face arrays (e.g. `age_in`, `age_out`,
            `face_found`, `id_sim`, `id_dist`, `joint`), row-aligned with `inputs`.
        present: (N,) bool, the outputs that exist (None: all). A missing output (its row of `fake` is a
            placeholder no network sees) fails every per-face metric as a no-face output does: outside the
            target group, not verified, not joint, counted in face_fail/id_fail, left out of age_mean,
            age_gain and id_sim, and left out of FID/KID. Given a mask, the result has `missing` and `fid_n`.
        cycle_present: (N,) bool, the round trips that exist (None: all of `cycle`); cycle_l1 is their mean,
            absent when there are none; given a mask (and round trips), the result has `cycle_missing`.
        real_source_test: (Ks, 3, S, S) uint8, real test faces of the source group for the real gap G (None:
            `inputs`, which a pipeline task's inputs are).
        real_target_train: (M,) bool, the rows of `real_target` that are train faces: the realism manifold
            (None: all of them).
    Returns:
        {"n", metric: value, ..., "ci95": {metric: [lo, hi]}, "ci_wilson": [metrics whose interval is Wilson's],
        "breakdown": {"gender": ..., "race": ...}}.
    Raises:
        KeyError: a metric needs a per-face value (e.g. a judge) this scorer cannot serve.
    """
    if fake.shape != inputs.shape:
        raise ValueError(f"outputs {tuple(fake.shape)} do not match inputs {tuple(inputs.shape)}")
    named = dict(metrics) if isinstance(metrics, dict) else {str(i): m for i, m in enumerate(metrics)}
    ctx = TaskContext(
        scorer,
        inputs,
        fake,
        cycle,
        real_target,
        real_target_test,
        tuple(target_bounds),
        _resamples(len(inputs), scorer),
        present,
        cycle_present,
        real_source_test,
        real_target_train,
    )
    for name, m in named.items():
        missing = [need for need in m.needs if not ctx.available(need)]
        if missing:
            raise KeyError(f"metric {name!r} needs {', '.join(missing)}, which this scorer cannot compute")
    out: dict[str, Any] = {keys.KEY_N: len(inputs)}
    if ctx.masked:
        out[keys.KEY_MISSING] = int((~ctx.present).sum())
    if cycle_present is not None and cycle is not None and ctx.cycle_present.any():
        out[keys.KEY_CYCLE_MISSING] = int((~ctx.cycle_present).sum())
    rates: dict[str, np.ndarray] = {}
    for m in named.values():
        res = m(ctx)
        out.update(res.values)
        rates.update(res.rates)
        if per_face is not None:
            per_face.update(res.per_face)
    out[keys.KEY_CI95] = ctx.ci
    if ctx.wilson:
        out[keys.KEY_CI_WILSON] = sorted(set(ctx.wilson))
    if rates:
        out[keys.KEY_BREAKDOWN] = {
            "gender": stats.breakdown(rates, gender, GENDER_NAMES),
            "race": stats.breakdown(rates, race, RACE_NAMES),
        }
    return out
