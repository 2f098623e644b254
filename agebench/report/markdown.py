"""Markdown of the leaderboard: cells, tables and the sections protocol 2 and 3 share.

`leaderboard_markdown` renders protocol 2 exactly as it was published (results/cpu) and hands protocol 3
to `agebench.report.markdown_v3`. `render_leaderboard(metrics_dir)` is what the report stage writes and
what `agebench leaderboard` rebuilds: a function of the metrics (and runtime) files alone, no torch.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from agebench.report import html as report_html
from agebench.report.docs import (
    _NETWORK_ALIASES,
    DAGGER,
    RANKED_KINDS,
    TASKS,
    flagged_metrics,
    flagged_nets,
    load_runtime,
    read_metrics_dir,
    read_npz,
    validate_docs,
)
from agebench.report.frame import PER_FACE_JOINT, leaderboard_csv, leaderboard_frame, per_face_joint_v2, v2_rankings
from agebench.report.sentences import sentences_markdown


def _cell(row: Mapping[str, Any], task: str, col: str) -> tuple[str, str]:
    """(value, interval) of a leaderboard cell, with the dagger when a network the method uses produced it."""
    if col == "kid_mean":
        value, ci = report_html.kid_cell(row, task)
    else:
        value, ci = report_html.value_and_interval(row, task, col)
    nets = str(row.get("uses_scoring_networks") or "").split(",")
    if value != "–" and col in flagged_metrics(nets, _protocol(row)):
        value += DAGGER
    return value, ci


def _protocol(row: Mapping[str, Any]) -> int:
    """The protocol a frame row was scored under (2 when it does not say: the flags as published)."""
    v = row.get("protocol_version")
    return 2 if report_html.is_missing(v) else int(v)


def _method_label(row: Mapping[str, Any]) -> str:
    if row.get("kind") == "external":
        return f"{row['method']} (external: {_text(row.get('source'))})"
    return str(row["method"])


#: Header of a task table: (column key, title). Keys starting with "_" are not metrics.
TABLE_COLUMNS = (
    ("_rank", "rank"), ("_method", "method"), ("joint", "joint"), ("_diff", "Δ joint vs row above"),
    ("age_acc", "age_acc"), ("age_acc_rel", "age_acc_rel"), ("id_rate", "id_rate"), ("fid", "fid"),
    ("kid_mean", "kid ×1000"), ("cycle_l1", "cycle_l1"), ("face_fail", "face_fail"), ("_n", "n"),
    ("id_rate_dlib", "id_rate_dlib (not ranked)"), ("joint_dlib", "joint_dlib (not ranked)"),
)  # fmt: skip


def task_rows(
    df: pd.DataFrame,
    task: str,
    ranked: bool,
    columns: Sequence[tuple[str, str]],
    cell: Callable[[Mapping[str, Any], str], tuple[str, str]],
    drop_real: bool = False,
) -> list[list[tuple[str, str]]]:
    """The rows of one task's table as (value, interval) cells, for markdown and HTML alike, protocols 2 and 3.

    ranked: the ranked kinds in that task's own order, else the reference rows (rank "–"; without `real` when
    `drop_real`). The rank, method and n columns are rendered here, every other column by `cell(row, key)`.
    """
    part = df[df["kind"].isin(RANKED_KINDS) == ranked]
    if ranked:
        part = part.assign(_o=pd.to_numeric(part[f"{task}.order"])).sort_values("_o", kind="stable")
    elif drop_real:
        part = part[part["method"] != "real"]
    rows = []
    for _, r in part.iterrows():
        cells = []
        for key, _ in columns:
            if key == "_rank":
                cells.append((str(r.get(f"{task}.rank")) if ranked else "–", ""))
            elif key == "_method":
                cells.append((_method_label(r), ""))
            elif key == "_n":
                cells.append((_int(r.get(f"{task}.n")), ""))
            else:
                cells.append(cell(r, key))
        rows.append(cells)
    return rows


def task_table(df: pd.DataFrame, task: str, ranked: bool) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """The header and rows of one protocol-2 task table (see `task_rows`)."""
    if df.empty:
        return [t for _, t in TABLE_COLUMNS], []

    def cell(r: Mapping[str, Any], key: str) -> tuple[str, str]:
        if key == "_diff":
            return report_html.value_and_interval(r, task, "joint_diff_above") if ranked else ("", "")
        return _cell(r, task, key)

    return [t for _, t in TABLE_COLUMNS], task_rows(df, task, ranked, TABLE_COLUMNS, cell)


def floor_note(df: pd.DataFrame, task: str) -> str:
    """One line: the `real` row's FID/KID floor at the task's N, to read beside the methods' scores."""
    real = df[df["method"] == "real"] if not df.empty else df
    if real.empty:
        return "FID/KID floor: no `real` row (run `dvc repro reference`)."
    r = real.iloc[0]
    fid, _ = report_html.value_and_interval(r, task, "fid")
    kid, _ = report_html.kid_cell(r, task)
    n, rest = r.get(f"{task}.n_floor"), r.get(f"{task}.n_rest")
    if report_html.is_missing(n):
        return f"FID/KID floor of real faces: fid {fid}, kid×1000 {kid} (sample size not recorded)."
    if fid == "–":
        return (
            f"FID/KID floor at the same N = {_int(n)}: not computed, the real target group is too small to draw "
            "N faces and keep 2 apart (PROTOCOL.md s.5)."
        )
    return (
        f"Floor at the same N (real faces): fid {fid}, kid×1000 {kid} — {_int(n)} real target-group faces "
        f"drawn with seed 0 against the other {_int(rest)} (PROTOCOL.md s.5)."
    )


def flag_notes(df: pd.DataFrame) -> list[str]:
    """Footnotes: one per row that declares scoring networks it trains or translates with."""
    notes = []
    for _, r in df.iterrows():
        nets = [n for n in str(r.get("uses_scoring_networks") or "").split(",") if n]
        if nets:
            cols = sorted(flagged_metrics(nets, _protocol(r)))
            notes.append(
                f"{DAGGER} {r['method']} trains or translates with {', '.join(nets)}: its "
                f"{', '.join(cols) if cols else 'metrics from these networks'} are not independent "
                "measurements (PROTOCOL.md s.4 Independence)."
            )
    return notes


def _md_table(header: Sequence[str], rows: Sequence[Sequence[tuple[str, str]]]) -> list[str]:
    align = ["---:" if h in ("rank", "n") else "---" for h in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(align) + "|"]
    for cells in rows:
        lines.append("| " + " | ".join(f"{v} {ci}" if ci else v for v, ci in cells) + " |")
    return lines


def _task_title(docs: Sequence[Mapping[str, Any]], task: str) -> str:
    for d in docs:
        t = d.get("tasks", {}).get(task, {})
        if "source" in t and "target" in t:
            return f"{task}: {t['source']} → {t['target']}"
    return task


def page_head(df: pd.DataFrame, intro: str) -> list[str]:
    """The leaderboard's title, profile/protocol line (from the frame's first row) and `intro` paragraph."""
    first = df.iloc[0] if len(df) else pd.Series(dtype=object)
    return [
        "# agebench leaderboard",
        "",
        f"Profile **{_text(first.get('profile'))}** · protocol {_int(first.get('protocol_version'))}.",
        "",
        intro,
        "",
    ]


def task_head(
    df: pd.DataFrame,
    docs: Sequence[Mapping[str, Any]],
    task: str,
    table: Callable[[pd.DataFrame, str, bool], tuple[list[str], list[list[tuple[str, str]]]]],
) -> list[str]:
    """A task's heading, ranked table (built by `table`, which each protocol defines) and floor note; empty
    when the task has no rows."""
    header, rows = table(df, task, True)
    if not rows:
        return []
    return [f"## {_task_title(docs, task)}", "", *_md_table(header, rows), "", floor_note(df, task)]


def reference_section(
    df: pd.DataFrame,
    table: Callable[[pd.DataFrame, str, bool], tuple[list[str], list[list[tuple[str, str]]]]],
) -> list[str]:
    """The reference rows' section (not ranked): a table per task built by `table`; empty when none has rows."""
    refs = {task: table(df, task, False) for task in TASKS}
    if not any(rows for _, rows in refs.values()):
        return []
    lines = ["## Reference rows (not ranked)", ""]
    for task, (header, rows) in refs.items():
        if rows:
            lines += [f"### {task}", "", *_md_table(header, rows), ""]
    return lines


def leaderboard_markdown(df: pd.DataFrame, docs: Sequence[Mapping[str, Any]] = ()) -> str:
    """Markdown: each task ranked by its own joint, reference rows, the real row, flags, provenance.

    A protocol-3 frame goes to `agebench.report.markdown_v3`; protocol 2 renders as it was published.
    """
    if df.attrs.get("protocol", 2) >= 3:
        from agebench.report import markdown_v3

        return markdown_v3.leaderboard_markdown(df, docs)
    lines = page_head(
        df,
        'Each task is ranked by its own `joint` (ties: lower `fid`). "=k": the paired bootstrap 95% interval '
        "of the difference in `joint` with the row above contains 0, so the two share a rank (PROTOCOL.md s.6). "
        "Brackets: 95% bootstrap intervals (PROTOCOL.md s.4). `kid`: KID mean ± std, ×1000. `face_fail`: outputs "
        'where YuNet found no face. `*_dlib`: dlib\'s second opinion, never ranked on. "–": not computed.',
    )
    for task in TASKS:
        head = task_head(df, docs, task, task_table)
        if not head:
            continue
        lines += head
        ranked = df[df["kind"].isin(RANKED_KINDS)]
        if len(ranked) > 1:
            missing = sorted(ranked.loc[ranked[f"{task}.faces_from"] == "", "method"])
            rebuilt = sorted(ranked.loc[ranked[f"{task}.faces_from"] == "scores", "method"])
            if missing:
                lines.append(f"No per-face `{PER_FACE_JOINT}` (no paired comparison, own rank): {', '.join(missing)}.")
            if rebuilt:
                lines.append(f"Per-face joint rebuilt from data/scores (metrics file lacks it): {', '.join(rebuilt)}.")
        lines.append("")
    lines += reference_section(df, task_table)
    notes = flag_notes(df)
    lines += appendix_markdown(df, docs, notes, seeds=False)
    return "\n".join(lines)


def _rate(v: Any, ci: Any = None) -> str:
    if report_html.is_missing(v):
        return "–"
    if ci and not any(report_html.is_missing(c) for c in ci):
        return f"{v:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]"
    return f"{v:.3f}"


#: A piece of a report section: a paragraph, or a table (caption, header, rows of (value, interval) cells).
Part = str | tuple[str, list[str], list[list[tuple[str, str]]]]


def real_row_parts(real: Mapping[str, Any]) -> list[Part]:
    """The `real` row's own findings: face detection, both judges' false accepts, FG-NET by age gap."""
    parts: list[Part] = []
    det = real.get("face_detection")
    if det:
        parts.append(
            f"YuNet finds a face in {_rate(det.get('face_found_rate'), det.get('ci95'))} of the {_int(det.get('n'))} "
            f"real test faces ({_int(det.get('not_found'))} not found)."
        )
    fa = real.get("false_accept")
    if fa:
        rows = []
        for name, j in sorted(fa.get("judges", {}).items(), key=lambda kv: (kv[0] != "sface", kv[0])):
            title = f"{name} (judge)" if name == "sface" else f"{name} (second opinion)"
            rule = f"{'cosine ≥' if j.get('rule') == 'cosine' else 'distance <'} {_text(j.get('threshold'))}"
            rows.append(
                [(title, ""), (rule, ""), (_rate(j.get("false_accept_rate"), j.get("ci95")), ""),
                 (_int(j.get("id_fail")), "")]
            )  # fmt: skip
        caption = (
            f"False-accept rate on {_int(fa.get('pairs'))} pairs of different UTKFace people "
            f"(test split, seed {fa.get('seed')})"
        )
        parts.append((caption, ["judge", "same person when", "false-accept rate", "failed pairs"], rows))
    fg = real.get("fgnet", {})
    if "skipped" in fg:
        parts.append(f"FG-NET: skipped ({fg['skipped']}).")
    elif fg:
        rows = []
        for name, j in sorted(fg.items(), key=lambda kv: (kv[0] != "sface", kv[0])):
            if not isinstance(j, dict):
                continue
            if "skipped" in j:
                rows.append([(name, ""), ("–", ""), ("–", ""), ("–", ""), ("–", ""), (f"skipped: {j['skipped']}", "")])
                continue
            kind = "cosine" if j.get("rule") == "cosine" else "distance"
            for gap, b in j.get("by_age_gap", {}).items():
                label = f"{name} (faces found {_int(j.get('faces_found'))})"
                values = (gap, _int(b.get("pairs")), _rate(b.get("id_rate")), _int(b.get("id_fail")))
                rows.append([(label, ""), *[(v, "") for v in values], (f"{kind} {_rate(b.get('score'))}", "")])
        caption = (
            f"FG-NET: verification of real same-person pairs by age gap ({_int(fg.get('images'))} photos of "
            f"{_int(fg.get('subjects'))} people), what real aging does to each judge's identity score"
        )
        header = ["judge", "age gap (years)", "pairs", "id_rate", "failed pairs", "mean score"]
        parts.append((caption, header, rows))
    return parts


def reconstruction_parts(doc: Mapping[str, Any]) -> list[Part]:
    """A latent method's reconstruction table (initial / pixel-wise / IP) with every judge it has.

    `doc["reconstruction"]` = {"n", mode: {judge: {"id_rate", "score", "id_fail", optional "ci95": {key: [lo, hi]}}}}
    (evaluate); a value of a judge the method trains or translates with carries the dagger.
    """
    rec = doc["reconstruction"]
    modes = [m for m, v in rec.items() if isinstance(v, dict)]
    judges = sorted({j for m in modes for j, v in rec[m].items() if isinstance(v, dict)})
    found = {k for m in modes for j in judges for k in rec[m].get(j, {})}
    # Protocol 3 stores Wilson bounds as flat `<key>_lo` / `<key>_hi` beside the rate: shown as its interval.
    bounds = {k for k in found if (k.endswith("_lo") or k.endswith("_hi")) and k[:-3] in found}
    plain = {"id_rate", "score", "id_fail", "ci95"}
    keys = [k for k in ("id_rate", "score", "id_fail") if k in found] + sorted(found - plain - bounds)
    nets = flagged_nets(doc)
    header = ["mode", *[f"{k} ({j})" for j in judges for k in keys]]
    rows = []
    for m in modes:
        cells = [(m, "")]
        for j in judges:
            for k in keys:
                entry = rec[m].get(j, {})
                v = entry.get(k)
                ci = entry.get("ci95", {}).get(k)
                if f"{k}_lo" in entry and f"{k}_hi" in entry:
                    ci = (entry[f"{k}_lo"], entry[f"{k}_hi"])
                text = _int(v) if k.endswith("_fail") else _rate(v, ci)
                cells.append((text + DAGGER if text != "–" and _NETWORK_ALIASES.get(j, j) in nets else text, ""))
        rows.append(cells)
    caption = f"{doc['method']}: reconstruction of the inputs by latent mode (n = {_int(rec.get('n'))})"
    return [(caption, header, rows)]


def parts_markdown(title: str, parts: Sequence[Part]) -> list[str]:
    """A markdown section of paragraphs and tables."""
    lines = [f"## {title}", ""]
    for p in parts:
        if isinstance(p, str):
            lines += [p, ""]
        else:
            lines += [f"{p[0]}:", "", *_md_table(p[1], p[2]), ""]
    return lines


def parts_html(parts: Sequence[Part]) -> str:
    """The same section as HTML."""
    out = []
    for p in parts:
        out.append(f'<p class="note">{html.escape(p)}</p>' if isinstance(p, str) else report_html.board_table_html(*p))
    return "\n".join(out)


def build_leaderboard(
    metrics_dir: str | Path,
    runtime_dir: str | Path | None = None,
    scores_dir: str | Path | None = None,
    current_only: bool = True,
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Every metrics document of `metrics_dir` (validated) and their leaderboard frame.

    runtime_dir: training time and hardware per method (default: `<metrics_dir>/../runtime` when present).
    scores_dir: `data/scores`, protocol 2's fallback for per-face outcomes of documents without `joint_faces`.
    current_only: refuse another protocol than this code's (the pipeline); False re-renders any protocol in
        RENDERED_PROTOCOLS (published results).

    Raises:
        ReportInputError: another protocol version, mixed profiles or a file that is not a metrics file.
    """
    docs = read_metrics_dir(Path(metrics_dir))
    protocol = validate_docs(docs, current_only)
    rt = Path(runtime_dir) if runtime_dir is not None else Path(metrics_dir).parent / "runtime"
    runtime = load_runtime(rt, [d["method"] for d in docs]) if rt.is_dir() else {}
    scores = {}
    if scores_dir is not None and protocol < 3:
        lacking = [d["method"] for d in docs if any(per_face_joint_v2(d, t) is None for t in TASKS)]
        scores = {m: z for m in lacking if (z := read_npz(Path(scores_dir) / f"{m}.npz")) is not None}
    return docs, leaderboard_frame(docs, runtime, scores)


def render_leaderboard(
    metrics_dir: str | Path, runtime_dir: str | Path | None = None, current_only: bool = False
) -> tuple[str, str]:
    """(leaderboard.md, leaderboard.csv) text from the metrics (and runtime) files alone.

    Deterministic: no timestamps, rows ordered by their numbers and names, never by file order. Any protocol
    in RENDERED_PROTOCOLS unless `current_only`.
    """
    docs, df = build_leaderboard(metrics_dir, runtime_dir, current_only=current_only)
    return leaderboard_markdown(df, docs), leaderboard_csv(df)


def _text(v: Any) -> str:
    return "–" if report_html.is_missing(v) else str(v)


def _int(v: Any) -> str:
    return "–" if report_html.is_missing(v) else f"{int(v):,}"


def ranks_markdown(metrics_dir: str | Path, runtime_dir: str | Path | None = None) -> str:
    """The generated sentences about ranks and differences of a metrics folder (the README's Results block).

    Protocol 3: rank groups, every pair and every row against no change, as in leaderboard.md. Protocol 2:
    every pair and every row against no change from its `joint_faces` (its "=k" labels compare each row
    with the row above only, so no sentence restates them).
    """
    docs, df = build_leaderboard(metrics_dir, runtime_dir, current_only=False)
    if df.attrs.get("protocol", 2) >= 3:
        return sentences_markdown(df.attrs["rankings"])
    return sentences_markdown(v2_rankings(df, docs), groups=False)


def appendix_markdown(
    df: pd.DataFrame, docs: Sequence[Mapping[str, Any]], notes: Sequence[str], seeds: bool
) -> list[str]:
    """The leaderboard's closing sections (markdown lines): flags, the `real` row's parts, each reconstruction,
    and the training and provenance table. `seeds` (protocol 3): the table has a seeds column, and the `real`
    row's section is left out when it has no parts."""
    lines: list[str] = []
    if notes:
        lines += ["## Flags", "", *[f"- {n}" for n in notes], ""]
    real = next((d for d in docs if d.get("method") == "real"), None)
    if real is not None:
        parts = real_row_parts(real)
        if parts or not seeds:
            lines += parts_markdown("Real faces (the `real` row)", parts)
    for d in docs:
        if d.get("reconstruction"):
            lines += parts_markdown(f"{d['method']}: reconstruction", reconstruction_parts(d))
    if df.empty:
        return lines
    seed_col = ["seeds"] if seeds else []
    header = ["method", "kind", *seed_col, "resolution", "parameters", "train time (s)", "hardware", "git revision"]
    aligns = ["---", "---", *["---:" for _ in seed_col], "---:", "---:", "---:", "---", "---"]
    lines += [
        "## Training and provenance",
        "",
        "| " + " | ".join([*header, "protocol", "profile"]) + " |",
        "|" + "|".join([*aligns, "---:", "---"]) + "|",
    ]
    for _, row in df.iterrows():
        secs = row.get("train_seconds")
        cells = [
            f"{row['method']}",
            f"{row['kind']}",
            *[_int(row.get(c)) for c in seed_col],
            _int(row.get("resolution")),
            _int(row.get("parameters")),
            "–" if report_html.is_missing(secs) else f"{secs:.0f}",
            _text(row.get("hardware")),
            _text(row.get("git_revision")),
            _int(row.get("protocol_version")),
            _text(row.get("profile")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    return lines
