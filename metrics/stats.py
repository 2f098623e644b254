"""Protocol statistics (PROTOCOL.md s.4): cycle error, joint score, bootstrap intervals, breakdowns.

Pure functions of arrays. Every rate and mean is reported with a 95% percentile-bootstrap interval
over the test faces (1,000 resamples, seed 0 by default); all metrics of one task share the same
resamples so their intervals are consistent with each other.
"""

from __future__ import annotations

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
