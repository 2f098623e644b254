"""Protocol maths of the scoring suite on synthetic tensors (stand-in networks, no real faces)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agebench.infra.registry import METRICS, UnknownNameError, resolve_metrics
from agebench.pipeline.scoring import DiskCache
from metrics import stats
from metrics.scorer import Judge, Scorer, images_key, verify_pairs
from metrics.stats import BootstrapSettings
from metrics.suite import Metric, MetricResult, score_task

DEFAULT = ("face", "age", "identity", "realism", "joint", "identity_dlib", "joint_dlib", "fid", "cycle")


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


def flat(x: torch.Tensor) -> np.ndarray:
    """(N,) bool: the image has one colour (the stand-in detector finds no face there)."""
    return (x.double().flatten(2).std(2).amax(1) < 1.0).numpy()


def make_scorer(cache=None) -> Scorer:
    """Deterministic stand-ins: age = mean red / 3; a face unless the image is one flat colour; SFace stand-in
    = mean colour minus 128 (cosine, 0.363); dlib stand-in = mean colour / 100 (distance, 0.6)."""
    calls = {"age": 0, "detect": 0, "sface": 0, "dlib": 0, "inception": 0}

    def ages(x: torch.Tensor) -> np.ndarray:
        calls["age"] += 1
        a = x[:, 0].double().mean(dim=(1, 2)).numpy() / 3.0
        a[x.shape[-1] < 8] = np.nan
        return a

    def detect(x: torch.Tensor) -> np.ndarray:
        calls["detect"] += 1
        packed = np.zeros((len(x), 16))
        packed[:, 0] = ~flat(x)
        return packed

    def sface(x: torch.Tensor, packed: np.ndarray) -> np.ndarray:
        calls["sface"] += 1
        d = x.double().mean(dim=(2, 3)).numpy() - 128.0
        d[packed[:, 0] < 0.5] = np.nan  # no face, no embedding (as metrics.sface.embed)
        return d

    def dlib(x: torch.Tensor, _packed: np.ndarray) -> np.ndarray:
        calls["dlib"] += 1
        return x.double().mean(dim=(2, 3)).numpy() / 100.0  # reads every image, faces or not (as dlib does)

    s = Scorer(
        ages=ages,
        detect=detect,
        judges={"sface": Judge(sface, "cosine", 0.363, "s"), "dlib": Judge(dlib, "distance", 0.6, "d")},
        inception=StandInInception(calls),
        cache=cache,
        bootstrap=BootstrapSettings(200, 0),
    )
    s.calls = calls  # type: ignore[attr-defined]
    return s


def faces(n: int, seed: int, lo: int = 0, hi: int = 256) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(lo, hi, (n, 3, 16, 16), generator=g, dtype=torch.uint8)


def labels(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.array(["0", "1"] * (n // 2) + ["0"] * (n % 2)), np.array(["0", "1", "2", "unknown"] * n)[:n]


def score(s: Scorer, inputs, fake, cycle, real, real_test, bounds, g, r, names=DEFAULT, per_face=None) -> dict:
    return score_task(s, inputs, fake, cycle, real, real_test, bounds, g, r, resolve_metrics(names), per_face)


def test_identity_output_scores_as_no_change() -> None:
    x = faces(30, 0)
    g, r = labels(30)
    out = score(make_scorer(), x, x.clone(), x.clone(), faces(20, 1), faces(10, 2), (50, 59), g, r)
    assert out["id_rate"] == 1.0 and out["id_sim"] == pytest.approx(1.0) and out["id_fail"] == 0
    assert out["id_rate_dlib"] == 1.0 and out["id_dist_dlib"] == 0.0 and out["face_fail"] == 0
    assert out["cycle_l1"] == 0.0 and out["age_gain"] == 0.0
    assert out["joint_decade"] == out["age_acc"]
    # Protocol 3: no change closes none of the real gap, so it scores 0 on age and on the headline.
    assert out["gap_closure"] == 0.0 and out["age_score"] == 0.0 and out["joint"] == out["joint_dlib"] == 0.0
    for name, (lo, hi) in out["ci95"].items():
        assert lo <= out[name] + 1e-12 and out[name] <= hi + 1e-12, name


def test_joint_is_conjunction_and_breakdowns_add_up() -> None:
    x = faces(40, 3)
    fake = faces(40, 4, 140, 170)  # mean red ~155 -> "age" ~ 52: mostly inside 50-59
    fake[::3] = faces(14, 5, 0, 30)[: len(fake[::3])]  # a third clearly outside
    g, r = labels(40)
    s = make_scorer()
    out = score(s, x, fake, None, faces(20, 1), faces(10, 2), (50, 59), g, r)
    ages = s.ages(fake)
    in_t = (ages >= 50) & (ages < 60)
    sface = verify_pairs(
        s.judges["sface"].features(x, s.detect(x)), s.judges["sface"].features(fake, s.detect(fake)), 0.363, "cosine"
    )
    dlib = verify_pairs(s.judges["dlib"].features(x, None), s.judges["dlib"].features(fake, None), 0.6, "distance")
    assert 0 < sface.same.mean() < 1 and (in_t & sface.same).mean() > 0  # the example tells joint from its parts
    assert out["age_acc"] == pytest.approx(in_t.mean())
    assert out["joint_decade"] == pytest.approx((in_t & sface.same).mean())
    assert dlib.same.mean() > 0
    assert out["id_sim"] == pytest.approx(np.nanmean(sface.score))
    assert "cycle_l1" not in out
    for key in ("gender", "race"):
        parts = out["breakdown"][key]
        assert sum(p["n"] for p in parts.values()) == 40
        for m in ("age_acc", "id_rate", "joint", "joint_decade"):
            assert sum(p[m] * p["n"] for p in parts.values()) / 40 == pytest.approx(out[m])
    assert set(out["breakdown"]["gender"]) == {"male", "female"}


def test_outputs_without_a_face_fail_every_per_face_metric() -> None:
    """PROTOCOL.md s.4 face validity: flat outputs (no face found) fail age, identity (both judges) and joint,
    are left out of age_mean, age_gain and id_sim, and are counted in face_fail."""
    x = faces(12, 20)
    fake = x.clone()
    # Flat colours whose stand-in age (red / 3) is inside 50-59: the age network alone would accept them.
    fake[:4] = torch.tensor([160, 40, 200], dtype=torch.uint8)[:, None, None]
    g, r = labels(12)
    s = make_scorer()
    per_face: dict[str, np.ndarray] = {}
    out = score(s, x, fake, None, faces(20, 1), faces(10, 2), (0, 200), g, r, per_face=per_face)
    assert out["face_fail"] == 4 and out["id_fail"] == 4 and out["id_fail_dlib"] == 4
    assert out["age_acc"] == pytest.approx(8 / 12)  # every real face is in 0-200; the flat ones fail
    assert out["id_rate"] == out["id_rate_dlib"] == out["joint_decade"] == pytest.approx(8 / 12)
    assert out["age_mean"] == pytest.approx(s.ages(x[4:]).mean())  # flat ones left out
    assert out["age_gain"] == pytest.approx(0.0) and out["id_sim"] == pytest.approx(1.0)
    assert per_face["face_found"].tolist() == [0.0] * 4 + [1.0] * 8
    assert np.isnan(per_face["id_sim"][:4]).all() and np.isnan(per_face["id_dist"][:4]).all()
    assert set(per_face) == {
        "face_found", "age_in", "age_out", "closure", "age_score", "id_sim", "verified", "id_dist", "verified_dlib",
        "realistic", "joint", "joint_decade",
    }  # fmt: skip
    assert per_face["joint_decade"].tolist() == [0.0] * 4 + [1.0] * 8
    # No face: no closure, age_score 0, not realistic, joint 0 (PROTOCOL.md s.4 v3).
    assert np.isnan(per_face["closure"][:4]).all() and (per_face["age_score"][:4] == 0).all()
    assert (per_face["realistic"][:4] == 0).all() and (per_face["joint"][:4] == 0).all()


def test_values_invariant_to_face_order() -> None:
    x, fake = faces(25, 6), faces(25, 7)
    g, r = labels(25)
    perm = torch.randperm(25, generator=torch.Generator().manual_seed(0))
    a = score(make_scorer(), x, fake, fake, faces(20, 1), faces(10, 2), (50, 59), g, r)
    pg, pr = g[perm.numpy()], r[perm.numpy()]
    b = score(make_scorer(), x[perm], fake[perm], fake[perm], faces(20, 1), faces(10, 2), (50, 59), pg, pr)
    # KID is left out: with subsets smaller than a set, torch-fidelity's draws depend on row order.
    for k in ("age_acc", "age_mean", "age_gain", "id_rate", "id_sim", "id_dist_dlib", "joint", "cycle_l1", "fid"):
        assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k  # float sums in another order


def test_verification_rule_per_judge_kind() -> None:
    a = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [np.nan, np.nan], [0.0, 0.0]])
    b = np.array([[1.0, 0.1], [0.3, 1.0], [1.0, 0.0], [1.0, 0.0], [0.5, 0.0]])
    v = verify_pairs(a, b, 0.363, "cosine")
    np.testing.assert_allclose(v.score[:3], [1 / np.sqrt(1.01), 0.3 / np.sqrt(1.09), 1.0])
    assert v.same.tolist() == [True, False, True, False, False]  # a zero vector has no direction: not verified
    assert v.failed.tolist() == [False, False, False, True, False] and np.isnan(v.score[3])
    d = verify_pairs(a, b, 0.6, "distance")
    np.testing.assert_allclose(d.score[[0, 1, 2, 4]], [0.1, np.hypot(0.7, 1.0), 0.0, 0.5])
    assert d.same.tolist() == [True, False, True, False, True]
    with pytest.raises(ValueError, match="unknown verification kind"):
        verify_pairs(a, b, 0.5, "manhattan")  # type: ignore[arg-type]


def test_cache_serves_repeated_sets_and_keys_depend_on_pixels(tmp_path) -> None:
    s = make_scorer(DiskCache(tmp_path))
    x, real = faces(10, 9), faces(12, 10)
    g, r = labels(10)
    score(s, x, x, x, real, real, (50, 59), g, r)
    first = dict(s.calls)
    assert all(first[k] > 0 for k in first)
    out2 = score(s, x, x, x, real, real, (50, 59), g, r)
    assert s.calls == first  # every set (inputs, outputs, reals) and every network came from the cache
    assert images_key(x, "a") != images_key(x, "b")
    y = x.clone()
    y[0, 0, 0, 0] ^= 1
    assert images_key(x, "a") != images_key(y, "a")
    assert out2["id_rate"] == 1.0


def test_unknown_metric_lists_valid_names() -> None:
    with pytest.raises(UnknownNameError, match="valid metrics: age, cycle, face, fid, identity"):
        resolve_metrics(["age", "sharpness"])


def test_metric_needing_a_missing_judge_fails_before_scoring() -> None:
    x = faces(4, 0)
    g, r = labels(4)
    s = make_scorer()
    with pytest.raises(KeyError, match=r"identity_facenet.*verification:facenet"):
        score(s, x, x, x, x, x, (50, 59), g, r, names=("age", "identity_facenet"))
    assert s.calls["age"] == 0


def test_a_new_metric_is_a_peer_without_touching_score_task() -> None:
    """A metric defined outside the suite declares its needs and is scored and broken down like the others."""

    def compute(ctx) -> MetricResult:
        bright = (ctx.fake.double().mean(dim=(1, 2, 3)).numpy() > 127) & ctx.get("face_found")
        return MetricResult(
            {"bright": ctx.mean("bright", bright * 1.0)}, {"bright": bright * 1.0}, {"bright": bright * 1.0}
        )

    x, fake = faces(20, 30), faces(20, 31)
    g, r = labels(20)
    per_face: dict[str, np.ndarray] = {}
    out = score_task(
        make_scorer(), x, fake, None, x, x, (50, 59), g, r, {"bright": Metric(("face_found",), compute)}, per_face
    )
    expected = fake.double().mean(dim=(1, 2, 3)).numpy() > 127
    assert out["bright"] == pytest.approx(expected.mean()) and "bright" in out["ci95"]
    assert set(out["breakdown"]["gender"]["male"]) >= {"bright", "n"}
    assert per_face["bright"].tolist() == expected.astype(float).tolist()
    assert set(METRICS.names()) >= set(DEFAULT)


def test_fid_kid_notes_on_small_sets() -> None:
    from metrics.fid import KidSettings, fid_kid_caveats, fid_kid_from_features

    assert fid_kid_caveats(5000, 5000, 1000) == []
    notes = fid_kid_caveats(214, 214, 1000)
    assert len(notes) == 2 and "214 real and 214 generated" in notes[0] and "kid_std is 0" in notes[1]
    assert len(fid_kid_caveats(214, 702, 1000)) == 1  # the larger set still varies between subsets
    f = np.random.default_rng(0).normal(size=(6, 4))
    same = fid_kid_from_features(f, f[::-1].copy(), KidSettings(3, 1000, 0))
    assert same["kid_std"] == pytest.approx(0.0, abs=1e-15)  # the explained case, checked
    assert np.isnan(fid_kid_from_features(f[:1], f, KidSettings(3, 1000, 0))["fid"])


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
    plain = score(make_scorer(), x, fake, fake, real, real, (50, 59), g, r)
    s = make_scorer()
    s.progress = True  # sets above 512 images run in chunks
    chunked = score(s, x, fake, fake, real, real, (50, 59), g, r)
    for k in ("age_acc", "age_mean", "id_rate", "id_sim", "id_dist_dlib", "joint", "fid", "kid_mean", "cycle_l1"):
        assert chunked[k] == pytest.approx(plain[k], rel=1e-12), k


def test_missing_outputs_are_masked_and_fail_like_no_face_outputs() -> None:
    """PROTOCOL.md s.6 missing outputs: a `present` mask, not pixels, decides. A missing output's row here holds
    the input itself (a perfect output if anything scored it), yet it fails every per-face metric exactly as a
    no-face output does, never reaches a network, is left out of FID/KID and is counted in `missing`."""
    x = faces(12, 20)
    g, r = labels(12)
    real, real_test = faces(20, 1), faces(10, 2)
    no_face = x.clone()
    no_face[:4] = torch.tensor([160, 40, 200], dtype=torch.uint8)[:, None, None]
    ref = score(make_scorer(), x, no_face, None, real, real_test, (0, 200), g, r)
    present = np.array([False] * 4 + [True] * 8)
    s = make_scorer()
    seen: list[int] = []
    ages = s.ages
    s.ages = lambda imgs: (seen.append(len(imgs)), ages(imgs))[1]
    per_face: dict[str, np.ndarray] = {}
    out = score_task(
        s, x, x.clone(), None, real, real_test, (0, 200), g, r, resolve_metrics(DEFAULT), per_face, present=present
    )
    same = ("face_fail", "age_acc", "age_mean", "age_gain", "age_fail", "id_rate", "id_sim", "id_fail", "joint")
    for k in (*same, "id_rate_dlib", "id_dist_dlib", "id_fail_dlib", "joint_dlib", "breakdown"):
        assert out[k] == ref[k], k
    assert out["joint_decade"] == pytest.approx(8 / 12) and out["face_fail"] == 4
    assert out["missing"] == 4 and out["fid_n"] == 8 and "missing" not in ref and "fid_n" not in ref
    assert out["fid"] == make_scorer().fid_kid(real, x[4:])["fid"] != ref["fid"]
    assert sorted(seen) == [8, 10, 12]  # outputs: the 8 present rows only
    assert np.isnan(per_face["age_out"][:4]).all() and np.isfinite(per_face["age_out"][4:]).all()
    assert per_face["joint_decade"].tolist() == per_face["face_found"].tolist() == [0.0] * 4 + [1.0] * 8
    assert per_face["realistic"][:4].tolist() == [0.0] * 4 and per_face["age_score"][:4].tolist() == [0.0] * 4
    # Round trips have their own mask: cycle_l1 over the present ones; none present -> absent, never 0.
    cycle = x.clone()
    cycle[6:] = 255 - x[6:]
    half = np.array([True] * 6 + [False] * 6)
    out = score_task(s, x, x.clone(), cycle, real, real_test, (0, 200), g, r, resolve_metrics(["cycle"]),
                     cycle_present=half)  # fmt: skip
    assert out["cycle_l1"] == 0.0 and out["cycle_missing"] == 6 and "missing" not in out
    out = score_task(s, x, x.clone(), cycle, real, real_test, (0, 200), g, r, resolve_metrics(["cycle"]),
                     cycle_present=~np.ones(12, bool))  # fmt: skip
    assert "cycle_l1" not in out and "cycle_l1" not in out["ci95"]
    with pytest.raises(ValueError, match="present"):
        score_task(s, x, x, None, real, real_test, (0, 200), g, r, resolve_metrics(["face"]), present=present[:5])
