"""The `real` reference row (PROTOCOL.md s.5): floors at the same N, detection rate, false accepts, FG-NET."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import torch

from agebench.params.load import load_params
from agebench.pipeline.reference import (
    _gap_bins,
    different_person_pairs,
    false_accepts,
    fgnet_pairs,
    floor_split,
    real_floor,
    same_n_floor,
)
from metrics.fid import KidSettings, fid_kid_from_features
from metrics.scorer import Verification
from metrics.stats import BootstrapSettings
from tests.conftest import REPO


def feats(images: torch.Tensor) -> np.ndarray:
    """A stand-in for Inception: per-channel means and stds of each image, (N, 6) float64."""
    x = images.double()
    return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1).numpy()


class StubJudge:
    """A "same person" when the mean colours are closer than `gap`; a dark image (no face) fails."""

    kind, threshold = "cosine", 0.5

    def __init__(self, gap: float) -> None:
        self.gap = gap

    def verify(self, da: np.ndarray, db: np.ndarray) -> Verification:
        da, db = da[:, 0], db[:, 0]
        failed = ~(np.isfinite(da) & np.isfinite(db))
        with np.errstate(invalid="ignore"):
            same = (np.abs(da - db) < self.gap) & ~failed
        return Verification(np.where(failed, np.nan, np.abs(da - db)), same, failed)


class StubScorer:
    """The parts of `metrics.scorer.Scorer` the reference row uses, as cheap functions of the pixels."""

    bootstrap = BootstrapSettings(200, 0)
    kid = KidSettings(10, 1000, 0)
    judges: ClassVar[dict[str, StubJudge]] = {"sface": StubJudge(5), "dlib": StubJudge(20)}

    def estimate_ages(self, images: torch.Tensor) -> np.ndarray:
        return images.double().mean((1, 2, 3)).numpy() / 255 * 80

    def faces_found(self, images: torch.Tensor) -> np.ndarray:
        return images.double().mean((1, 2, 3)).numpy() > 40

    def inception_features(self, images: torch.Tensor) -> np.ndarray:
        return feats(images)

    def judge(self, name: str) -> StubJudge:
        return self.judges[name]

    def descriptors(self, images: torch.Tensor, name: str) -> np.ndarray:
        d = images.double().mean((1, 2, 3)).numpy()
        return np.where(d < 40, np.nan, d)[:, None]

    def verify(self, a: torch.Tensor, b: torch.Tensor, name: str) -> Verification:
        return self.judges[name].verify(self.descriptors(a, name), self.descriptors(b, name))


@pytest.fixture()
def dataset() -> tuple[pd.DataFrame, np.ndarray]:
    """300 tiny faces: index rows with ages, the pair scheme and a test split of every 4th face."""
    rng = np.random.default_rng(0)
    n = 300
    ages = rng.integers(15, 65, n)
    pair = np.where((ages >= 20) & (ages <= 29), "young", np.where((ages >= 50) & (ages <= 59), "old", ""))
    index = pd.DataFrame(
        {
            "row": np.arange(n),
            "file": [f"{a}_0_0_2017{i:06d}.jpg.chip.jpg" for i, a in enumerate(ages)],
            "age": ages,
            "split": np.where(np.arange(n) % 4 == 0, "test", "train"),
            "pair": pair,
        }
    )
    faces = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
    return index, faces


def test_floor_split_draws_n_with_seed_0_and_keeps_the_rest() -> None:
    picked, rest = floor_split(100, 30)
    assert len(picked) == 30 and len(rest) == 70
    assert not set(picked) & set(rest) and sorted([*picked, *rest]) == list(range(100))
    expect = np.sort(np.random.Generator(np.random.PCG64(0)).choice(100, size=30, replace=False))
    assert np.array_equal(picked, expect)
    assert not np.array_equal(floor_split(100, 30, seed=1)[0], picked)


def test_real_floor_uses_each_tasks_number_of_outputs(dataset) -> None:
    index, faces = dataset
    params = load_params(REPO / "params.yaml")
    scorer = StubScorer()
    per_face: dict[str, np.ndarray] = {}
    out = real_floor(scorer, params, index, faces, per_face)
    test = index["split"] == "test"
    for task, t in params.tasks.items():
        res = out[task]
        n_outputs = int(((index["pair"] == t.source) & test).sum())  # one output per source-group test face
        target = index.loc[index["pair"] == t.target, "row"].to_numpy()
        assert res["n_floor"] == n_outputs and res["n_rest"] == len(target) - n_outputs
        # Independently: the group's features in index order, N positions drawn with seed 0, the rest as the
        # real side (the methods' argument order), the KID settings of the scorer.
        f = feats(torch.from_numpy(faces[target]).permute(0, 3, 1, 2))
        pick = np.sort(np.random.Generator(np.random.PCG64(0)).choice(len(target), size=n_outputs, replace=False))
        rest = np.setdiff1d(np.arange(len(target)), pick)
        want = fid_kid_from_features(f[rest], f[pick], KidSettings(10, 1000, 0))
        assert res["fid"] == pytest.approx(want["fid"], rel=1e-12)
        assert res["kid_mean"] == pytest.approx(want["kid_mean"], rel=1e-12)
        test_target = index.loc[(index["pair"] == t.target) & test, "row"].to_numpy()
        assert res["face_found_rate"] == pytest.approx(
            faces[test_target].reshape(len(test_target), -1).mean(1).__gt__(40).mean()
        )
        assert np.array_equal(per_face[f"{task}/rows"], test_target)


def test_floor_without_enough_faces_says_why() -> None:
    res = same_n_floor(np.zeros((5, 6)), 4, StubScorer())
    assert np.isnan(res["fid"]) and "too few" in res["floor_skipped"] and res["n_floor"] == 4


def test_different_person_pairs_skip_identical_faces(dataset) -> None:
    index, faces = dataset
    faces = faces.copy()
    test_rows = index.loc[index["split"] == "test", "row"].to_numpy()
    faces[test_rows[1]] = faces[test_rows[0]]  # a planted byte-identical duplicate inside the test split
    pairs = different_person_pairs(index, faces, 2000, 0)
    assert len(pairs) > 1500
    assert len({tuple(sorted(p)) for p in pairs.tolist()}) == len(pairs)  # no pair twice
    assert all(not np.array_equal(faces[a], faces[b]) for a, b in pairs)
    assert {tuple(sorted(p)) for p in pairs.tolist()}.isdisjoint({tuple(sorted(test_rows[:2]))})
    assert set(pairs.ravel()) <= set(test_rows)
    assert np.array_equal(different_person_pairs(index, faces, 50, 0), pairs[:50])  # seeded, prefix-stable


def test_false_accepts_reports_every_judge(dataset) -> None:
    index, faces = dataset
    out = false_accepts(StubScorer(), index, faces, n_pairs=40)
    assert out["pairs"] == 40 and set(out["judges"]) == {"sface", "dlib"}
    pairs = different_person_pairs(index, faces, 40, 0)
    mean = faces.reshape(len(faces), -1).mean(1)
    d = np.abs(mean[pairs[:, 0]] - mean[pairs[:, 1]])
    failed = (mean[pairs[:, 0]] < 40) | (mean[pairs[:, 1]] < 40)
    assert out["judges"]["sface"]["false_accept_rate"] == pytest.approx(((d < 5) & ~failed).mean())
    assert out["judges"]["dlib"]["false_accept_rate"] == pytest.approx(((d < 20) & ~failed).mean())
    assert out["judges"]["sface"]["id_fail"] == failed.sum()


def test_age_gap_bins_by_hand() -> None:
    subjects, ages = ["001", "001", "001", "002", "002"], [2, 5, 40, 10, 12]
    same = np.ones((5, 5), bool)
    same[0, 2] = same[1, 2] = False
    failed = np.zeros((5, 5), bool)
    failed[1, 2] = True
    score = np.full((5, 5), 0.5)
    score[1, 2] = np.nan
    bins = _gap_bins(subjects, ages, score, same, failed, "score")
    # Same-subject pairs: (0,1) gap 3 and (3,4) gap 2 -> 0-5; (0,2) gap 38 and (1,2) gap 35 -> >30.
    assert bins["0-5"] == {"pairs": 2, "id_rate": 1.0, "id_fail": 0, "score": 0.5}
    assert bins[">30"] == {"pairs": 2, "id_rate": 0.0, "id_fail": 1, "score": 0.5}
    assert bins["6-15"]["pairs"] == 0 and np.isnan(bins["6-15"]["id_rate"])


@pytest.mark.real_data
@pytest.mark.slow
def test_fgnet_with_both_judges(fgnet_dir: Path, one_torch_thread) -> None:
    from agebench.params.sections import EvaluateConfig
    from agebench.pipeline.scoring import second_opinion, sface_parts
    from metrics.scorer import Scorer

    detect, judge, _ = sface_parts()
    name, second = second_opinion(EvaluateConfig())
    scorer = Scorer(ages=None, detect=detect, judges={"sface": judge, name: second}, inception=None)
    out = fgnet_pairs(fgnet_dir, scorer)
    assert out["images"] == 55 and set(out) >= {"sface", "dlib"}
    for j in ("sface", "dlib"):
        bins = out[j]["by_age_gap"]
        assert sum(b["pairs"] for b in bins.values()) == sum(b["pairs"] for b in out["sface"]["by_age_gap"].values())
        assert all(0 <= b["id_rate"] <= 1 for b in bins.values() if b["pairs"])
        assert out[j]["faces_found"] >= 40
    assert out["sface"]["rule"] == "cosine" and out["dlib"]["rule"] == "distance"
    # Real aging lowers the identity score: close ages are verified at least as often as gaps over 30 years.
    for j in ("sface", "dlib"):
        bins = out[j]["by_age_gap"]
        assert bins["0-5"]["id_rate"] >= bins[">30"]["id_rate"]
