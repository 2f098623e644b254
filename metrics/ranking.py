"""Ranking maths of the leaderboard (PROTOCOL.md s.6 v3): pure numpy, no torch.

A method's per-face outcomes over its S training seeds form an (S, N) array; its bootstrap replicates come
from `metrics.stats.two_level_bootstrap` (each method's seeds resampled with replacement, then ONE face
resample shared by every method, so differences stay paired). `difference` turns two methods' replicates
into the paired interval of their difference; with S == 1 it is v2's paired face bootstrap.

Rank groups (v3): rows sorted best first; the first row leads group 1; each next row joins the current
group when the interval of (leader - row) contains 0, else it leads a new group whose rank is its 1-based
position. Comparing with the leader, never with the row above, stops chains (A = B, B = C, A > C).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

#: Percentiles of a 95% percentile-bootstrap interval.
CI_PERCENTILES = (2.5, 97.5)


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
        boots_a, boots_b: (B,) their bootstrap replicates over the SAME face resamples
            (`metrics.stats.two_level_bootstrap(...).replicates`).
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
