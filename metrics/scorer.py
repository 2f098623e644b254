"""The networks a task is scored with, bundled: `Scorer` (age estimator, identity judges, face detector,
Inception, an optional cache), `Judge` (one identity judge) and the verification of image pairs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Literal

import numpy as np
import torch
from torch import nn

from metrics.fid import ArrayCache, KidSettings, content_key
from metrics.stats import BootstrapSettings

AgeFn = Callable[[torch.Tensor], np.ndarray]


#: (N, 3, H, W) uint8 -> (N, 16) float64 packed face detections (`metrics.sface.Detections.pack`).
DetectFn = Callable[[torch.Tensor], np.ndarray]


#: (images (N, 3, H, W) uint8, packed detections (N, 16) of the same images) -> (N, D) float64
#: descriptors, NaN rows where the judge could not compute one.
FeatureFn = Callable[[torch.Tensor, np.ndarray], np.ndarray]


def images_key(images: torch.Tensor, namespace: str) -> str:
    """sha256 of a uint8 (N, 3, H, W) tensor's shape and bytes, salted with `namespace` (one hash for
    every cache: `metrics.fid.content_key`)."""
    return content_key(images, namespace)


@dataclasses.dataclass(frozen=True)
class Verification:
    """Row-aligned pair verification: `score` (N,) float64 (cosine similarity or Euclidean distance,
    NaN where failed), `same` (N,) bool (False where failed), `failed` (N,) bool."""

    score: np.ndarray
    same: np.ndarray
    failed: np.ndarray


def verify_pairs(
    desc_a: np.ndarray, desc_b: np.ndarray, threshold: float, kind: Literal["cosine", "distance"]
) -> Verification:
    """The one verification rule (PROTOCOL.md s.4), for every judge.

    Args:
        desc_a, desc_b: (N, D) descriptors, NaN rows where a face could not be read.
        threshold: same person when cosine >= threshold ("cosine", SFace) or distance < threshold
            ("distance", dlib / FaceNet).
    """
    a, b = np.asarray(desc_a, np.float64), np.asarray(desc_b, np.float64)
    failed = ~(np.isfinite(a).all(1) & np.isfinite(b).all(1)) if a.size else np.zeros(len(a), bool)
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "cosine":
            score = np.clip((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)), -1.0, 1.0)
            same = score >= threshold
        elif kind == "distance":
            score = np.linalg.norm(a - b, axis=1)
            same = score < threshold
        else:
            raise ValueError(f"unknown verification kind {kind!r}; use 'cosine' or 'distance'")
    score = np.where(failed, np.nan, score)
    return Verification(score=score, same=same & ~failed, failed=failed)


@dataclasses.dataclass
class Judge:
    """One identity judge: descriptors and the rule that compares them.

    Attributes:
        features: see `FeatureFn`.
        kind, threshold: the verification rule (`verify_pairs`).
        namespace: identity of the network(s) (e.g. the weights' sha256), mixed into cache keys.
    """

    features: FeatureFn
    kind: Literal["cosine", "distance"]
    threshold: float
    namespace: str

    def verify(self, desc_a: np.ndarray, desc_b: np.ndarray) -> Verification:
        """`verify_pairs` with this judge's rule."""
        return verify_pairs(desc_a, desc_b, self.threshold, self.kind)


@dataclasses.dataclass
class Scorer:
    """Networks and settings for scoring; see PROTOCOL.md s.4 for every definition.

    Attributes:
        ages: (N, 3, H, W) uint8 -> (N,) float64 estimated ages, NaN where the estimator failed.
        detect: face validity (YuNet on the padded image), see `DetectFn`.
        judges: identity judges by name ("sface" the judge, "dlib" the second opinion, ...).
        inception: TF-Inception feature extractor from `metrics.fid.load_inception`.
        kid, bootstrap: KID's subset draw and the face bootstrap's draw.
        namespaces: network identity per kind ("age", "detect", "inception") mixed into cache keys.
    """

    ages: AgeFn
    detect: DetectFn
    judges: dict[str, Judge]
    inception: nn.Module
    batch_size: int = 64
    kid: KidSettings = dataclasses.field(default_factory=KidSettings)
    bootstrap: BootstrapSettings = dataclasses.field(default_factory=BootstrapSettings)
    cache: ArrayCache | None = None
    namespaces: dict[str, str] = dataclasses.field(default_factory=dict)
    #: Show a progress bar (stderr) while a network runs over an image set that is not cached.
    progress: bool = False

    def _chunked(self, kind: str, images: torch.Tensor, fn: Callable[[torch.Tensor, slice], np.ndarray]) -> np.ndarray:
        """`fn(images[s], s)` over the set in chunks (rows are independent), with a progress bar when asked."""
        chunk = 512
        if not self.progress or len(images) <= chunk:
            return np.asarray(fn(images, slice(0, len(images))))
        from tqdm import tqdm

        parts = []
        with tqdm(total=len(images), desc=f"  {kind}", unit="img", leave=False) as bar:
            for s in range(0, len(images), chunk):
                sl = slice(s, min(s + chunk, len(images)))
                parts.append(np.asarray(fn(images[sl], sl)))
                bar.update(sl.stop - sl.start)
        return np.concatenate(parts)

    def _cached(
        self, kind: str, namespace: str, images: torch.Tensor, fn: Callable[[torch.Tensor, slice], np.ndarray]
    ) -> np.ndarray:
        if self.cache is None or len(images) == 0:
            return self._chunked(kind, images, fn)
        key = f"{kind}-{images_key(images, namespace)}"
        hit = self.cache.get(key)
        if hit is not None:
            return np.asarray(hit)
        value = self._chunked(kind, images, fn)
        self.cache.put(key, value)
        return value

    def estimate_ages(self, images: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) uint8 -> (N,) float64 ages (NaN: failed), cached by content."""
        ns = self.namespaces.get("age", "age")
        return np.asarray(
            self._cached("age", ns, images, lambda x, _: np.asarray(self.ages(x), np.float64)), np.float64
        )

    def detections(self, images: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) uint8 -> (N, 16) float64 packed YuNet detections, cached by content."""
        ns = self.namespaces.get("detect", "detect")
        return np.asarray(self._cached("detect", ns, images, lambda x, _: self.detect(x)), np.float64).reshape(-1, 16)

    def faces_found(self, images: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) uint8 -> (N,) bool: a face was found (face validity, PROTOCOL.md s.4)."""
        return self.detections(images)[:, 0] > 0.5

    def judge(self, name: str) -> Judge:
        """The judge `name`; a KeyError names the judges this scorer has."""
        if name not in self.judges:
            raise KeyError(f"this scorer has no identity judge {name!r}; it has: {', '.join(sorted(self.judges))}")
        return self.judges[name]

    def descriptors(self, images: torch.Tensor, judge: str) -> np.ndarray:
        """(N, 3, H, W) uint8 -> (N, D) float64 descriptors of judge `judge` (NaN rows: failed), cached."""
        j = self.judge(judge)
        det = self.detections(images) if len(images) else np.zeros((0, 16))
        ns = f"{j.namespace}|{self.namespaces.get('detect', 'detect')}"
        return np.asarray(self._cached(f"id-{judge}", ns, images, lambda x, s: j.features(x, det[s])), np.float64)

    def verify(self, images_a: torch.Tensor, images_b: torch.Tensor, judge: str) -> Verification:
        """Verify row i of `images_a` against row i of `images_b` with judge `judge` (the one path used by
        scoring, the reference row, reconstructions and the CLI)."""
        return self.judge(judge).verify(self.descriptors(images_a, judge), self.descriptors(images_b, judge))

    def inception_features(self, images: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) uint8 -> (N, 2048) float64 pool3 features, cached by content."""
        from metrics.fid import inception_features

        ns = self.namespaces.get("inception", "inception")
        return np.asarray(
            self._cached(
                "inception", ns, images, lambda x, _: inception_features(x, self.inception, self.batch_size).numpy()
            ),
            np.float64,
        )

    def fid_kid(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        """FID/KID (PROTOCOL.md s.4, this scorer's KID settings) between two image sets, features cached.

        Returns `metrics.fid.fid_kid_from_features`'s dict (NaN values when a set has < 2 images).
        """
        from metrics.fid import fid_kid_from_features

        enough = len(real) >= 2 and len(fake) >= 2
        f_real = self.inception_features(real) if enough else np.zeros((len(real), 0))
        f_fake = self.inception_features(fake) if enough else np.zeros((len(fake), 0))
        return fid_kid_from_features(f_real, f_fake, self.kid)
