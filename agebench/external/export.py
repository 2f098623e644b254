"""`export_inputs`: the protocol's fixed test inputs as lossless PNGs, manifest.csv/manifest.json and a README,
for a method that runs outside the pipeline (PROTOCOL.md s.6)."""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

import agebench
from agebench.external.tasks import (
    MANIFEST_COLUMNS,
    ORIGINAL_SIZE,
    ExternalError,
    data_digest,
    task_digest,
    task_inputs,
)
from agebench.infra.common import atomic_path, read_json, write_json
from agebench.params.sections import Params

if TYPE_CHECKING:  # pandas and the data module load on first use: `agebench --help` stays fast
    pass


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    return buf.getvalue()


def images_dir(source: Path) -> Path:
    """The folder of UTKFace originals: `source` itself, or the download stage's `source.json` images_dir."""
    if (source / "source.json").is_file():
        return Path(read_json(source / "source.json")["images_dir"])
    if source.is_dir():
        return source
    raise ExternalError(f"{source}: not a folder of UTKFace images nor the download stage's output (data/raw)")


README_TEXT = """\
agebench test inputs (protocol version {protocol}, data digest {digest})

Inputs, lossless PNG, one per test face and task:
  200/<task>/<id>.png   the UTKFace original (200x200)
  128/<task>/<id>.png   the evaluation size ({size}x{size}), PIL antialiased bicubic from the original
manifest.csv lists every file: id, file, size, task, source_group, target_group, age, gender, race,
sha256 (of the PNG). manifest.json records the protocol version and the data digest.

Tasks: {tasks}

What to produce, in one folder OUT:
  OUT/<task>/<id>.png         your method's output for the input <id> of <task> (any size, square;
                              any format PIL reads: PNG recommended, JPEG accepted but flagged as lossy)
  OUT/<task>_cycle/<id>.png   optional: the round trip (the output translated back to the source group)
  OUT/manifest.json           optional but recommended: a copy of this manifest.json, so the scorer
                              refuses outputs made for other inputs
Outputs are resized to {size}x{size} with PIL's antialiased bicubic filter, as built-in methods' are.

Score:  agebench score-outputs OUT --name NAME --source "paper, commit, weights" --json NAME.json
A missing or unreadable output counts as a failure for every metric (outside the target age group, not
verified, left out of FID with the count reported); without round trips cycle_l1 is "-", never 0.
"""


def export_inputs(
    params: Params, prepared: Path, source: Path, out: Path, tasks: Sequence[str] | None = None
) -> dict[str, Any]:
    """Write the test inputs of `tasks` (default: all of params.tasks) into `out`; returns the manifest.json dict.

    `out` is replaced as a whole (atomically); an existing folder that holds files but no manifest.json
    is refused, so a previous export can be refreshed but user files are never overwritten.
    """
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "manifest.json").is_file())):
        raise ExternalError(f"{out} exists and is not an earlier export (no manifest.json); choose an empty folder")
    from agebench.data.faces import load_faces, load_index

    index = load_index(prepared)
    size = params.evaluate.resolution
    faces = load_faces(prepared, size)
    originals = images_dir(Path(source))
    per_task = task_inputs(params.tasks, index, tasks)
    groups = dict(params.tasks.items())
    rows_out: list[dict[str, Any]] = []
    digests: dict[str, str] = {}
    with atomic_path(out, kind="dir") as tmp:
        for task_id, sub in per_task.items():
            t = groups[task_id]
            digests[task_id] = task_digest(task_id, params.tasks, sub, faces)
            for res in (ORIGINAL_SIZE, size):
                (tmp / str(res) / task_id).mkdir(parents=True)
            for rec in sub.itertuples(index=False):
                path = originals / rec.file
                try:
                    with Image.open(path) as img:
                        original = np.asarray(img.convert("RGB"))
                except (OSError, SyntaxError, ValueError) as exc:
                    raise ExternalError(f"{path}: cannot read the original ({exc}); check --source") from None
                for arr in (original, faces[rec.row]):
                    data = _png_bytes(arr)
                    rel = f"{ORIGINAL_SIZE if arr is original else size}/{task_id}/{rec.id}.png"
                    (tmp / rel).write_bytes(data)
                    rows_out.append(
                        {
                            "id": rec.id,
                            "file": rel,
                            "size": f"{arr.shape[1]}x{arr.shape[0]}",
                            "task": task_id,
                            "source_group": t.source,
                            "target_group": t.target,
                            "age": rec.age,
                            "gender": rec.gender,
                            "race": rec.race,
                            "sha256": hashlib.sha256(data).hexdigest(),
                        }
                    )
        manifest = {
            "protocol_version": agebench.PROTOCOL_VERSION,
            "agebench_version": agebench.__version__,
            "profile": params.profile,
            "data_digest": data_digest(digests),
            "eval_size": size,
            "tasks": {
                k: {
                    "scheme": groups[k].scheme,
                    "source": groups[k].source,
                    "target": groups[k].target,
                    "n": len(per_task[k]),
                    "digest": digests[k],
                }
                for k in per_task
            },
        }
        with open(tmp / "manifest.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=MANIFEST_COLUMNS)
            writer.writeheader()
            writer.writerows(rows_out)
        write_json(tmp / "manifest.json", manifest)
        (tmp / "README.txt").write_text(
            README_TEXT.format(
                protocol=manifest["protocol_version"],
                digest=manifest["data_digest"],
                size=size,
                tasks=", ".join(
                    f"{k} ({v['source']} -> {v['target']}, {v['n']} faces)" for k, v in manifest["tasks"].items()
                ),
            ),
            encoding="utf-8",
        )
    return manifest
