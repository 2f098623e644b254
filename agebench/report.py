"""`report` stage: the leaderboard (PROTOCOL.md s.6) from every metrics file, and the HTML report.

Writes `leaderboard.csv` (one row per method and reference, every number), `leaderboard.md`
(methods ranked by `joint` on `aging`, ties broken by lower `fid`; reference rows shown apart) and
`index.html`: one self-contained page (images embedded) with the leaderboard, a sample grid per task,
the age/identity trade-off, output age distributions, gender/race breakdowns, training curves and
the progression strips of multi-group methods (also written to `figures/progression/<method>.png`).
Parts whose inputs are missing are named on the page, never dropped silently.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agebench import report_html
from agebench.common import atomic_path, read_json
from agebench.config import Params
from agebench.data import load_faces

TASKS = ("aging", "rejuvenation")
TASK_COLUMNS = ("joint", "age_acc", "age_acc_rel", "id_rate", "fid", "kid_mean", "cycle_l1")
HEADLINE = ("joint", "age_acc", "id_rate", "fid", "kid", "cycle_l1")


def load_metrics(folder: Path, names: list[str]) -> list[dict[str, Any]]:
    """Metrics documents of `names` (in that order) that exist in `folder`; a missing one is an error."""
    docs = []
    for name in names:
        path = folder / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `dvc repro evaluate@{name}` first")
        docs.append(read_json(path))
    return docs


def load_runtime(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """`reports/runtime/<name>.json` (training time, hardware) of those names that have one."""
    return {n: read_json(folder / f"{n}.json") for n in names if (folder / f"{n}.json").is_file()}


def leaderboard_frame(docs: list[dict[str, Any]], runtime: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per document with every leaderboard column (intervals as *_lo / *_hi)."""
    runtime = runtime or {}
    rows = []
    for d in docs:
        row: dict[str, Any] = {"method": d["method"], "kind": d.get("kind", "method")}
        for task in TASKS:
            t = d.get("tasks", {}).get(task, {})
            for col in TASK_COLUMNS:
                row[f"{task}.{col}"] = _num(t.get(col))
                lo_hi = t.get("ci95", {}).get(col)
                if lo_hi:
                    row[f"{task}.{col}_lo"], row[f"{task}.{col}_hi"] = _num(lo_hi[0]), _num(lo_hi[1])
            row[f"{task}.kid_std"] = _num(t.get("kid_std"))
            row[f"{task}.n"] = t.get("n")
        train = {**d.get("train", {}), **runtime.get(d["method"], {})}
        row.update(
            {
                "resolution": d.get("resolution"),
                "train_seconds": train.get("train_seconds"),
                "hardware": train.get("hardware"),
                "parameters": train.get("parameter_count"),
                "git_revision": d.get("git_revision"),
                "protocol_version": d.get("protocol_version"),
                "profile": d.get("profile"),
            }
        )
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        # Methods first (ranked), then reference rows; within each: joint desc, then fid asc.
        df["_ref"] = (df["kind"] == "reference").astype(int)
        df["_fid"] = df["aging.fid"].fillna(math.inf)
        df = df.sort_values(
            ["_ref", "aging.joint", "_fid"], ascending=[True, False, True], na_position="last", kind="stable"
        ).drop(columns=["_ref", "_fid"])
    return df.reset_index(drop=True)


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _fmt(row: pd.Series, task: str, col: str) -> str:
    value, ci = report_html.value_and_interval(row, task, col)
    return f"{value} {ci}" if ci else value


def leaderboard_markdown(df: pd.DataFrame) -> str:
    """Markdown tables: ranked methods, then reference rows, then provenance."""
    lines = [
        "# agebench leaderboard",
        "",
        "Ranked by `joint` on `aging` (ties: lower `fid`). Brackets: 95% bootstrap intervals "
        "(PROTOCOL.md s.4). `kid` is KID mean x 1000 ± std x 1000.",
        "",
    ]
    for kind, title in (("method", "Methods"), ("reference", "Reference rows (not ranked)")):
        part = df[df["kind"] == kind] if not df.empty else df
        if part.empty:
            continue
        lines += [f"## {title}", ""]
        for task in TASKS:
            lines += [
                f"### {task}",
                "",
                "| rank | method | joint | age_acc | age_acc_rel | id_rate | fid | kid | cycle_l1 | n |",
                "|---:|---|---|---|---|---|---|---|---|---:|",
            ]
            for rank, (_, row) in enumerate(part.iterrows(), start=1):
                kid = row.get(f"{task}.kid_mean")
                kid_s = (
                    "–"
                    if kid is None or math.isnan(kid)
                    else f"{1000 * kid:.2f} ± {1000 * row.get(f'{task}.kid_std', float('nan')):.2f}"
                )
                lines.append(
                    f"| {rank if kind == 'method' else '–'} | {row['method']} | {_fmt(row, task, 'joint')} | "
                    f"{_fmt(row, task, 'age_acc')} | {_fmt(row, task, 'age_acc_rel')} | "
                    f"{_fmt(row, task, 'id_rate')} | {_fmt(row, task, 'fid')} | {kid_s} | "
                    f"{_fmt(row, task, 'cycle_l1')} | {row.get(f'{task}.n')} |"
                )
            lines.append("")
    if not df.empty:
        lines += [
            "## Training and provenance",
            "",
            "| method | resolution | parameters | train time (s) | hardware | git revision | protocol | profile |",
            "|---|---:|---:|---:|---|---|---:|---|",
        ]
        for _, row in df.iterrows():
            secs = row.get("train_seconds")
            lines.append(
                f"| {row['method']} | {_int(row.get('resolution'))} | {_int(row.get('parameters'))} | "
                f"{'–' if report_html.is_missing(secs) else f'{secs:.0f}'} | {_text(row.get('hardware'))} | "
                f"{_text(row.get('git_revision'))} | {_int(row.get('protocol_version'))} | "
                f"{_text(row.get('profile'))} |"
            )
        lines.append("")
    return "\n".join(lines)


def _text(v: Any) -> str:
    return "–" if report_html.is_missing(v) else str(v)


def _int(v: Any) -> str:
    return "–" if report_html.is_missing(v) else f"{int(v):,}"


SAMPLE_FACES = 6


def _npz(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def sample_grid(
    task: str, names: list[str], outputs: Path, scores: dict[str, dict[str, np.ndarray]], faces: np.ndarray | None
) -> tuple[str, list[str]]:
    """HTML grid of the same test faces for every method of `names` that has outputs for `task`;
    `scores` holds each method's `data/scores/<method>.npz` (absent when it has none)."""
    missing: list[str] = []
    outs: dict[str, np.ndarray] = {}
    rows = None
    for name in names:
        z = _npz(outputs / name / f"{task}.npz")
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
    input_ages = None
    for name in outs:
        sc = scores.get(name)
        if sc is None or f"{task}/rows" not in sc or not np.array_equal(sc[f"{task}/rows"], rows):
            missing.append(f"{name} scores (no per-face scores for these faces in data/scores/{name}.npz)")
            continue
        if f"{task}/age_out" in sc:
            ages[name] = sc[f"{task}/age_out"][pick]
            input_ages = sc[f"{task}/age_in"][pick]
        if f"{task}/id_dist" in sc:
            dists[name] = sc[f"{task}/id_dist"][pick]
    inputs = faces[rows[pick]]
    return report_html.sample_grid_html(inputs, input_ages, outs, ages, dists), missing


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


def write_html_report(
    params: Params,
    docs: list[dict[str, Any]],
    board: pd.DataFrame,
    paths: dict[str, Path],
    out: Path,
) -> Path:
    """Gather figures and write `out/index.html` (and progression strips under `out/figures`)."""
    names = list(params.methods)
    schemes = params.groups.schemes()
    real = next((d for d in docs if d["method"] == "real"), None)
    faces_file = paths["data"] / f"faces_{params.evaluate.resolution}.npy"
    faces = load_faces(paths["data"], params.evaluate.resolution) if faces_file.is_file() else None
    real_scores = _npz(paths["scores"] / "real.npz") or {}
    scores = {n: z for n in names if (z := _npz(paths["scores"] / f"{n}.npz")) is not None}
    notes: list[str] = []
    sections: list[tuple[str, str]] = [("Leaderboard", report_html.leaderboard_html(board, TASKS))]

    grids = []
    for task, t in params.tasks.items():
        grid, missing = sample_grid(task, names, paths["outputs"], scores, faces)
        grids.append(f"<h3>{task}: {t.source} → {t.target}</h3>" + (grid or "<p>no outputs to show</p>"))
        notes += [f"sample grid {task}: {m}" for m in missing]
    if faces is None:
        notes.append(f"sample grids: {faces_file} not found")
    sections.append(
        (
            "Sample outputs",
            '<p class="meta">The same test faces for every method; under each output its estimated age '
            "and its face-descriptor distance to the input (same person below "
            f"{params.evaluate.id_threshold}).</p>" + "".join(grids),
        )
    )

    plots = []
    for task, _ in params.tasks.items():
        ceiling = real["tasks"].get(task, {}).get("age_acc_real") if real else None
        plots.append(report_html.plot_html(report_html.tradeoff_png(board, task, ceiling), f"trade-off {task}"))
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
        plots.append(report_html.plot_html(png, f"age distribution {task}"))
    sections.append(("Estimated age of the outputs", "".join(plots)))

    method_docs = [d for d in docs if d["method"] != "real"]
    plots = [
        report_html.plot_html(report_html.breakdown_png(method_docs, task), f"breakdown {task}")
        for task, _ in params.tasks.items()
    ]
    sections.append(("joint by gender and race", "".join(plots)))

    curves = training_curves(paths["live"], names)
    sections.append(
        ("Training curves", report_html.plot_html(report_html.training_curves_png(curves), "training curves"))
    )

    strips = []
    (out / "figures" / "progression").mkdir(parents=True, exist_ok=True)  # a DVC out, even when empty
    for name in names:
        z = _npz(paths["outputs"] / name / "progression.npz")
        if z is None or not len(z["images"]):
            continue
        png = report_html.progression_png(z["images"], list(z["groups"]), list(z["source"]), name)
        with atomic_path(out / "figures" / "progression" / f"{name}.png") as tmp:
            tmp.write_bytes(png)
        strips.append(report_html.plot_html(png, f"progression {name}"))
    sections.append(("Progression across age groups", "".join(strips) or "<p>No method with more than two groups.</p>"))
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
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(page, encoding="utf-8")
    return out / "index.html"
