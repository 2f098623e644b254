"""The self-contained HTML report: figures as PNG bytes and the page as one string (images embedded).

Pure functions of arrays, data frames and metrics documents; `stages/report.py` gathers them from
the pipeline's files and writes the results. Faces are UTKFace-derived: the page is for looking at,
never for committing (it is git-ignored).
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from metrics.keys import KEY_METRIC_AGE_ACC, KEY_METRIC_AGE_SCORE, KEY_METRIC_FID, KEY_METRIC_ID_RATE, KEY_METRIC_JOINT


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (figures are only ever written as PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (fixed dpi, no timestamp metadata); the figure is closed."""
    plt = pyplot()
    buf = io.BytesIO()
    # No "Software"/date chunks: the same inputs give the same bytes.
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def image_png(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    return buf.getvalue()


def data_uri(png: bytes) -> str:
    """PNG bytes as a `data:` URI for an <img> that needs no other file."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def sample_indices(n: int, k: int) -> np.ndarray:
    """`k` positions spread evenly over `n` rows (all of them when n <= k), deterministic."""
    if n <= k:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))


def _caption(age: float | None, dist: float | None, label: str = "d", face: bool = True) -> str:
    """Under a face: its estimated age and identity score; "no face" where the face check rejected it (an
    age estimate of a non-face means nothing, PROTOCOL.md s.4)."""
    if not face:
        return "no face"
    parts = []
    if age is not None:
        parts.append("age –" if not math.isfinite(age) else f"age {age:.0f}")
    if dist is not None:
        parts.append(f"{label} –" if not math.isfinite(dist) else f"{label} {dist:.2f}")
    return " · ".join(parts)


def sample_grid_html(
    inputs: np.ndarray,
    input_ages: np.ndarray | None,
    outputs: Mapping[str, np.ndarray],
    ages: Mapping[str, np.ndarray],
    dists: Mapping[str, np.ndarray],
    score_label: str = "d",
    faces_found: Mapping[str, np.ndarray] | None = None,
) -> str:
    """An HTML table: one row of input faces, then one row per method with its outputs of the same faces.

    Args:
        inputs: (K, S, S, 3) uint8 test faces.
        input_ages: (K,) estimated ages of the inputs, or None.
        outputs: method -> (K, S, S, 3) uint8 outputs, row-aligned with `inputs`.
        ages, dists: method -> (K,) estimated output age / identity score against the input (NaN: failed).
        score_label: caption prefix of the identity score ("sim": SFace cosine, "d": dlib distance).
        faces_found: method -> (K,) 1 where the face check found a face in the output, 0 where not ("no face"
            is shown instead of an age); a method without it is captioned from `ages` and `dists` alone.
    """
    rows = []
    faces_found = faces_found or {}

    def row(
        label: str, faces: np.ndarray, age: np.ndarray | None, dist: np.ndarray | None, found: np.ndarray | None
    ) -> str:
        cells = [f'<th scope="row">{html.escape(label)}</th>']
        for i, face in enumerate(faces):
            cap = _caption(
                None if age is None else float(age[i]),
                None if dist is None else float(dist[i]),
                score_label,
                found is None or bool(found[i] > 0.5),
            )
            cells.append(
                f'<td><img class="face" alt="{html.escape(label)} {i}" src="{data_uri(image_png(face))}">'
                f'<div class="cap">{html.escape(cap)}</div></td>'
            )
        return "<tr>" + "".join(cells) + "</tr>"

    rows.append(row("input", inputs, input_ages, None, None))
    for name, faces in outputs.items():
        rows.append(row(name, faces, ages.get(name), dists.get(name), faces_found.get(name)))
    return '<table class="grid">' + "".join(rows) + "</table>"


def tradeoff_png(board: pd.DataFrame, task: str, ceiling: float | None, x_metric: str = KEY_METRIC_AGE_ACC) -> bytes:
    """`x_metric` (x: age_acc under protocol 2, age_score under 3) vs id_rate (y) per method with 95%
    intervals; reference rows in grey.

    `board` is `agebench.report.leaderboard_frame`'s frame; `ceiling` what real target faces score on
    `x_metric` (a vertical line: no method is expected to the right of it).
    """
    plt = pyplot()
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    palette = sns.color_palette("colorblind", max(len(board), 1))
    for i, (_, r) in enumerate(board.iterrows()):
        x, y = r.get(f"{task}.{x_metric}"), r.get(f"{task}.id_rate")
        if x is None or y is None or not (math.isfinite(x) and math.isfinite(y)):
            continue
        ref = r["kind"] == "reference"
        xerr = _err(r, task, x_metric, x)
        yerr = _err(r, task, KEY_METRIC_ID_RATE, y)
        ax.errorbar(
            x, y, xerr=xerr, yerr=yerr, fmt="s" if ref else "o", color="0.5" if ref else palette[i],
            capsize=3, label=f"{r['method']} (reference)" if ref else r["method"],
        )  # fmt: skip
    if ceiling is not None and math.isfinite(ceiling):
        ax.axvline(ceiling, color="0.3", ls="--", lw=1, label="real faces (estimator ceiling)")
    xlabel = "age_score (against the real gap)" if x_metric == KEY_METRIC_AGE_SCORE else "age_acc (in target group)"
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.02), xlabel=xlabel, ylabel="id_rate (same person)")
    ax.set_title(task)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    return figure_png(fig)


def _err(r: pd.Series, task: str, col: str, v: float) -> list[list[float]] | None:
    lo, hi = r.get(f"{task}.{col}_lo"), r.get(f"{task}.{col}_hi")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    return [[max(v - lo, 0.0)], [max(hi - v, 0.0)]]


def age_distribution_png(
    ages: Mapping[str, np.ndarray], real: np.ndarray | None, bounds: tuple[int, int], task: str
) -> bytes:
    """Histograms (as step lines) of estimated output ages per method against real target faces.

    ages: method -> (N,) estimated ages (NaN ignored); real: (M,) ages of real test faces of the target
    group; bounds: the target group's inclusive age range (shaded).
    """
    plt = pyplot()
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    bins = np.arange(0, 101, 4)
    ax.axvspan(bounds[0], bounds[1] + 1, color="0.9", label=f"target {bounds[0]}-{bounds[1]}")
    if real is not None and np.isfinite(real).any():
        ax.hist(real[np.isfinite(real)], bins=bins, density=True, color="0.6", alpha=0.6, label="real target faces")
    palette = sns.color_palette("colorblind", max(len(ages), 1))
    for (name, a), color in zip(ages.items(), palette):
        a = a[np.isfinite(a)]
        if len(a):
            ax.hist(a, bins=bins, density=True, histtype="step", lw=1.8, color=color, label=name)
    ax.set(xlabel="estimated age (years)", ylabel="density", title=f"{task}: estimated age of outputs")
    ax.legend(fontsize=7)
    return figure_png(fig)


def breakdown_png(docs: Sequence[Mapping[str, Any]], task: str, metric: str = KEY_METRIC_JOINT) -> bytes:
    """Bars of `metric` per gender and per race for every method (PROTOCOL.md s.4 breakdowns)."""
    plt = pyplot()
    import seaborn as sns

    rows = []
    for d in docs:
        b = d.get("tasks", {}).get(task, {}).get("breakdown", {})
        for by in ("gender", "race"):
            for label, vals in b.get(by, {}).items():
                if metric in vals:
                    rows.append({"method": d["method"], "by": by, "group": f"{label} (n={vals['n']})",
                                 "label": label, metric: vals[metric]})  # fmt: skip
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 2.2]})
    df = pd.DataFrame(rows)
    for ax, by in zip(axes, ("gender", "race")):
        part = df[df["by"] == by] if not df.empty else df
        if part.empty:
            ax.set_axis_off()
            continue
        sns.barplot(data=part, x="label", y=metric, hue="method", ax=ax, palette="colorblind", errorbar=None)
        ax.set(ylim=(0, 1), xlabel=by, ylabel=f"{metric} ({task})")
        ax.legend(fontsize=7)
    return figure_png(fig)


def training_curves_png(curves: Mapping[str, Mapping[str, pd.DataFrame]]) -> bytes | None:
    """Loss curves per method (one panel each): curves[method][loss name] has columns step, value."""
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None
    plt = pyplot()
    n = len(curves)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 3.2), squeeze=False)
    for ax, (method, losses) in zip(axes[0], curves.items()):
        for name, df in sorted(losses.items()):
            ax.plot(df["step"], df["value"], lw=1.2, label=name)
        ax.set(title=method, xlabel="step", ylabel="loss")
        # Terms differ by orders of magnitude (a VGG Gram loss next to an LSGAN one): log scale when possible.
        if all((df["value"] > 0).all() for df in losses.values()):
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return figure_png(fig)


def progression_png(images: np.ndarray, groups: Sequence[str], sources: Sequence[str], method: str) -> bytes:
    """Strips: (K, G, S, S, 3) uint8, row k = test face k translated to each of the G groups."""
    plt = pyplot()
    k, g = images.shape[:2]
    fig, axes = plt.subplots(k, g, figsize=(1.3 * g, 1.4 * k + 0.4), squeeze=False)
    for i in range(k):
        for j in range(g):
            ax = axes[i][j]
            ax.imshow(images[i, j])
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(str(groups[j]), fontsize=9)
            if j == 0:
                ax.set_ylabel(f"from {sources[i]}", fontsize=8)
            if groups[j] == sources[i]:
                for side in ax.spines.values():
                    side.set(color="black", lw=2)
    fig.suptitle(f"{method}: one test face per row, translated to every group (framed: its own)", fontsize=9)
    return figure_png(fig)


def board_table_html(caption: str, header: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]]) -> str:
    """One leaderboard table from `agebench.report.task_table`'s (value, interval) cells."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for cells in rows:
        tds = []
        for value, ci in cells:
            interval = f' <span class="ci">{html.escape(ci)}</span>' if ci else ""
            tds.append(f"<td>{html.escape(value)}{interval}</td>")
        body.append("<tr>" + "".join(tds) + "</tr>")
    return f'<table class="board"><caption>{html.escape(caption)}</caption><tr>{head}</tr>' + "".join(body) + "</table>"


def matrix_html(task: str, names: Sequence[str], paired: Mapping[tuple[str, str], Mapping[str, Any]]) -> str:
    """The matrix of paired differences joint(row) - joint(column) with their 95% intervals.

    `paired[(a, b)]` = {"value", "ci95"} from `metrics.stats.paired_difference`; a cell whose interval
    excludes 0 is marked (class "sep": the data separate the two methods).
    """
    if not names:
        return f'<p class="meta">{html.escape(task)}: no ranked rows.</p>'
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = []
    for a in names:
        cells = [f'<th scope="row">{html.escape(a)}</th>']
        for b in names:
            p = paired.get((a, b))
            if a == b or p is None:
                cells.append("<td>–</td>" if a != b else "<td></td>")
                continue
            lo, hi = p["ci95"]
            sep = not (is_missing(lo) or is_missing(hi)) and (lo > 0 or hi < 0)
            ci = "" if is_missing(lo) or is_missing(hi) else f"[{_signed(lo)}, {_signed(hi)}]"
            cls = ' class="sep"' if sep else ""
            cells.append(f'<td{cls}>{_signed(p["value"])} <span class="ci">{ci}</span></td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="board matrix"><caption>{html.escape(task)}: joint(row) − joint(column)</caption>'
        f"<tr><th></th>{head}</tr>" + "".join(body) + "</table>"
    )


def _signed(v: float) -> str:
    """+0.028 / -0.006; a value that rounds to zero is +0.000, never -0.000."""
    return f"{round(v, 3) + 0.0:+.3f}"


def is_missing(v: Any) -> bool:
    """None, NaN or pandas' NA (a metric that was not computed)."""
    return v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))


def value_and_interval(row: Mapping[str, Any], task: str, col: str) -> tuple[str, str]:
    """A leaderboard cell of `agebench.report.leaderboard_frame`'s row: ("0.512", "[0.47, 0.55]"), "–" when
    the metric is missing and "" when it has no interval; fid with 1 decimal, counts as integers,
    differences signed, the rates with 3 decimals."""
    v = row.get(f"{task}.{col}")
    if is_missing(v):
        return "–", ""
    if col.endswith("_fail"):
        return f"{int(v)}", ""
    digits = 1 if col == KEY_METRIC_FID else 3
    sign = "+" if col.startswith("joint_diff") else ""
    lo, hi = row.get(f"{task}.{col}_lo"), row.get(f"{task}.{col}_hi")
    ci = "" if is_missing(lo) or is_missing(hi) else f"[{lo:{sign}.{digits}f}, {hi:{sign}.{digits}f}]"
    return f"{v:{sign}.{digits}f}", ci


def kid_cell(row: Mapping[str, Any], task: str) -> tuple[str, str]:
    """KID mean ± std, both x1000 (PROTOCOL.md s.4: KID comes with its std, not a bootstrap interval)."""
    kid, std = row.get(f"{task}.kid_mean"), row.get(f"{task}.kid_std")
    if is_missing(kid):
        return "–", ""
    return (f"{1000 * kid:.2f}" if is_missing(std) else f"{1000 * kid:.2f} ± {1000 * std:.2f}"), ""


STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; color: #222; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; font-size: 0.9em; }
table.board { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 0.9em; }
table.board caption { text-align: left; font-weight: bold; }
table.board td, table.board th { border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: right; }
table.board td:nth-child(2) { text-align: left; font-weight: 600; }
.ci { color: #888; font-size: 0.85em; }
table.matrix td.sep { background: #e8f1fb; }
.note { font-size: 0.88em; color: #444; }
table.grid { border-collapse: collapse; margin-bottom: 1.5em; }
table.grid th { text-align: right; padding-right: 8px; font-size: 0.85em; white-space: nowrap; }
table.grid td { padding: 2px; text-align: center; }
img.face { width: 96px; height: 96px; display: block; image-rendering: auto; }
.cap { font-size: 0.72em; color: #444; }
img.plot { max-width: 100%; margin: 0.3em 0 1em; }
"""


def page_html(title: str, meta: str, sections: Sequence[tuple[str, str]]) -> str:
    """The whole page: `sections` are (heading, HTML body) in order; no external resource is loaded."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">{meta}</p>',
    ]
    for heading, body in sections:
        slug = "".join(c if c.isalnum() else "-" for c in heading.lower()).strip("-")
        parts.append(f'<section id="{slug}"><h2>{html.escape(heading)}</h2>\n{body}\n</section>')
    parts.append("</body></html>")
    return "\n".join(parts)


def plot_html(png: bytes | None, alt: str) -> str:
    """An embedded figure, or a note when there is nothing to plot."""
    if png is None:
        return f'<p class="meta">{html.escape(alt)}: nothing to plot.</p>'
    return f'<img class="plot" alt="{html.escape(alt)}" src="{data_uri(png)}">'
