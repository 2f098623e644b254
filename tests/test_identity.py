"""Identity metric: the PyTorch port of dlib's face-recognition ResNet against dlib itself.

Real-face tests use the conftest fixtures and skip without ../shared/data. Runtime about 15-25 s on
2 cores (dlib's own descriptors, about 15/s, dominate).
"""

from __future__ import annotations

import copy
from pathlib import Path

import dlib
import numpy as np
import pytest
import torch
from PIL import Image

from metrics.backbones import resolve
from metrics.dlib_resnet import CHIP_SIZE, DlibFormatError, _template, load_dlib_resnet, parse_dlib_net
from metrics.identity import (
    FaceDescriptor,
    chip_affine,
    chip_details,
    cut_chips,
    cut_chips_differentiable,
    face_descriptors,
    landmarks5,
    landmarks_ok,
    load_identity_networks,
)
from metrics.scorer import verify_pairs


def verify(desc_a, desc_b, threshold: float = 0.6):
    """dlib's rule through the one verification function (`metrics.scorer.verify_pairs`)."""
    return verify_pairs(np.asarray(desc_a), np.asarray(desc_b), threshold, "distance")


# Measured with dlib 20.0.1 itself (shape_predictor on the whole image, then
# face_recognition_model_v1.compute_face_descriptor(img, shape)): Euclidean descriptor distances.
GOLDEN_A = "1_0_2_20161219222046607.jpg.chip.jpg"
GOLDEN_B = "32_0_3_20170104230706290.jpg.chip.jpg"
GOLDEN_C = "4_1_2_20161219153328036.jpg.chip.jpg"
GOLDEN_DIST_AB = 0.8018239  # different people
GOLDEN_DIST_AC = 0.5585336  # two different small children, wrongly accepted (< 0.6): a known weakness
GOLDEN_DIST_A_FLIPPED = 0.1825429  # same image mirrored


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def networks():
    return load_identity_networks()


@pytest.fixture(scope="module")
def dlib_recognizer():
    return dlib.face_recognition_model_v1(str(resolve("dlib_face_resnet")))


def _load(paths: list[Path]) -> torch.Tensor:
    arrays = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _hwc(chw: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(chw.permute(1, 2, 0).numpy().astype(np.uint8))


@pytest.fixture(scope="module")
def real(utkface_sample, networks, dlib_recognizer):
    """The 60 sample faces, their landmarks, dlib chips and dlib's own descriptors of those chips."""
    _, predictor = networks
    images = _load(utkface_sample)
    lm = landmarks5(images, predictor)
    chips, failed = cut_chips(images, lm)
    assert not failed.any()
    ref = np.array([np.array(dlib_recognizer.compute_face_descriptor(_hwc(c))) for c in chips], dtype=np.float64)
    return {"images": images, "landmarks": lm, "chips": chips, "ref": ref}


# ----------------------------------------------------------------------------------------------
# file format


def test_parser_reads_the_whole_file_and_matches_the_template():
    path = resolve("dlib_face_resnet")
    data = path.read_bytes()
    parsed = parse_dlib_net(data)  # raises unless every byte is consumed and the kinds match
    assert parsed.n_bytes == len(data) == path.stat().st_size
    assert len(parsed.layers) == len(_template()) == 130  # 130 wrapper entries under the loss
    kinds = [layer.kind for layer in parsed.layers]
    assert kinds.count("con") == 29 and kinds.count("affine") == 29 and kinds.count("tag") == 22
    assert parsed.loss == pytest.approx({"margin": 0.04, "distance_threshold": 0.6}, abs=1e-7)
    assert parsed.input_means == pytest.approx((122.782, 117.001, 104.298), abs=1e-4)
    assert parsed.input_size == (150, 150)
    assert parsed.layers[-1].params["weight"].shape == (256, 128)
    n_params = sum(v.size for layer in parsed.layers for v in layer.params.values())
    # every float32 of the file is a parameter: the rest is headers and settings
    assert 4 * n_params > 0.99 * len(data)


def test_parser_rejects_truncated_and_padded_files():
    data = resolve("dlib_face_resnet").read_bytes()
    with pytest.raises(DlibFormatError, match="end of file"):
        parse_dlib_net(data[:-5])
    with pytest.raises(DlibFormatError, match="bytes left"):
        parse_dlib_net(data + b"\x00")


# ----------------------------------------------------------------------------------------------
# parity with dlib


def test_descriptors_match_dlib_on_real_chips(real, networks):
    net, _ = networks
    with torch.no_grad():
        ours = net(real["chips"]).double().numpy()
    ref = real["ref"]
    assert len(ref) >= 50
    assert np.abs(ours - ref).max() <= 1e-5
    # face-to-face distances (all pairs) agree too, and so every verification decision away from 0.6
    d_ours = np.linalg.norm(ours[:, None] - ours[None], axis=2)
    d_ref = np.linalg.norm(ref[:, None] - ref[None], axis=2)
    assert np.abs(d_ours - d_ref).max() <= 1e-5
    clear = np.abs(d_ref - 0.6) > 1e-4
    assert ((d_ours < 0.6) == (d_ref < 0.6))[clear].all()


def test_face_descriptors_pipeline_matches_dlib(real, networks):
    net, predictor = networks
    desc, failed = face_descriptors(real["images"], net, predictor)
    assert not failed.any() and desc.dtype == torch.float32 and desc.shape == (len(real["ref"]), 128)
    assert np.abs(desc.double().numpy() - real["ref"]).max() <= 1e-5


def test_chips_and_chip_geometry_match_dlib(real, networks):
    _, predictor = networks
    images, lm = real["images"], real["landmarks"]
    h, w = images.shape[2:]
    a = chip_details(lm)
    for i in range(0, len(images), 6):
        img = _hwc(images[i])
        shape = predictor(img, dlib.rectangle(0, 0, w - 1, h - 1))
        np.testing.assert_array_equal(lm[i], [(p.x, p.y) for p in shape.parts()])
        np.testing.assert_array_equal(
            real["chips"][i].numpy(), dlib.get_face_chip(img, shape, 150, 0.25).transpose(2, 0, 1)
        )
        # geometry: rectangle centre, angle and width of dlib's chip_details
        det = dlib.get_face_chip_details(shape, 150, 0.25)
        r = det.rect
        centre = a[i] @ [(CHIP_SIZE - 1) / 2, (CHIP_SIZE - 1) / 2, 1]
        np.testing.assert_allclose(centre, [(r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2], atol=1e-9)
        np.testing.assert_allclose(np.arctan2(a[i, 1, 0], a[i, 0, 0]), det.angle, atol=1e-12)
        np.testing.assert_allclose(np.hypot(a[i, 0, 0], a[i, 1, 0]) * (CHIP_SIZE - 1), r.width() - 1, rtol=1e-12)


def test_differentiable_chips_are_within_one_grey_level_of_dlib(real):
    images, lm, chips = real["images"], real["landmarks"], real["chips"]
    theta = chip_affine(lm, tuple(images.shape[2:]))
    soft = cut_chips_differentiable(images.double(), theta.double())
    diff = soft - chips.double()
    # dlib truncates the bilinear value to an integer: ours is in [dlib, dlib + 1)
    assert diff.min() > -1e-3 and diff.max() < 1 + 1e-3
    assert 0.3 < diff.mean() < 0.7
    assert (soft.floor() == chips.double()).double().mean() > 0.99


def test_face_descriptor_module_close_to_dlib_pipeline(real, networks):
    net, _ = networks
    images = real["images"][:16]
    theta = chip_affine(real["landmarks"][:16], tuple(images.shape[2:]))
    with torch.no_grad():
        soft = FaceDescriptor(net)(images.float() / 127.5 - 1, theta)
    dist = verify(soft, real["ref"][:16]).score
    # only dlib's rounding of chip pixels separates the two
    assert dist.max() < 0.03


# ----------------------------------------------------------------------------------------------
# invariances, gradients, golden values


def test_batch_size_and_order_invariance(real, networks):
    net, predictor = networks
    images = real["images"][:20]
    base, _ = face_descriptors(images, net, predictor, batch_size=32)
    perm = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
    for batch_size in (1, 7):
        shuffled, _ = face_descriptors(images[perm], net, predictor, batch_size=batch_size)
        torch.testing.assert_close(shuffled, base[perm], atol=1e-6, rtol=0)


def test_gradients_reach_pixels_and_match_finite_differences(real, networks):
    net, _ = networks
    image = real["images"][:1].double() / 127.5 - 1
    theta = chip_affine(real["landmarks"][:1], tuple(image.shape[2:])).double()
    model64 = FaceDescriptor(copy.deepcopy(net).double())
    direction = torch.randn(128, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def loss(x: torch.Tensor) -> torch.Tensor:
        return model64(x, theta)[0] @ direction

    x = image.clone().requires_grad_(True)
    loss(x).backward()
    grad = x.grad
    assert torch.isfinite(grad).all()
    # the face centre lies in the chip: nearly every pixel there gets a gradient
    assert (grad[0, :, 60:140, 60:140] != 0).float().mean() > 0.9
    eps = 1e-5
    for c, yy, xx in ((0, 100, 100), (1, 80, 120), (2, 130, 90)):
        plus, minus = image.clone(), image.clone()
        plus[0, c, yy, xx] += eps
        minus[0, c, yy, xx] -= eps
        with torch.no_grad():
            numeric = (loss(plus) - loss(minus)) / (2 * eps)
        assert grad[0, c, yy, xx].item() == pytest.approx(numeric.item(), rel=1e-4, abs=1e-8)


def test_golden_distances_on_real_faces(utkface_dir, networks):
    net, predictor = networks
    images = _load([utkface_dir / GOLDEN_A, utkface_dir / GOLDEN_B, utkface_dir / GOLDEN_C])
    flipped = images[:1].flip(-1)
    desc, failed = face_descriptors(torch.cat([images, flipped]), net, predictor)
    assert not failed.any()
    pairs = verify(desc[[0, 0, 0]], desc[[1, 2, 3]])
    np.testing.assert_allclose(pairs.score, [GOLDEN_DIST_AB, GOLDEN_DIST_AC, GOLDEN_DIST_A_FLIPPED], atol=1e-5)
    assert pairs.same.tolist() == [False, True, True]


# ----------------------------------------------------------------------------------------------
# failures and bad inputs


def test_bad_inputs_never_crash(networks):
    net, predictor = networks
    rng = np.random.default_rng(0)
    grey = np.full((2, 3, 128, 128), 128, np.uint8)
    noise = rng.integers(0, 256, (2, 3, 128, 128), dtype=np.uint8)
    desc, failed = face_descriptors(torch.from_numpy(np.concatenate([grey, noise])), net, predictor)
    # documented: normal-size uniform and noise images get a finite descriptor
    assert not failed.any() and torch.isfinite(desc).all()
    for size in (1, 20):  # smaller than MIN_IMAGE_SIZE: counted failures with NaN rows
        tiny = torch.zeros(2, 3, size, size, dtype=torch.uint8)
        desc_t, failed_t = face_descriptors(tiny, net, predictor)
        assert failed_t.all() and torch.isnan(desc_t).all()
    empty, failed_e = face_descriptors(torch.zeros(0, 3, 64, 64, dtype=torch.uint8), net, predictor)
    assert empty.shape == (0, 128) and failed_e.shape == (0,)


def test_uniform_image_is_not_verified_as_a_real_face(real, networks):
    net, predictor = networks
    grey = torch.full((1, 3, 200, 200), 128, dtype=torch.uint8)
    desc, _ = face_descriptors(grey, net, predictor)
    dist = np.linalg.norm(real["ref"] - desc.double().numpy(), axis=1)
    assert dist.min() > 0.6


def test_landmark_failure_rule():
    good = np.array([[150.0, 60], [125, 62], [60, 60], [85, 62], [105, 120]])
    cases = np.stack(
        [
            good,
            np.where(np.arange(5)[:, None] == 4, [[105.0, 250]], good),  # a point below the image
            np.tile([[100.0, 100]], (5, 1)),  # all points together: eye distance 0
            np.full((5, 2), np.nan),
        ]
    )
    assert landmarks_ok(cases, (200, 200)).tolist() == [True, False, False, False]
    assert not landmarks_ok(good[None] / 10, (20, 20)).any()  # image below MIN_IMAGE_SIZE


def test_verify_semantics():
    a = torch.zeros(4, 128)
    b = torch.zeros(4, 128)
    b[0, 0] = 0.5
    b[1, 0] = 0.7
    b[2] = float("nan")
    a[3] = float("nan")
    out = verify(a, b)
    assert out.score[:2].tolist() == pytest.approx([0.5, 0.7])
    assert np.isnan(out.score[2:]).all()
    assert out.same.tolist() == [True, False, False, False]
    assert out.failed.tolist() == [False, False, True, True]


def test_load_dlib_resnet_is_frozen_eval_float32():
    net = load_dlib_resnet(resolve("dlib_face_resnet"))
    assert not net.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in net.parameters())
    with pytest.raises(ValueError, match="150"):
        net(torch.zeros(1, 3, 128, 128))
