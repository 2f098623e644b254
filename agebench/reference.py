"""`reference` stage: the `real` reference row of PROTOCOL.md s.5, computed by the same code.

- the age estimator's accuracy on real test faces of every group of every scheme (its ceiling);
- FID/KID between real test and real train faces of each task's target group (the noise floor
  of those metrics at this sample size);
- from FG-NET (same people photographed at several ages): the verification rate of real
  same-person pairs by age gap, i.e. what real aging does to the identity score.
"""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from agebench.config import Params
from agebench.data import faces_nchw
from metrics import stats
from metrics.fid import fid_from_features, kid_from_features
from metrics.suite import Scorer

AGE_GAP_BINS = ((0, 5), (6, 15), (16, 30), (31, 200))
_FGNET_NAME = re.compile(r"^(\d{3})A(\d{2})[a-z]?\.jpe?g$", re.IGNORECASE)


def estimator_ceilings(scorer: Scorer, params: Params, index: Any, faces: np.ndarray) -> dict[str, Any]:
    """Per scheme and group: fraction of real test faces the estimator places inside the group."""
    out: dict[str, Any] = {}
    test = index[index["split"] == "test"]
    for scheme, groups in params.groups.schemes().items():
        out[scheme] = {}
        for g, bounds in groups.items():
            rows = test.loc[test[scheme] == g, "row"].to_numpy()
            ages = scorer.estimate_ages(faces_nchw(faces, rows))
            idx = stats.bootstrap_indices(len(rows), scorer.bootstrap_resamples, scorer.bootstrap_seed)
            r = stats.mean_with_ci(stats.in_range(ages, tuple(bounds)).astype(np.float64), idx)
            out[scheme][g] = {
                "age_acc": r["value"],
                "ci95": r["ci95"],
                "n": len(rows),
                "age_mean": float(np.nanmean(ages)) if len(rows) else float("nan"),
            }
    return out


def real_floor(
    scorer: Scorer, params: Params, index: Any, faces: np.ndarray, per_face: dict[str, np.ndarray] | None = None
) -> dict[str, Any]:
    """Per task: FID/KID of real test vs real train faces of the target group, and the age ceiling.

    `per_face`, when given, receives `<task>/rows` and `<task>/age_real` (estimated ages of the real
    test faces of the target group) for the report's age distributions.
    """
    schemes = params.groups.schemes()
    out = {}
    for task_id, t in params.tasks.items():
        in_target = index[t.scheme] == t.target
        test_rows = index.loc[in_target & (index["split"] == "test"), "row"].to_numpy()
        train_rows = index.loc[in_target & (index["split"] == "train"), "row"].to_numpy()
        res: dict[str, Any] = {
            "scheme": t.scheme,
            "source": t.source,
            "target": t.target,
            "n": len(test_rows),
            "n_real_target": len(train_rows),
        }
        ages = scorer.estimate_ages(faces_nchw(faces, test_rows))
        if per_face is not None:
            per_face[f"{task_id}/rows"], per_face[f"{task_id}/age_real"] = test_rows, ages
        idx = stats.bootstrap_indices(len(test_rows), scorer.bootstrap_resamples, scorer.bootstrap_seed)
        r = stats.mean_with_ci(stats.in_range(ages, tuple(schemes[t.scheme][t.target])).astype(np.float64), idx)
        res["age_acc"] = res["age_acc_real"] = r["value"]
        res["ci95"] = {"age_acc": r["ci95"]}
        if len(test_rows) >= 2 and len(train_rows) >= 2:
            # Features of the whole target group, in the order `evaluate` uses: one cached set for both.
            all_rows = index.loc[in_target, "row"].to_numpy()
            f_all = scorer.inception_features(faces_nchw(faces, all_rows))
            is_test = (index.loc[in_target, "split"] == "test").to_numpy()
            f_test, f_train = f_all[is_test], f_all[~is_test]
            res["fid"] = fid_from_features(f_train, f_test)
            res["kid_mean"], res["kid_std"] = kid_from_features(
                f_train, f_test, scorer.kid_subsets, scorer.kid_subset_size, scorer.kid_seed
            )
        out[task_id] = res
    return out


def fgnet_pairs(folder: Path, threshold: float) -> dict[str, Any]:
    """Same-person verification rate of FG-NET pairs by age gap (all pairs of each subject)."""
    from metrics.identity import detected_descriptors, load_identity_networks

    files = sorted(p for p in folder.iterdir() if _FGNET_NAME.match(p.name))
    if not files:
        return {"skipped": f"no FG-NET images (SSSAaa.JPG) in {folder}"}
    images, subjects, ages = [], [], []
    for p in files:
        m = _FGNET_NAME.match(p.name)
        with Image.open(p) as img:
            images.append(np.asarray(ImageOps.exif_transpose(img).convert("RGB")))
        subjects.append(m.group(1))
        ages.append(int(m.group(2)))
    net, predictor = load_identity_networks()
    desc, failed = detected_descriptors(images, net, predictor)
    desc, failed = desc.numpy().astype(np.float64), failed.numpy()
    bins: dict[str, dict[str, float]] = {}
    for lo, hi in AGE_GAP_BINS:
        name = f"{lo}-{hi}" if hi < 200 else f">{lo - 1}"
        dists = []
        n_failed = 0
        for i, j in combinations(range(len(files)), 2):
            if subjects[i] != subjects[j] or not lo <= abs(ages[i] - ages[j]) <= hi:
                continue
            if failed[i] or failed[j]:
                n_failed += 1
                dists.append(np.nan)
            else:
                dists.append(float(np.linalg.norm(desc[i] - desc[j])))
        d = np.asarray(dists)
        bins[name] = {
            "pairs": len(d),
            "id_rate": float(np.mean(np.nan_to_num(d, nan=np.inf) < threshold)) if len(d) else float("nan"),
            "id_fail": n_failed,
            "id_dist": float(np.nanmean(d)) if np.isfinite(d).any() else float("nan"),
        }
    return {
        "images": len(files),
        "faces_found": int((~failed).sum()),
        "subjects": len(set(subjects)),
        "by_age_gap": bins,
    }
