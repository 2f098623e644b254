"""Paired comparison statistics (PROTOCOL.md s.6 v2): paired bootstrap interval, shared ranks, packed outcomes."""

from __future__ import annotations

import numpy as np
import pytest

from metrics import stats


def test_paired_difference_matches_a_hand_computation() -> None:
    a = np.array([1, 1, 0, 1], float)
    b = np.array([0, 1, 0, 0], float)
    idx = np.array([[0, 1, 2, 3], [0, 0, 0, 0], [1, 2, 2, 3]])
    # By hand: per-face differences d = [1, 0, 0, 1]; resample means 2/4, 4/4, 1/4 -> sorted [0.25, 0.5, 1.0];
    # numpy's linear percentile: 2.5% at position 0.05 -> 0.25 + 0.05 * 0.25; 97.5% at 1.95 -> 0.5 + 0.95 * 0.5.
    r = stats.paired_difference(a, b, idx)
    assert r["value"] == pytest.approx(0.5)
    assert r["ci95"] == pytest.approx([0.2625, 0.975])


def test_paired_interval_uses_the_same_resamples_as_the_per_method_intervals() -> None:
    rng = np.random.default_rng(1)
    a = (rng.random(300) < 0.6).astype(float)
    b = np.where(rng.random(300) < 0.9, a, 1 - a)  # strongly correlated with a: the same faces are easy or hard
    idx = stats.bootstrap_indices(300, 1000, 0)
    r = stats.paired_difference(a, b, idx)
    # Resample r of the difference is exactly (resample r of a) - (resample r of b).
    boots = a[idx].mean(1) - b[idx].mean(1)
    assert r["ci95"] == pytest.approx(list(np.percentile(boots, [2.5, 97.5])))
    # Pairing removes the shared face-to-face variation: the interval is narrower than an unpaired one.
    rng2 = np.random.Generator(np.random.PCG64(1))
    unpaired = a[idx].mean(1) - b[rng2.integers(0, 300, size=(1000, 300))].mean(1)
    lo, hi = np.percentile(unpaired, [2.5, 97.5])
    assert r["ci95"][1] - r["ci95"][0] < 0.6 * (hi - lo)


def test_paired_difference_rejects_misaligned_outcomes() -> None:
    with pytest.raises(ValueError, match="one shape"):
        stats.paired_difference(np.ones(3), np.ones(4), stats.bootstrap_indices(3, 10, 0))


def test_shared_ranks_follow_the_row_above() -> None:
    # rows sorted best first; entry i: interval of (row i-1) - (row i)
    diffs = [None, (-0.1, 0.2), (0.05, 0.3), (-0.01, 0.01), None, (0.0, 0.1)]
    assert stats.shared_ranks(diffs) == ["=1", "=1", "=3", "=3", "=5", "=5"]  # [0.0, 0.1] contains 0
    assert stats.shared_ranks([None, (0.01, 0.2), (float("nan"), 0.1)]) == ["1", "2", "3"]
    assert stats.shared_ranks([]) == []


def test_packed_outcomes_round_trip() -> None:
    x = np.array([True, False, False, True, True])
    assert stats.pack_outcomes(x) == "10011"
    assert np.array_equal(stats.unpack_outcomes("10011"), x.astype(float))
    with pytest.raises(ValueError, match="'0' and '1'"):
        stats.unpack_outcomes("10a1")
