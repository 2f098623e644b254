"""Learning curves: a method's training snapshots scored on the validation split (never the test faces).

`train.snapshots` makes the train stage write `models/<m>/snapshots/step_<n>.pt` with the CPU time spent so
far; `learning_curve` translates the validation faces of both common tasks with each snapshot and scores them
with the protocol's own scoring code, with the validation split in the role of the test split:

- the validation faces of a task's source group are its inputs, those of its target group the real faces of
  its gap and its realism ceiling; the target group's train faces (validation excluded, as in training) are the
  realism manifold and, with the target validation faces, the FID reference;
- the test split is dropped from the index first, so no test face is read, translated or compared with.

So `gap_closure`, `id_rate`, `realism`, `face_fail` and FID at each snapshot mean what they mean on the
leaderboard, on other faces. They are what the cpu track's budget and every tuning choice are read from.
Each group's validation faces are capped at `limit` (a stable hash order picks them), as scoring every
snapshot on every validation face would cost more than the training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from agebench.data.faces import faces_nchw, load_faces, load_index, validation_mask
from agebench.infra.common import provenance
from agebench.infra.errors import UserError
from agebench.infra.registry import resolve_metrics
from agebench.params.sections import Params
from agebench.pipeline.evaluate import nchw
from agebench.pipeline.generate import build_method, load_trained_checkpoint, task_list, to_eval_resolution
from agebench.pipeline.reference import real_floor
from agebench.pipeline.tasks import TaskSpec
from methods.base import Method, float_to_uint8, uint8_to_float
from metrics import keys
from metrics.scorer import Scorer
from metrics.suite import score_task

#: Metrics scored at each snapshot (registry names): what the cpu track's targets are stated in.
CURVE_METRICS = ("face", "age", "identity", "realism", "joint", "fid")
#: The values kept per task and snapshot (face_fail as a share of the outputs is added).
CURVE_KEYS = (
    keys.KEY_METRIC_GAP_CLOSURE,
    keys.KEY_METRIC_AGE_SCORE,
    keys.KEY_METRIC_ID_RATE,
    keys.KEY_METRIC_REALISM,
    keys.KEY_METRIC_JOINT,
    keys.KEY_METRIC_FID,
    keys.KEY_METRIC_FACE_FAIL,
)
SNAPSHOT_RE = re.compile(r"step_(\d+)\.pt")


class NoSnapshotsError(UserError, FileNotFoundError):
    """A model folder without training snapshots."""


@dataclasses.dataclass(frozen=True)
class ValidationSplit:
    """The validation split as the scoring code sees it: `index` is the prepared index without the test faces,
    with the (capped) validation faces labelled "test" and the other validation faces dropped."""

    index: pd.DataFrame
    fraction: float
    limit: int


def hash_order(names: list[str]) -> np.ndarray:
    """(N,) int order of `names` by sha1 of the name: a stable pick of K faces that ignores the name's age
    prefix (UTKFace names start with the age, so index order is age order)."""
    digests = [hashlib.sha1(b"agebench-curves:" + os.fsencode(n)).hexdigest() for n in names]
    return np.argsort(np.array(digests), kind="stable")


def validation_split(
    index: pd.DataFrame,
    fraction: float,
    limit: int,
    schemes: dict[str, dict[str, Any]],
    reference_limit: int = 0,
    reference_schemes: tuple[str, ...] = (),
) -> ValidationSplit:
    """The relabelled index (see `ValidationSplit`): per group of every scheme, at most `limit` validation
    faces (by `hash_order`) become "test"; the real test faces and the other validation faces are dropped.
    With `reference_limit`, each group of `reference_schemes` keeps at most that many train faces (by
    `hash_order`): the realism manifold and FID reference of a curve point, capped so that scoring stays cheaper
    than training (the ceilings are drawn against the same capped manifold, so targets stay comparable).

    Raises UserError when `fraction` is 0 (no validation split is configured).
    """
    if fraction <= 0.0:
        raise UserError("train.validation is 0: no validation split to draw learning curves on; set it (cpu: 0.1)")
    val = validation_mask(index, fraction)
    train = (index["split"] == "train").to_numpy() & ~val
    names = index["file"].astype(str)
    keep_val = np.zeros(len(index), bool)
    for scheme, groups in schemes.items():
        for group in groups:
            rows = np.flatnonzero(val & (index[scheme] == group).to_numpy())
            keep_val[rows[hash_order(names.iloc[rows].tolist())[:limit]]] = True
    keep_train = train.copy()
    if reference_limit > 0:
        for scheme in reference_schemes:
            for group in schemes[scheme]:
                rows = np.flatnonzero(train & (index[scheme] == group).to_numpy())
                keep_train[rows[hash_order(names.iloc[rows].tolist())[reference_limit:]]] = False
    out = index.loc[keep_train | keep_val].copy()
    out.loc[keep_val[out.index.to_numpy()], "split"] = "test"
    return ValidationSplit(out, fraction, limit)


def snapshot_files(model_dir: Path) -> list[Path]:
    """The snapshots of a model folder, by step. Raises NoSnapshotsError (one line, with the fix) when none."""
    found = sorted(
        (p for p in (model_dir / "snapshots").glob("step_*.pt") if SNAPSHOT_RE.fullmatch(p.name)), key=lambda p: p.name
    )
    if not found:
        raise NoSnapshotsError(
            f"{model_dir / 'snapshots'}: no step_*.pt snapshots; set train.snapshots > 0 in params.yaml and train "
            f"again (dvc repro train@{model_dir.name})"
        )
    return found


def translate(method: Method, inputs: torch.Tensor, task: TaskSpec, eval_size: int, batch_size: int) -> np.ndarray:
    """(N, 3, R, R) uint8 inputs -> (N, S, S, 3) uint8 outputs of `method` (no round trips: curves skip cycle)."""
    out = []
    for s in range(0, len(inputs), batch_size):
        x = uint8_to_float(inputs[s : s + batch_size].to(method.device))
        # No no_grad here: a method that optimises per face (Age-cGAN's latents) needs autograd, as in generate.
        y = method.translate(x, task.method_source, task.method_target)
        out.append(to_eval_resolution(float_to_uint8(y.detach()), eval_size))
    return np.concatenate(out) if out else np.zeros((0, eval_size, eval_size, 3), np.uint8)


def score_outputs(
    scorer: Scorer, params: Params, split: ValidationSplit, faces: np.ndarray, task_id: str, fake: np.ndarray
) -> dict[str, float]:
    """The curve values of one task's outputs on the validation split (`CURVE_KEYS`, face_fail as a share)."""
    t = dict(params.tasks.items())[task_id]
    spec = TaskSpec.same_groups(t.scheme, t.source, t.target)
    index = split.index
    rows = spec.test_rows(index)
    in_target = (index[t.scheme] == t.target).to_numpy()
    target_rows = index.loc[in_target, "row"].to_numpy()
    target_test = index.loc[in_target & (index["split"] == "test").to_numpy(), "row"].to_numpy()
    sub = index.set_index("row").loc[rows]
    res = score_task(
        scorer,
        faces_nchw(faces, rows),
        nchw(fake),
        None,
        faces_nchw(faces, target_rows),
        faces_nchw(faces, target_test),
        tuple(params.groups.schemes()[t.scheme][t.target]),
        sub["gender"].astype(str).to_numpy(),
        sub["race"].astype(str).to_numpy(),
        resolve_metrics(CURVE_METRICS),
        real_target_train=(index.loc[in_target, "split"] == "train").to_numpy(),
    )
    out = {k: float(res[k]) for k in CURVE_KEYS if k in res}
    out["face_fail_rate"] = out[keys.KEY_METRIC_FACE_FAIL] / max(int(res[keys.KEY_N]), 1)
    out["n"] = int(res[keys.KEY_N])
    return out


def score_method(
    method: Method, scorer: Scorer, params: Params, split: ValidationSplit, prepared: Path, eval_faces: np.ndarray
) -> dict[str, dict[str, float]]:
    """Task id -> curve values of `method` on the validation inputs of each common task (asked in the method's
    own groups, as `generate` asks it: e.g. a decade method translates 20s -> 50s for young -> old)."""
    inputs_at = load_faces(prepared, method.resolution)
    out = {}
    for task_id, spec in task_list(method, params.groups, params.tasks, extra_tasks=False).items():
        rows = spec.test_rows(split.index)
        fake = translate(method, faces_nchw(inputs_at, rows), spec, eval_faces.shape[1], params.generate.batch_size)
        out[task_id] = score_outputs(scorer, params, split, eval_faces, task_id, fake)
    return out


def learning_curve(
    name: str,
    params: Params,
    prepared: Path,
    model_dir: Path,
    scorer: Scorer,
    limit: int,
    device: torch.device,
    reference_limit: int = 0,
    last: int = 0,
) -> dict[str, Any]:
    """Score every snapshot of `model_dir` (and the untouched input, `identity`, and the real faces' ceilings) on
    the validation split (`last` > 0: only the last `last` snapshots).

    Returns {"method", "validation": {"fraction", "limit", "n": {task: inputs}}, "ceiling": {task: {gap,
    age_score_real, realism_real, fid (the same-N floor)}}, "identity": {task: values}, "points": [{"step",
    "core_minutes", "train_minutes", "tasks": {task: values}}]} with values as `score_outputs` returns them.
    """
    files = snapshot_files(model_dir)
    # `last` > 0 scores only the last snapshots: a method whose translation is itself an optimisation
    # (Age-cGAN's latents) costs minutes per snapshot.
    files = files[-last:] if last > 0 else files
    index = load_index(prepared)
    task_schemes = tuple(sorted({t.scheme for _, t in params.tasks.items()}))
    split = validation_split(
        index, params.train.validation, limit, params.groups.schemes(), reference_limit, task_schemes
    )
    eval_faces = load_faces(prepared, params.evaluate.resolution)
    floor = real_floor(scorer, params, split.index, eval_faces)
    ceiling = {
        task: {
            k: float(v[k])
            for k in ("gap", "age_score_real", "realism_real", "fid", "n_source", "n_target_test")
            if k in v
        }
        for task, v in floor.items()
    }
    identity = score_method(
        build_method("identity", params, device, need_aux=False), scorer, params, split, prepared, eval_faces
    )
    points = []
    for path in tqdm(files, desc=f"curves {name}", unit="snapshot"):
        method, ckpt = load_trained_checkpoint(name, params, model_dir, device, file=str(path.relative_to(model_dir)))
        timing = ckpt.get("summary", {})
        points.append(
            {
                "step": int(ckpt["step"]),
                # The code that trained the snapshot (scoring's own revision is the document's).
                "trained_git_revision": ckpt.get("provenance", {}).get("git_revision"),
                "core_minutes": round(float(timing.get("cpu_seconds", float("nan"))) / 60.0, 3),
                "train_minutes": round(float(timing.get("train_seconds", float("nan"))) / 60.0, 3),
                "tasks": score_method(method, scorer, params, split, prepared, eval_faces),
            }
        )
    n = {task: int(v["n"]) for task, v in identity.items()}
    return {
        "method": name,
        "validation": {"fraction": params.train.validation, "limit": limit, "reference_limit": reference_limit, "n": n},
        "ceiling": ceiling,
        "identity": identity,
        "points": points,
        **provenance(),
    }
