"""Ranking maths of the leaderboard (PROTOCOL.md s.4 "training seeds", s.6 v3): pure numpy, no torch.

A method's per-face outcomes over its S training seeds form an (S, N) array `J` (row k = seed k's
`per_face.joint`, faces in the task's input order). Its value is `J.mean()` (mean over seeds of the
per-seed means). Uncertainty comes from a paired two-level bootstrap:

- per resample b, each method's seeds are resampled with replacement (`seed_draws`: (B, S) positions);
- then the test faces, with ONE face resample `face_idx[b]` shared by every method of the task
  (`metrics.stats.bootstrap_indices`, v2's), so a difference between two methods stays paired.

`resampled_means` gives the B values of one method; a difference's interval is the percentile interval of
the difference of two methods' resampled values. With S == 1 this is exactly v2's paired face bootstrap.

Rank groups (v3): rows sorted best first; the first row leads group 1; each next row joins the current
group when the interval of (leader - row) contains 0, else it leads a new group whose rank is its 1-based
position. Comparing with the leader, never with the row above, stops chains (A = B, B = C, A > C).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: Percentiles of a 95% percentile-bootstrap interval.
CI_PERCENTILES = (2.5, 97.5)


def face_draws(n: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n) int64 face indices drawn with replacement: numpy PCG64 seeded with `seed`.

    The same draws as `metrics.stats.bootstrap_indices` (kept here so ranking needs no torch import).
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.integers(0, n, size=(resamples, n), dtype=np.int64)


def seed_draws(n_seeds: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, n_seeds) int64 seed positions drawn with replacement; all zeros when n_seeds == 1.

    Drawn from PCG64([seed, n_seeds]): a method's draws depend only on its number of seeds, never on file
    order or on which other methods are ranked beside it.
    """
    if n_seeds < 1:
        raise ValueError(f"seed_draws: need at least one seed, got {n_seeds}")
    if n_seeds == 1:
        return np.zeros((resamples, 1), np.int64)
    rng = np.random.Generator(np.random.PCG64([seed, n_seeds]))
    return rng.integers(0, n_seeds, size=(resamples, n_seeds), dtype=np.int64)


def resampled_means(values: np.ndarray, face_idx: np.ndarray, seed_idx: np.ndarray) -> np.ndarray:
    """(B,) two-level bootstrap values of one method: mean over drawn seeds of the face-resampled means.

    Args:
        values: (S, N) float per-face outcomes, one row per training seed (e.g. `joint` in [0, 1]).
        face_idx: (B, N) int face indices, shared by every method of the task.
        seed_idx: (B, S) int seed positions of this method (`seed_draws`).
    """
    values = np.asarray(values, np.float64)
    if values.ndim != 2 or face_idx.ndim != 2 or values.shape[1] != face_idx.shape[1]:
        raise ValueError(f"resampled_means: values (S, N), face_idx (B, N) disagree: {values.shape}, {face_idx.shape}")
    if seed_idx.shape != (face_idx.shape[0], values.shape[0]):
        raise ValueError(f"resampled_means: seed_idx must be (B, S) = {(face_idx.shape[0], values.shape[0])}")
    b, n = face_idx.shape
    # Face counts per resample turn the face resample into one matrix product: (S, N) @ (N, B) -> (S, B).
    flat = (np.arange(b, dtype=np.int64)[:, None] * n + face_idx).ravel()
    counts = np.bincount(flat, minlength=b * n).reshape(b, n).astype(np.float64)
    per_seed = values @ counts.T / n
    return per_seed[seed_idx, np.arange(b)[:, None]].mean(axis=1)


def percentile_interval(boots: np.ndarray) -> tuple[float, float]:
    """95% percentile interval of bootstrap values (NaN, NaN when there are none)."""
    boots = np.asarray(boots, np.float64)
    if boots.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(boots, CI_PERCENTILES)
    return float(lo), float(hi)


def difference(a: np.ndarray, b: np.ndarray, boots_a: np.ndarray, boots_b: np.ndarray) -> dict[str, object]:
    """Paired difference mean(a) - mean(b) with its two-level interval.

    Args:
        a, b: (S_a, N), (S_b, N) per-face outcomes of two methods on the same faces.
        boots_a, boots_b: (B,) their `resampled_means` over the SAME face resamples.
    Returns:
        {"value": float, "ci95": [lo, hi]}.
    """
    lo, hi = percentile_interval(np.asarray(boots_a) - np.asarray(boots_b))
    return {"value": float(np.mean(a) - np.mean(b)), "ci95": [lo, hi]}


def separates(ci: Sequence[float] | None) -> bool:
    """True when an interval [lo, hi] is finite and excludes 0 (the data tell the two values apart)."""
    if ci is None or not np.isfinite(np.asarray(ci, np.float64)).all():
        return False
    return bool(ci[0] > 0.0 or ci[1] < 0.0)


def lies_above_zero(ci: Sequence[float] | None) -> bool:
    """True when an interval [lo, hi] is finite and lies entirely above 0."""
    return ci is not None and bool(np.isfinite(np.asarray(ci, np.float64)).all()) and ci[0] > 0.0


def rank_groups(n_rows: int, interval: Callable[[int, int], Sequence[float] | None]) -> list[int]:
    """v3 rank groups of rows sorted best first.

    Args:
        n_rows: number of rows.
        interval: `interval(leader, row) -> [lo, hi] | None`, the 95% interval of value(leader) - value(row)
            for 0-based positions; None or NaN bounds (no paired comparison possible) put the row in a group of
            its own, as v2 did.
    Returns:
        (n_rows,) ranks: the 1-based position of the row's group leader.
    """
    ranks: list[int] = []
    leader = 0
    for row in range(n_rows):
        if row > 0:
            ci = interval(leader, row)
            comparable = ci is not None and bool(np.isfinite(np.asarray(ci, np.float64)).all())
            if not comparable or separates(ci):
                leader = row
        ranks.append(leader + 1)
    return ranks


def rank_labels(ranks: Sequence[int]) -> list[str]:
    """ "k" for a rank held by one row, "=k" for every member of a rank shared by several rows."""
    counts = {r: list(ranks).count(r) for r in ranks}
    return [f"={r}" if counts[r] > 1 else str(r) for r in ranks]
