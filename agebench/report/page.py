"""The self-contained HTML report page (`index.html`), built in memory: the stage writes the bytes.

Sections: the leaderboard (the same tables as leaderboard.md), the matrix of paired differences in `joint`
and the sentences generated from it, the `real` row's findings, reconstruction tables, a sample grid per
task (the same test faces for every method; under an output the face check rejected: "no face", never an
estimated age), the age/identity trade-off, output age distributions, gender/race breakdowns, training
curves and the progression strips of multi-group methods. Parts whose inputs are missing are named on the
page, never dropped silently. The charts that show no face are returned apart (publishable).
"""

from __future__ import annotations

import dataclasses
import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agebench.data.faces import load_faces, load_index
from agebench.params.sections import Params
from agebench.report import html as report_html
from agebench.report import markdown_v3
from agebench.report.docs import TASKS, read_npz
from agebench.report.frame import v2_rankings
from agebench.report.markdown import (
    _int,
    _task_title,
    _text,
    flag_notes,
    floor_note,
    parts_html,
    real_row_parts,
    reconstruction_parts,
    task_table,
)
from agebench.report.sentences import rank_sentences
from metrics.keys import (
    KEY_FACE_AGE_IN,
    KEY_FACE_AGE_OUT,
    KEY_FACE_FILE,
    KEY_FACE_FOUND,
    KEY_FACE_ID_SIM,
    KEY_PER_FACE,
    KEY_SEEDS,
)
from metrics.sface import SFACE_THRESHOLD

SAMPLE_FACES = 6


@dataclasses.dataclass(frozen=True)
class ReportPage:
    """What the report stage writes besides the leaderboard.

    html: index.html (UTF-8, every image embedded). charts: file name -> PNG of a face-free chart
    (`figures/charts/`). strips: method -> PNG of its progression strip (`figures/progression/`, faces).
    """

    html: bytes
    charts: Mapping[str, bytes]
    strips: Mapping[str, bytes]


def per_face_captions(
    doc: Mapping[str, Any] | None, task: str, files: Sequence[str], seed: int | None = None
) -> dict[str, np.ndarray] | None:
    """A protocol-3 row's per-face face_found (0/1), age_in, age_out and id_sim for the input files `files`.

    Read from the record of the training seed whose images `outputs/` holds (`seed`, the run's `train.seed`;
    the first seed when none matches, e.g. identity's null seed), matched by input file name. NaN where no value
    exists; None when the document has no usable record.
    """
    if doc is None:
        return None
    seeds = doc.get(KEY_SEEDS) or [{"tasks": doc.get("tasks", {})}]
    entry = next((e for e in seeds if e.get("seed") is not None and e.get("seed") == seed), seeds[0])
    rec = entry.get("tasks", {}).get(task, {}).get(KEY_PER_FACE)
    if not rec or KEY_FACE_FILE not in rec or KEY_FACE_FOUND not in rec:
        return None
    where = {f: i for i, f in enumerate(rec[KEY_FACE_FILE])}
    if any(f not in where for f in files):
        return None
    pick = [where[f] for f in files]

    def column(key: str) -> np.ndarray:
        vals = rec.get(key) or [None] * len(rec[KEY_FACE_FILE])
        return np.array([np.nan if vals[i] is None else float(vals[i]) for i in pick], np.float64)

    return {k: column(k) for k in (KEY_FACE_FOUND, KEY_FACE_AGE_IN, KEY_FACE_AGE_OUT, KEY_FACE_ID_SIM)}


def sample_grid(
    task: str,
    names: list[str],
    outputs: Path,
    scores: Mapping[str, Mapping[str, np.ndarray]],
    faces: np.ndarray | None,
    docs: Mapping[str, Mapping[str, Any]] | None = None,
    files: pd.Series | None = None,
    seed: int | None = None,
) -> tuple[str, list[str]]:
    """HTML grid of the same test faces for every method of `names` that has outputs for `task`.

    Captions come from each method's metrics document (`docs`, per-face records, protocol 3; `files`: input
    file name per prepared row; `seed`: the run's training seed) or else its `data/scores/<method>.npz`
    (`scores`). Returns the grid and the list of what was missing.
    """
    missing: list[str] = []
    outs: dict[str, np.ndarray] = {}
    rows = None
    for name in names:
        z = read_npz(outputs / name / f"{task}.npz")
        if z is None:
            missing.append(f"{name} (no {outputs / name / f'{task}.npz'})")
            continue
        if rows is None:
            rows = z["rows"]
            pick = report_html.sample_indices(len(rows), SAMPLE_FACES)
        if not np.array_equal(z["rows"], rows):
            missing.append(f"{name} (translated other faces)")
            continue
        outs[name] = z["fake"][pick]
    if rows is None or faces is None or not outs:
        return "", missing
    ages: dict[str, np.ndarray] = {}
    dists: dict[str, np.ndarray] = {}
    found: dict[str, np.ndarray] = {}
    input_ages = None
    label = "d"
    picked_files = None if files is None else [str(files[r]) for r in rows[pick]]
    for name in outs:
        caps = per_face_captions((docs or {}).get(name), task, picked_files, seed) if picked_files else None
        if caps is not None:
            ages[name], dists[name], found[name], label = (
                caps[KEY_FACE_AGE_OUT],
                caps[KEY_FACE_ID_SIM],
                caps[KEY_FACE_FOUND],
                "sim",
            )
            input_ages = caps[KEY_FACE_AGE_IN] if input_ages is None else input_ages
            continue
        sc = scores.get(name)
        if sc is None or f"{task}/rows" not in sc or not np.array_equal(sc[f"{task}/rows"], rows):
            missing.append(f"{name} scores (no per-face scores for these faces in data/scores/{name}.npz)")
            continue
        if f"{task}/age_out" in sc:
            ages[name] = sc[f"{task}/age_out"][pick]
            input_ages = sc[f"{task}/age_in"][pick]
        if f"{task}/face_found" in sc:
            found[name] = sc[f"{task}/face_found"][pick]
        # The judge's cosine similarity (protocol 2) when stored, else dlib's distance.
        key = f"{task}/id_sim" if f"{task}/id_sim" in sc else f"{task}/id_dist"
        if key in sc:
            dists[name] = sc[key][pick]
            label = "sim" if key.endswith("id_sim") else "d"
    inputs = faces[rows[pick]]
    return report_html.sample_grid_html(inputs, input_ages, outs, ages, dists, label, found), missing


def training_curves(live: Path, names: list[str]) -> dict[str, dict[str, pd.DataFrame]]:
    """dvclive's `train/<loss>.tsv` files per method: {method: {loss: DataFrame(step, value)}}."""
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for name in names:
        folder = live / name / "plots" / "metrics" / "train"
        losses = {}
        for tsv in sorted(folder.glob("*.tsv")) if folder.is_dir() else []:
            df = pd.read_csv(tsv, sep="\t")
            if {"step", tsv.stem} <= set(df.columns):
                losses[tsv.stem] = df.rename(columns={tsv.stem: "value"})[["step", "value"]]
        out[name] = losses
    return out


def leaderboard_html(board: pd.DataFrame, docs: Sequence[Mapping[str, Any]]) -> str:
    """The leaderboard section: the same tables, floors and footnotes as leaderboard.md."""
    v3 = board.attrs.get("protocol", 2) >= 3
    if v3:
        intro = markdown_v3.INTRO.replace("`", "")
    else:
        intro = (
            'Each task is ranked by its own joint (ties: lower fid); "=k": the paired 95% interval of the '
            "difference in joint with the row above contains 0. Brackets: 95% bootstrap intervals; kid: mean ± std "
            "×1000; *_dlib: dlib's second opinion, not ranked."
        )
    table = markdown_v3.task_table if v3 else task_table
    out = [f'<p class="meta">{html.escape(intro)}</p>']
    for task in TASKS:
        header, rows = table(board, task, ranked=True)
        if rows:
            out.append(report_html.board_table_html(_task_title(docs, task), header, rows))
            out.append(f'<p class="note">{html.escape(floor_note(board, task))}</p>')
    for task in TASKS:
        header, rows = table(board, task, ranked=False)
        if rows:
            out.append(report_html.board_table_html(f"Reference rows (not ranked): {task}", header, rows))
    if v3 and (real_rows := markdown_v3.real_table(board)):
        out.append(
            report_html.board_table_html("The real row: gap, ceilings and floors", markdown_v3.REAL_HEADER, real_rows)
        )
    out += [f'<p class="note">{html.escape(n)}</p>' for n in flag_notes(board)]
    return "\n".join(out)


def paired_html(board: pd.DataFrame, docs: Sequence[Mapping[str, Any]]) -> str:
    """The matrix of pairwise differences in joint per task and the sentences generated from it."""
    v3 = board.attrs.get("protocol", 2) >= 3
    rankings = board.attrs.get("rankings", {}) if v3 else v2_rankings(board, docs)
    out = []
    for task in TASKS:
        r = rankings.get(task)
        if board.empty or r is None:
            continue
        names = r.matrix_rows if v3 else list(r.order)
        out.append(report_html.matrix_html(task, names, board.attrs.get("paired", {}).get(task, {})))
        items = "".join(f"<li>{html.escape(s)}</li>" for s in rank_sentences(r, groups=v3))
        out.append(f'<ul class="note">{items}</ul>')
    how = "two-level bootstrap over training seeds and" if v3 else "bootstrap over the same resamples of"
    return (
        f'<p class="meta">Paired 95% intervals ({how} test faces, PROTOCOL.md s.6); shaded: the interval '
        "excludes 0. The sentences below are generated from these numbers.</p>" + "\n".join(out)
    )


def build_report_page(
    params: Params, docs: list[dict[str, Any]], board: pd.DataFrame, paths: Mapping[str, Path]
) -> ReportPage:
    """Gather the figures and build the page; `paths` has "scores", "outputs", "data" and "live"."""
    names = list(params.methods)
    schemes = params.groups.schemes()
    v3 = board.attrs.get("protocol", 2) >= 3
    real = next((d for d in docs if d["method"] == "real"), None)
    faces_file = paths["data"] / f"faces_{params.evaluate.resolution}.npy"
    faces = load_faces(paths["data"], params.evaluate.resolution) if faces_file.is_file() else None
    index_file = paths["data"] / "index.csv"
    files = load_index(paths["data"]).set_index("row")["file"] if v3 and index_file.is_file() else None
    real_scores = read_npz(paths["scores"] / "real.npz") or {}
    scores = {n: z for n in names if (z := read_npz(paths["scores"] / f"{n}.npz")) is not None}
    by_name = {str(d["method"]): d for d in docs}
    notes: list[str] = []
    sections: list[tuple[str, str]] = [
        ("Leaderboard", leaderboard_html(board, docs)),
        ("Paired differences in joint", paired_html(board, docs)),
    ]
    if real is not None:
        sections.append(("Real faces", parts_html(real_row_parts(real))))
    for d in docs:
        if d.get("reconstruction"):
            sections.append((f"{d['method']}: reconstruction", parts_html(reconstruction_parts(d))))

    grids = []
    for task, t in params.tasks.items():
        grid, missing = sample_grid(task, names, paths["outputs"], scores, faces, by_name, files, params.train.seed)
        grids.append(f"<h3>{task}: {t.source} → {t.target}</h3>" + (grid or "<p>no outputs to show</p>"))
        notes += [f"sample grid {task}: {m}" for m in missing]
    if faces is None:
        notes.append(f"sample grids: {faces_file} not found")
    sections.append(
        (
            "Sample outputs",
            '<p class="meta">The same test faces for every method; under each output its estimated age, or "no '
            'face" where the face check found none, and its identity score against the input: sim = SFace cosine '
            f"similarity (same person at {SFACE_THRESHOLD} or above), d = dlib distance (same person below "
            f"{params.evaluate.id_threshold}).</p>" + "".join(grids),
        )
    )

    # Charts hold numbers only, no face: they are also written as files (`figures/charts/`, publishable).
    charts: dict[str, bytes | None] = {}
    plots = []
    x_metric, ceiling_key = ("age_score", "age_score_real") if v3 else ("age_acc", "age_acc_real")
    for task, _ in params.tasks.items():
        ceiling = real["tasks"].get(task, {}).get(ceiling_key) if real else None
        charts[f"tradeoff_{task}.png"] = png = report_html.tradeoff_png(board, task, ceiling, x_metric)
        plots.append(report_html.plot_html(png, f"trade-off {task}"))
    sections.append(("Age vs identity trade-off", "".join(plots)))

    plots = []
    for task, t in params.tasks.items():
        ages = {}
        for name in names:
            sc = scores.get(name, {})
            if f"{task}/age_out" in sc:
                ages[name] = sc[f"{task}/age_out"]
            else:
                notes.append(f"age distribution {task}: no per-face ages for {name}")
        bounds = tuple(schemes[t.scheme][t.target])
        png = report_html.age_distribution_png(ages, real_scores.get(f"{task}/age_real"), bounds, task)
        charts[f"age_distribution_{task}.png"] = png
        plots.append(report_html.plot_html(png, f"age distribution {task}"))
    sections.append(("Estimated age of the outputs", "".join(plots)))

    method_docs = [d for d in docs if d["method"] != "real"]
    plots = []
    for task, _ in params.tasks.items():
        charts[f"breakdown_{task}.png"] = png = report_html.breakdown_png(method_docs, task)
        plots.append(report_html.plot_html(png, f"breakdown {task}"))
    sections.append(("joint by gender and race", "".join(plots)))

    curves = training_curves(paths["live"], names)
    charts["training_curves.png"] = png = report_html.training_curves_png(curves)
    sections.append(("Training curves", report_html.plot_html(png, "training curves")))

    strips: dict[str, bytes] = {}
    for name in names:
        z = read_npz(paths["outputs"] / name / "progression.npz")
        if z is None or not len(z["images"]):
            continue
        strips[name] = png = report_html.progression_png(z["images"], list(z["groups"]), list(z["source"]), name)
    plots = [report_html.plot_html(png, f"progression {name}") for name, png in strips.items()]
    sections.append(("Progression across age groups", "".join(plots) or "<p>No method with more than two groups.</p>"))
    if notes:
        items = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
        sections.append(("Missing inputs", f"<ul>{items}</ul>"))

    first = board.iloc[0] if len(board) else pd.Series(dtype=object)
    meta = (
        f"profile <b>{html.escape(params.profile)}</b> · protocol {_int(first.get('protocol_version'))}"
        f" · git {html.escape(_text(first.get('git_revision')))}"
        f" · evaluation at {params.evaluate.resolution}×{params.evaluate.resolution}"
    )
    page = report_html.page_html("agebench report", meta, sections)
    kept = {k: v for k, v in charts.items() if v is not None}
    return ReportPage(html=page.encode("utf-8"), charts=kept, strips=strips)
