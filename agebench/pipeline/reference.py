"""`reference` stage: the `real` reference row of PROTOCOL.md s.5, computed by the same code.

- the age estimator's accuracy on real test faces of every group of every scheme (its ceiling);
- per task (v3): the real age gap G (mean estimated age of the real target-group test faces minus
  that of the source-group ones, faces found by YuNet), the age ceiling `age_score_real` over all
  (source, target) pairs, the realism ceiling `realism_real` (improved precision of the real
  target-group test faces against the group's train faces) and the face-free `per_face_real` record
  they follow from;
- per task, the FID/KID noise floor at the task's own sample size (v2): N real faces of the target
  group (N = the task's number of outputs, drawn with seed 0) against the rest of the group. FID is
  biased by N, so a floor measured at another N is not comparable with the methods' scores;
- YuNet's detection rate on the real test faces (the face-validity check every output must pass);
- from FG-NET (same people photographed at several ages): the verification rate of real
  same-person pairs by age gap with both judges (SFace, and the configured second opinion, dlib by
  default), i.e. what real aging does to the identity score; and each judge's false-accept rate
  on pairs of different UTKFace people.
"""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from agebench.data.faces import faces_nchw, test_faces
from agebench.params.sections import GroupsConfig, Params
from metrics import stats
from metrics.fid import fid_kid_from_features
from metrics.keys import KEY_METRIC_FID, KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD
from metrics.precision import K_NEAREST, kynkaenniemi_inside
from metrics.scorer import Scorer

AGE_GAP_BINS = ((0, 5), (6, 15), (16, 30), (31, 200))
_FGNET_NAME = re.compile(r"^(\d{3})A(\d{2})[a-z]?\.jpe?g$", re.IGNORECASE)
#: Seed of the floor's draw of N real target faces (PROTOCOL.md s.5).
FLOOR_SEED = 0
#: Different-person pairs of UTKFace test faces for the judges' false-accept rate, and their seed (v3: 3,000).
FALSE_ACCEPT_PAIRS = 3000
FALSE_ACCEPT_SEED = 0


def estimator_ceilings(scorer: Scorer, groups: GroupsConfig, index: Any, faces: np.ndarray) -> dict[str, Any]:
    """Per scheme and group of `groups`: fraction of real test faces the estimator places inside the group."""
    out: dict[str, Any] = {}
    for scheme, scheme_groups in groups.schemes().items():
        out[scheme] = {}
        for g, bounds in scheme_groups.items():
            rows = test_faces(index, scheme, g)["row"].to_numpy()
            ages = scorer.estimate_ages(faces_nchw(faces, rows))
            idx = scorer.bootstrap.indices(len(rows))
            r = stats.rate_with_ci(stats.in_range(ages, tuple(bounds)).astype(np.float64), idx)
            out[scheme][g] = {
                "age_acc": r["value"],
                "ci95": r["ci95"],
                "n": len(rows),
                "age_mean": float(np.nanmean(ages)) if len(rows) else float("nan"),
            }
    return out


def floor_split(n_group: int, n: int, seed: int = FLOOR_SEED) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the floor's N drawn faces and of the rest of a group of `n_group` faces.

    Returns:
        (picked, rest): sorted int64 positions in [0, n_group), disjoint, covering the group;
        `picked` has min(n, n_group) entries drawn without replacement (numpy PCG64 seeded with `seed`).
    """
    n = min(n, n_group)
    rng = np.random.Generator(np.random.PCG64(seed))
    picked = np.sort(rng.choice(n_group, size=n, replace=False)).astype(np.int64)
    rest = np.setdiff1d(np.arange(n_group, dtype=np.int64), picked)
    return picked, rest


def same_n_floor(features: np.ndarray, n: int, scorer: Scorer) -> dict[str, Any]:
    """FID/KID of N real faces drawn with seed 0 against the rest of their group (PROTOCOL.md s.5 v2).

    Args:
        features: (M, 2048) Inception features of every real face of the target group (train and test).
        n: the task's number of outputs.
    Returns:
        {"fid", "kid_mean", "kid_std", "n_floor": N, "n_rest": M - N, "floor_seed"}; NaN values and a
        `floor_skipped` reason when either side would have fewer than 2 faces.
    """
    out: dict[str, Any] = {"n_floor": int(n), "n_rest": max(int(len(features) - n), 0), "floor_seed": FLOOR_SEED}
    if n < 2 or len(features) - n < 2:
        nan = float("nan")
        reason = f"the target group has {len(features)} faces, too few to draw {n} and keep 2 apart"
        return {**out, KEY_METRIC_FID: nan, KEY_METRIC_KID_MEAN: nan, KEY_METRIC_KID_STD: nan, "floor_skipped": reason}
    picked, rest = floor_split(len(features), n)
    # The one FID/KID assembly, in the methods' argument order (metrics.suite: real group first, then the N).
    r = fid_kid_from_features(features[rest], features[picked], scorer.kid)
    return {**out, **{k: r[k] for k in (KEY_METRIC_FID, KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD)}}


def detection_rate(scorer: Scorer, images: Any) -> dict[str, Any]:
    """YuNet's detection rate (PROTOCOL.md s.4 face validity) on real faces, with its 95% interval.

    Args:
        images: (N, 3, S, S) uint8 tensor of real faces.
    Returns:
        {"face_found_rate", "ci95", "n", "not_found"}.
    """
    found = scorer.faces_found(images)
    idx = scorer.bootstrap.indices(len(found))
    r = stats.rate_with_ci(found.astype(np.float64), idx)  # Wilson when YuNet misses fewer than 10 faces
    return {"face_found_rate": r["value"], "ci95": r["ci95"], "n": len(found), "not_found": int((~found).sum())}


def real_floor(
    scorer: Scorer,
    params: Params,
    index: Any,
    faces: np.ndarray,
    per_face: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """Per task: the FID/KID floor at the task's N (`n_floor`), the age ceilings (`age_acc_real`, and v3's
    `gap` and `age_score_real` over `n` target faces found), the realism ceiling `realism_real`, YuNet's
    detection rate and the face-free `per_face_real` record ({age_source, age_target, realistic_target}).

    `per_face`, when given, receives `<task>/rows` and `<task>/age_real` (estimated ages of the real
    test faces of the target group) for the report's age distributions.
    """
    schemes = params.groups.schemes()
    out = {}
    for task_id, t in params.tasks.items():
        in_target = index[t.scheme] == t.target
        test_rows = test_faces(index, t.scheme, t.target)["row"].to_numpy()
        # The task's outputs: one per test face of the source group (PROTOCOL.md s.3).
        n_outputs = len(test_faces(index, t.scheme, t.source))
        res: dict[str, Any] = {
            "scheme": t.scheme,
            "source": t.source,
            "target": t.target,
            "n": len(test_rows),
            "n_real_target": int(in_target.sum()),
        }
        ages = scorer.estimate_ages(faces_nchw(faces, test_rows))
        if per_face is not None:
            per_face[f"{task_id}/rows"], per_face[f"{task_id}/age_real"] = test_rows, ages
        idx = scorer.bootstrap.indices(len(test_rows))
        r = stats.rate_with_ci(stats.in_range(ages, tuple(schemes[t.scheme][t.target])).astype(np.float64), idx)
        res["age_acc"] = res["age_acc_real"] = r["value"]
        res["ci95"] = {"age_acc": r["ci95"], "age_acc_real": r["ci95"]}
        det = detection_rate(scorer, faces_nchw(faces, test_rows))
        res["face_found_rate"] = det["face_found_rate"]
        res["ci95"]["face_found_rate"] = det["ci95"]
        # The real gap and the age ceiling, on the test faces of both groups that YuNet finds (as evaluate).
        source_rows = test_faces(index, t.scheme, t.source)["row"].to_numpy()
        age_source = found_ages(scorer, faces_nchw(faces, source_rows))
        age_target = found_ages(scorer, faces_nchw(faces, test_rows))
        ceiling = stats.real_age_ceiling(age_source, age_target, scorer.bootstrap.resamples, scorer.bootstrap.seed)
        res["gap"], res["age_score_real"] = ceiling["gap"], ceiling["age_score_real"]
        res["ci95"].update(ceiling["ci95"])
        res["n"], res["n_source"], res["n_target_test"] = len(age_target), len(age_source), len(test_rows)
        # Features of the whole target group in the order `evaluate` uses: one cached set for both stages.
        all_rows = index.loc[in_target, "row"].to_numpy()
        f_all = scorer.inception_features(faces_nchw(faces, all_rows)) if len(all_rows) else np.zeros((0, 2048))
        res.update(same_n_floor(f_all, n_outputs, scorer))
        # Realism ceiling: the real target-group test faces against the group's train faces (the manifold).
        train = (index.loc[in_target, "split"] == "train").to_numpy()
        test = (index.loc[in_target, "split"] == "test").to_numpy()
        realistic = np.zeros(len(test_rows), bool)
        if int(train.sum()) > K_NEAREST and len(test_rows):
            realistic = kynkaenniemi_inside(f_all[test], f_all[train], K_NEAREST)
            realistic &= scorer.faces_found(faces_nchw(faces, test_rows))
        rr = stats.rate_with_ci(realistic.astype(np.float64), idx)
        res["realism_real"] = rr["value"]
        res["ci95"]["realism_real"] = rr["ci95"]
        res["n_manifold"] = int(train.sum())
        res["per_face_real"] = {
            "age_source": [float(a) for a in age_source],
            "age_target": [float(a) for a in age_target],
            "realistic_target": [int(v) for v in realistic],
        }
        out[task_id] = res
    return out


def found_ages(scorer: Scorer, images: Any) -> np.ndarray:
    """Estimated ages of the real faces in `images` ((N, 3, S, S) uint8) that YuNet finds and the estimator
    reads, in order: the faces the real gap is measured on (PROTOCOL.md s.4 v3)."""
    if not len(images):
        return np.zeros(0)
    ages, found = scorer.estimate_ages(images), scorer.faces_found(images)
    return np.asarray(ages, np.float64)[found & np.isfinite(ages)]


def different_person_pairs(index: Any, faces: np.ndarray, n_pairs: int, seed: int) -> np.ndarray:
    """(K, 2) rows of distinct UTKFace test faces, K = n_pairs when the test split allows it.

    UTKFace has no identity labels; two different files are taken as different people, except files
    with identical pixels (duplicates kept on one side of the split by v2) or the same labels and
    capture time in the name, which are skipped.
    """
    test = index[index["split"] == "test"]
    rows = test["row"].to_numpy()
    stems = test["file"].astype(str).str.split(".").str[0].to_numpy() if "file" in test else None
    rng = np.random.Generator(np.random.PCG64(seed))
    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    tries = 0
    while len(pairs) < n_pairs and len(rows) >= 2 and tries < 50 * n_pairs:
        tries += 1
        i, j = rng.choice(len(rows), size=2, replace=False)
        a, b = int(rows[i]), int(rows[j])
        key = (min(a, b), max(a, b))
        if key in seen or np.array_equal(faces[a], faces[b]) or (stems is not None and stems[i] == stems[j]):
            continue
        seen.add(key)
        pairs.append((a, b))
    return np.asarray(pairs, np.int64).reshape(-1, 2)


def false_accepts(scorer: Scorer, index: Any, faces: np.ndarray, n_pairs: int = FALSE_ACCEPT_PAIRS) -> dict[str, Any]:
    """Every judge's false-accept rate on pairs of different UTKFace people (test split, seed 0; v3: 3,000
    pairs, Wilson 95% intervals, since false accepts are rare events).

    Judges are the scorer's: SFace and the configured second opinion (`evaluate.id_backend`). A pair
    where either face cannot be read is not accepted, as in `id_rate`; `id_fail` counts them.
    """
    pairs = different_person_pairs(index, faces, n_pairs, FALSE_ACCEPT_SEED)
    out: dict[str, Any] = {"pairs": len(pairs), "seed": FALSE_ACCEPT_SEED, "split": "test", "judges": {}}
    # Each face once through the networks (3,000 pairs reuse ~2,400 test faces), then paired by position.
    rows, pos = np.unique(pairs.ravel(), return_inverse=True)
    pos = pos.reshape(-1, 2)
    images = faces_nchw(faces, rows)
    for name in sorted(scorer.judges):
        desc = scorer.descriptors(images, name)
        v = scorer.judge(name).verify(desc[pos[:, 0]], desc[pos[:, 1]])
        accepted = int(v.same.sum())
        out["judges"][name] = {
            "false_accept_rate": accepted / len(pairs) if len(pairs) else float("nan"),
            "false_accepts": accepted,
            "ci95": list(stats.wilson_interval(accepted, len(pairs))),
            "interval": "wilson",
            "id_fail": int(v.failed.sum()),
            "threshold": scorer.judge(name).threshold,
            "rule": scorer.judge(name).kind,
        }
    return out


def _gap_bins(
    subjects: list[str], ages: list[int], score: np.ndarray | None, same: np.ndarray, failed: np.ndarray, key: str
) -> dict[str, dict[str, float]]:
    """Per age-gap bin over all same-subject pairs: pairs, id_rate, id_fail and the mean score `key`.

    `same`, `failed`: (n, n) bool matrices (verified, either side failed); `score`: (n, n) float or None.
    """
    bins: dict[str, dict[str, float]] = {}
    for lo, hi in AGE_GAP_BINS:
        name = f"{lo}-{hi}" if hi < 200 else f">{lo - 1}"
        sel = [
            (i, j)
            for i, j in combinations(range(len(subjects)), 2)
            if subjects[i] == subjects[j] and lo <= abs(ages[i] - ages[j]) <= hi
        ]
        ok = np.array([same[i, j] for i, j in sel], bool)
        bad = np.array([failed[i, j] for i, j in sel], bool)
        vals = np.array([score[i, j] for i, j in sel], np.float64) if score is not None else np.zeros(0)
        bins[name] = {
            "pairs": len(sel),
            "id_rate": float(ok.mean()) if len(sel) else float("nan"),
            "id_fail": int(bad.sum()),
        }
        if score is not None:
            bins[name][key] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    return bins


def read_fgnet(folder: Path) -> tuple[list[np.ndarray], list[str], list[int]]:
    """FG-NET photos `SSSAaa[x].JPG` of `folder` (sorted): RGB arrays, subject ids and ages."""
    files = sorted(p for p in folder.iterdir() if _FGNET_NAME.match(p.name))
    images, subjects, ages = [], [], []
    for p in files:
        m = _FGNET_NAME.match(p.name)
        with Image.open(p) as img:
            images.append(np.asarray(ImageOps.exif_transpose(img).convert("RGB")))
        subjects.append(m.group(1))
        ages.append(int(m.group(2)))
    return images, subjects, ages


def fgnet_pairs(folder: Path, scorer: Scorer) -> dict[str, Any]:
    """Same-person verification rate of FG-NET pairs by age gap (all pairs of each subject), every judge.

    Each judge verifies with its own rule (`Judge.verify`). FG-NET photos are whole pictures, not
    crops: SFace finds the face with YuNet on the padded photo, as on any image; dlib, whose scorer
    path expects a crop, finds it with its own HOG detector (`metrics.identity.detected_descriptors`);
    a judge with no photo detector here (FaceNet) has a section saying it was skipped.

    Returns:
        {"images", "subjects", <judge>: {"threshold", "rule", "faces_found", "by_age_gap": {bin: {pairs,
        id_rate, id_fail, score}}}}; `score` is the mean cosine (SFace) or distance (dlib) over computed pairs.
    """
    images, subjects, ages = read_fgnet(folder)
    if not images:
        return {"skipped": f"no FG-NET images (SSSAaa.JPG) in {folder}"}
    out: dict[str, Any] = {"images": len(images), "subjects": len(set(subjects))}
    for name in sorted(scorer.judges):
        judge = scorer.judge(name)
        if name == "sface":
            # Photos differ in size: one at a time (the padding and YuNet's input size follow each photo).
            desc = np.concatenate([scorer.descriptors(_nchw(img), name) for img in images])
        elif name == "dlib":
            from metrics.identity import detected_descriptors, load_identity_networks

            net, predictor = load_identity_networks()
            d, failed = detected_descriptors(images, net, predictor)
            desc = d.numpy().astype(np.float64)
            desc[failed.numpy()] = np.nan
        else:
            out[name] = {"skipped": f"no photo face detector for the {name} judge"}
            continue
        n = len(images)
        ii, jj = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n), indexing="ij"))
        v = judge.verify(desc[ii], desc[jj])
        out[name] = {
            "threshold": judge.threshold,
            "rule": judge.kind,
            "faces_found": int(np.isfinite(desc).all(axis=1).sum()),
            "by_age_gap": _gap_bins(
                subjects, ages, v.score.reshape(n, n), v.same.reshape(n, n), v.failed.reshape(n, n), "score"
            ),
        }
    return out


def _nchw(image: np.ndarray) -> Any:
    """(H, W, 3) uint8 -> (1, 3, H, W) uint8 tensor."""
    import torch

    return torch.from_numpy(np.array(image, np.uint8)).permute(2, 0, 1)[None].contiguous()


def real_row(
    scorer: Scorer,
    params: Params,
    index: Any,
    faces: np.ndarray,
    fgnet_dir: Path | None,
    per_face: dict[str, np.ndarray] | None = None,
) -> dict[str, Any]:
    """The `real` reference document (without `result_context`'s provenance keys).

    Args:
        faces: (M, S, S, 3) uint8 prepared faces at the evaluation size, indexed by `index["row"]`.
        fgnet_dir: FG-NET folder, or None / a missing folder (its section then names why it is skipped).
    """
    test_rows = index.loc[index["split"] == "test", "row"].to_numpy()
    doc: dict[str, Any] = {
        "method": "real",
        "kind": "reference",
        "profile": params.profile,
        "tasks": real_floor(scorer, params, index, faces, per_face),
        "age_ceiling": estimator_ceilings(scorer, params.groups, index, faces),
        "face_detection": detection_rate(scorer, faces_nchw(faces, test_rows)),
        "false_accept": false_accepts(scorer, index, faces),
    }
    if fgnet_dir is not None and fgnet_dir.is_dir():
        doc["fgnet"] = fgnet_pairs(fgnet_dir, scorer)
    else:
        doc["fgnet"] = {"skipped": f"FG-NET folder not found ({fgnet_dir}); set evaluate.fgnet_dir"}
    return doc
