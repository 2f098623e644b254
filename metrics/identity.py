"""Identity metric: dlib face descriptors of 150x150 chips and verification at distance 0.6.

Pipeline for one image (PROTOCOL s.4, "landmarks found on each image on its own"):
1. `landmarks5`: dlib's 5-point shape predictor on the WHOLE image rectangle (UTKFace crops are
   already aligned faces, so no detector), rectangle (0, 0, W-1, H-1) = dlib's `get_rect(img)`.
2. `cut_chips`: `dlib.get_face_chip(img, shape, 150, 0.25)`, i.e. the similarity transform taking
   the 5 points onto dlib's reference template, bilinear resampling.
3. `DlibFaceResNet` (metrics/dlib_resnet.py): 128-d descriptor; same person when the Euclidean
   distance is below 0.6 (dlib's threshold).

Failure rule (a failed face has a NaN descriptor row and counts as not verified; `id_fail`):
- the image is smaller than `MIN_IMAGE_SIZE` (32) pixels in height or width (the predictor is not run);
- a landmark is not finite or lies outside the image rectangle [0, W-1] x [0, H-1];
- the eye centres are closer than `MIN_EYE_DISTANCE` (0.1) of the image width (degenerate shape;
  real UTKFace faces measure 0.27-0.49, median 0.39, on 2,371 images);
- the chip cannot be cut, or the descriptor is not finite.
Uniform (e.g. all-grey) and random-noise images of normal size are NOT failures: the predictor
returns a shape close to its mean shape, so they get a finite descriptor, which is far (> 0.6)
from real faces, so they are simply not verified. A 1x1 image is a failure.

Differentiable use (Age-cGAN's identity-preserving optimisation): compute `theta = chip_affine(...)`
once from the real face's landmarks, then `FaceDescriptor(net)(generated, theta)` cuts the chip
with `F.grid_sample` and runs the network with gradients flowing to the pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from metrics.dlib_resnet import CHIP_SIZE, DlibFaceResNet, load_dlib_resnet

CHIP_PADDING = 0.25
DISTANCE_THRESHOLD = 0.6
MIN_IMAGE_SIZE = 32
MIN_EYE_DISTANCE = 0.1  # fraction of the image width


# dlib's 5-point reference face (dlib/image_transforms/interpolation.h, get_face_chip_details), in
# the unit square of an unpadded chip, in the predictor's order: 0-1 the corners of the eye on the
# image's right, 2-3 those of the other eye, 4 the base of the nose.
_TEMPLATE_5 = np.array(
    [
        [0.8595674595992, 0.2134981538014],
        [0.6460604764104, 0.2289674387677],
        [0.1205750620789, 0.2137274526848],
        [0.3340850613712, 0.2290642403242],
        [0.4901123135679, 0.6277975316475],
    ]
)


def load_identity_networks() -> tuple[DlibFaceResNet, object]:
    """The verified descriptor network and 5-point `dlib.shape_predictor` (from metrics.backbones)."""
    import dlib

    from metrics.backbones import resolve

    return load_dlib_resnet(resolve("dlib_face_resnet")), dlib.shape_predictor(str(resolve("dlib_landmarks5")))


def _to_hwc_list(images: torch.Tensor | np.ndarray) -> list[np.ndarray]:
    arr = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if arr.ndim != 4 or arr.shape[1] != 3 or arr.dtype != np.uint8:
        raise ValueError(f"expected (N, 3, H, W) uint8 images, got {arr.shape} {arr.dtype}")
    return [np.ascontiguousarray(a.transpose(1, 2, 0)) for a in arr]


def landmarks5(images: torch.Tensor | np.ndarray, predictor: object) -> np.ndarray:
    """dlib 5-point landmarks of each whole image.

    images: `(N, 3, H, W)` uint8 RGB in [0, 255]. predictor: a `dlib.shape_predictor`.
    Returns `(N, 5, 2)` float64 (x, y) pixel coordinates (integers, as dlib rounds them); NaN for
    images smaller than `MIN_IMAGE_SIZE`.
    """
    import dlib

    out = np.full((len(images), 5, 2), np.nan)
    for i, img in enumerate(_to_hwc_list(images)):
        h, w = img.shape[:2]
        if min(h, w) < MIN_IMAGE_SIZE:
            continue
        shape = predictor(img, dlib.rectangle(0, 0, w - 1, h - 1))
        out[i] = [(p.x, p.y) for p in shape.parts()]
    return out


def landmarks_ok(landmarks: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """The landmark part of the failure rule: `(N, 5, 2)` float64 -> `(N,)` bool, True = usable."""
    h, w = image_hw
    lm = np.asarray(landmarks, dtype=np.float64)
    finite = np.isfinite(lm).all(axis=(1, 2))
    safe = np.where(np.isfinite(lm), lm, -1.0)
    inside = ((safe[..., 0] >= 0) & (safe[..., 0] <= w - 1) & (safe[..., 1] >= 0) & (safe[..., 1] <= h - 1)).all(1)
    eye_distance = np.linalg.norm(safe[:, 0:2].mean(1) - safe[:, 2:4].mean(1), axis=1)
    big_enough = min(h, w) >= MIN_IMAGE_SIZE
    return finite & inside & (eye_distance >= MIN_EYE_DISTANCE * w) & big_enough


def _similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama 1991, as dlib's find_similarity_transform): `(2, 3)`
    mapping src points `(K, 2)` onto dst points `(K, 2)`."""
    mean_src, mean_dst = src.mean(0), dst.mean(0)
    s, d = src - mean_src, dst - mean_dst
    var_src = (s**2).sum(1).mean()
    cov = d.T @ s / len(src)
    u, sing, vt = np.linalg.svd(cov)
    flip = np.eye(2)
    if np.linalg.det(cov) < 0 or (np.linalg.det(cov) == 0 and np.linalg.det(u) * np.linalg.det(vt) < 0):
        flip[1, 1] = -1
    rot = u @ flip @ vt
    scale = np.trace(np.diag(sing) @ flip) / var_src if var_src != 0 else 1.0
    m = scale * rot
    return np.concatenate([m, (mean_dst - m @ mean_src)[:, None]], axis=1)


def chip_details(landmarks: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """Where dlib's face chip lies in the image, as chip pixel -> image pixel maps.

    landmarks: `(N, 5, 2)` float64 image pixel coordinates. Returns `(N, 2, 3)` float64 `A` with
    `image_xy = A @ (chip_x, chip_y, 1)` (pixel centres at integers). It follows dlib's
    `get_face_chip_details` (similarity transform of the padded template to the landmarks, reduced
    to an angle, a scale and a centred rectangle) and `extract_image_chips` (chip corners onto the
    rectangle's rotated corners, so one chip pixel spans (size*scale - 1)/(size - 1) image pixels).
    """
    template = (padding + _TEMPLATE_5) / (2 * padding + 1) * size
    out = np.zeros((len(landmarks), 2, 3))
    for i, lm in enumerate(np.asarray(landmarks, dtype=np.float64)):
        tform = _similarity_transform(template, lm)
        m = tform[:, :2]
        angle = np.arctan2(m[1, 0], m[0, 0])
        scale = np.hypot(m[0, 0], m[1, 0])
        centre = m @ np.array([size / 2.0, size / 2.0]) + tform[:, 2]
        extent = size * scale - 1.0  # dlib's centered_drect(width) spans width - 1
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        step = rot * (extent / (size - 1))
        out[i, :, :2] = step
        out[i, :, 2] = centre - rot @ np.array([extent / 2, extent / 2])
    return out


def chip_affine(
    landmarks: np.ndarray, image_hw: tuple[int, int], size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> torch.Tensor:
    """`theta` for `F.affine_grid(..., align_corners=True)` cutting dlib's face chip.

    landmarks: `(N, 5, 2)` float64 pixel coordinates in images of size `image_hw` = (H, W).
    Returns `(N, 2, 3)` float32 mapping normalised chip coordinates to normalised image coordinates.
    """
    h, w = image_hw
    a = chip_details(landmarks, size, padding)
    # normalised chip coords -> chip pixels -> image pixels -> normalised image coords
    from_norm = np.array([[(size - 1) / 2, 0, (size - 1) / 2], [0, (size - 1) / 2, (size - 1) / 2], [0, 0, 1]])
    to_norm = np.array([[2 / (w - 1), 0, -1], [0, 2 / (h - 1), -1]])
    a3 = np.concatenate([a, np.tile([[[0.0, 0.0, 1.0]]], (len(a), 1, 1))], axis=1)
    theta = to_norm[None] @ a3 @ from_norm[None]
    return torch.from_numpy(theta.astype(np.float32))


def cut_chips(
    images: torch.Tensor | np.ndarray, landmarks: np.ndarray, size: int = CHIP_SIZE, padding: float = CHIP_PADDING
) -> tuple[torch.Tensor, torch.Tensor]:
    """dlib's own face chips (`dlib.get_face_chip`), exactly what dlib's descriptor pipeline sees.

    images: `(N, 3, H, W)` uint8 RGB; landmarks: `(N, 5, 2)` from `landmarks5`.
    Returns chips `(N, 3, size, size)` float32 in [0, 255] (zeros where failed) and `failed` `(N,)`
    bool (landmark rule of `landmarks_ok`, or dlib refused the chip).
    """
    import dlib

    hwc = _to_hwc_list(images)
    chips = torch.zeros(len(hwc), 3, size, size)
    failed = torch.zeros(len(hwc), dtype=torch.bool)
    ok = landmarks_ok(landmarks, hwc[0].shape[:2]) if hwc else np.zeros(0, dtype=bool)
    for i, img in enumerate(hwc):
        if not ok[i]:
            failed[i] = True
            continue
        h, w = img.shape[:2]
        parts = [dlib.point(int(x), int(y)) for x, y in np.rint(landmarks[i])]
        try:
            chip = dlib.get_face_chip(
                img, dlib.full_object_detection(dlib.rectangle(0, 0, w - 1, h - 1), parts), size, padding
            )
        except RuntimeError:
            failed[i] = True
            continue
        chips[i] = torch.from_numpy(chip.transpose(2, 0, 1).astype(np.float32))
    return chips, failed


def cut_chips_differentiable(images: torch.Tensor, theta: torch.Tensor, size: int = CHIP_SIZE) -> torch.Tensor:
    """Bilinear chip resampling that lets gradients reach the pixels.

    images: `(N, 3, H, W)` float (any range; the chip keeps it); theta: `(N, 2, 3)` from `chip_affine`.
    Returns `(N, 3, size, size)`, same dtype. Like dlib's `interpolate_bilinear`, a chip pixel is 0
    unless its whole 2x2 neighbourhood lies in the image (0 <= x < W-1, 0 <= y < H-1). It differs
    from dlib's uint8 chip by dlib's truncation to integers (so it is about 0.5 grey level higher on
    average), and dlib switches to an image pyramid when the face is over twice the chip size,
    which this does not (irrelevant at 128-200 px).
    """
    n, _, h, w = images.shape
    grid = F.affine_grid(theta.to(images.dtype), [n, 3, size, size], align_corners=True)
    chips = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    with torch.no_grad():
        x = (grid[..., 0] + 1) * ((w - 1) / 2)
        y = (grid[..., 1] + 1) * ((h - 1) / 2)
        inside = (x >= 0) & (x < w - 1) & (y >= 0) & (y < h - 1)
    return chips * inside[:, None].to(chips.dtype)


@torch.inference_mode()
def face_descriptors(
    images: torch.Tensor | np.ndarray, net: DlibFaceResNet, predictor: object, batch_size: int = 32
) -> tuple[torch.Tensor, torch.Tensor]:
    """dlib face descriptors of whole aligned face images.

    images: `(N, 3, H, W)` uint8 RGB in [0, 255]. Returns descriptors `(N, 128)` float32 on the CPU (NaN
    rows for failures, see the module docstring) and `failed` `(N,)` bool. Landmarks and chips are cut
    on the CPU by dlib; the network runs on the device of `net` (e.g. CUDA when moved there).
    """
    device = next(net.parameters()).device
    n = len(images)
    desc = torch.full((n, 128), float("nan"))
    failed = torch.ones(n, dtype=torch.bool)
    for start in range(0, n, batch_size):
        batch = images[start : start + batch_size]
        lm = landmarks5(batch, predictor)
        chips, bad = cut_chips(batch, lm)
        good = torch.nonzero(~bad).flatten()
        if len(good):
            out = net(chips[good].to(device)).float().cpu()
            finite = torch.isfinite(out).all(1)
            desc[start + good[finite]] = out[finite]
            failed[start + good[finite]] = False
    return desc, failed


class FaceDescriptor(nn.Module):
    """Differentiable dlib descriptor of generated faces, for identity losses.

    The chip alignment `theta` is NOT recomputed from the generated image: it comes from the real
    face's landmarks (`chip_affine(landmarks5(real, predictor), (H, W))`), so the whole map from
    pixels to descriptor is smooth. The network's weights are frozen.

    `forward(images, theta)`: images `(N, 3, H, W)` float RGB in [-1, 1]; theta `(N, 2, 3)` ->
    descriptors `(N, 128)` (same dtype as images), gradients flowing to `images`.
    """

    def __init__(self, net: DlibFaceResNet, predictor: object | None = None) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.predictor = predictor

    @torch.no_grad()
    def theta_for(self, images: torch.Tensor) -> torch.Tensor:
        """Chip alignment of real faces, computed once (not differentiable).

        images: (N, 3, H, W) float RGB in [-1, 1] -> theta (N, 2, 3) float32 on the images' device.
        Faces whose landmarks fail the sanity rule still get their (unreliable) alignment.
        """
        if self.predictor is None:
            raise ValueError("FaceDescriptor.theta_for needs the 5-point predictor (pass it to the constructor)")
        u8 = images.detach().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).cpu()
        lm = landmarks5(u8, self.predictor)
        theta = chip_affine(lm, tuple(images.shape[-2:]))
        return torch.as_tensor(theta, dtype=torch.float32, device=images.device)

    def train(self, mode: bool = True) -> FaceDescriptor:
        # The descriptor network has no train-time behaviour to switch on; keep it in eval.
        super().train(mode)
        self.net.eval()
        return self

    def forward(self, images: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        pixels = (images + 1.0) * 127.5
        return self.net(cut_chips_differentiable(pixels, theta))


def detected_descriptors(
    images: list[np.ndarray], net: DlibFaceResNet, predictor: object, detector: object | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptors of faces in unaligned photos (e.g. FG-NET), one photo at a time.

    dlib's HOG frontal-face detector (upsampling once) finds the largest face; the 5-point predictor
    runs on its box; the chip and network are as in `face_descriptors`.

    images: list of (H, W, 3) uint8 RGB arrays of any size. Returns `(N, 128)` float32 descriptors
    (NaN rows where no face was found) and `failed` `(N,)` bool.
    """
    import dlib

    detector = detector or dlib.get_frontal_face_detector()
    desc = torch.full((len(images), 128), float("nan"))
    failed = torch.ones(len(images), dtype=torch.bool)
    for i, img in enumerate(images):
        img = np.ascontiguousarray(img)
        boxes = detector(img, 1)
        if not boxes:
            continue
        box = max(boxes, key=lambda r: r.area())
        chip = dlib.get_face_chip(img, predictor(img, box), CHIP_SIZE, CHIP_PADDING)
        out = net(torch.from_numpy(chip.transpose(2, 0, 1).astype(np.float32))[None]).float()[0]
        if torch.isfinite(out).all():
            desc[i], failed[i] = out, False
    return desc, failed
