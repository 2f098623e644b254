"""Optional scoring backends (metrics/optional.py): clear errors without weights, mechanics with stand-ins.

- Without the package or weights both backends raise BackboneError naming the file/parameter and the fix.
- FaceNet mechanics run with facenet-pytorch installed (`pip install --no-deps facenet-pytorch==2.6.0`) and a
  randomly initialised state dict saved to a temporary file; skipped without the package.
- deepface mechanics run against a stand-in `deepface` module (deepface itself is never installed here).
- Tests needing the real weights skip unless the files are present: FaceNet at `$AGEBENCH_FACENET_WEIGHTS` or
  facenet-pytorch's cache `$TORCH_HOME/checkpoints/20180402-114759-vggface2.pt`; deepface's age file under
  `$DEEPFACE_HOME/.deepface/weights/`. Nothing is ever downloaded.
Runtime about 10 s on 2 cores (InceptionResnetV1 on a dozen 160x160 images, one thread).
"""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metrics import optional as O
from metrics.backbones import BackboneError

# ---------------------------------------------------------------------------------------------------------------
# helpers


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _random_faces(n: int, size: int = 128, seed: int = 0) -> torch.Tensor:
    """Smooth random images (noise upsampled) so that the network sees some structure."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 8, 8, generator=g) * 255
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear").round().to(torch.uint8)


def _load(paths: list[Path]) -> torch.Tensor:
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _label_age(path: Path) -> int:
    return int(path.name.split("_")[0])


# ---------------------------------------------------------------------------------------------------------------
# FaceNet: errors


def test_facenet_empty_weights_path_names_the_parameter_and_the_source():
    with pytest.raises(BackboneError) as err:
        O.facenet_descriptor_fn("")
    msg = str(err.value)
    assert "evaluate.facenet_weights" in msg and O.FACENET_WEIGHTS_URL in msg and "never downloads" in msg


def test_facenet_missing_file_names_the_path(tmp_path):
    missing = tmp_path / "nope" / O.FACENET_WEIGHTS_FILE
    with pytest.raises(BackboneError) as err:
        O.facenet_descriptor_fn(str(missing))
    msg = str(err.value)
    assert str(missing) in msg and "evaluate.facenet_weights" in msg and O.FACENET_WEIGHTS_URL in msg


def test_facenet_package_missing_gives_the_install_command(tmp_path, monkeypatch):
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # makes the import fail even when installed
    with pytest.raises(BackboneError) as err:
        O.facenet_descriptor_fn(str(weights))
    assert "pip install --no-deps facenet-pytorch==2.6.0" in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# FaceNet: mechanics with random weights


@pytest.fixture(scope="module")
def facenet_random(tmp_path_factory):
    """(path of a random InceptionResnetV1 state dict with the published file's extra logits head, the module)."""
    fp = pytest.importorskip("facenet_pytorch", reason="facenet-pytorch not installed (pip install --no-deps ...)")
    torch.manual_seed(0)
    net = fp.InceptionResnetV1(pretrained=None, classify=False).eval()
    # An untrained net maps every image to nearly the same direction (distances ~1e-3); centring the last
    # batch norm on the features of other random images spreads descriptors out (distances 0.6-1.9), so that
    # mixing up images or batches would show far above the tolerances below.
    feats: list[torch.Tensor] = []
    hook = net.last_linear.register_forward_hook(lambda _m, _i, out: feats.append(out))
    with torch.no_grad():
        net(O.facenet_preprocess(_random_faces(16, seed=9)))
    hook.remove()
    net.last_bn.running_mean.copy_(feats[0].mean(0))
    net.last_bn.running_var.copy_(feats[0].var(0))
    state = dict(net.state_dict())
    state["logits.weight"] = torch.randn(8631, 512) * 0.01  # as in 20180402-114759-vggface2.pt
    state["logits.bias"] = torch.zeros(8631)
    path = tmp_path_factory.mktemp("facenet") / O.FACENET_WEIGHTS_FILE
    torch.save(state, path)
    return path, net


def test_facenet_descriptors_are_unit_norm_float64_and_match_the_reference(facenet_random):
    path, net = facenet_random
    fp = sys.modules["facenet_pytorch"]
    images = _random_faces(6)
    desc, failed = O.facenet_descriptor_fn(str(path), batch_size=4)(images)
    assert desc.shape == (6, O.FACENET_DIM) and desc.dtype == np.float64
    assert failed.dtype == bool and not failed.any()
    np.testing.assert_allclose(np.linalg.norm(desc, axis=1), 1.0, atol=1e-12)
    # reference: facenet-pytorch's own standardisation and forward (which L2-normalises) on the resized images
    x = torch.nn.functional.interpolate(images.float(), size=(160, 160), mode="bilinear", antialias=True)
    with torch.no_grad():
        ref = net(fp.fixed_image_standardization(x)).double().numpy()
    np.testing.assert_allclose(desc, ref, atol=1e-4)  # float32 rounding: up to ~3e-5 measured
    # different inputs give clearly different descriptors (the network is not collapsed)
    dist = np.linalg.norm(desc[:, None] - desc[None], axis=2)
    assert dist[~np.eye(6, dtype=bool)].min() > 0.1


def test_facenet_batch_size_and_order_invariance(facenet_random):
    path, _ = facenet_random
    fn_1 = O.facenet_descriptor_fn(str(path), batch_size=1)
    fn_5 = O.facenet_descriptor_fn(str(path), batch_size=5)
    images = _random_faces(6, seed=1)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    a, _ = fn_1(images)
    b, _ = fn_5(images)
    c, _ = fn_5(images[perm])
    np.testing.assert_allclose(a, b, atol=1e-4)  # batch-size-dependent float32 kernels
    np.testing.assert_allclose(c, b[perm.numpy()], atol=1e-4)


def test_facenet_min_size_failures_and_empty_batch(facenet_random):
    path, _ = facenet_random
    fn = O.facenet_descriptor_fn(str(path))
    small = _random_faces(2, size=O.MIN_IMAGE_SIZE - 1)
    desc, failed = fn(small)
    assert failed.all() and np.isnan(desc).all() and desc.shape == (2, O.FACENET_DIM)
    desc, failed = fn(_random_faces(2, size=O.MIN_IMAGE_SIZE))  # exactly the minimum is fine
    assert not failed.any() and np.isfinite(desc).all()
    desc, failed = fn(torch.zeros(0, 3, 128, 128, dtype=torch.uint8))
    assert desc.shape == (0, O.FACENET_DIM) and failed.shape == (0,)


def test_facenet_rejects_a_wrong_state_dict(facenet_random, tmp_path):
    path, _ = facenet_random
    state = torch.load(path, weights_only=True)
    del state["last_bn.running_mean"]
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    with pytest.raises(BackboneError, match=r"evaluate.facenet_weights: .*bad.pt is not an InceptionResnetV1"):
        O.facenet_descriptor_fn(str(bad))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(BackboneError, match="is not a torch state dict"):
        O.facenet_descriptor_fn(str(junk))


# ---------------------------------------------------------------------------------------------------------------
# FaceNet with the real VGGFace2 weights (skipped unless present)


def _real_facenet_weights() -> Path:
    env = os.environ.get("AGEBENCH_FACENET_WEIGHTS")
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    path = Path(env) if env else torch_home / "checkpoints" / O.FACENET_WEIGHTS_FILE
    if not path.is_file():
        pytest.skip(f"real FaceNet weights not found at {path} (set AGEBENCH_FACENET_WEIGHTS; never downloaded)")
    return path


def test_facenet_real_weights_verify_flips_and_separate_people(utkface_sample):
    pytest.importorskip("facenet_pytorch", reason="facenet-pytorch not installed")
    fn = O.facenet_descriptor_fn(str(_real_facenet_weights()))
    images = _load(utkface_sample[:20])
    desc, failed = fn(images)
    flipped, failed_f = fn(images.flip(-1))
    assert not failed.any() and not failed_f.any()
    same = np.linalg.norm(desc - flipped, axis=1)
    others = np.linalg.norm(desc[:, None] - desc[None], axis=2)[~np.eye(len(desc), dtype=bool)]
    assert (same < O.FACENET_THRESHOLD).all(), same
    assert np.median(others) > O.FACENET_THRESHOLD > np.max(same)


# ---------------------------------------------------------------------------------------------------------------
# deepface: errors


def test_deepface_not_importable_gives_the_extra_and_the_cv2_warning(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepface", None)
    with pytest.raises(BackboneError) as err:
        O.deepface_age_fn()
    msg = str(err.value)
    assert 'pip install -e ".[deepface]"' in msg and "opencv-python" in msg


def _fake_deepface(monkeypatch, analyze, engine: str | None = None) -> list[dict]:
    """Install a stand-in `deepface` package whose `DeepFace.analyze` is `analyze`; returns the call log."""
    calls: list[dict] = []

    def logged(**kwargs):
        calls.append(kwargs)
        return analyze(**kwargs)

    pkg = types.ModuleType("deepface")
    api = types.ModuleType("deepface.DeepFace")
    api.analyze = logged
    pkg.DeepFace = api
    monkeypatch.setitem(sys.modules, "deepface", pkg)
    monkeypatch.setitem(sys.modules, "deepface.DeepFace", api)
    if engine is not None:  # recent deepface: engine chosen by deepface.commons.backend_utils
        pkg.__path__ = []
        commons = types.ModuleType("deepface.commons")
        commons.__path__ = []
        backend_utils = types.ModuleType("deepface.commons.backend_utils")
        backend_utils.get_backend_engine = lambda: engine
        monkeypatch.setitem(sys.modules, "deepface.commons", commons)
        monkeypatch.setitem(sys.modules, "deepface.commons.backend_utils", backend_utils)
    return calls


@pytest.mark.parametrize(
    ("engine", "name"),
    [(None, "age_model_weights.h5"), ("tensorflow", "age_model_weights.h5"), ("onnx", "age_model_weights.onnx")],
)
def test_deepface_missing_weights_name_the_exact_path_and_url(monkeypatch, tmp_path, engine, name):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    calls = _fake_deepface(monkeypatch, lambda **_: [{"age": 30}], engine)
    with pytest.raises(BackboneError) as err:
        O.deepface_age_fn()
    msg = str(err.value)
    expected = tmp_path / ".deepface" / "weights" / name
    assert str(expected) in msg and "never downloads" in msg
    assert f"https://github.com/serengil/deepface_models/releases/download/v1.0/{name}" in msg
    assert calls == []  # deepface is never called (it would start a download)


def test_deepface_home_defaults_to_the_home_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("DEEPFACE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert O.deepface_home() == tmp_path


# ---------------------------------------------------------------------------------------------------------------
# deepface: mechanics against a stand-in


def test_deepface_calls_analyze_per_image_in_bgr_and_maps_failures_to_nan(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    weights = tmp_path / ".deepface" / "weights" / "age_model_weights.h5"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"stand-in")

    def analyze(img_path, **_):
        # age from the blue channel (BGR index 0); a pure-red image makes deepface "fail"
        if img_path[..., 2].min() == 255 and img_path[..., 0].max() == 0:
            raise ValueError("face could not be detected")
        return [{"age": int(img_path[..., 0].mean() // 2)}]

    calls = _fake_deepface(monkeypatch, analyze)
    ages_fn = O.deepface_age_fn()
    assert len(calls) == 1  # the warm-up on a grey image, which loads the model
    images = torch.zeros(3, 3, 64, 48, dtype=torch.uint8)
    images[0, 2] = 100  # RGB blue = 100 -> age 50
    images[1, 0] = 255  # pure red -> ValueError -> NaN
    images[2, 2] = 60  # -> age 30
    ages = ages_fn(images)
    assert ages.dtype == np.float64 and ages.shape == (3,)
    np.testing.assert_array_equal(ages, [50.0, np.nan, 30.0])
    assert len(calls) == 4
    for call in calls[1:]:
        assert call["actions"] == ["age"] and call["detector_backend"] == "skip"
        assert call["enforce_detection"] is False
        assert call["img_path"].shape == (64, 48, 3) and call["img_path"].dtype == np.uint8
    # images under the minimum size are failures without calling deepface
    small = ages_fn(torch.zeros(2, 3, O.MIN_IMAGE_SIZE - 1, 64, dtype=torch.uint8))
    assert np.isnan(small).all() and len(calls) == 4


def test_deepface_warm_up_failure_is_a_backbone_error(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    weights = tmp_path / ".deepface" / "weights" / "age_model_weights.h5"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"truncated")

    def analyze(**_):
        raise ValueError("An exception occurred while loading the pre-trained weights")

    _fake_deepface(monkeypatch, analyze)
    with pytest.raises(BackboneError, match="could not run its age model"):
        O.deepface_age_fn()


# ---------------------------------------------------------------------------------------------------------------
# deepface with the real package and weights (skipped unless both are present)


def test_deepface_real_ages_on_real_faces(utkface_sample):
    pytest.importorskip("deepface", reason='deepface not installed (its own venv: pip install -e ".[deepface]")')
    try:
        path = O.deepface_age_weights_path()
    except BackboneError as err:
        pytest.skip(f"deepface age weights absent: {err}")
    assert path.is_file()
    paths = utkface_sample[:20]
    ages = O.deepface_age_fn()(_load(paths))
    assert np.isfinite(ages).all() and (ages == np.round(ages)).all()  # analyze returns whole years
    truth = np.array([_label_age(p) for p in paths], dtype=np.float64)
    assert np.corrcoef(ages, truth)[0, 1] > 0.3
