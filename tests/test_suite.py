"""Protocol maths of the scoring suite on synthetic tensors (stand-in networks, no real faces)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agebench.scoring import DiskCache
from metrics import stats
from metrics.suite import Scorer, images_key, score_task, verify_pairs


class CountingScorer(Scorer):
    """Deterministic stand-ins: age = mean red value / 3, descriptor = mean colour, features = pixels."""

    calls: dict[str, int]


class StandInInception(torch.nn.Module):
    """Same interface as torch-fidelity's extractor: uint8 batch -> (features,); counts its batches."""

    def __init__(self, calls: dict[str, int]) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))
        self.calls = calls

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        self.calls["inception"] += 1
        x = images.double().mean(dim=(2, 3))
        return (torch.cat([x, x**2 / 255, torch.sin(x)], dim=1) * self.scale.double(),)


def make_scorer(cache=None) -> CountingScorer:
    calls = {"age": 0, "id": 0, "inception": 0}

    def ages(x: torch.Tensor) -> np.ndarray:
        calls["age"] += 1
        a = x[:, 0].double().mean(dim=(1, 2)).numpy() / 3.0
        a[x.shape[-1] < 8] = np.nan
        return a

    def descriptors(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        calls["id"] += 1
        return x.double().mean(dim=(2, 3)).numpy() / 100.0, np.zeros(len(x), bool)

    s = CountingScorer(
        ages=ages, descriptors=descriptors, inception=StandInInception(calls), cache=cache, bootstrap_resamples=200
    )
    s.calls = calls
    return s


def faces(n: int, seed: int, lo: int = 0, hi: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi, (n, 3, 16, 16), generator=g, dtype=torch.uint8)


def labels(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.array(["0", "1"] * (n // 2) + ["0"] * (n % 2)), np.array(["0", "1", "2", "unknown"] * n)[:n]


def test_identity_output_scores_as_no_change() -> None:
    x = faces(30, 0)
    g, r = labels(30)
    out = score_task(make_scorer(), x, x.clone(), x.clone(), faces(20, 1), faces(10, 2), (50, 59), g, r)
    assert out["id_rate"] == 1.0 and out["id_dist"] == 0.0 and out["id_fail"] == 0
    assert out["cycle_l1"] == 0.0 and out["age_gain"] == 0.0
    assert out["joint"] == out["age_acc"]
    for name, (lo, hi) in out["ci95"].items():
        assert lo <= out[name] + 1e-12 and out[name] <= hi + 1e-12, name


def test_joint_is_conjunction_and_breakdowns_add_up() -> None:
    x = faces(40, 3)
    fake = faces(40, 4, 140, 170)  # mean red ~155 -> "age" ~ 52: mostly inside 50-59
    fake[::3] = faces(14, 5, 0, 30)[: len(fake[::3])]  # a third clearly outside
    g, r = labels(40)
    s = make_scorer()
    out = score_task(s, x, fake, None, faces(20, 1), faces(10, 2), (50, 59), g, r)
    ages = s.ages(fake)
    in_t = (ages >= 50) & (ages < 60)
    _, same, _ = verify_pairs(*s.descriptors(x), *s.descriptors(fake), 0.6)
    assert out["age_acc"] == pytest.approx(in_t.mean())
    assert out["joint"] == pytest.approx((in_t & same).mean())
    assert "cycle_l1" not in out
    for key in ("gender", "race"):
        parts = out["breakdown"][key]
        assert sum(p["n"] for p in parts.values()) == 40
        for m in ("age_acc", "id_rate", "joint"):
            assert sum(p[m] * p["n"] for p in parts.values()) / 40 == pytest.approx(out[m])
    assert set(out["breakdown"]["gender"]) == {"male", "female"}


def test_values_invariant_to_face_order() -> None:
    x, fake = faces(25, 6), faces(25, 7)
    g, r = labels(25)
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(0))
    a = score_task(make_scorer(), x, fake, fake, faces(20, 1), faces(10, 2), (50, 59), g, r)
    b = score_task(
        make_scorer(),
        x[perm],
        fake[perm],
        fake[perm],
        faces(20, 1),
        faces(10, 2),
        (50, 59),
        g[perm.numpy()],
        r[perm.numpy()],
    )
    # KID is left out: with subsets smaller than a set, torch-fidelity's draws depend on row order.
    for k in ("age_acc", "age_mean", "age_gain", "id_rate", "id_dist", "joint", "cycle_l1", "fid"):
        assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k  # float sums in another order


def test_failed_faces_count_as_not_verified_and_not_in_group() -> None:
    s = make_scorer()
    x = faces(4, 8)
    d = np.zeros((4, 3))
    dist, same, failed = verify_pairs(d, np.array([0, 1, 0, 0], bool), d + 0.1, np.array([0, 0, 0, 1], bool), 0.6)
    assert np.isnan(dist[[1, 3]]).all() and not same[[1, 3]].any() and same[[0, 2]].all()
    assert failed.tolist() == [False, True, False, True]
    ages = s.ages(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))
    assert not stats.in_range(ages, (0, 200)).any()
    del x


def test_cache_serves_repeated_sets_and_keys_depend_on_pixels(tmp_path) -> None:
    s = make_scorer(DiskCache(tmp_path))
    x, real = faces(10, 9), faces(12, 10)
    g, r = labels(10)
    score_task(s, x, x, x, real, real, (50, 59), g, r)
    first = dict(s.calls)
    out2 = score_task(s, x, x, x, real, real, (50, 59), g, r)
    assert s.calls == first  # every set (inputs, outputs, reals) came from the cache
    assert images_key(x, "a") != images_key(x, "b")
    y = x.clone()
    y[0, 0, 0, 0] ^= 1
    assert images_key(x, "a") != images_key(y, "a")
    assert out2["id_rate"] == 1.0


def test_unknown_metric_lists_valid_names() -> None:
    x = faces(4, 0)
    g, r = labels(4)
    with pytest.raises(KeyError, match="valid metrics: age, cycle, fid, identity, joint"):
        score_task(make_scorer(), x, x, x, x, x, (50, 59), g, r, ("age", "sharpness"))


def test_mean_with_ci_matches_explicit_bootstrap() -> None:
    rng = np.random.default_rng(0)
    v = (rng.random(37) < 0.3).astype(float)
    valid = rng.random(37) < 0.9
    idx = stats.bootstrap_indices(37, 500, seed=0)
    r = stats.mean_with_ci(v, idx, valid)
    boots = [v[i][valid[i]].mean() for i in idx if valid[i].any()]
    assert r["value"] == pytest.approx(v[valid].mean())
    assert r["ci95"] == pytest.approx(list(np.percentile(boots, [2.5, 97.5])))
    assert r["n"] == int(valid.sum())
    # Same seed, same resamples: intervals are reproducible.
    assert np.array_equal(idx, stats.bootstrap_indices(37, 500, seed=0))


def test_cycle_l1_and_group_bounds() -> None:
    a = np.zeros((2, 4, 4, 3), np.uint8)
    b = a.copy()
    b[1] = 255
    np.testing.assert_allclose(stats.cycle_l1(a, b), [0.0, 1.0])
    ages = np.array([19.99, 20.0, 29.99, 30.0, np.nan])
    assert stats.in_range(ages, (20, 29)).tolist() == [False, True, True, False, False]


def test_chunked_progress_path_gives_the_same_results(tmp_path) -> None:
    x, fake, real = faces(1100, 11), faces(1100, 12), faces(600, 13)
    g, r = labels(1100)
    plain = score_task(make_scorer(), x, fake, fake, real, real, (50, 59), g, r)
    s = make_scorer()
    s.progress = True  # sets above 512 images run in chunks
    chunked = score_task(s, x, fake, fake, real, real, (50, 59), g, r)
    for k in ("age_acc", "age_mean", "id_rate", "id_dist", "joint", "fid", "kid_mean", "cycle_l1"):
        assert chunked[k] == pytest.approx(plain[k], rel=1e-12), k
