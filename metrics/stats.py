"""Protocol statistics (PROTOCOL.md s.4): cycle error, age against the real gap, bootstrap and Wilson
intervals, the two-level bootstrap over training seeds and faces, breakdowns.

Pure functions of arrays. Every rate and mean is reported with a 95% percentile-bootstrap interval
over the test faces (1,000 resamples, seed 0 by default); all metrics of one task share the same
resamples so their intervals are consistent with each other. Rates counted on few events get Wilson
intervals instead (`rate_with_ci`), which never collapse to a point.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # only a type hint here: the leaderboard command reads these functions without torch
    import torch


def cycle_l1(inputs: torch.Tensor | np.ndarray, cycled: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-image mean absolute difference in [0, 1] pixel units.

    Args:
        inputs, cycled: (N, H, W, 3) or (N, 3, H, W) uint8 in [0, 255], same layout.
    Returns:
        (N,) float64 in [0, 1].
    """
    a = np.asarray(inputs, dtype=np.float64)
    b = np.asarray(cycled, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cycle_l1: shapes differ: {a.shape} vs {b.shape}")
    return np.abs(a - b).reshape(len(a), -1).mean(axis=1) / 255.0


def in_range(ages: np.ndarray, bounds: tuple[int, int]) -> np.ndarray:
    """(N,) bool: estimated age inside the inclusive group bounds (NaN -> False).

    Estimates are continuous; a group [lo, hi] of integer ages covers [lo, hi + 1).
    """
    ages = np.asarray(ages, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return (ages >= bounds[0]) & (ages < bounds[1] + 1)


def bootstrap_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) int64 indices drawn with replacement (numpy PCG64 seeded with `seed`)."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.integers(0, n, size=(resamples, n), dtype=np.int64)


@dataclasses.dataclass(frozen=True)
class BootstrapSettings:
    """The face bootstrap's draw (PROTOCOL.md s.4; `evaluate.bootstrap_*` in params.yaml)."""

    resamples: int = 1000
    seed: int = 0

    def indices(self, n: int) -> np.ndarray:
        """(resamples, n) int64 indices, `bootstrap_indices` with these settings."""
        return bootstrap_indices(n, self.resamples, self.seed)


def mean_with_ci(values: np.ndarray, idx: np.ndarray, valid: np.ndarray | None = None) -> dict[str, object]:
    """Mean of `values` over `valid` entries with a 95% percentile-bootstrap interval.

    Args:
        values: (N,) float (rates as 0/1).
        idx: (B, N) resample indices from `bootstrap_indices`.
        valid: (N,) bool mask of entries that count (None: all).
    Returns:
        {"value": float, "ci95": [lo, hi], "n": count of valid entries}; NaN when nothing is valid.
    """
    values = np.asarray(values, dtype=np.float64)
    valid = np.ones(len(values), bool) if valid is None else np.asarray(valid, bool)
    n = int(valid.sum())
    if n == 0:
        return {"value": float("nan"), "ci95": [float("nan"), float("nan")], "n": 0}
    v = np.where(valid, values, 0.0)
    value = float(v.sum() / n)
    if idx.size == 0:
        return {"value": value, "ci95": [float("nan"), float("nan")], "n": n}
    num = v[idx].sum(axis=1)
    den = valid[idx].sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        boots = num / den
    boots = boots[np.isfinite(boots)]
    lo, hi = np.percentile(boots, [2.5, 97.5]) if len(boots) else (float("nan"), float("nan"))
    return {"value": value, "ci95": [float(lo), float(hi)], "n": n}


def breakdown(
    rates: Mapping[str, np.ndarray], labels: np.ndarray, names: Mapping[str, str] | None = None
) -> dict[str, dict[str, float]]:
    """Rates per label value: {label: {"n": count, rate_name: mean, ...}}.

    Args:
        rates: name -> (N,) float 0/1 per face.
        labels: (N,) label per face (e.g. gender "0"/"1").
        names: optional label -> display name.
    """
    labels = np.asarray(labels).astype(str)
    out: dict[str, dict[str, float]] = {}
    for lab in sorted(set(labels.tolist())):
        mask = labels == lab
        key = (names or {}).get(lab, lab)
        out[key] = {
            "n": int(mask.sum()),
            **{k: float(np.asarray(v, np.float64)[mask].mean()) for k, v in rates.items()},
        }
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, idx: np.ndarray) -> dict[str, object]:
    """Paired bootstrap 95% interval of mean(a) - mean(b) (PROTOCOL.md s.6, v2 paired comparison).

    Both methods translated the same test faces, so face k's outcome under method A and under method B
    are resampled together: resample r takes the faces `idx[r]` for BOTH, which cancels the
    face-to-face variation the two share (an unpaired interval would be much wider).

    Args:
        a, b: (N,) per-face outcomes of two methods on the same faces in the same order (0/1 for `joint`).
        idx: (B, N) resample indices from `bootstrap_indices(N, ...)` (the per-method intervals' own).
    Returns:
        {"value": mean(a) - mean(b), "ci95": [lo, hi]} (percentile interval; NaN when N is 0).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_difference: outcomes must be two (N,) arrays of one shape, got {a.shape}, {b.shape}")
    if len(a) == 0:
        return {"value": float("nan"), "ci95": [float("nan"), float("nan")]}
    value = float(a.mean() - b.mean())
    if idx.size == 0:
        return {"value": value, "ci95": [float("nan"), float("nan")]}
    d = a - b
    boots = d[idx].mean(axis=1)
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"value": value, "ci95": [float(lo), float(hi)]}


def shared_ranks(diff_with_above: list[tuple[float, float] | None]) -> list[str]:
    """Rank labels of rows already sorted best first, sharing a rank where the data cannot separate them.

    Args:
        diff_with_above: per row, the 95% interval [lo, hi] of (row above - this row); the first entry
            is ignored; None (or NaN bounds) means no paired comparison exists, and the row gets its own rank.
    Returns:
        Labels: a row whose interval contains 0 takes the rank of the row above; every member of a
        rank shared by several rows is written "=k", a rank held by one row "k". Rank k is the 1-based
        position of the group's first row (competition ranking: 1, =2, =2, 4).
    """
    ranks: list[int] = []
    for i, ci in enumerate(diff_with_above):
        tied = i > 0 and ci is not None and bool(np.isfinite(ci).all()) and ci[0] <= 0.0 <= ci[1]
        ranks.append(ranks[-1] if tied else i + 1)
    counts = {r: ranks.count(r) for r in ranks}
    return [f"={r}" if counts[r] > 1 else str(r) for r in ranks]


def pack_outcomes(outcomes: np.ndarray) -> str:
    """(N,) bool per-face outcomes as a string of "0"/"1" (how a metrics JSON stores them for pairing)."""
    return "".join("1" if v else "0" for v in np.asarray(outcomes, bool).tolist())


def unpack_outcomes(text: str) -> np.ndarray:
    """Inverse of `pack_outcomes`: (N,) float64 0/1; a character other than "0"/"1" is a ValueError."""
    if set(text) - {"0", "1"}:
        raise ValueError("per-face outcomes must be a string of '0' and '1'")
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.float64) - ord("0")


# ---- protocol 3 (PROTOCOL.md s.4 v3): age against the real gap, rare events, training seeds ----------------

#: Two-sided 95% normal quantile (Wilson intervals).
Z95 = 1.959963984540054
#: A 0/1 rate with fewer successes or fewer failures than this gets a Wilson interval (PROTOCOL.md s.4 v3).
RARE_EVENTS = 10


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score 95% interval of a binomial rate (Wilson 1927), for rates counted on few events.

    Unlike a percentile bootstrap it never collapses to a point: 0 of 300 gives [0, 0.0126].

    Args:
        successes: count in [0, n]; n: trials (0 gives (NaN, NaN)).
    Returns:
        (lo, hi) in [0, 1].
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    if not 0 <= successes <= n:
        raise ValueError(f"wilson_interval: successes {successes} outside [0, {n}]")
    p = successes / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, center - half)
    hi = 1.0 if successes == n else min(1.0, center + half)
    return (float(lo), float(hi))


def is_rare(successes: int, n: int) -> bool:
    """Whether a rate of `successes` in `n` is counted on few events (fewer than `RARE_EVENTS` successes or
    failures), so that it gets a Wilson interval instead of a bootstrap one."""
    return successes < RARE_EVENTS or n - successes < RARE_EVENTS


def rate_with_ci(outcomes: np.ndarray, idx: np.ndarray, valid: np.ndarray | None = None) -> dict[str, object]:
    """A 0/1 rate with its 95% interval: Wilson when rare (`is_rare`), else `mean_with_ci`'s bootstrap.

    Args:
        outcomes: (N,) 0/1 values; valid: (N,) bool entries that count (None: all); idx: as `mean_with_ci`.
    Returns:
        `mean_with_ci`'s dict plus "interval": "wilson" or "bootstrap".
    """
    outcomes = np.asarray(outcomes, dtype=np.float64)
    valid = np.ones(len(outcomes), bool) if valid is None else np.asarray(valid, bool)
    r = mean_with_ci(outcomes, idx, valid)
    n = int(valid.sum())
    k = round(float(outcomes[valid].sum())) if n else 0
    if n and is_rare(k, n):
        return {**r, "ci95": list(wilson_interval(k, n)), "interval": "wilson"}
    return {**r, "interval": "bootstrap"}


def gap_closure(age_in: np.ndarray, age_out: np.ndarray, gap: float) -> np.ndarray:
    """closure_i = (age_out_i - age_in_i) / G (PROTOCOL.md s.4 v3): 1 = moved as far as real faces of the target
    group are from real faces of the source group, 0 = no change, negative = the wrong way.

    Args:
        age_in, age_out: (N,) float64 estimated ages, NaN where there is none (no face in the output).
        gap: G of the task (negative for rejuvenation); 0 or NaN gives NaN everywhere.
    Returns:
        (N,) float64, NaN where either age is NaN.
    """
    a, b = np.asarray(age_in, np.float64), np.asarray(age_out, np.float64)
    if not np.isfinite(gap) or gap == 0:
        return np.full(a.shape, np.nan)
    return (b - a) / gap


def age_scores(closure: np.ndarray) -> np.ndarray:
    """age_score_i = max(0, 1 - |1 - closure_i|) (PROTOCOL.md s.4 v3): 1 at the real gap, 0 at no change or at
    twice the gap; 0 where closure is NaN (a no-face output has no closure and scores 0).

    Args:
        closure: (...) float64. Returns: same shape, float64 in [0, 1].
    """
    c = np.asarray(closure, np.float64)
    with np.errstate(invalid="ignore"):
        s = np.maximum(0.0, 1.0 - np.abs(1.0 - c))
    return np.where(np.isfinite(c), s, 0.0)


def real_gap(age_source: np.ndarray, age_target: np.ndarray) -> float:
    """G = mean est of real target-group test faces - mean est of real source-group test faces.

    Args:
        age_source, age_target: (Ns,), (Nt,) float64 estimated ages of the faces YuNet found (no NaN).
    Returns:
        G in years (NaN when either side is empty).
    """
    s, t = np.asarray(age_source, np.float64), np.asarray(age_target, np.float64)
    if not len(s) or not len(t):
        return float("nan")
    return float(t.mean() - s.mean())


def all_pairs_age_score(age_source: np.ndarray, age_target: np.ndarray, gap: float | None = None) -> float:
    """The age ceiling `age_score_real`: mean over ALL (x source, y target) pairs of age_score((y - x) / G).

    What outputs that look exactly like real target-group faces of other people would score. `gap` defaults
    to `real_gap(age_source, age_target)`.
    """
    s, t = np.asarray(age_source, np.float64), np.asarray(age_target, np.float64)
    g = real_gap(s, t) if gap is None else gap
    if not len(s) or not len(t):
        return float("nan")
    return float(age_scores(gap_closure(s[:, None], t[None, :], g)).mean())


def real_age_ceiling(age_source: np.ndarray, age_target: np.ndarray, resamples: int, seed: int) -> dict[str, object]:
    """`gap` and `age_score_real` with 95% percentile-bootstrap intervals (PROTOCOL.md s.4 v3, `real` row).

    The two groups are independent samples: each resample redraws the source faces and the target faces with
    replacement (one PCG64 generator seeded with `seed`: first a (B, Ns) draw, then a (B, Nt) draw) and
    recomputes G and the all-pairs mean with that resample's G.

    Args:
        age_source, age_target: (Ns,), (Nt,) float64 estimated ages of the real test faces YuNet found.
    Returns:
        {"gap", "age_score_real", "ci95": {"gap": [lo, hi], "age_score_real": [lo, hi]}}.
    """
    s, t = np.asarray(age_source, np.float64), np.asarray(age_target, np.float64)
    gap = real_gap(s, t)
    out: dict[str, object] = {"gap": gap, "age_score_real": all_pairs_age_score(s, t, gap)}
    nan2 = [float("nan"), float("nan")]
    if not len(s) or not len(t) or resamples < 1:
        out["ci95"] = {"gap": nan2, "age_score_real": nan2}
        return out
    rng = np.random.Generator(np.random.PCG64(seed))
    si = rng.integers(0, len(s), size=(resamples, len(s)), dtype=np.int64)
    ti = rng.integers(0, len(t), size=(resamples, len(t)), dtype=np.int64)
    diff = t[None, :] - s[:, None]  # (Ns, Nt): y - x for every pair
    gaps = np.empty(resamples)
    scores = np.empty(resamples)
    for b in range(resamples):
        cs = np.bincount(si[b], minlength=len(s)).astype(np.float64)
        ct = np.bincount(ti[b], minlength=len(t)).astype(np.float64)
        gaps[b] = ct @ t / len(t) - cs @ s / len(s)
        k = age_scores(diff / gaps[b]) if gaps[b] != 0 else np.zeros_like(diff)
        scores[b] = cs @ k @ ct / (len(s) * len(t))
    out["ci95"] = {
        "gap": [float(v) for v in np.percentile(gaps, [2.5, 97.5])],
        "age_score_real": [float(v) for v in np.percentile(scores, [2.5, 97.5])],
    }
    return out


def seed_stream(name: str) -> int:
    """A stable 64-bit integer of a row name: the per-method stream of `two_level_bootstrap`'s seed draws, so
    every method resamples its seeds independently and reproducibly."""
    import hashlib

    return int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")


@dataclasses.dataclass(frozen=True)
class TwoLevelBootstrap:
    """`two_level_bootstrap`'s result.

    Attributes:
        value: mean over seeds of each seed's mean over its counted faces (the method's value).
        ci95: (lo, hi) 2.5th and 97.5th percentiles of `replicates` (NaN when none is finite).
        replicates: (B,) float64, one value per resample (NaN where a resample had nothing to count);
            replicate b used the faces `bootstrap_indices(N, B, seed)[b]`, so the replicates of two methods
            on the same faces can be subtracted for a paired interval.
    """

    value: float
    ci95: tuple[float, float]
    replicates: np.ndarray


def two_level_bootstrap(values: np.ndarray, resamples: int, seed: int, stream: int = 0) -> TwoLevelBootstrap:
    """Two-level bootstrap over training seeds and test faces (PROTOCOL.md s.4 v3, "training seeds").

    Resample b draws S seeds with replacement (this method's own draw, from `stream`), then N faces with
    replacement: `bootstrap_indices(N, resamples, seed)[b]`, the draw of the one-level intervals, shared by every
    method so differences stay paired. Its value is the mean over the drawn seeds (with multiplicity) of each
    seed's mean over the drawn faces it counts. With S = 1 it is the one-level face bootstrap (`mean_with_ci`).

    Args:
        values: (S, N) float64 per-face values of S seeds on the same N faces (same order); NaN = not counted
            (e.g. `id_sim` where no pair could be computed).
        resamples: B (1,000 by default in params); seed: the face draw's seed (`evaluate.bootstrap_seed`).
        stream: this method's seed-draw stream (`seed_stream(method name)`); seed draws come from
            PCG64(SeedSequence([seed, stream])).
    Returns:
        `TwoLevelBootstrap`. For a paired interval of methods A and B (same N, same `seed`), take the percentiles
        of `A.replicates - B.replicates`.
    """
    v = np.asarray(values, np.float64)
    if v.ndim != 2:
        raise ValueError(f"two_level_bootstrap: values must be (S, N) per-face values, got shape {v.shape}")
    n_seeds, n = v.shape
    ok = np.isfinite(v)
    x = np.where(ok, v, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        per_seed = x.sum(1) / ok.sum(1)
    value = float(per_seed[np.isfinite(per_seed)].mean()) if np.isfinite(per_seed).any() else float("nan")
    nan2 = (float("nan"), float("nan"))
    if n == 0 or n_seeds == 0 or resamples < 1:
        return TwoLevelBootstrap(value, nan2, np.zeros(0))
    faces = bootstrap_indices(n, resamples, seed)
    counts = np.bincount((np.arange(resamples)[:, None] * n + faces).ravel(), minlength=resamples * n)
    counts = counts.reshape(resamples, n).astype(np.float64)  # (B, N) times each face was drawn
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))
    seeds = rng.integers(0, n_seeds, size=(resamples, n_seeds), dtype=np.int64)
    seed_counts = np.stack([np.bincount(r, minlength=n_seeds) for r in seeds]).astype(np.float64)  # (B, S)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (counts @ x.T) / (counts @ ok.T.astype(np.float64))  # (B, S) each seed on the drawn faces
    usable = np.isfinite(means) & (seed_counts > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        reps = (np.where(usable, means, 0.0) * seed_counts).sum(1) / np.where(usable, seed_counts, 0.0).sum(1)
    good = reps[np.isfinite(reps)]
    ci = tuple(float(q) for q in np.percentile(good, [2.5, 97.5])) if len(good) else nan2
    return TwoLevelBootstrap(value, ci, reps)  # type: ignore[arg-type]


def seed_spread(values: list[float]) -> dict[str, float]:
    """Spread of one metric over training seeds: {"min", "max", "sd"} (sample sd, 0 for one seed; NaN seeds
    are left out, all NaN gives NaN)."""
    v = np.asarray([np.nan if x is None else x for x in values], np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        nan = float("nan")
        return {"min": nan, "max": nan, "sd": nan}
    return {"min": float(v.min()), "max": float(v.max()), "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0}
