"""Ageing the faces of an ordinary photo: detect, crop as UTKFace crops its faces, translate, paste back.

Pure functions of arrays; the detector and the method come in as arguments, and `stages/age_photo.py`
reads and writes the files. The crop reproduces the training data's framing: UTKFace's aligned chips
put the eyes at a fixed place and scale (measured with the same detector, `UTKFACE_FRAMING`), so a
face in a photo is cut out with the eyes at that place and scale before the method sees it. Like
UTKFace's chips after our resize, the crop is not rotated (box + resize only).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Framing:
    """Where the eyes sit in a training crop, as fractions of the crop side (MTCNN landmarks)."""

    eye_distance: float
    eye_mid_x: float
    eye_mid_y: float


#: Medians over the 199 of 200 UTKFace chips (every 100th file, sorted names) where facenet-pytorch's
#: MTCNN found a face, measured on the dev machine; 10-90% ranges: eye distance 0.401-0.509,
#: midpoint x 0.398-0.587, y 0.153-0.270 (the chips are not perfectly consistent). Roll: median -0.2 deg.
UTKFACE_FRAMING = Framing(eye_distance=0.450, eye_mid_x=0.482, eye_mid_y=0.215)


@dataclasses.dataclass(frozen=True)
class Detection:
    """One detected face: box (x0, y0, x1, y1) and eye centres (x, y) in photo pixels, and confidence."""

    box: tuple[float, float, float, float]
    left_eye: tuple[float, float]
    right_eye: tuple[float, float]
    prob: float


@dataclasses.dataclass(frozen=True)
class FacePlan:
    """What happens to one detected face: its square crop (x0, y0, side) or why it is skipped."""

    detection: Detection
    x0: int
    y0: int
    side: int
    skipped: str | None = None


def detect_faces(image: np.ndarray, detector: Any, min_prob: float = 0.9) -> list[Detection]:
    """Faces in an (H, W, 3) uint8 RGB image, largest first, with `detector` an MTCNN(keep_all=True).

    Under numpy 2, facenet-pytorch returns boxes, probabilities and landmarks as object arrays: they
    are cast to float64 here. Detections below `min_prob` are dropped.
    """
    boxes, probs, landmarks = detector.detect(Image.fromarray(image), landmarks=True)
    if boxes is None:
        return []
    boxes = np.asarray(np.stack([np.asarray(b, np.float64) for b in boxes]), np.float64)
    probs = np.asarray([float(p) for p in probs], np.float64)
    landmarks = np.asarray(np.stack([np.asarray(lm, np.float64) for lm in landmarks]), np.float64)
    out = [
        Detection(tuple(map(float, b)), tuple(map(float, lm[0])), tuple(map(float, lm[1])), float(p))
        for b, p, lm in zip(boxes, probs, landmarks)
        if p >= min_prob
    ]
    return sorted(out, key=lambda d: -(d.box[2] - d.box[0]) * (d.box[3] - d.box[1]))


def crop_for(det: Detection, framing: Framing = UTKFACE_FRAMING) -> tuple[int, int, int]:
    """Square crop (x0, y0, side) in photo pixels that frames the face as the training chips do."""
    (lx, ly), (rx, ry) = det.left_eye, det.right_eye
    dist = float(np.hypot(rx - lx, ry - ly))
    side = max(1, round(dist / framing.eye_distance))
    mx, my = (lx + rx) / 2, (ly + ry) / 2
    return round(mx - framing.eye_mid_x * side), round(my - framing.eye_mid_y * side), side


def plan_faces(
    detections: list[Detection], height: int, width: int, min_side: int, framing: Framing = UTKFACE_FRAMING
) -> list[FacePlan]:
    """A crop per face; faces whose crop is under `min_side` pixels or leaves the photo are skipped
    (with the reason), since translating a padded or upscaled-from-nothing crop would be a guess."""
    plans = []
    for det in detections:
        x0, y0, side = crop_for(det, framing)
        reason = None
        if side < min_side:
            reason = f"too small ({side} px crop < {min_side} px)"
        elif x0 < 0 or y0 < 0 or x0 + side > width or y0 + side > height:
            reason = f"at the border (crop {x0},{y0} +{side} px leaves the {width}x{height} photo)"
        plans.append(FacePlan(det, x0, y0, side, reason))
    return plans


def feather_mask(side: int, feather: float = 0.2) -> np.ndarray:
    """(side, side) float64 alpha in [0, 1]: 1 in the middle, falling smoothly to exactly 0 on the crop's
    outermost pixels (transparency rising toward the border). The ramp is a smoothstep over
    `feather * side` pixels on each edge, so the slope never exceeds 1.5 / (feather * side) per pixel:
    no seam."""
    width = max(feather * side, 1.0)
    # Distance of each pixel centre from the outer edge of the border pixels: 0 on the border row.
    d = np.minimum(np.arange(side), np.arange(side)[::-1]).astype(np.float64)
    t = np.clip(d / width, 0.0, 1.0)
    ramp = t * t * (3 - 2 * t)
    return np.outer(ramp, ramp)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """(h, w, 3) uint8 -> (size, size, 3) uint8 with PIL's antialiased bicubic, as `prepare` resizes."""
    if image.shape[0] == image.shape[1] == size:
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None))


def cut(photo: np.ndarray, plan: FacePlan) -> np.ndarray:
    """The (side, side, 3) uint8 crop of an (H, W, 3) uint8 photo."""
    return photo[plan.y0 : plan.y0 + plan.side, plan.x0 : plan.x0 + plan.side]


def paste(photo: np.ndarray, face: np.ndarray, plan: FacePlan, mask: np.ndarray) -> np.ndarray:
    """Blend a (side, side, 3) uint8 face into a copy of the (H, W, 3) uint8 photo with alpha `mask`.

    Pixels where the mask is 0, and every pixel outside the crop, keep their exact original values.
    """
    out = photo.copy()
    region = out[plan.y0 : plan.y0 + plan.side, plan.x0 : plan.x0 + plan.side]
    a = mask[..., None]
    blended = np.rint(a * face.astype(np.float64) + (1 - a) * region.astype(np.float64)).astype(np.uint8)
    region[...] = np.where(a > 0, blended, region)
    return out
