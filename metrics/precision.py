"""Per-face realism (PROTOCOL.md s.4 v3): improved precision of Kynkaenniemi et al. 2019.

"Improved Precision and Recall Metric for Assessing Generative Models" (NeurIPS 2019): the real
set's manifold is the union of hyperspheres around each real feature f_j, of radius r_j = the
distance from f_j to its k-th nearest other real feature; a generated feature f_i is inside when
some j has ||f_i - f_j|| <= r_j. Matches stylegan2-ada-pytorch `metrics/precision_recall.py`
(`radii = kthvalue(dist, k + 1)` over the real set including itself, `pred = (dist <= radii).any()`),
which uses VGG-16 features and float32 `torch.cdist`; here the features are the FID features (TF-Inception
pool3) and distances are float64, computed in row chunks so that a 2,082 x 2,082 real set (UTKFace's
50-59 train faces) needs a few MB at a time.

Pure functions of feature arrays: the network and its cache live in `metrics.suite.Scorer`.
"""

from __future__ import annotations

import numpy as np

#: Neighbourhood size of the protocol (PROTOCOL.md s.4 v3: the 3rd nearest other real train face).
K_NEAREST = 3
#: Rows of the distance matrix held at once (x the reference size x 8 bytes).
CHUNK_ROWS = 512


def _as_features(x: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(x, np.float64)
    if a.ndim != 2:
        raise ValueError(f"{what}: expected (N, D) features, got shape {a.shape}")
    return a


def _distances(a: np.ndarray, b: np.ndarray, b_sq: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) float64 Euclidean distances, |a|^2 + |b|^2 - 2 a.b clipped at 0 (rounding)."""
    d2 = (a * a).sum(1)[:, None] + b_sq[None, :] - 2.0 * (a @ b.T)
    return np.sqrt(np.maximum(d2, 0.0))


def kynkaenniemi_radii(reference: np.ndarray, k: int = K_NEAREST, chunk: int = CHUNK_ROWS) -> np.ndarray:
    """r_j: the distance from each reference feature to its k-th nearest OTHER reference feature.

    Args:
        reference: (M, D) features of the real set, M > k.
        k: neighbourhood size (>= 1).
    Returns:
        (M,) float64 radii (0 where f_j has k or more exact duplicates in the set).
    """
    ref = _as_features(reference, "reference")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if len(ref) <= k:
        raise ValueError(f"the real set has {len(ref)} faces; improved precision with k={k} needs more than {k}")
    ref_sq = (ref * ref).sum(1)
    radii = np.empty(len(ref))
    for s in range(0, len(ref), chunk):
        d = _distances(ref[s : s + chunk], ref, ref_sq)
        rows = np.arange(len(d))
        d[rows, s + rows] = np.inf  # a face is not its own neighbour
        radii[s : s + chunk] = np.partition(d, k - 1, axis=1)[:, k - 1]
    return radii


def kynkaenniemi_inside(
    features: np.ndarray,
    reference: np.ndarray,
    k: int = K_NEAREST,
    radii: np.ndarray | None = None,
    chunk: int = CHUNK_ROWS,
) -> np.ndarray:
    """realistic_i: whether feature i lies inside the reference manifold (some j: ||f_i - f_j|| <= r_j).

    Args:
        features: (N, D) features to test (e.g. one method's outputs); NaN rows are never inside.
        reference: (M, D) real features (the manifold), M > k.
        k: neighbourhood size; radii: precomputed `kynkaenniemi_radii(reference, k)` (else computed).
    Returns:
        (N,) bool.
    """
    f = _as_features(features, "features")
    ref = _as_features(reference, "reference")
    if f.shape[1] != ref.shape[1] and len(f):
        raise ValueError(f"features have {f.shape[1]} dimensions, the reference {ref.shape[1]}")
    r = kynkaenniemi_radii(ref, k, chunk) if radii is None else np.asarray(radii, np.float64)
    ref_sq = (ref * ref).sum(1)
    finite = np.isfinite(f).all(1)
    out = np.zeros(len(f), bool)
    for s in range(0, len(f), chunk):
        part = f[s : s + chunk]
        ok = finite[s : s + chunk]
        inside = (_distances(np.where(ok[:, None], part, 0.0), ref, ref_sq) <= r[None, :]).any(1)
        out[s : s + chunk] = inside & ok
    return out


def kynkaenniemi_precision(features: np.ndarray, reference: np.ndarray, k: int = K_NEAREST) -> float:
    """Improved precision: the fraction of `features` inside the reference manifold (NaN for no features)."""
    inside = kynkaenniemi_inside(features, reference, k)
    return float(inside.mean()) if len(inside) else float("nan")
