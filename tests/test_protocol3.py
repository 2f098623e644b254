"""Protocol 3 definitions (PROTOCOL.md s.4 v3) against brute-force references on synthetic data.

Age against the real gap, improved precision (realism), the v3 joint and its per-face record, Wilson
intervals, the two-level bootstrap over seeds and faces, and merging runs of different seeds.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from agebench.infra.registry import resolve_metrics
from agebench.params.load import load_params
from agebench.params.reading import ParamsError
from agebench.pipeline.evaluate import evaluate_method, reconstruction_rates
from agebench.pipeline.reference import real_floor
from agebench.pipeline.seeds import (
    PER_FACE_KEYS,
    SeedMergeError,
    merge_reconstruction,
    merge_seed_dirs,
    merge_seed_docs,
    per_face_record,
)
from agebench.pipeline.tasks import read_outputs
from metrics import stats
from metrics.precision import kynkaenniemi_inside, kynkaenniemi_precision, kynkaenniemi_radii
from metrics.scorer import verify_pairs
from metrics.suite import score_task
from tests.conftest import REPO
from tests.test_suite import make_scorer

# ---- improved precision ---------------------------------------------------------------------------------------


def brute_inside(f: np.ndarray, ref: np.ndarray, k: int) -> np.ndarray:
    """Kynkaenniemi et al. by the definition: all pairwise distances, sorted, no shortcut."""
    d_ref = np.array([[np.sqrt(((a - b) ** 2).sum()) for b in ref] for a in ref])
    radii = np.array([np.sort(np.delete(row, j))[k - 1] for j, row in enumerate(d_ref)])
    d = np.array([[np.sqrt(((a - b) ** 2).sum()) for b in ref] for a in f])
    return (d <= radii[None, :]).any(1)


@pytest.mark.parametrize("k", [1, 3, 5])
def test_precision_matches_brute_force_in_chunks(k: int) -> None:
    rng = np.random.default_rng(k)
    ref, f = rng.normal(size=(60, 7)), rng.normal(size=(45, 7)) * 1.3
    want = brute_inside(f, ref, k)
    assert 0 < want.mean() < 1  # the example separates inside from outside
    for chunk in (1, 7, 512):  # chunking (memory) changes nothing
        np.testing.assert_array_equal(kynkaenniemi_inside(f, ref, k, chunk=chunk), want)
    d_ref = np.linalg.norm(ref[:, None] - ref[None], axis=2)
    np.fill_diagonal(d_ref, np.inf)
    np.testing.assert_allclose(kynkaenniemi_radii(ref, k, chunk=5), np.sort(d_ref, 1)[:, k - 1], rtol=1e-12)
    assert kynkaenniemi_precision(f, ref, k) == pytest.approx(want.mean())


def test_precision_properties() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(50, 2048)) * 3 + 10  # FID-feature sized
    far = ref[:1] + 1e3
    on = ref[[3, 17]]
    assert kynkaenniemi_inside(on, ref).all()  # a point on a train point is realistic
    assert not kynkaenniemi_inside(far, ref).any()  # a far point is not
    assert not kynkaenniemi_inside(np.full((1, 2048), np.nan), ref).any()  # no feature: not realistic
    # Larger k: larger radii, so the manifold only grows.
    ref2, f = rng.normal(size=(50, 4)), rng.normal(size=(200, 4)) * 1.5
    inside = [kynkaenniemi_inside(f, ref2, k) for k in (1, 3, 10)]
    assert all((a <= b).all() for a, b in itertools.pairwise(inside)) and inside[0].sum() < inside[2].sum()
    with pytest.raises(ValueError, match="needs more than 3"):
        kynkaenniemi_radii(ref[:3], 3)


# ---- age against the real gap -----------------------------------------------------------------------------------


def test_age_score_edge_cases() -> None:
    closure = np.array([0.0, 1.0, 2.0, -1.0, 0.5, 1.5, 3.0, np.nan])
    np.testing.assert_array_equal(stats.age_scores(closure), [0, 1, 0, 0, 0.5, 0.5, 0, 0])
    # closure from ages: a rejuvenation gap is negative, the wrong way is negative closure.
    np.testing.assert_allclose(stats.gap_closure([50, 50, 50], [40, 60, np.nan], -20.0), [0.5, -0.5, np.nan])
    assert np.isnan(stats.gap_closure([20.0], [30.0], 0.0)).all()  # no gap: no closure, age_score 0
    assert stats.age_scores(stats.gap_closure([20.0], [30.0], float("nan"))).tolist() == [0.0]


def test_real_gap_and_ceiling_by_brute_force() -> None:
    rng = np.random.default_rng(3)
    src, tgt = rng.normal(28, 5, 40), rng.normal(48, 8, 25)
    g = tgt.mean() - src.mean()
    assert stats.real_gap(src, tgt) == pytest.approx(g, rel=1e-15)
    pairs = [max(0.0, 1 - abs(1 - (y - x) / g)) for x in src for y in tgt]
    assert stats.all_pairs_age_score(src, tgt) == pytest.approx(np.mean(pairs), rel=1e-12)
    r = stats.real_age_ceiling(src, tgt, 200, 0)
    # The interval by an explicit loop: draw the source faces, then the target faces, recompute G each time.
    rng2 = np.random.Generator(np.random.PCG64(0))
    si, ti = rng2.integers(0, 40, (200, 40)), rng2.integers(0, 25, (200, 25))
    gaps = [tgt[t].mean() - src[s].mean() for s, t in zip(si, ti, strict=True)]
    scores = [stats.all_pairs_age_score(src[s], tgt[t]) for s, t in zip(si, ti, strict=True)]
    assert r["ci95"]["gap"] == pytest.approx(list(np.percentile(gaps, [2.5, 97.5])), rel=1e-12)
    assert r["ci95"]["age_score_real"] == pytest.approx(list(np.percentile(scores, [2.5, 97.5])), rel=1e-12)
    assert r["ci95"]["gap"][0] < r["gap"] < r["ci95"]["gap"][1]


# ---- Wilson and the two-level bootstrap -------------------------------------------------------------------------


def test_wilson_known_values() -> None:
    lo, hi = stats.wilson_interval(0, 300)
    assert lo == 0.0 and hi == pytest.approx(0.0126, abs=5e-5)  # z^2 / (n + z^2)
    assert stats.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=5e-5)  # the textbook example
    assert stats.wilson_interval(300, 300)[1] == 1.0 and np.isnan(stats.wilson_interval(0, 0)[0])
    # Rare rates get Wilson, others the bootstrap.
    idx = stats.bootstrap_indices(300, 200, 0)
    rare = stats.rate_with_ci(np.r_[np.ones(3), np.zeros(297)], idx)
    assert rare["interval"] == "wilson" and rare["ci95"] == pytest.approx(list(stats.wilson_interval(3, 300)))
    common = stats.rate_with_ci(np.r_[np.ones(150), np.zeros(150)], idx)
    assert common["interval"] == "bootstrap"
    assert stats.rate_with_ci(np.r_[np.ones(295), np.zeros(5)], idx)["interval"] == "wilson"  # few failures


def test_two_level_bootstrap_by_explicit_resampling() -> None:
    rng = np.random.default_rng(5)
    v = rng.random((3, 30))
    v[1, 4] = np.nan  # not counted (e.g. id_sim where no pair could be computed)
    b = stats.two_level_bootstrap(v, 300, 0, stream=7)
    faces = stats.bootstrap_indices(30, 300, 0)
    seeds = np.random.Generator(np.random.PCG64(np.random.SeedSequence([0, 7]))).integers(0, 3, (300, 3))
    want = [np.mean([np.nanmean(v[s, faces[r]]) for s in seeds[r]]) for r in range(300)]
    np.testing.assert_allclose(b.replicates, want, rtol=1e-12)
    assert b.ci95 == pytest.approx(tuple(np.percentile(want, [2.5, 97.5])), rel=1e-12)
    assert b.value == pytest.approx(np.mean([np.nanmean(row) for row in v]))
    # One seed: the one-level face bootstrap of mean_with_ci.
    one = stats.two_level_bootstrap(v[:1], 300, 0, stream=123)
    assert one.ci95 == pytest.approx(tuple(stats.mean_with_ci(v[0], faces)["ci95"]), rel=1e-12)
    # Another method's stream draws other seeds; the face draw is shared, so replicates subtract for pairing.
    other = stats.two_level_bootstrap(v, 300, 0, stream=stats.seed_stream("other"))
    assert not np.allclose(other.replicates, b.replicates)
    assert stats.seed_spread([0.1, 0.3, 0.2]) == pytest.approx({"min": 0.1, "max": 0.3, "sd": 0.1})
    assert stats.seed_spread([0.4]) == {"min": 0.4, "max": 0.4, "sd": 0.0}


# ---- the suite on controlled stand-in faces ---------------------------------------------------------------------


def face(red: int, seed: int, size: int = 16, lo: int = 60, hi: int = 200) -> torch.Tensor:
    """A stand-in face: constant red (stand-in age = red / 3), noisy green and blue in [lo, hi) (so YuNet's
    stand-in sees a face; bright green and blue keep the SFace stand-in's identity when red changes)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(lo, hi, (3, size, size), generator=g, dtype=torch.uint8)
    x[0] = red
    return x


def test_v3_task_metrics_against_their_definitions() -> None:
    bright = {"lo": 200, "hi": 256}
    inputs = torch.stack([face(60, i, **bright) for i in range(6)])  # age 20
    real_target_test = torch.stack([face(150, 100 + i, **bright) for i in range(5)])  # age 50: G = 30
    real_train = torch.stack([face(int(r), 200 + i, **bright) for i, r in enumerate(np.linspace(90, 240, 12))])
    # Rows of the target group that are not train faces (here one a copy of an output) never join the manifold.
    real_target = torch.cat([real_train, real_target_test, face(15, 3, **bright)[None]])
    train_mask = np.r_[np.ones(12, bool), np.zeros(6, bool)]
    # closure 0 (no change), 1 (the real gap), 2 (twice), -0.5 (wrong way), 0.5, and a flat output (no face).
    fake = torch.stack([face(red, i, **bright) for i, red in enumerate((60, 150, 240, 15, 105, 0))])
    fake[5] = torch.tensor([150, 90, 90], dtype=torch.uint8)[:, None, None]
    s = make_scorer()
    per_face: dict[str, np.ndarray] = {}
    g, r = np.array(["0"] * 6), np.array(["0"] * 6)
    out = score_task(
        s, inputs, fake, None, real_target, real_target_test, (50, 59), g, r, resolve_metrics(
            ("face", "age", "identity", "realism", "joint", "fid")
        ), per_face, real_target_train=train_mask,
    )  # fmt: skip
    assert out["gap"] == pytest.approx(30.0, rel=1e-12)
    np.testing.assert_allclose(per_face["closure"][:5], [0, 1, 2, -0.5, 0.5], atol=1e-12)
    np.testing.assert_allclose(per_face["age_score"], [0, 1, 0, 0, 0.5, 0], atol=1e-12)
    assert np.isnan(per_face["closure"][5])
    assert out["age_score"] == pytest.approx(1.5 / 6) and out["gap_closure"] == pytest.approx(3.0 / 5)
    # realistic_i by brute force on the stand-in Inception features, against the TRAIN faces only.
    feats = s.inception_features
    realistic = brute_inside(feats(fake), feats(real_train), 3) & np.r_[np.ones(5, bool), False]
    np.testing.assert_array_equal(per_face["realistic"] > 0.5, realistic)
    assert not realistic[3] and realistic[1]  # output 3 is outside the train manifold, though a test row equals it
    assert out["realism"] == pytest.approx(realistic.mean())
    sf = s.judges["sface"]
    verified = verify_pairs(sf.features(inputs, s.detect(inputs)), sf.features(fake, s.detect(fake)), 0.363, "cosine")
    joint = (verified.same & np.r_[np.ones(5, bool), False]) * per_face["age_score"] * realistic
    assert joint[1] == 1.0 and joint[4] == 0.5  # the example exercises every factor
    np.testing.assert_allclose(per_face["joint"], joint)
    assert out["joint"] == np.mean(per_face["joint"])  # the headline is the mean of its per-face record
    assert out["joint_decade"] == pytest.approx(((per_face["age_out"] >= 50) & (per_face["age_out"] < 60) &
                                                 verified.same).mean())  # fmt: skip
    # Few events: Wilson intervals, named in ci_wilson.
    assert "realism" in out["ci_wilson"] and out["ci95"]["realism"][1] > out["ci95"]["realism"][0]


# ---- evaluate, reference and merge-seeds on a tiny prepared folder -----------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> dict:
    """A prepared folder (128 px stand-in faces: young age ~20-27, old ~47-56, a test split) and one method's
    outputs, scored by `evaluate_method` with the stand-in networks."""
    root = tmp_path_factory.mktemp("p3")
    prepared, outputs = root / "prepared", root / "outputs"
    prepared.mkdir()
    rng = np.random.default_rng(0)
    rows, imgs = [], []
    for i in range(48):
        old = i % 2 == 1
        red = int(rng.integers(141, 170) if old else rng.integers(60, 81))
        split = "test" if i % 3 == 0 else "train"
        rows.append({"row": i, "file": f"{'55' if old else '25'}_{i % 2}_0_2017{(97 * i) % 1000:06d}.jpg.chip.jpg",
                     "age": 55 if old else 25, "gender": i % 2, "race": "0", "split": split,
                     "pair": "old" if old else "young", "cgan6": "", "decades": ""})  # fmt: skip
        lo, hi = (0, 40) if i in (9, 12, 27) else (200, 256)  # three test faces unlike any train face
        imgs.append(face(red, i, 128, lo=lo, hi=hi).permute(1, 2, 0).numpy())
        if i == 15:  # a real old test face where YuNet finds no face: left out of the gap (its age would be 85)
            imgs[-1] = np.broadcast_to(np.array([255, 128, 128], np.uint8), imgs[-1].shape).copy()
    index = pd.DataFrame(rows)
    index.to_csv(prepared / "index.csv", index=False)
    faces = np.stack(imgs)
    np.save(prepared / "faces_128.npy", faces)
    params = load_params(REPO / "params.yaml")
    params = dataclasses.replace(params, evaluate=dataclasses.replace(params.evaluate, bootstrap_resamples=200))

    def write_outputs(folder: Path, shift: int) -> None:
        folder.mkdir()
        tasks = {}
        for task_id, t in params.tasks.items():
            src = index[(index["pair"] == t.source) & (index["split"] == "test")]["row"].to_numpy()
            fake = faces[src].copy()
            fake[..., 0] = np.clip(fake[..., 0].astype(int) + (shift if t.target == "old" else -shift), 0, 255)
            fake[0] = 128  # one flat output: no face
            np.savez(folder / f"{task_id}.npz", rows=src, fake=fake, cycle=faces[src])
            tasks[task_id] = {"scheme": t.scheme, "source": t.source, "target": t.target, "common": True,
                              "n": len(src)}  # fmt: skip
        (folder / "tasks.json").write_text(json.dumps({"method": "m", "resolution": 128, "train": {}, "tasks": tasks}))

    write_outputs(outputs, 85)
    write_outputs(root / "outputs_b", 60)
    return {"root": root, "prepared": prepared, "outputs": outputs, "params": params, "index": index, "faces": faces}


def run_eval(tiny_run: dict, outputs: Path, seed: int) -> dict:
    params = tiny_run["params"]
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, seed=seed))
    doc = evaluate_method("cyclegan_keras", params, tiny_run["prepared"], read_outputs(outputs), make_scorer())
    return json.loads(json.dumps(doc, default=float))  # as read back from the metrics file


def test_evaluate_writes_per_face_records_seeds_and_the_real_rows_gap(tiny_run) -> None:
    doc = run_eval(tiny_run, tiny_run["outputs"], seed=0)
    real = real_floor(make_scorer(), tiny_run["params"], tiny_run["index"], tiny_run["faces"])
    assert [e["seed"] for e in doc["seeds"]] == [0]
    for task, t in doc["tasks"].items():
        pf = t["per_face"]
        assert list(pf) == list(PER_FACE_KEYS) and pf["file"] == sorted(pf["file"]) and len(pf["file"]) == t["n"]
        assert t["joint"] == np.mean(pf["joint"]) and t["age_score"] == np.mean(pf["age_score"])
        assert t["realism"] == np.mean(pf["realistic"]) and t["id_rate"] == np.mean(pf["verified"])
        # Recomputed from the record and the real row alone (what an outside checker does).
        g = real[task]["gap"]
        assert (
            t["gap"]
            == g
            == np.mean(real[task]["per_face_real"]["age_target"]) - np.mean(real[task]["per_face_real"]["age_source"])
        )
        for i in range(t["n"]):
            a_in, a_out = pf["age_in"][i], pf["age_out"][i]
            want = 0.0 if a_out is None else max(0.0, 1 - abs(1 - (a_out - a_in) / g))
            assert pf["age_score"][i] == pytest.approx(want, abs=1e-12)
            assert pf["joint"][i] == pytest.approx(pf["verified"][i] * pf["age_score"][i] * pf["realistic"][i])
        flat = pf["face_found"].index(0)
        assert pf["age_out"][flat] is None and pf["age_score"][flat] == 0 and pf["realistic"][flat] == 0
        assert 0 < t["joint"] < 1 and t["seed_spread"]["joint"] == {"min": t["joint"], "max": t["joint"], "sd": 0.0}
        assert doc["seeds"][0]["tasks"][task]["per_face"] == pf and "joint_faces" not in t
        # The real row: its two sample sizes apart, its ceilings from its own per-face record.
        rt, prf = real[task], real[task]["per_face_real"]
        assert rt["n"] == len(prf["age_target"]) and rt["n_floor"] == t["n"]
        assert len(prf["age_source"]) + len(prf["age_target"]) == 15  # 16 test faces, one without a face
        assert rt["age_score_real"] == pytest.approx(stats.all_pairs_age_score(prf["age_source"], prf["age_target"]))
        assert rt["realism_real"] == np.mean(prf["realistic_target"])
        idx = tiny_run["index"]
        group = idx[idx["pair"] == dict(tiny_run["params"].tasks.items())[task].target]
        feats = make_scorer().inception_features
        f_test, f_train = (feats(torch.from_numpy(tiny_run["faces"][group.loc[group["split"] == sp, "row"].to_numpy()])
                                 .permute(0, 3, 1, 2).contiguous()) for sp in ("test", "train"))  # fmt: skip
        want = brute_inside(f_test, f_train, 3)
        assert prf["realistic_target"] == want.astype(int).tolist() and 0 < want.mean() < 1
        assert rt["age_score_real"] > t["age_score"] * 0  # defined
    outputs = read_outputs(tiny_run["outputs"])
    ident = evaluate_method("identity", tiny_run["params"], tiny_run["prepared"], outputs, make_scorer())
    assert ident["seeds"][0]["seed"] is None


def test_merge_seeds_means_spread_and_two_level_intervals(tiny_run, tmp_path) -> None:
    a, b = run_eval(tiny_run, tiny_run["outputs"], 0), run_eval(tiny_run, tiny_run["root"] / "outputs_b", 1)
    merged = merge_seed_docs([b, a])
    assert [e["seed"] for e in merged["seeds"]] == [0, 1]
    for task, t in merged["tasks"].items():
        ta, tb = a["tasks"][task], b["tasks"][task]
        assert ta["joint"] != tb["joint"]
        assert t["joint"] == np.mean(t["per_face"]["joint"])  # always, with S seeds too
        assert t["joint"] == pytest.approx((ta["joint"] + tb["joint"]) / 2, rel=1e-12)
        assert t["age_gain"] == pytest.approx((ta["age_gain"] + tb["age_gain"]) / 2, rel=1e-12)
        np.testing.assert_allclose(t["per_face"]["joint"], (np.array(ta["per_face"]["joint"]) +
                                                            np.array(tb["per_face"]["joint"])) / 2)  # fmt: skip
        sp = t["seed_spread"]["joint"]
        assert sp["min"] == min(ta["joint"], tb["joint"]) and sp["max"] == max(ta["joint"], tb["joint"])
        assert sp["sd"] == pytest.approx(abs(ta["joint"] - tb["joint"]) / np.sqrt(2))
        j = np.array([ta["per_face"]["joint"], tb["per_face"]["joint"]])
        want = stats.two_level_bootstrap(j, 200, 0, stats.seed_stream("cyclegan_keras"))
        assert t["ci95"]["joint"] == pytest.approx(list(want.ci95))
    # A bound one seed could not compute is null in its file (no output with a face: no gap_closure interval).
    nulls = json.loads(json.dumps(b))
    nulls["seeds"][0]["tasks"]["aging"]["ci95"]["gap_closure"] = [None, None]
    nulls["seeds"][0]["tasks"]["aging"]["age_mean"] = None  # a score that seed could not compute
    m = merge_seed_docs([a, nulls])["tasks"]["aging"]
    assert m["ci95"]["gap_closure"] is not None and m["age_mean"] == a["tasks"]["aging"]["age_mean"]
    assert (m["scheme"], m["source"], m["target"]) == ("pair", "young", "old")
    with pytest.raises(SeedMergeError, match="git_revision"):
        merge_seed_docs([a, {**b, "git_revision": "other"}])
    with pytest.raises(SeedMergeError, match="profile"):
        merge_seed_docs([a, {**b, "profile": "cpu" if a["profile"] != "cpu" else "smoke"}])
    with pytest.raises(SeedMergeError, match="repeat"):
        merge_seed_docs([a, a])
    # The command: folders of metrics files, real.json copied when identical, exit 2 on runs that differ.
    from agebench.cli import main

    real = {"method": "real", "kind": "reference", "git_revision": a.get("git_revision"), "tasks": {"aging": {}}}
    for name, doc in (("r0", a), ("r1", b)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cyclegan_keras.json").write_text(json.dumps(doc))
        (tmp_path / name / "real.json").write_text(json.dumps(real))
    assert main(["merge-seeds", str(tmp_path / "r0"), str(tmp_path / "r1"), "--out", str(tmp_path / "m")]) == 0
    assert len(json.loads((tmp_path / "m" / "cyclegan_keras.json").read_text())["seeds"]) == 2
    (tmp_path / "r1" / "cyclegan_keras.json").write_text(json.dumps({**b, "profile": "other"}))
    assert main(["merge-seeds", str(tmp_path / "r0"), str(tmp_path / "r1"), "--out", str(tmp_path / "m2")]) == 2
    assert merge_seed_dirs  # the library function behind the command


def test_per_face_record_orders_by_file_and_nulls_what_is_missing() -> None:
    arrays = {
        "face_found": np.array([1.0, 0.0, 1.0]),
        "age_in": np.array([20.0, 21.0, np.nan]),
        "age_out": np.array([50.0, 77.0, 40.0]),
        "verified": np.array([1.0, 0.0, 0.0]),
    }
    rec = per_face_record(["b.jpg", "a.jpg", "c d.jpg"], arrays)
    assert list(rec) == list(PER_FACE_KEYS)
    assert rec["file"] == ["a.jpg", "b.jpg", "c d.jpg"] and rec["face_found"] == [0, 1, 1]
    assert rec["age_out"] == [None, 50.0, 40.0] and rec["age_in"] == [21.0, 20.0, None]  # no face: no age_out
    assert rec["joint"] == [None] * 3  # a metric not configured


def test_reconstruction_table_goes_through_the_face_gate() -> None:
    faces = torch.stack([face(100, i) for i in range(12)]).permute(0, 2, 3, 1).numpy()
    recon = faces.copy()
    recon[:3] = np.array([128, 128, 128], np.uint8)  # flat: no face, even though the stand-in dlib "verifies" them
    data = {"rows": np.arange(12), "initial": recon, "pixel": faces, "ip": faces}
    out = reconstruction_rates(data, faces, make_scorer())
    d = out["initial"]["dlib"]
    assert d["face_fail"] == 3 and d["id_fail"] == 3 and d["id_rate"] == pytest.approx(9 / 12)
    assert (d["id_rate_lo"], d["id_rate_hi"]) == pytest.approx(stats.wilson_interval(9, 12))
    assert out["pixel"]["sface"]["id_rate"] == 1.0 and out["pixel"]["sface"]["id_rate_hi"] == 1.0
    # Over seeds: the mean rate, and Wilson's interval of the pooled count (3 of 12, then 9 of 12: 12 of 24).
    other = reconstruction_rates({**data, "initial": faces, "ip": recon}, faces, make_scorer())
    merged = merge_reconstruction([other, out])
    m = merged["ip"]["dlib"]
    assert merged["n"] == 12 and merged["n_seeds"] == 2
    assert m["id_rate"] == pytest.approx((9 / 12 + 12 / 12) / 2)
    assert (m["id_rate_lo"], m["id_rate_hi"]) == pytest.approx(stats.wilson_interval(21, 24))
    assert m["face_fail"] == 3 and m["id_fail"] == 3
    with pytest.raises(SeedMergeError, match="different inputs"):
        merge_reconstruction([out, {**other, "n": 11}])
    # A merged metrics file keeps each seed's table beside the merged one.
    head = {"method": "age_cgan", "git_revision": "r", "profile": "cpu", "protocol_version": 3, "tasks": {}}
    a = {**head, "seeds": [{"seed": 0, "tasks": {}}], "reconstruction": out}
    b = {**head, "seeds": [{"seed": 1, "tasks": {}}], "reconstruction": other}
    doc = merge_seed_docs([b, a])
    assert doc["reconstruction"] == merge_reconstruction([out, other])
    assert [r["seed"] for r in doc["reconstruction_seeds"]] == [0, 1]
    assert doc["reconstruction_seeds"][1]["ip"] == other["ip"]


def test_external_entry_declares_its_networks(tmp_path) -> None:
    text = (REPO / "params.yaml").read_text()
    ok = text.replace("external: []", "external:\n  - {name: ext, folder: x, source: s, uses_networks: [dlib]}")
    (tmp_path / "params.yaml").write_text(ok)
    assert load_params(tmp_path / "params.yaml").external[0].uses_networks == ("dlib",)
    (tmp_path / "params.yaml").write_text(ok.replace("[dlib]", "[vgg16]"))
    with pytest.raises(ParamsError, match=r"uses_networks.*vgg16.*scoring network"):
        load_params(tmp_path / "params.yaml")


def test_publish_merges_seed_runs_of_one_revision(tiny_run, tmp_path) -> None:
    """`publish --seed-workspace`: the published metrics are the seeds' merge, the leaderboard is their
    rendering, learns.md applies the targets, run.json records every run; runs of two revisions are refused."""
    import subprocess

    from agebench.report import render_leaderboard
    from agebench.report.publish import PublishError, publish
    from agebench.report.targets import targets_table
    from tests.test_report import write_docs

    params = tiny_run["params"]
    as_read = lambda doc: json.loads(json.dumps(doc, default=float))  # noqa: E731
    ident = as_read(evaluate_method("identity", params, tiny_run["prepared"], read_outputs(tiny_run["outputs"]),
                                    make_scorer()))  # fmt: skip
    real_tasks = real_floor(make_scorer(), params, tiny_run["index"], tiny_run["faces"])
    head = {k: ident.get(k) for k in ("profile", "git_revision", "protocol_version")}
    real = as_read({"method": "real", "kind": "reference", **head, "tasks": real_tasks})

    def workspace(name: str, seed: int, outputs: Path) -> Path:
        ws = tmp_path / name
        reports = ws / "reports"
        write_docs(reports / "metrics", [run_eval(tiny_run, outputs, seed), ident, real])
        (reports / "runtime").mkdir()
        md, csv = render_leaderboard(reports / "metrics", reports / "runtime")
        (reports / "leaderboard.md").write_text(md)
        (reports / "leaderboard.csv").write_text(csv)
        (reports / "data.json").write_text("{}")
        (reports / "figures" / "charts").mkdir(parents=True)
        (reports / "figures" / "age_histogram.png").write_bytes(b"hist")
        (ws / "params.yaml").write_text((REPO / "params.yaml").read_text())
        (ws / "logs" / "repro").mkdir(parents=True)
        (ws / "logs" / "repro" / "repro.json").write_text(json.dumps({"jobs": 2, "wall_s": 3600.0 + seed}))
        (ws / "logs" / "load.log").write_text("10:00:00 2.00 1 1\n")
        for args in (["init", "-q"], ["add", "params.yaml"],
                     ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "same"]):  # fmt: skip
            subprocess.run(["git", *args], cwd=ws, check=True, env={"GIT_COMMITTER_DATE": "2026-01-01T00:00:00",
                           "GIT_AUTHOR_DATE": "2026-01-01T00:00:00", "PATH": "/usr/bin:/bin"})  # fmt: skip
        text = (REPO / "params.yaml").read_text().replace("  seed: 0\n", f"  seed: {seed}\n", 1)
        (ws / "params.yaml").write_text(text)
        return ws

    ws0, ws1 = workspace("s0", 0, tiny_run["outputs"]), workspace("s1", 1, tiny_run["root"] / "outputs_b")
    # Seed 0's training snapshots: run.json reports the last one's steps, wall time and core-minutes.
    snaps = ws0 / "models" / "cyclegan_keras" / "snapshots"
    snaps.mkdir(parents=True)
    for step, wall, cpu in ((5, 6.0, 5.0), (10, 12.5, 12.0)):
        summary = {"step": step, "train_seconds": wall, "cpu_seconds": cpu}
        torch.save({"step": step, "state": {}, "summary": summary}, snaps / f"step_{step:07d}.pt")
    out = tmp_path / "results"
    written = publish(ws0, out, status=lambda ws: {}, seed_workspaces=[ws1])
    merged = json.loads((out / "metrics" / "cyclegan_keras.json").read_text())
    assert [e["seed"] for e in merged["seeds"]] == [0, 1]
    assert merged == as_read(merge_seed_docs([run_eval(tiny_run, tiny_run["outputs"], 0),
                                              run_eval(tiny_run, tiny_run["root"] / "outputs_b", 1)]))  # fmt: skip
    assert render_leaderboard(out / "metrics", out / "runtime") == (
        (out / "leaderboard.md").read_text(),
        (out / "leaderboard.csv").read_text(),
    )
    docs = [json.loads(p.read_text()) for p in sorted((out / "metrics").glob("*.json"))]
    assert (out / "learns.md").read_text() == targets_table(docs) and "2 training seed(s)" in targets_table(docs)
    assert {"figures/tradeoff_aging.png", "figures/breakdown_rejuvenation.png"} <= set(written)
    run = json.loads((out / "run.json").read_text())
    assert [(r["workspace"], r["seed"], r["repro"]["wall_s"]) for r in run["runs"]] == [
        ("s0", 0, 3600.0),
        ("s1", 1, 3601.0),
    ]
    assert run["runs"][1]["params_diff"].count("+  seed: 1") == 1 and run["runs"][0]["params_diff"] == ""
    assert run["runs"][0]["budget_core_minutes"] == params.train.budget_core_minutes
    assert run["runs"][0]["load_average_1min"]["median"] == 2.0
    assert run["runs"][0]["trainings"] == {"cyclegan_keras": {"step": 10, "train_seconds": 12.5, "core_minutes": 0.2}}
    assert "trainings" not in run["runs"][1]
    # A seed run at another revision is refused, and nothing is written.
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "other"], cwd=ws1, check=True)
    with pytest.raises(PublishError, match="publish seeds of one code revision"):
        publish(ws0, tmp_path / "refused", status=lambda ws: {}, seed_workspaces=[ws1])
    assert not (tmp_path / "refused").exists()
