"""External rows (PROTOCOL.md s.6, v2): export the test inputs, read a folder of outputs made elsewhere, score it.

A method that runs outside the pipeline gets the protocol's fixed test inputs from `export_inputs`
(lossless PNGs at the original 200x200 and at the evaluation size, named by a stable id, plus
`manifest.csv`/`manifest.json` and a README), writes `FOLDER/<task>/<id>.png` (any size, any format
PIL reads) and optionally its round trips `FOLDER/<task>_cycle/<id>.png`, and `score_folder` scores
the folder with the built-in methods' own code: the outputs are turned into the arrays the `generate`
stage writes (uint8, resized to the evaluation size with PIL's antialiased bicubic exactly as
`agebench.generate.to_eval_resolution` does) and handed to `agebench.evaluate.evaluate_method`.

Missing outputs count as failures for every metric: the arrays carry a `present` mask (the pixels of a
missing output are zeros that no network sees and nothing inspects), and `metrics.suite.score_task`
scores a missing output as it scores a no-face one (outside every group, not verified, left out of
means), leaves it out of FID/KID (`fid_n` says how many outputs were in) and counts it in `missing`.
Round trips have their own mask; without any `cycle_l1` is absent, never 0. Every problem found is
listed in the metrics file (`external.problems`) and printed.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
import tempfile
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

import agebench
from agebench.common import atomic_path, read_json, write_json
from agebench.config import Params

if TYPE_CHECKING:  # pandas and the data module load on first use: `agebench --help` stays fast
    import pandas as pd

#: Where `export-inputs` writes by default: a folder the repository's .gitignore lists (`/external/`), since
#: the inputs are UTKFace faces, which must never be committed; outputs made from them belong beside it.
DEFAULT_EXPORT = "external/inputs"
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


class ExternalError(ValueError):
    """Unusable external input (a missing or empty folder, a manifest of other data): one line, exit 2."""


# ----------------------------------------------------------------------------------------------
# Ids and the test inputs of each task
# ----------------------------------------------------------------------------------------------


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


def task_inputs(params: Params, index: pd.DataFrame, tasks: Sequence[str] | None = None) -> dict[str, pd.DataFrame]:
    """Task name -> its test inputs (index rows, ordered as the `generate` stage orders them) with an `id` column.

    Raises ExternalError for an unknown task name.
    """
    known = dict(params.tasks.items())
    for name in tasks or ():
        if name not in known:
            raise ExternalError(f"unknown task {name!r}; tasks: {', '.join(known)}")
    test = index[index["split"] == "test"]
    out = {}
    for task_id, t in known.items():
        if tasks and task_id not in tasks:
            continue
        sub = test.loc[test[t.scheme] == t.source].copy()
        sub["id"] = [face_id(f) for f in sub["file"]]
        dup = sub["id"][sub["id"].duplicated()]
        if len(dup):  # only a sha1 prefix collision could do this
            raise ExternalError(f"task {task_id}: id {dup.iloc[0]!r} is not unique; report this as a bug")
        out[task_id] = sub
    return out


def task_digest(task_id: str, params: Params, sub: pd.DataFrame, faces: np.ndarray) -> str:
    """sha256 of a task's definition and its inputs (ids, labels, evaluation-size pixels), in order."""
    t = dict(params.tasks.items())[task_id]
    h = hashlib.sha256(f"{task_id}\t{t.scheme}\t{t.source}\t{t.target}\t{faces.shape[1]}\n".encode())
    for rec, row in zip(sub.itertuples(index=False), sub["row"].to_numpy()):
        h.update(f"{rec.id}\t{rec.age}\t{rec.gender}\t{rec.race}\t".encode())
        h.update(hashlib.sha256(np.ascontiguousarray(faces[row]).tobytes()).digest())
    return h.hexdigest()


def data_digest(task_digests: dict[str, str]) -> str:
    """One digest over the exported tasks' digests (what manifest.json records as `data_digest`)."""
    return hashlib.sha256(json.dumps(task_digests, sort_keys=True).encode()).hexdigest()


# ----------------------------------------------------------------------------------------------
# export-inputs
# ----------------------------------------------------------------------------------------------


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
    from agebench.data import load_faces, load_index

    index = load_index(prepared)
    size = params.evaluate.resolution
    faces = load_faces(prepared, size)
    originals = images_dir(Path(source))
    per_task = task_inputs(params, index, tasks)
    groups = dict(params.tasks.items())
    rows_out: list[dict[str, Any]] = []
    digests: dict[str, str] = {}
    with atomic_path(out, kind="dir") as tmp:
        for task_id, sub in per_task.items():
            t = groups[task_id]
            digests[task_id] = task_digest(task_id, params, sub, faces)
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


def check_manifest(path: Path, params: Params, digests: dict[str, str]) -> None:
    """Refuse (ExternalError, one line) a manifest of another protocol version or of other test inputs."""
    try:
        manifest = read_json(path)
        version, tasks = manifest["protocol_version"], manifest["tasks"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ExternalError(
            f"{path}: not an agebench manifest.json ({exc}); copy the one export-inputs wrote"
        ) from None
    if version != agebench.PROTOCOL_VERSION:
        raise ExternalError(
            f"{path}: inputs exported under protocol version {version}, this is version "
            f"{agebench.PROTOCOL_VERSION}; run `agebench export-inputs` again and remake the outputs"
        )
    for task_id, t in tasks.items():
        if digests.get(task_id) != (t or {}).get("digest"):
            raise ExternalError(
                f"{path}: task {task_id}: data digest differs from this data (other data, profile or groups); "
                "run `agebench export-inputs` again and remake the outputs"
            )


# ----------------------------------------------------------------------------------------------
# Reading a folder of outputs
# ----------------------------------------------------------------------------------------------


#: Problem kind -> what it means (printed and written beside every list of items).
PROBLEM_MESSAGES = {
    "missing_folder": "folder missing: every output of the task counts as a failure",
    "missing": "outputs missing (counted as failures for every metric)",
    "cycle_missing": "round trips missing (left out of cycle_l1)",
    "extra": "files that match no input id (ignored)",
    "duplicate": "ids with several files (the PNG, else the first by name, is used)",
    "not_image": "not images (counted as missing)",
    "unreadable": "unreadable or truncated images (counted as missing)",
    "too_large": "images over PIL's decompression-bomb limit (refused, counted as missing)",
    "symlink_outside": "symlinks pointing outside the folder (refused, counted as missing)",
    "too_small": f"images smaller than {MIN_SIDE}x{MIN_SIDE} (counted as missing)",
    "converted": "images converted to 8-bit RGB",
    "lossy": "lossy formats (accepted, flagged)",
    "not_square": "non-square images (stretched to a square)",
    "sizes_differ": "image sizes differ within the task",
}


@dataclass
class Problems:
    """Every problem found in an output folder, grouped by (task, kind), in the order found."""

    items: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    def add(self, task: str, kind: str, item: str) -> None:
        self.items.setdefault((task, kind), []).append(item)

    def as_list(self) -> list[dict[str, Any]]:
        """JSON form: [{"task", "problem", "message", "count", "items"}], every item listed."""
        return [
            {"task": t, "problem": k, "message": PROBLEM_MESSAGES[k], "count": len(v), "items": v}
            for (t, k), v in self.items.items()
        ]


def _png_header(path: Path) -> tuple[int, int] | None:
    """(bit depth, colour type) from a PNG's IHDR, or None for other files."""
    with open(path, "rb") as fh:
        head = fh.read(26)
    if len(head) == 26 and head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        return head[24], head[25]
    return None


def read_output(path: Path) -> tuple[np.ndarray | None, str | None, list[tuple[str, str]]]:
    """Decode one output into (H, W, 3) uint8 RGB.

    Returns (array or None, the failure kind when None, [(problem kind, detail)] for accepted images).
    16-bit images keep their high byte; greyscale, palette, alpha and CMYK images are converted (alpha
    dropped) and said so; JPEG/WebP are flagged as lossy.
    """
    notes: list[tuple[str, str]] = []
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its pixel limit; refuse both the same way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                fmt, mode = img.format or "?", img.mode
                if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
                    arr = np.asarray(img).astype(np.uint32)
                    grey = (arr >> 8) if mode.startswith("I;16") or arr.max(initial=0) > 255 else arr
                    rgb = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=2)
                    notes.append(("converted", f"16-bit greyscale ({mode}) -> 8-bit RGB"))
                else:
                    rgb = np.asarray(img.convert("RGB"))
                    if mode != "RGB":
                        what = "alpha dropped" if "A" in mode else "converted"
                        notes.append(("converted", f"{mode} -> RGB ({what})"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return None, "too_large", notes
    except UnidentifiedImageError:
        return None, "not_image", notes
    except (OSError, SyntaxError, ValueError):
        return None, "unreadable", notes
    header = _png_header(path) if fmt == "PNG" else None
    if header is not None and header[0] == 16 and mode in ("RGB", "RGBA"):
        notes.append(("converted", "16 bits per channel -> 8 (high byte)"))
    if fmt in LOSSY_FORMATS:
        notes.append(("lossy", fmt))
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        return None, "too_small", notes
    if h != w:
        notes.append(("not_square", f"{w}x{h}"))
    return np.ascontiguousarray(rgb), None, notes


def to_eval_size(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8, resized exactly as built-in outputs are.

    The same call as `agebench.generate.to_eval_resolution` (PIL antialiased bicubic, `reducing_gap=None`,
    untouched at the evaluation size; tests/test_external.py checks the two agree), kept here so that
    scoring an external folder does not depend on the method-building code.
    """
    if rgb.shape[:2] == (size, size):
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None))


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
        return True
    except (ValueError, OSError, RuntimeError):
        return False


def read_task_folder(
    folder: Path, task: str, ids: Sequence[str], size: int, fill: np.ndarray, problems: Problems, kind: str
) -> tuple[np.ndarray, np.ndarray, Counter[str]]:
    """Read `folder/<id>.*` for every id into (N, size, size, 3) uint8 (`fill` where missing).

    Returns (images, (N,) bool present, Counter of original sizes "WxH"). `kind` is "missing" (outputs)
    or "cycle_missing" (round trips); every problem goes to `problems` under the folder's name (`task`
    or `<task>_cycle`), a missing folder of outputs under `task`.
    """
    n = len(ids)
    images = np.broadcast_to(fill, (n, *fill.shape)).copy()
    present = np.zeros(n, bool)
    sizes: Counter[str] = Counter()
    if not folder.is_dir():
        if kind == "missing":
            problems.add(task, "missing_folder", str(folder))
        return images, present, sizes
    label = folder.name
    root = folder.resolve()
    by_id: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name in IGNORED_NAMES or entry.name.startswith("."):
            continue
        stem = entry.name.rsplit(".", 1)[0] if "." in entry.name else entry.name
        by_id.setdefault(stem, []).append(entry)
    wanted = set(ids)
    for stem, entries in by_id.items():
        if stem not in wanted:
            for e in entries:
                problems.add(label, "extra", e.name)
    for i, face in enumerate(ids):
        entries = sorted(by_id.get(face, []), key=lambda p: (p.suffix.lower() != ".png", p.name))
        if not entries:
            problems.add(label, kind, face)
            continue
        if len(entries) > 1:
            problems.add(label, "duplicate", f"{face} ({', '.join(e.name for e in entries)})")
        path = entries[0]
        if not _inside(path, root):
            problems.add(label, "symlink_outside", path.name)
            continue
        if not path.is_file():
            problems.add(label, "not_image", path.name)
            continue
        rgb, failure, notes = read_output(path)
        for note_kind, detail in notes:
            problems.add(label, note_kind, f"{path.name} ({detail})")
        if rgb is None:
            problems.add(label, failure or "unreadable", path.name)
            continue
        sizes[f"{rgb.shape[1]}x{rgb.shape[0]}"] += 1
        images[i] = to_eval_size(rgb, size)
        present[i] = True
    if len(sizes) > 1:
        problems.add(label, "sizes_differ", ", ".join(f"{s} ({c})" for s, c in sizes.most_common()))
    return images, present, sizes


# ----------------------------------------------------------------------------------------------
# score-outputs
# ----------------------------------------------------------------------------------------------


@dataclass
class FolderOutputs:
    """A folder's outputs as the `generate` stage's arrays, with what was missing and every problem."""

    tasks: dict[str, dict[str, Any]]  # task -> {rows, fake, cycle, present, cycle_present, sizes}
    problems: Problems


def check_layout(folder: Path, params: Params, prepared: Path | None = None) -> None:
    """Refuse, in a second and before any network loads, a folder that cannot be scored: missing, empty,
    without a `<task>/` folder of any task, or (with `prepared`) without one file named by an input id.
    Raises ExternalError naming the expected layout."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExternalError(f"{folder}: output folder not found; expected {folder}/<task>/<id>.png")
    entries = [p for p in folder.iterdir() if p.name not in IGNORED_NAMES]
    if not entries:
        raise ExternalError(f"{folder}: output folder is empty; expected {folder}/<task>/<id>.png")
    tasks = [t for t, _ in params.tasks.items()]
    present = [t for t in tasks if (folder / t).is_dir()]
    if not present:
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in entries)
        more = f", ... ({len(found) - 5} more)" if len(found) > 5 else ""
        raise ExternalError(
            f"{folder}: no task folder ({', '.join(t + '/' for t in tasks)}); expected {folder}/<task>/<id>.png, "
            f"found {', '.join(found[:5])}{more}"
        )
    if prepared is None:
        return
    from agebench.data import load_index

    per_task = task_inputs(params, load_index(prepared))
    stems = {(t, p.name.rsplit(".", 1)[0]) for t in present for p in (folder / t).iterdir()}
    if not any((t, i) in stems for t, sub in per_task.items() for i in sub["id"]):
        t, sub = next((t, per_task[t]) for t in present)
        example = f"{folder}/{t}/{sub['id'].iloc[0]}.png" if len(sub) else f"{folder}/{t}/<id>.png"
        raise ExternalError(
            f"{folder}: no output matches an input id (expected e.g. {example}; ids are in the exported manifest.csv)"
        )


def read_folder(
    folder: Path, params: Params, prepared: Path, manifest: Path | None = None
) -> tuple[FolderOutputs, dict[str, pd.DataFrame]]:
    """Read `folder/<task>/<id>.*` (and `<task>_cycle/`) for every task; validate a manifest when present.

    Raises ExternalError for a missing or empty folder, a manifest of other inputs, or a folder in which
    no file matches any input id (wrong names; the message shows an expected name).
    """
    folder = Path(folder)
    check_layout(folder, params)
    from agebench.data import load_faces, load_index

    index = load_index(prepared)
    size = params.evaluate.resolution
    faces = load_faces(prepared, size)
    per_task = task_inputs(params, index)
    manifest = manifest if manifest is not None else folder / "manifest.json"
    if manifest.is_file():
        check_manifest(manifest, params, {k: task_digest(k, params, v, faces) for k, v in per_task.items()})
    fill = np.zeros((size, size, 3), np.uint8)  # placeholder pixels of a missing output: masked, never scored
    problems = Problems()
    tasks: dict[str, dict[str, Any]] = {}
    for task_id, sub in per_task.items():
        ids = sub["id"].tolist()
        fake, present, sizes = read_task_folder(folder / task_id, task_id, ids, size, fill, problems, "missing")
        inputs = faces[sub["row"].to_numpy()]
        cycle_dir = folder / f"{task_id}_cycle"
        cycle, cycle_present = None, np.zeros(len(ids), bool)
        if cycle_dir.is_dir():
            # A missing round trip is filled with its input (masked out of cycle_l1 by `cycle_present`).
            cycle, cycle_present, _ = read_task_folder(cycle_dir, task_id, ids, size, fill, problems, "cycle_missing")
            cycle[~cycle_present] = inputs[~cycle_present]
        tasks[task_id] = {
            "rows": sub["row"].to_numpy(),
            "fake": fake,
            "cycle": cycle,
            "present": present,
            "cycle_present": cycle_present,
            "sizes": dict(sizes),
        }
    known = set(per_task) | {f"{t}_cycle" for t in per_task}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name not in known and entry.name not in IGNORED_NAMES and not entry.name.startswith("."):
            problems.add("-", "extra", entry.name)
    if not any(t["present"].any() for t in tasks.values()):
        first = next(iter(per_task.items()))
        example = f"{folder}/{first[0]}/{first[1]['id'].iloc[0]}.png" if len(first[1]) else f"{folder}/<task>/<id>.png"
        raise ExternalError(
            f"{folder}: no output matches an input id (expected e.g. {example}; ids are in the exported manifest.csv)"
        )
    return FolderOutputs(tasks, problems), per_task


def write_generate_layout(out: Path, outputs: FolderOutputs, params: Params) -> None:
    """Write `out/<task>.npz` and `out/tasks.json` as the `generate` stage does, plus the masks.

    Each npz holds `rows`, `fake`, `present` and, when the folder has round trips, `cycle` and
    `cycle_present` (`agebench.evaluate.evaluate_method` reads them).
    """
    out.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"method": None, "resolution": None, "eval_resolution": params.evaluate.resolution}
    meta["train"] = {}
    meta["uses_scoring_networks"] = []
    meta["seed"] = None  # trained elsewhere: no training seed of this pipeline
    meta["tasks"] = {}
    groups = dict(params.tasks.items())
    for task_id, t in outputs.tasks.items():
        arrays = {"rows": t["rows"], "fake": t["fake"], "present": t["present"]}
        if t["cycle"] is not None:
            arrays.update(cycle=t["cycle"], cycle_present=t["cycle_present"])
        np.savez(out / f"{task_id}.npz", **arrays)
        g = groups[task_id]
        meta["tasks"][task_id] = {
            "scheme": g.scheme,
            "source": g.source,
            "target": g.target,
            "method_source": g.source,
            "method_target": g.target,
            "common": True,
            "n": len(t["rows"]),
        }
    write_json(out / "tasks.json", meta)


def score_folder(
    folder: Path,
    name: str,
    source: str,
    params: Params,
    prepared: Path,
    scorer: Any,
    per_face: dict[str, np.ndarray] | None = None,
    outputs_dir: Path | None = None,
    manifest: Path | None = None,
) -> dict[str, Any]:
    """Score a folder of outputs made outside the pipeline; returns the metrics document.

    The document is `agebench.evaluate.evaluate_method`'s for the same arrays and masks (so `missing`,
    `fid_n` (outputs in FID/KID) and, with round trips, `cycle_missing` per task come from
    `metrics.suite.score_task`; `cycle_l1` is absent without round trips), with `kind: "external"`,
    `source` and `external: {folder, outputs, problems}`. `outputs_dir`, when given, receives the arrays
    in the `generate` stage's layout (the report's sample grids read them).
    """
    from agebench.evaluate import evaluate_method

    check_name(name)
    outputs, _ = read_folder(folder, params, prepared, manifest)
    with contextlib.ExitStack() as stack:
        if outputs_dir is not None:  # appears only when scoring succeeded
            layout = stack.enter_context(atomic_path(outputs_dir, kind="dir"))
        else:
            layout = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agebench-external-"))) / "outputs"
        write_generate_layout(layout, outputs, params)
        doc = evaluate_method(name, params, prepared, layout, scorer, per_face)
    summary: dict[str, Any] = {}
    for task_id, t in outputs.tasks.items():
        n, n_present = len(t["rows"]), int(t["present"].sum())
        summary[task_id] = {
            "n": n,
            "present": n_present,
            "cycle_present": int(t["cycle_present"].sum()),
            "sizes": t["sizes"],
        }
    doc["kind"] = "external"
    doc["source"] = source
    # v3: the networks the entry declares it trained or translated with; the independence flags apply to it.
    doc["uses_scoring_networks"] = list(next((e.uses_networks for e in params.external if e.name == name), ()))
    sizes: Counter[str] = Counter()
    for s in summary.values():
        sizes.update(s["sizes"])
    doc["resolution"] = int(sizes.most_common(1)[0][0].split("x")[0]) if sizes else None
    doc["external"] = {"folder": str(folder), "outputs": summary, "problems": outputs.problems.as_list()}
    return doc


NA = "–"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return NA
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(doc: dict[str, Any]) -> str:
    """The row of `doc` per task as a markdown table (absent or NaN values as "–")."""
    cols = [("joint", 3), ("age_acc", 3), ("id_rate", 3), ("fid", 2), ("kid_mean", 4), ("cycle_l1", 4)]
    head = "| task | n | missing | " + " | ".join(c for c, _ in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 3)]
    for task_id, res in doc["tasks"].items():
        cells = [_fmt(res.get(c), d) for c, d in cols]
        lines.append(f"| {task_id} | {res.get('n', NA)} | {res.get('missing', 0)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def problem_lines(doc: dict[str, Any], show: int = 5) -> list[str]:
    """Printable lines for `doc["external"]["problems"]`."""
    out = []
    for p in doc.get("external", {}).get("problems", []):
        items = p["items"]
        more = f", ... ({len(items) - show} more)" if len(items) > show else ""
        out.append(f"{p['task']}: {p['count']} {p['message']}: {', '.join(items[:show])}{more}")
    return out


def reserved_names() -> set[str]:
    """Row names an external entry may not take: every registered method and the `real` reference row."""
    from agebench.registry import METHODS

    return set(METHODS.names()) | {"real"}


def git_would_commit(path: Path) -> bool:
    """True when `path` lies in a git working tree and is not ignored there (False outside git or without git)."""
    import subprocess

    try:
        inside = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True, timeout=10
        )
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return False
        ignored = subprocess.run(["git", "-C", str(path), "check-ignore", "-q", "."], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return ignored.returncode == 1  # 0: ignored, 1: not ignored, 128: an error


def add_cli_arguments(export: Any, score: Any) -> None:
    """Arguments of `agebench export-inputs` and `agebench score-outputs` (argparse subparsers)."""
    export.add_argument(
        "--out",
        default=DEFAULT_EXPORT,
        help="folder to write (replaced if it is an earlier export); the default is git-ignored: it holds faces",
    )
    export.add_argument("--task", action="append", default=None, help="a task to export (repeatable; default all)")
    export.add_argument("--params", default="params.yaml", help="the params file (data, groups, tasks, evaluate)")
    export.add_argument("--data", default="data/prepared", help="the prepare stage's output")
    export.add_argument("--source", default="data/raw", help="UTKFace originals: data/raw or a folder of images")
    score.add_argument("folder", help="FOLDER/<task>/<id>.png (and optionally FOLDER/<task>_cycle/<id>.png)")
    score.add_argument("--name", required=True, help="the row's name (letters, digits, _ and -)")
    score.add_argument("--source", default="", help="free text: paper, commit, weights")
    score.add_argument("--json", dest="json_out", default=None, help="write the metrics file here")
    score.add_argument("--scores", default=None, help="write per-face ages and distances (.npz) here")
    score.add_argument("--manifest", default=None, help="manifest.json to check (default: FOLDER/manifest.json)")
    score.add_argument("--params", default="params.yaml", help="the params file (data, groups, tasks, evaluate)")
    score.add_argument("--data", default="data/prepared", help="the prepare stage's output")
    score.add_argument("--cache", default=None, help="content-keyed cache (default: $AGEBENCH_CACHE or ~/.cache)")


def run_cli(command: str, args: Any) -> int:
    """Run `export-inputs` or `score-outputs`; user errors are one `agebench CMD: error:` line and exit 2."""
    import sys

    from agebench.config import ParamsError, load_params
    from agebench.registry import UnknownNameError

    user_errors: tuple[type[BaseException], ...] = (ExternalError, ParamsError, UnknownNameError, OSError)
    try:
        from metrics.backbones import BackboneError

        user_errors += (BackboneError,)
    except ImportError:  # pragma: no cover
        pass
    try:
        params = load_params(args.params)
        if command == "export-inputs":
            manifest = export_inputs(params, Path(args.data), Path(args.source), Path(args.out), args.task)
            counts = ", ".join(f"{k} ({v['n']})" for k, v in manifest["tasks"].items())
            where = Path(args.out).resolve()
            print(f"agebench export-inputs: {counts} -> {where} (data digest {manifest['data_digest'][:12]})")
            if git_would_commit(where):
                print(
                    f"agebench export-inputs: warning: {where} is inside a git repository and not ignored; these are "
                    "UTKFace faces (non-commercial research only): never commit them (add the folder to .gitignore)",
                    file=sys.stderr,
                )
            return 0
        name = check_name(args.name)
        if name in reserved_names():
            raise ExternalError(f"--name {name!r} is a built-in row; choose another name for an external row")
        # Everything that can be wrong with the arguments is found now, in seconds, not after the scoring.
        from agebench.common import check_output_path

        for out in (args.json_out, args.scores):
            if out:
                check_output_path(out, "file", inputs=[args.folder])
        check_layout(Path(args.folder), params, Path(args.data))
        if args.json_out:
            Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        from tqdm import tqdm

        from agebench.scoring import scorer_for_params  # imported here: `--help` must not load torch

        # The fixed costs (networks, the real faces' features) are phases of their own.
        phases = tqdm(total=2, desc="score-outputs", unit="phase", disable=None)
        phases.set_postfix_str("loading the scoring networks")
        scorer = scorer_for_params(params, args.params, args.cache)
        phases.update()
        phases.set_postfix_str("reading and scoring the outputs")
        per_face: dict[str, np.ndarray] = {}
        manifest_path = Path(args.manifest) if args.manifest else None
        doc = score_folder(
            Path(args.folder), name, args.source, params, Path(args.data), scorer, per_face, None, manifest_path
        )
        phases.update()
        phases.close()
        if args.json_out:
            write_json(args.json_out, doc)
        if args.scores:
            from agebench.common import write_npz

            write_npz(args.scores, per_face)
    except user_errors as exc:
        print(f"agebench {command}: error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(doc))
    for line in problem_lines(doc):
        print(f"problem: {line}")
    if args.json_out:
        print(f"metrics: {args.json_out}")
    return 0
