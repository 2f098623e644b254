"""External rows: the stable ids of the test faces, the test inputs of each task and their digests (shared by
exporting the inputs and scoring the outputs)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agebench.infra.errors import UserError
from agebench.params.sections import TasksConfig

if TYPE_CHECKING:  # pandas and the data module load on first use: `agebench --help` stays fast
    import pandas as pd

#: Original UTKFace size; exported besides the evaluation size.
ORIGINAL_SIZE = 200
#: Below this side an output cannot hold a face: counted as a failure (a 1x1 image would be a flat colour).
MIN_SIDE = 16
#: Formats whose pixels may have lost information; accepted but flagged.
LOSSY_FORMATS = ("JPEG", "MPO", "WEBP")
#: Files in an output folder that are not outputs (a copied manifest, notes); never "extra".
IGNORED_NAMES = ("manifest.json", "manifest.csv", "README.txt")
MANIFEST_COLUMNS = ("id", "file", "size", "task", "source_group", "target_group", "age", "gender", "race", "sha256")
_UTK_SUFFIX = ".jpg.chip.jpg"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


class ExternalError(UserError, ValueError):
    """Unusable external input (a missing or empty folder, a manifest of other data): one line, exit 2."""


def face_id(file_name: str) -> str:
    """Stable, filesystem-safe id of a UTKFace file: the name without `.jpg.chip.jpg`.

    Characters outside [A-Za-z0-9_.-] become "_"; when that or the stripping lost information (another
    suffix, a space in the name), 8 hex digits of sha1(name) are appended, so two different names never
    share an id and the id does not depend on which other files exist.
    """
    stem = file_name[: -len(_UTK_SUFFIX)] if file_name.endswith(_UTK_SUFFIX) else Path(file_name).stem
    safe = _UNSAFE.sub("_", stem).lstrip(".") or "face"
    if safe + _UTK_SUFFIX != file_name:
        safe += "-" + hashlib.sha1(file_name.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return safe


def check_name(name: str) -> str:
    """An external row's name: a file and DVC-stage safe word; raises ExternalError otherwise."""
    if not _NAME.fullmatch(name):
        raise ExternalError(f"name {name!r}: use letters, digits, '_' and '-' (it names reports/metrics/<name>.json)")
    return name


def task_inputs(tasks: TasksConfig, index: pd.DataFrame, names: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Task name -> its test inputs (index rows, ordered as the `generate` stage orders them) with an `id` column,
    for every task of `tasks` (or those in `names`).

    Raises ExternalError for an unknown task name.
    """
    from agebench.data.faces import test_faces

    known = dict(tasks.items())
    for name in names or ():
        if name not in known:
            raise ExternalError(f"unknown task {name!r}; tasks: {', '.join(known)}")
    out = {}
    for task_id, t in known.items():
        if names and task_id not in names:
            continue
        sub = test_faces(index, t.scheme, t.source).copy()
        sub["id"] = [face_id(f) for f in sub["file"]]
        dup = sub["id"][sub["id"].duplicated()]
        if len(dup):  # only a sha1 prefix collision could do this
            raise ExternalError(f"task {task_id}: id {dup.iloc[0]!r} is not unique; report this as a bug")
        out[task_id] = sub
    return out


def task_digest(task_id: str, tasks: TasksConfig, sub: pd.DataFrame, faces: np.ndarray) -> str:
    """sha256 of task `task_id`'s definition (in `tasks`) and its inputs (ids, labels, evaluation-size pixels), in
    order."""
    t = dict(tasks.items())[task_id]
    h = hashlib.sha256(f"{task_id}\t{t.scheme}\t{t.source}\t{t.target}\t{faces.shape[1]}\n".encode())
    for rec, row in zip(sub.itertuples(index=False), sub["row"].to_numpy()):
        h.update(f"{rec.id}\t{rec.age}\t{rec.gender}\t{rec.race}\t".encode())
        h.update(hashlib.sha256(np.ascontiguousarray(faces[row]).tobytes()).digest())
    return h.hexdigest()


def data_digest(task_digests: dict[str, str]) -> str:
    """One digest over the exported tasks' digests (what manifest.json records as `data_digest`)."""
    return hashlib.sha256(json.dumps(task_digests, sort_keys=True).encode()).hexdigest()
