"""Ageing the faces of an ordinary photo: detect, crop as UTKFace crops its faces, translate, paste back.

Pure functions of arrays; the detector (YuNet, the judge's detector) and the method come in as
arguments, and `agebench/commands/age_photo.py` reads and writes the files. The crop reproduces the training
data's framing: UTKFace's aligned chips put the eyes at a fixed place and scale (measured with the same
detector, `UTKFACE_FRAMING`), so a face in a photo is cut out with the eyes at that place and scale
before the method sees it. Like UTKFace's chips after our resize, the crop is not rotated (box + resize
only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from PIL import Image


@dataclasses.dataclass(frozen=True)
class Framing:
    """Where the eyes sit in a training crop, as fractions of the crop side (YuNet landmarks)."""

    eye_distance: float
    eye_mid_x: float
    eye_mid_y: float


#: Medians over all 238 UTKFace chips of every 100th file (sorted names), YuNet (the judge's detector,
#: `metrics.sface.detect_in_photo`) on each chip padded with a 50% black border as PROTOCOL.md s.4 pads
#: (found in 238 of 238); 10-90% ranges: eye distance 0.365-0.434, midpoint x 0.470-0.512, y 0.273-0.314;
#: roll median 0.1 deg. (YuNet puts its eye points lower and closer than MTCNN did: 0.450/0.482/0.215.)
UTKFACE_FRAMING = Framing(eye_distance=0.402, eye_mid_x=0.487, eye_mid_y=0.295)

#: Detection runs on a copy whose longest side is at most this (faces are found as well at 1024 px,
#: and a 40 Mpx photo would otherwise cost the detector gigabytes); boxes are scaled back to full size.
DETECT_MAX_SIDE = 1024


@dataclasses.dataclass(frozen=True)
class Detection:
    """One detected face: box (x0, y0, x1, y1) and eye centres (x, y) in photo pixels (`left_eye` is the
    one further left in the image), and the detector's score."""

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


def for_detection(image: np.ndarray, max_side: int = DETECT_MAX_SIDE) -> tuple[np.ndarray, float]:
    """(an (h, w, 3) uint8 copy with longest side <= `max_side`, full-size pixels per copy pixel).

    The image itself (scale 1.0) when it is small enough; else a PIL antialiased (box-reduced,
    then bicubic) downscale.
    """
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image, 1.0
    scale = max(h, w) / max_side
    size = (max(1, round(w / scale)), max(1, round(h / scale)))
    small = Image.fromarray(image).resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    return np.asarray(small), scale


def scale_detection(det: Detection, scale: float) -> Detection:
    """A detection made on a copy downscaled by `scale`, in full-size pixel coordinates."""
    if scale == 1.0:
        return det
    return Detection(
        tuple(v * scale for v in det.box),  # type: ignore[arg-type]
        (det.left_eye[0] * scale, det.left_eye[1] * scale),
        (det.right_eye[0] * scale, det.right_eye[1] * scale),
        det.prob,
    )


def detect_faces(
    image: np.ndarray,
    detector: Callable[[np.ndarray], np.ndarray],
    min_score: float = 0.0,
    max_side: int = DETECT_MAX_SIDE,
) -> list[Detection]:
    """Faces in an (H, W, 3) uint8 RGB image, largest first.

    `detector(image)` returns YuNet rows, (K, 15) float: box x, y, w, h, five landmarks (x, y) with the
    two eyes first, score (`metrics.sface.detect_in_photo` with the judge bound). It sees a copy with
    longest side <= `max_side` (`for_detection`); the boxes and eyes come back in full-size pixels. Rows
    scoring below `min_score` are dropped.
    """
    small, scale = for_detection(image, max_side)
    found = from_yunet(np.asarray(detector(small), np.float64).reshape(-1, 15), min_score)
    return [scale_detection(d, scale) for d in found]


def from_yunet(rows: np.ndarray, min_score: float = 0.0) -> list[Detection]:
    """(K, 15) YuNet rows -> Detections, largest box first. The eyes are ordered by x (image left first):
    YuNet names them from the subject's side, and the crop only needs their midpoint and distance."""
    out = []
    for r in rows:
        if r[14] < min_score:
            continue
        x, y, w, h = map(float, r[:4])
        left, right = sorted([(float(r[4]), float(r[5])), (float(r[6]), float(r[7]))])
        out.append(Detection((x, y, x + w, y + h), left, right, float(r[14])))
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


def paste(photo: np.ndarray, face: np.ndarray, plan: FacePlan, mask: np.ndarray, inplace: bool = False) -> np.ndarray:
    """Blend a (side, side, 3) uint8 face into a copy of the (H, W, 3) uint8 photo with alpha `mask`
    (into `photo` itself with `inplace`: no full-size copy per face, which bounds age-photo's memory).

    Pixels where the mask is 0, and every pixel outside the crop, keep their exact original values.
    """
    out = photo if inplace else photo.copy()
    region = out[plan.y0 : plan.y0 + plan.side, plan.x0 : plan.x0 + plan.side]
    a = mask[..., None]
    blended = np.rint(a * face.astype(np.float64) + (1 - a) * region.astype(np.float64)).astype(np.uint8)
    region[...] = np.where(a > 0, blended, region)
    return out
