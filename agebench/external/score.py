"""External rows (PROTOCOL.md s.6, v2): read a folder of outputs made elsewhere and score it.

A method that runs outside the pipeline gets the protocol's fixed test inputs from `export_inputs`
(lossless PNGs at the original 200x200 and at the evaluation size, named by a stable id, plus
`manifest.csv`/`manifest.json` and a README), writes `FOLDER/<task>/<id>.png` (any size, any format
PIL reads) and optionally its round trips `FOLDER/<task>_cycle/<id>.png`, and `score_folder` scores
the folder with the built-in methods' own code: the outputs are turned into the arrays the `generate`
stage writes (uint8, resized to the evaluation size by the one resize the built-in outputs go through,
`agebench.data.faces.to_eval_size`) and handed to `agebench.pipeline.evaluate.evaluate_method`.

Missing outputs count as failures for every metric: the arrays carry a `present` mask (the pixels of a
missing output are zeros that no network sees and nothing inspects), and `metrics.suite.score_task`
scores a missing output as it scores a no-face one (outside every group, not verified, left out of
means), leaves it out of FID/KID (`fid_n` says how many outputs were in) and counts it in `missing`.
Round trips have their own mask; without any `cycle_l1` is absent, never 0. Every problem found is
listed in the metrics file (`external.problems`) and printed.
"""

from __future__ import annotations

import contextlib
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, UnidentifiedImageError

import agebench
from agebench.data.faces import to_eval_size
from agebench.external.tasks import (
    IGNORED_NAMES,
    LOSSY_FORMATS,
    MIN_SIDE,
    ExternalError,
    check_name,
    task_digest,
    task_inputs,
)
from agebench.infra.common import atomic_path, read_json
from agebench.params.sections import Params, TasksConfig
from agebench.pipeline.tasks import MethodOutputs, TaskOutputs, TaskSpec, write_outputs

if TYPE_CHECKING:  # pandas and the data module load on first use: `agebench --help` stays fast
    import pandas as pd


def check_manifest(path: Path, digests: dict[str, str]) -> None:
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


@dataclass(frozen=True)
class FolderOutputs:
    """A folder's outputs as scoring takes them (masks of what is present; nothing trained here, no seed),
    the original image sizes per task ({"WxH": count}) and every problem found."""

    outputs: MethodOutputs
    sizes: dict[str, dict[str, int]]
    problems: Problems


def check_layout(folder: Path, tasks: TasksConfig, prepared: Path | None = None) -> None:
    """Refuse, in a second and before any network loads, a folder that cannot be scored: missing, empty,
    without a `<task>/` folder of any task, or (with `prepared`) without one file named by an input id.
    Raises ExternalError naming the expected layout. `tasks`: the `tasks:` section."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExternalError(f"{folder}: output folder not found; expected {folder}/<task>/<id>.png")
    entries = [p for p in folder.iterdir() if p.name not in IGNORED_NAMES]
    if not entries:
        raise ExternalError(f"{folder}: output folder is empty; expected {folder}/<task>/<id>.png")
    names = [t for t, _ in tasks.items()]
    present = [t for t in names if (folder / t).is_dir()]
    if not present:
        found = sorted(p.name + ("/" if p.is_dir() else "") for p in entries)
        more = f", ... ({len(found) - 5} more)" if len(found) > 5 else ""
        raise ExternalError(
            f"{folder}: no task folder ({', '.join(t + '/' for t in names)}); expected {folder}/<task>/<id>.png, "
            f"found {', '.join(found[:5])}{more}"
        )
    if prepared is None:
        return
    from agebench.data.faces import load_index

    per_task = task_inputs(tasks, load_index(prepared))
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
    check_layout(folder, params.tasks)
    from agebench.data.faces import load_faces, load_index

    index = load_index(prepared)
    size = params.evaluate.resolution
    faces = load_faces(prepared, size)
    per_task = task_inputs(params.tasks, index)
    manifest = manifest if manifest is not None else folder / "manifest.json"
    if manifest.is_file():
        check_manifest(manifest, {k: task_digest(k, params.tasks, v, faces) for k, v in per_task.items()})
    fill = np.zeros((size, size, 3), np.uint8)  # placeholder pixels of a missing output: masked, never scored
    problems = Problems()
    groups = dict(params.tasks.items())
    tasks: dict[str, TaskOutputs] = {}
    task_sizes: dict[str, dict[str, int]] = {}
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
        g = groups[task_id]
        spec = TaskSpec.same_groups(g.scheme, g.source, g.target)
        rows = sub["row"].to_numpy()
        tasks[task_id] = TaskOutputs(spec, rows, fake, cycle, present, cycle_present if cycle is not None else None)
        task_sizes[task_id] = dict(sizes)
    known = set(per_task) | {f"{t}_cycle" for t in per_task}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name not in known and entry.name not in IGNORED_NAMES and not entry.name.startswith("."):
            problems.add("-", "extra", entry.name)
    if not any(t.present.any() for t in tasks.values()):
        first = next(iter(per_task.items()))
        example = f"{folder}/{first[0]}/{first[1]['id'].iloc[0]}.png" if len(first[1]) else f"{folder}/<task>/<id>.png"
        raise ExternalError(
            f"{folder}: no output matches an input id (expected e.g. {example}; ids are in the exported manifest.csv)"
        )
    # Trained elsewhere: no training seed of this pipeline, no training summary.
    return FolderOutputs(MethodOutputs(tasks, seed=None), task_sizes, problems), per_task


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

    The document is `agebench.pipeline.evaluate.evaluate_method`'s for the same arrays and masks (so `missing`,
    `fid_n` (outputs in FID/KID) and, with round trips, `cycle_missing` per task come from
    `metrics.suite.score_task`; `cycle_l1` is absent without round trips), with `kind: "external"`,
    `source` and `external: {folder, outputs, problems}`. `outputs_dir`, when given, receives the arrays
    in the `generate` stage's layout (`agebench.pipeline.tasks.write_outputs`; the report's sample grids
    read them); it appears only when scoring succeeded.
    """
    from agebench.pipeline.evaluate import evaluate_method

    check_name(name)
    read, _ = read_folder(folder, params, prepared, manifest)
    with contextlib.ExitStack() as stack:
        if outputs_dir is not None:
            layout = stack.enter_context(atomic_path(outputs_dir, kind="dir"))
            write_outputs(layout, read.outputs, params.evaluate.resolution)
        doc = evaluate_method(name, params, prepared, read.outputs, scorer, per_face)
    summary: dict[str, Any] = {}
    for task_id, t in read.outputs.tasks.items():
        summary[task_id] = {
            "n": len(t.rows),
            "present": int(t.present.sum()),
            "cycle_present": int(t.cycle_present.sum()) if t.cycle_present is not None else 0,
            "sizes": read.sizes[task_id],
        }
    doc["kind"] = "external"
    doc["source"] = source
    # v3: the networks the entry declares it trained or translated with; the independence flags apply to it.
    doc["uses_scoring_networks"] = list(next((e.uses_networks for e in params.external if e.name == name), ()))
    sizes: Counter[str] = Counter()
    for s in summary.values():
        sizes.update(s["sizes"])
    doc["resolution"] = int(sizes.most_common(1)[0][0].split("x")[0]) if sizes else None
    doc["external"] = {"folder": str(folder), "outputs": summary, "problems": read.problems.as_list()}
    return doc


def reserved_names() -> set[str]:
    """Row names an external entry may not take: every registered method and the `real` reference row."""
    from agebench.infra.registry import METHODS

    return set(METHODS.names()) | {"real"}
