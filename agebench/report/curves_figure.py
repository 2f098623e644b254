"""The learning-curve figure and table (face-free): `agebench curves` documents rendered as PNG and markdown.

Each panel is one value against training core-minutes, one colour per method, solid for aging and dashed for
rejuvenation, with the cpu track's target drawn as a grey line where it is a fixed number or a ceiling read
from the same validation split (realism: half the real faces' own; FID: twice the untouched input's).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from agebench.report.html import figure_png, pyplot

#: (value key, panel title, target: a number, "half_realism_real", "twice_identity_fid" or None, better).
PANELS = (
    ("gap_closure", "gap_closure (share of the real age gap)", 0.5, "higher"),
    ("id_rate", "SFace id_rate", 0.6, "higher"),
    ("realism", "realism", "half_realism_real", "higher"),
    ("face_fail_rate", "no face found (share)", 0.02, "lower"),
    ("fid", "FID (validation)", "twice_identity_fid", "lower"),
    ("joint", "joint (headline)", None, "higher"),
)
TASK_STYLE = {"aging": "-", "rejuvenation": "--"}


def target_document(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The document whose relative targets are drawn: the one scored on the most validation faces (FID, and
    so its identity-based target, depends on the number of faces; the first such document on a tie)."""
    return max(docs, key=lambda d: sum((d.get("validation") or {}).get("n", {}).values()))


def target_value(target: Any, doc: dict[str, Any], task: str) -> float | None:
    """The target of a panel for one task, from the document's own ceilings where it is relative."""
    if target is None or isinstance(target, int | float):
        return target
    if target == "half_realism_real":
        return 0.5 * float(doc["ceiling"][task].get("realism_real", math.nan))
    if target == "twice_identity_fid":
        return 2.0 * float(doc["identity"][task].get("fid", math.nan))
    raise ValueError(f"unknown target {target!r}")


def curves_png(docs: Sequence[dict[str, Any]]) -> bytes:
    """PNG bytes of the figure over the curve documents of several methods (see module docstring)."""
    plt = pyplot()
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    reference = target_document(list(docs)) if docs else None
    for ax, (key, title, target, _better) in zip(axes.flat, PANELS):
        for i, doc in enumerate(docs):
            for task, style in TASK_STYLE.items():
                xs = [p["core_minutes"] for p in doc["points"]]
                ys = [p["tasks"].get(task, {}).get(key, math.nan) for p in doc["points"]]
                ax.plot(
                    xs, ys, style, marker="o", ms=3, color=colours[i % len(colours)], label=f"{doc['method']} {task}"
                )
        if reference is not None:
            for task, style in TASK_STYLE.items():
                t = target_value(target, reference, task)
                if t is not None and math.isfinite(t):
                    ax.axhline(t, color="grey", ls=style, lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training core-minutes")
        ax.grid(alpha=0.3)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8)
    fig.suptitle(
        "Learning curves on the validation split (grey: the cpu track's targets; solid aging, dashed rejuvenation)"
    )
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    return figure_png(fig)


def curves_markdown(docs: Sequence[dict[str, Any]]) -> str:
    """A markdown table of every curve point (method, task, step, core-minutes, the panels' values), then the
    targets each method's last point meets."""
    cols = [key for key, *_ in PANELS]
    lines = [
        "| method | task | step | core-min | " + " | ".join(cols) + " |",
        "|---|---|---:|---:|" + "---:|" * len(cols),
    ]
    for doc in docs:
        for task in TASK_STYLE:
            ident = doc["identity"][task]
            lines.append(f"| identity (input) | {task} | | | " + " | ".join(_fmt(ident.get(c)) for c in cols) + " |")
            for p in doc["points"]:
                v = p["tasks"].get(task, {})
                lines.append(
                    f"| {doc['method']} | {task} | {p['step']} | {p['core_minutes']:.1f} | "
                    + " | ".join(_fmt(v.get(c)) for c in cols)
                    + " |"
                )
    return "\n".join(lines) + "\n"


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
