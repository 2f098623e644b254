"""Protocol 3's leaderboard.md (PROTOCOL.md s.6 v3): rank groups against each group's leader, the seed
spread beside each mean, "not above no change" marks, the real row's gap, ceilings and two sample sizes,
the pairwise matrix of differences per task, and the sentences about ranks generated from those numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from agebench.report import html as report_html
from agebench.report.docs import TASKS
from agebench.report.markdown import (
    _cell,
    _int,
    _md_table,
    appendix_markdown,
    flag_notes,
    page_head,
    reference_section,
    task_head,
    task_rows,
)
from agebench.report.ranking import NO_CHANGE, TaskRanking
from agebench.report.sentences import rank_sentences, signed

NOT_ABOVE = "not above no change"
#: Header of a protocol-3 task table: (column key, title). Keys starting with "_" are not metrics.
TABLE_COLUMNS = (
    ("_rank", "rank"), ("_method", "method"), ("_seeds", "seeds"), ("joint", "joint"),
    ("_leader", "Δ joint vs leader"), ("_no_change", "Δ joint vs identity"), ("age_score", "age_score"),
    ("gap_closure", "gap_closure"), ("id_rate", "id_rate"), ("id_sim", "id_sim"), ("realism", "realism"),
    ("fid", "fid"), ("kid_mean", "kid ×1000"), ("cycle_l1", "cycle_l1"), ("face_fail", "face_fail"),
    ("joint_decade", "joint_decade (not ranked)"), ("age_acc", "age_acc (not ranked)"), ("_n", "n"),
    ("id_rate_dlib", "id_rate_dlib (not ranked)"), ("joint_dlib", "joint_dlib (not ranked)"),
)  # fmt: skip
REAL_HEADER = [
    "task", "gap (years)", "age_score_real", "realism_real", "age_acc_real", "fid floor", "kid floor ×1000",
    "n (age ceiling)", "n_floor (FID floor)",
]  # fmt: skip
INTRO = (
    "Each task is ranked by its own `joint` (per face: verified by SFace × age_score × realistic; ties: lower "
    "`fid`). Rank groups: the first row leads group 1; each next row joins the current group when the paired 95% "
    'interval of (leader − row) contains 0, else it leads a new group whose rank is its position; "=k": a '
    'shared rank (PROTOCOL.md s.6). "Δ joint vs leader": joint(leader) − joint(row) for the leader the row was '
    "compared with (for a row that leads a new group: the leader of the group above). Brackets: 95% intervals, "
    "two-level bootstrap over training seeds and test faces (each method's seeds resampled, one face resample "
    'shared by every method, so differences are paired; Wilson intervals for rare events). "seeds a–b": lowest '
    f'and highest value over the training seeds. "{NOT_ABOVE}": the paired interval of joint(row) − '
    "joint(identity) does not lie above 0. `kid`: KID mean ± std, ×1000. `face_fail`: outputs where YuNet found "
    'no face. "not ranked": reported, never ranked on. "–": not computed.'
)


def _fmt(v: float, col: str) -> str:
    if col.endswith("_fail"):
        return f"{v:.0f}" if float(v).is_integer() else f"{v:.1f}"
    return f"{v:.1f}" if col == "fid" else f"{1000 * v:.2f}" if col == "kid_mean" else f"{v:.3f}"


def metric_cell(row: Mapping[str, Any], task: str, col: str) -> tuple[str, str]:
    """(value, interval and seed spread) of a protocol-3 cell; the spread only where the row has S > 1 seeds."""
    if col.endswith("_fail"):
        v = row.get(f"{task}.{col}")
        value, ci = ("–", "") if report_html.is_missing(v) else (_fmt(v, col), "")
    else:
        value, ci = _cell(row, task, col)
    lo, hi = row.get(f"{task}.{col}_min"), row.get(f"{task}.{col}_max")
    seeds = row.get("seeds")
    several = not report_html.is_missing(seeds) and seeds > 1
    if value != "–" and several and not (report_html.is_missing(lo) or report_html.is_missing(hi)):
        ci = f"{ci} seeds {_fmt(lo, col)}–{_fmt(hi, col)}".strip()
    return value, ci


def _diff_cell(row: Mapping[str, Any], task: str, col: str) -> tuple[str, str]:
    v, lo, hi = (row.get(f"{task}.{col}{s}") for s in ("", "_lo", "_hi"))
    if report_html.is_missing(v):
        return "–", ""
    ci = "" if report_html.is_missing(lo) or report_html.is_missing(hi) else f"[{signed(lo)}, {signed(hi)}]"
    return signed(v), ci


def task_table(df: pd.DataFrame, task: str, ranked: bool) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """One task's rows as (value, interval) cells: the ranked kinds in rank order, else the reference rows
    other than `real` (which has its own table)."""
    header = [t for _, t in TABLE_COLUMNS]
    if df.empty:
        return header, []

    def cell(r: Mapping[str, Any], key: str) -> tuple[str, str]:
        if key == "_seeds":
            return _int(r.get("seeds")), ""
        if key == "_leader":
            return _diff_cell(r, task, "diff_leader") if ranked else ("", "")
        if key == "_no_change":
            value, ci = _diff_cell(r, task, "vs_identity") if ranked else ("", "")
            if ranked and r.get(f"{task}.not_above_no_change") is True:
                ci = f"{ci} {NOT_ABOVE}".strip()
            return value, ci
        return metric_cell(r, task, key)

    return header, task_rows(df, task, ranked, TABLE_COLUMNS, cell, drop_real=True)


def _years(row: Mapping[str, Any], task: str, col: str) -> tuple[str, str]:
    v, lo, hi = (row.get(f"{task}.{col}{s}") for s in ("", "_lo", "_hi"))
    if report_html.is_missing(v):
        return "–", ""
    return f"{v:.2f}", "" if report_html.is_missing(lo) or report_html.is_missing(hi) else f"[{lo:.2f}, {hi:.2f}]"


def real_table(df: pd.DataFrame) -> list[list[tuple[str, str]]]:
    """The `real` row per task: the gap, the ceilings, the FID/KID floor and its two sample sizes apart."""
    real = df[df["method"] == "real"] if not df.empty else df
    if real.empty:
        return []
    r = real.iloc[0]
    rows = []
    for task in TASKS:
        cells = [(task, ""), _years(r, task, "gap")]
        cells += [_cell(r, task, c) for c in ("age_score_real", "realism_real", "age_acc_real", "fid")]
        cells += [report_html.kid_cell(r, task), (_int(r.get(f"{task}.n")), ""), (_int(r.get(f"{task}.n_floor")), "")]
        rows.append(cells)
    return rows


def matrix_table(r: TaskRanking) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """The pairwise matrix joint(row) − joint(column) with paired intervals; "*" where the interval excludes 0."""
    names = r.matrix_rows
    rows = []
    for a in names:
        cells = [(a, "")]
        for b in names:
            d = r.pairs.get((a, b))
            if a == b or d is None:
                cells.append(("", "") if a == b else ("–", ""))
            else:
                mark = "*" if d.separates else ""
                cells.append((signed(d.value), f"[{signed(d.ci95[0])}, {signed(d.ci95[1])}]{mark}"))
        rows.append(cells)
    return ["joint(row) − joint(column)", *names], rows


def leaderboard_markdown(df: pd.DataFrame, docs: Sequence[Mapping[str, Any]] = ()) -> str:
    """Markdown of a protocol-3 leaderboard frame (`leaderboard_frame`): tables, matrix, generated sentences,
    reference rows, the real row, flags, provenance."""
    rankings: Mapping[str, TaskRanking] = df.attrs.get("rankings", {})
    lines = page_head(df, INTRO)
    for task in TASKS:
        head = task_head(df, docs, task, task_table)
        if not head:
            continue
        lines += head
        r = rankings.get(task)
        if r is not None and r.unpaired:
            lines.append(f"No per-face records (no paired comparison, a group of its own): {', '.join(r.unpaired)}.")
        if r is not None and NO_CHANGE not in r.values:
            lines.append(f"No `{NO_CHANGE}` row with per-face records: no row can be shown above no change.")
        lines.append("")
        if r is not None and len(r.matrix_rows) > 1:
            m_header, m_rows = matrix_table(r)
            lines += [
                f"Paired differences in `joint` on {task} (row − column; * the interval excludes 0):",
                "",
                *_md_table(m_header, m_rows),
                "",
            ]
        if r is not None:
            lines += [f"- {s}" for s in rank_sentences(r)] + [""]
    lines += reference_section(df, task_table)
    real_rows = real_table(df)
    if real_rows:
        lines += [
            "## The `real` row: gap, ceilings and floors",
            "",
            "`gap`: mean estimated age of real target-group test faces minus that of real source-group test faces. "
            "`age_score_real`, `realism_real`, `age_acc_real`: what real target-group faces score (the ceilings), "
            "over `n` faces. The FID/KID floor uses `n_floor` real faces, the methods' N (PROTOCOL.md s.5).",
            "",
            *_md_table(REAL_HEADER, real_rows),
            "",
        ]
    notes = flag_notes(df)
    lines += appendix_markdown(df, docs, notes, seeds=True)
    return "\n".join(lines)
