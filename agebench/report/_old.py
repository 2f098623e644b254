"""`report` stage: the leaderboard (PROTOCOL.md s.6) from every metrics file, and the HTML report.

Writes `leaderboard.csv` (one row per method and reference, every number), `leaderboard.md` and
`index.html`: one self-contained page (images embedded) with the leaderboard, the matrix of paired
differences in `joint`, the `real` row (floors, face detection, FG-NET by age gap with both judges,
false-accept rates), a sample grid per task, the age/identity trade-off, output age distributions,
gender/race breakdowns, training curves and the progression strips of multi-group methods (also
written to `figures/progression/<method>.png`). The charts that show no face (trade-off, age
distributions, breakdowns, training curves) are also written to `figures/charts/` (publishable).
Parts whose inputs are missing are named on the page, never dropped silently.

Ranking (PROTOCOL.md s.6, v2): each task's table is ordered by that task's `joint` (ties: lower
`fid`, then the method name, so the order never depends on file order). Every method translates the
same test faces, so the difference in `joint` between two rows gets a paired bootstrap interval
(`metrics.stats.paired_difference`, the per-method intervals' resamples); a row whose difference with
the row above contains 0 shares its rank ("=k"). The per-face outcomes come from each metrics file's
`tasks.<task>.joint_faces` ("0"/"1" per test face, `metrics.stats.pack_outcomes`), so `leaderboard.md`
and `.csv` are a function of the metrics (and runtime) JSON files alone (`render_leaderboard`).

Independence (PROTOCOL.md s.4): a metrics file's `uses_scoring_networks` (e.g. ["dlib"] for Age-cGAN)
names the scoring networks the method trains or translates with; every metric those networks produce
is marked with a dagger and explained in a footnote.
"""

from __future__ import annotations

import html
import io
import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import agebench
from agebench import report_html
from agebench.common import atomic_path, read_json
from agebench.config import Params
from agebench.data import load_faces
from metrics import stats
from metrics.sface import SFACE_THRESHOLD

TASKS = ("aging", "rejuvenation")
#: Row kinds ranked against each other (external rows, PROTOCOL.md s.6, rank with the methods).
RANKED_KINDS = ("method", "external")
TASK_COLUMNS = (
    "joint", "age_acc", "age_acc_rel", "id_rate", "fid", "kid_mean", "cycle_l1", "face_fail", "id_rate_dlib",
    "joint_dlib",
)  # fmt: skip
#: Per-face `joint` outcomes in a metrics file's task section (a string of "0"/"1", one per test face).
PER_FACE_JOINT = "joint_faces"
#: The metrics each scoring network produces (PROTOCOL.md s.4 "Independence"), by the names a method
#: may declare in `uses_scoring_networks` (short names and metrics/backbones.py keys).
NETWORK_METRICS: dict[str, tuple[str, ...]] = {
    "dlib": ("id_rate_dlib", "id_dist_dlib", "joint_dlib"),
    "sface": ("id_rate", "id_sim", "joint"),
    # YuNet finds the landmarks SFace aligns on and decides face validity, which gates every per-face metric.
    "yunet": ("face_fail", "age_acc", "age_acc_rel", "id_rate", "id_sim", "joint", "id_rate_dlib", "joint_dlib"),
    "age": ("age_acc", "age_acc_rel", "joint", "joint_dlib"),
    "inception": ("fid", "kid_mean"),
}
_NETWORK_ALIASES = {
    "dlib_face_resnet": "dlib", "dlib_landmarks5": "dlib", "age_onnx": "age", "age_landmarks5": "age",
    "tf_inception": "inception",
}  # fmt: skip
DAGGER = "†"


class ReportInputError(ValueError):
    """Metrics files the leaderboard cannot rank together (another protocol version, mixed profiles, not
    a metrics file): the stage prints one line and exits 2 without writing anything."""


def load_metrics(folder: Path, names: list[str]) -> list[dict[str, Any]]:
    """Metrics documents of `names` (in that order) that exist in `folder`; a missing one is an error."""
    docs = []
    for name in names:
        path = folder / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `dvc repro evaluate@{name}` first")
        try:
            docs.append(read_json(path))
        except ValueError as exc:  # JSON or UTF-8 errors: a broken file, one line
            raise ReportInputError(
                f"{path}: not a readable metrics file ({exc}); run `dvc repro -f evaluate@{name}`"
            ) from None
    return docs


def read_metrics_dir(folder: Path) -> list[dict[str, Any]]:
    """Every `*.json` metrics document of `folder`, by file name; a file that is not one is refused."""
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{folder}: no metrics files (*.json); run `dvc repro` first")
    docs = []
    for f in files:
        try:
            doc = read_json(f)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ReportInputError(f"{f}: not valid JSON ({exc}); re-run the stage that wrote it") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict) or "method" not in doc:
            raise ReportInputError(f"{f}: not an agebench metrics file (no 'method'/'tasks'); move it out of {folder}")
        docs.append(doc)
    return docs


def validate_docs(docs: Sequence[Mapping[str, Any]]) -> None:
    """Refuse documents of another protocol version than this code's, or of more than one profile.

    Raises:
        ReportInputError: one line naming the offending rows and what to do.
    """
    want = agebench.PROTOCOL_VERSION
    old = [f"{d['method']} ({d.get('protocol_version')})" for d in docs if d.get("protocol_version") != want]
    if old:
        raise ReportInputError(
            f"metrics of another protocol version than {want}: {', '.join(old)}; re-run `dvc repro` with this code "
            "(results of different protocols are never ranked together)"
        )
    profiles: dict[str, list[str]] = {}
    for d in docs:
        profiles.setdefault(str(d.get("profile")), []).append(str(d["method"]))
    if len(profiles) > 1:
        mix = "; ".join(f"{p}: {', '.join(ms)}" for p, ms in sorted(profiles.items()))
        raise ReportInputError(f"metrics files mix profiles ({mix}); rank one profile at a time (PROTOCOL.md s.6)")


def load_runtime(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """`reports/runtime/<name>.json` (training time, hardware) of those names that have one."""
    return {n: read_json(folder / f"{n}.json") for n in names if (folder / f"{n}.json").is_file()}


def scoring_networks(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """The scoring networks a row's method trains or translates with (default: none)."""
    nets = doc.get("uses_scoring_networks")
    if nets is None:
        nets = doc.get("train", {}).get("uses_scoring_networks", ())
    return tuple(str(n) for n in nets)


def flagged_metrics(networks: Sequence[str]) -> set[str]:
    """Metric names produced by any of `networks` (PROTOCOL.md s.4 "Independence")."""
    out: set[str] = set()
    for n in networks:
        out.update(NETWORK_METRICS.get(_NETWORK_ALIASES.get(n.lower(), n.lower()), ()))
    return out


def per_face_joint(doc: Mapping[str, Any], task: str) -> np.ndarray | None:
    """(N,) float64 0/1 per-face `joint` outcomes of a task from its metrics document, or None."""
    packed = doc.get("tasks", {}).get(task, {}).get(PER_FACE_JOINT)
    return None if not packed else stats.unpack_outcomes(str(packed))


def joint_from_scores(doc: Mapping[str, Any], scores: Mapping[str, np.ndarray], task: str) -> np.ndarray | None:
    """Per-face `joint` rebuilt from a method's `data/scores/<method>.npz` arrays, or None.

    For metrics files without `joint_faces`: `<task>/joint` when stored, else a face found, its age in the
    target group (bounds from the document's params) and the SFace similarity at or above its threshold.
    """
    if f"{task}/joint" in scores:
        return np.asarray(scores[f"{task}/joint"], np.float64)
    t = doc.get("tasks", {}).get(task, {})
    groups = doc.get("params", {}).get("groups", {})
    bounds = groups.get(t.get("scheme"), {}).get(t.get("target"))
    if bounds is None or f"{task}/age_out" not in scores or f"{task}/id_sim" not in scores:
        return None

    ok = stats.in_range(scores[f"{task}/age_out"], tuple(bounds))
    ok &= np.nan_to_num(np.asarray(scores[f"{task}/id_sim"], np.float64), nan=-np.inf) >= SFACE_THRESHOLD
    if f"{task}/face_found" in scores:
        ok &= np.asarray(scores[f"{task}/face_found"]) > 0.5
    return ok.astype(np.float64)


def _bootstrap_settings(docs: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(resamples, seed) of the per-method intervals, from the first document that records them."""
    for d in docs:
        ev = d.get("params", {}).get("evaluate", {})
        if "bootstrap_resamples" in ev:
            return int(ev["bootstrap_resamples"]), int(ev.get("bootstrap_seed", 0))
    return 1000, 0


def _order_key(row: Mapping[str, Any], task: str) -> tuple[float, float, str]:
    joint, fid = row.get(f"{task}.joint"), row.get(f"{task}.fid")
    return (
        -joint if not report_html.is_missing(joint) else math.inf,
        fid if not report_html.is_missing(fid) else math.inf,
        str(row["method"]),
    )


def paired_matrix(
    outcomes: Mapping[str, np.ndarray | None], order: Sequence[str], resamples: int, seed: int
) -> dict[tuple[str, str], dict[str, Any]]:
    """Paired bootstrap intervals of joint(a) - joint(b) for every ordered pair of `order` with outcomes.

    Pairs whose outcome arrays differ in length (other faces) are left out. Every pair of a task uses
    the same resamples (`bootstrap_indices(N, resamples, seed)`), those of the per-method intervals.
    """
    out: dict[tuple[str, str], dict[str, Any]] = {}
    idx_by_n: dict[int, np.ndarray] = {}
    for a in order:
        for b in order:
            oa, ob = outcomes.get(a), outcomes.get(b)
            if a == b or oa is None or ob is None or len(oa) != len(ob):
                continue
            idx = idx_by_n.setdefault(len(oa), stats.bootstrap_indices(len(oa), resamples, seed))
            out[(a, b)] = stats.paired_difference(oa, ob, idx)
    return out


def leaderboard_frame(
    docs: list[dict[str, Any]],
    runtime: dict[str, dict[str, Any]] | None = None,
    scores: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> pd.DataFrame:
    """One row per document with every leaderboard column (intervals as *_lo / *_hi).

    scores: method -> its `data/scores/<method>.npz` arrays, used only for documents without per-face
    `joint_faces` (`joint_from_scores`); without it the frame depends on the documents alone.

    Per task: `<task>.order` (1-based position in that task's ranking, NaN for reference rows),
    `<task>.rank` ("k" or "=k"), `<task>.joint_diff_above` (+ _lo/_hi: paired interval of joint(row
    above) - joint(row)). Rows are sorted as the `aging` table (ranked kinds first), reference rows
    last. `frame.attrs["paired"][task]` holds every pairwise difference for the report's matrix.
    """
    runtime = runtime or {}
    rows = []
    for d in docs:
        row: dict[str, Any] = {"method": d["method"], "kind": d.get("kind", "method"), "source": d.get("source")}
        row["uses_scoring_networks"] = ",".join(scoring_networks(d))
        for task in TASKS:
            t = d.get("tasks", {}).get(task, {})
            for col in TASK_COLUMNS:
                row[f"{task}.{col}"] = _num(t.get(col))
                lo_hi = t.get("ci95", {}).get(col)
                if lo_hi:
                    row[f"{task}.{col}_lo"], row[f"{task}.{col}_hi"] = _num(lo_hi[0]), _num(lo_hi[1])
            row[f"{task}.kid_std"] = _num(t.get("kid_std"))
            row[f"{task}.n"] = t.get("n")
            row[f"{task}.n_floor"] = t.get("n_floor")
            row[f"{task}.n_rest"] = t.get("n_rest")
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
    paired: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    if df.empty:
        df.attrs["paired"] = paired
        return df
    resamples, seed = _bootstrap_settings(docs)
    by_method = {d["method"]: d for d in docs}
    ranked = df["kind"].isin(RANKED_KINDS)
    for task in TASKS:
        order = sorted(df[ranked].to_dict("records"), key=lambda r, t=task: _order_key(r, t))
        names = [r["method"] for r in order]
        outcomes = {m: per_face_joint(by_method[m], task) for m in names}
        source = {m: "metrics" for m in names if outcomes[m] is not None}
        for m in names:
            if outcomes[m] is None and scores and m in scores:
                outcomes[m] = joint_from_scores(by_method[m], scores[m], task)
                source.update({m: "scores"} if outcomes[m] is not None else {})
        # Where each row's per-face outcomes came from: "metrics" (joint_faces), "scores" (fallback) or "".
        df[f"{task}.faces_from"] = [source.get(m, "") for m in df["method"]]
        paired[task] = paired_matrix(outcomes, names, resamples, seed)
        diffs: list[tuple[float, float] | None] = [None]
        for above, this in itertools.pairwise(names):
            p = paired[task].get((above, this))
            diffs.append(None if p is None else tuple(p["ci95"]))
        labels = stats.shared_ranks(diffs)
        for col in ("order", "rank", "joint_diff_above", "joint_diff_above_lo", "joint_diff_above_hi"):
            df[f"{task}.{col}"] = pd.Series([None] * len(df), dtype=object)
        for pos, (name, label) in enumerate(zip(names, labels), start=1):
            i = df.index[df["method"] == name][0]
            df.at[i, f"{task}.order"] = pos
            df.at[i, f"{task}.rank"] = label
            if pos > 1 and (p := paired[task].get((names[pos - 2], name))) is not None:
                df.at[i, f"{task}.joint_diff_above"] = p["value"]
                df.at[i, f"{task}.joint_diff_above_lo"], df.at[i, f"{task}.joint_diff_above_hi"] = p["ci95"]
    df = df.reindex(columns=frame_columns())  # one column order whatever the documents hold (csv bytes)
    df["_ref"] = (~ranked).astype(int)
    df["_order"] = pd.to_numeric(df["aging.order"]).fillna(math.inf)
    df = df.sort_values(["_ref", "_order", "method"], kind="stable").drop(columns=["_ref", "_order"])
    df = df.reset_index(drop=True)
    df.attrs["paired"] = paired
    return df


PROVENANCE_COLUMNS = (
    "resolution", "train_seconds", "hardware", "parameters", "git_revision", "protocol_version", "profile",
)  # fmt: skip


def frame_columns() -> list[str]:
    """Every column of `leaderboard_frame`, in leaderboard.csv's order."""
    cols = ["method", "kind", "source", "uses_scoring_networks"]
    for task in TASKS:
        cols += [f"{task}.order", f"{task}.rank"]
        for col in TASK_COLUMNS:
            cols += [f"{task}.{col}", f"{task}.{col}_lo", f"{task}.{col}_hi"]
        cols += [f"{task}.{c}" for c in ("kid_std", "n", "n_floor", "n_rest", "faces_from")]
        cols += [f"{task}.joint_diff_above{s}" for s in ("", "_lo", "_hi")]
    return cols + list(PROVENANCE_COLUMNS)


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _cell(row: Mapping[str, Any], task: str, col: str) -> tuple[str, str]:
    """(value, interval) of a leaderboard cell, with the dagger when a network the method uses produced it."""
    if col == "kid_mean":
        value, ci = report_html.kid_cell(row, task)
    else:
        value, ci = report_html.value_and_interval(row, task, col)
    if value != "–" and col in flagged_metrics(str(row.get("uses_scoring_networks") or "").split(",")):
        value += DAGGER
    return value, ci


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


def task_table(df: pd.DataFrame, task: str, ranked: bool) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """The rows of one task's table as (value, interval) cells, for markdown and HTML alike.

    ranked: the ranked kinds in that task's own order, else the reference rows (rank "–").
    """
    if df.empty:
        return [t for _, t in TABLE_COLUMNS], []
    part = df[df["kind"].isin(RANKED_KINDS) == ranked]
    if ranked:
        part = part.assign(_o=pd.to_numeric(part[f"{task}.order"])).sort_values("_o", kind="stable")
    rows = []
    for _, r in part.iterrows():
        cells = []
        for key, _ in TABLE_COLUMNS:
            if key == "_rank":
                cells.append((str(r.get(f"{task}.rank")) if ranked else "–", ""))
            elif key == "_method":
                cells.append((_method_label(r), ""))
            elif key == "_diff":
                cells.append(report_html.value_and_interval(r, task, "joint_diff_above") if ranked else ("", ""))
            elif key == "_n":
                cells.append((_int(r.get(f"{task}.n")), ""))
            else:
                cells.append(_cell(r, task, key))
        rows.append(cells)
    return [t for _, t in TABLE_COLUMNS], rows


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
            cols = sorted(flagged_metrics(nets))
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


def leaderboard_markdown(df: pd.DataFrame, docs: Sequence[Mapping[str, Any]] = ()) -> str:
    """Markdown: each task ranked by its own joint, reference rows, the real row, flags, provenance."""
    first = df.iloc[0] if len(df) else pd.Series(dtype=object)
    lines = [
        "# agebench leaderboard",
        "",
        f"Profile **{_text(first.get('profile'))}** · protocol {_int(first.get('protocol_version'))}.",
        "",
        'Each task is ranked by its own `joint` (ties: lower `fid`). "=k": the paired bootstrap 95% interval '
        "of the difference in `joint` with the row above contains 0, so the two share a rank (PROTOCOL.md s.6). "
        "Brackets: 95% bootstrap intervals (PROTOCOL.md s.4). `kid`: KID mean ± std, ×1000. `face_fail`: outputs "
        'where YuNet found no face. `*_dlib`: dlib\'s second opinion, never ranked on. "–": not computed.',
        "",
    ]
    for task in TASKS:
        header, rows = task_table(df, task, ranked=True)
        if not rows:
            continue
        lines += [f"## {_task_title(docs, task)}", "", *_md_table(header, rows), "", floor_note(df, task)]
        ranked = df[df["kind"].isin(RANKED_KINDS)]
        if len(ranked) > 1:
            missing = sorted(ranked.loc[ranked[f"{task}.faces_from"] == "", "method"])
            rebuilt = sorted(ranked.loc[ranked[f"{task}.faces_from"] == "scores", "method"])
            if missing:
                lines.append(f"No per-face `{PER_FACE_JOINT}` (no paired comparison, own rank): {', '.join(missing)}.")
            if rebuilt:
                lines.append(f"Per-face joint rebuilt from data/scores (metrics file lacks it): {', '.join(rebuilt)}.")
        lines.append("")
    refs = {task: task_table(df, task, ranked=False) for task in TASKS}
    if any(rows for _, rows in refs.values()):
        lines += ["## Reference rows (not ranked)", ""]
        for task, (header, rows) in refs.items():
            if rows:
                lines += [f"### {task}", "", *_md_table(header, rows), ""]
    notes = flag_notes(df)
    if notes:
        lines += ["## Flags", "", *[f"- {n}" for n in notes], ""]
    real = next((d for d in docs if d.get("method") == "real"), None)
    if real is not None:
        lines += parts_markdown("Real faces (the `real` row)", real_row_parts(real))
    for d in docs:
        if d.get("reconstruction"):
            lines += parts_markdown(f"{d['method']}: reconstruction", reconstruction_parts(d))
    if not df.empty:
        lines += [
            "## Training and provenance",
            "",
            "| method | kind | resolution | parameters | train time (s) | hardware | git revision | protocol "
            "| profile |",
            "|---|---|---:|---:|---:|---|---|---:|---|",
        ]
        for _, row in df.iterrows():
            secs = row.get("train_seconds")
            lines.append(
                f"| {row['method']} | {row['kind']} | {_int(row.get('resolution'))} | {_int(row.get('parameters'))} | "
                f"{'–' if report_html.is_missing(secs) else f'{secs:.0f}'} | {_text(row.get('hardware'))} | "
                f"{_text(row.get('git_revision'))} | {_int(row.get('protocol_version'))} | "
                f"{_text(row.get('profile'))} |"
            )
        lines.append("")
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

    `doc["reconstruction"]` = {"n", mode: {judge: {"id_rate", "score", "id_fail"}}} (evaluate); a value of
    a judge the method trains or translates with carries the dagger.
    """
    rec = doc["reconstruction"]
    modes = [m for m, v in rec.items() if isinstance(v, dict)]
    judges = sorted({j for m in modes for j, v in rec[m].items() if isinstance(v, dict)})
    found = {k for m in modes for j in judges for k in rec[m].get(j, {})}
    keys = [k for k in ("id_rate", "score", "id_fail") if k in found] + sorted(found - {"id_rate", "score", "id_fail"})
    nets = flagged_nets(doc)
    header = ["mode", *[f"{k} ({j})" for j in judges for k in keys]]
    rows = []
    for m in modes:
        cells = [(m, "")]
        for j in judges:
            for k in keys:
                v = rec[m].get(j, {}).get(k)
                text = _int(v) if k.endswith("_fail") else _rate(v)
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


def flagged_nets(doc: Mapping[str, Any]) -> set[str]:
    """Normalised network names a document declares."""
    return {_NETWORK_ALIASES.get(n.lower(), n.lower()) for n in scoring_networks(doc)}


def build_leaderboard(
    metrics_dir: str | Path, runtime_dir: str | Path | None = None, scores_dir: str | Path | None = None
) -> tuple[list[dict[str, Any]], pd.DataFrame]:
    """Every metrics document of `metrics_dir` (validated) and their leaderboard frame.

    runtime_dir: training time and hardware per method (default: `<metrics_dir>/../runtime` when present).
    scores_dir: `data/scores`, the fallback for per-face outcomes of documents without `joint_faces`.

    Raises:
        ReportInputError: another protocol version, mixed profiles or a file that is not a metrics file.
    """
    docs = read_metrics_dir(Path(metrics_dir))
    validate_docs(docs)
    rt = Path(runtime_dir) if runtime_dir is not None else Path(metrics_dir).parent / "runtime"
    runtime = load_runtime(rt, [d["method"] for d in docs]) if rt.is_dir() else {}
    scores = {}
    if scores_dir is not None:
        lacking = [d["method"] for d in docs if any(per_face_joint(d, t) is None for t in TASKS)]
        scores = {m: z for m in lacking if (z := _npz(Path(scores_dir) / f"{m}.npz")) is not None}
    return docs, leaderboard_frame(docs, runtime, scores)


def render_leaderboard(metrics_dir: str | Path, runtime_dir: str | Path | None = None) -> tuple[str, str]:
    """(leaderboard.md, leaderboard.csv) text from the metrics (and runtime) files alone.

    Deterministic: no timestamps, rows ordered by their numbers and names, never by file order.
    """
    docs, df = build_leaderboard(metrics_dir, runtime_dir)
    return leaderboard_markdown(df, docs), leaderboard_csv(df)


def leaderboard_csv(df: pd.DataFrame) -> str:
    """leaderboard.csv: every column of the frame, one row per method and reference row."""
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


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
    label = "d"
    for name in outs:
        sc = scores.get(name)
        if sc is None or f"{task}/rows" not in sc or not np.array_equal(sc[f"{task}/rows"], rows):
            missing.append(f"{name} scores (no per-face scores for these faces in data/scores/{name}.npz)")
            continue
        if f"{task}/age_out" in sc:
            ages[name] = sc[f"{task}/age_out"][pick]
            input_ages = sc[f"{task}/age_in"][pick]
        # The judge's cosine similarity (protocol 2) when stored, else dlib's distance.
        key = f"{task}/id_sim" if f"{task}/id_sim" in sc else f"{task}/id_dist"
        if key in sc:
            dists[name] = sc[key][pick]
            label = "sim" if key.endswith("id_sim") else "d"
    inputs = faces[rows[pick]]
    return report_html.sample_grid_html(inputs, input_ages, outs, ages, dists, label), missing


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
    out = [
        '<p class="meta">Each task is ranked by its own joint (ties: lower fid); "=k": the paired 95% interval of the '
        "difference in joint with the row above contains 0. Brackets: 95% bootstrap intervals; kid: mean ± std "
        "×1000; *_dlib: dlib's second opinion, not ranked.</p>"
    ]
    for task in TASKS:
        header, rows = task_table(board, task, ranked=True)
        if rows:
            out.append(report_html.board_table_html(_task_title(docs, task), header, rows))
            out.append(f'<p class="note">{html.escape(floor_note(board, task))}</p>')
    for task in TASKS:
        header, rows = task_table(board, task, ranked=False)
        if rows:
            out.append(report_html.board_table_html(f"Reference rows (not ranked): {task}", header, rows))
    out += [f'<p class="note">{html.escape(n)}</p>' for n in flag_notes(board)]
    return "\n".join(out)


def paired_html(board: pd.DataFrame) -> str:
    """The matrix of pairwise differences in joint per task, rows and columns in that task's rank order."""
    paired = board.attrs.get("paired", {})
    out = []
    for task in TASKS:
        if board.empty or f"{task}.order" not in board:
            continue
        ranked = board[board["kind"].isin(RANKED_KINDS)]
        names = list(ranked.assign(_o=pd.to_numeric(ranked[f"{task}.order"])).sort_values("_o")["method"])
        out.append(report_html.matrix_html(task, names, paired.get(task, {})))
    return (
        '<p class="meta">Paired bootstrap 95% intervals over the same resamples of test faces (PROTOCOL.md s.6); '
        "shaded: the interval excludes 0.</p>" + "\n".join(out)
    )


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
    sections: list[tuple[str, str]] = [
        ("Leaderboard", leaderboard_html(board, docs)),
        ("Paired differences in joint", paired_html(board)),
    ]
    if real is not None:
        sections.append(("Real faces", parts_html(real_row_parts(real))))
    for d in docs:
        if d.get("reconstruction"):
            sections.append((f"{d['method']}: reconstruction", parts_html(reconstruction_parts(d))))

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
            "and its identity score against the input: sim = SFace cosine similarity (same person at "
            f"{SFACE_THRESHOLD} or above), d = dlib distance (same person below {params.evaluate.id_threshold}).</p>"
            + "".join(grids),
        )
    )

    # Charts hold numbers only, no face: they are also written as files (`figures/charts/`, publishable).
    charts: dict[str, bytes | None] = {}
    plots = []
    for task, _ in params.tasks.items():
        ceiling = real["tasks"].get(task, {}).get("age_acc_real") if real else None
        charts[f"tradeoff_{task}.png"] = png = report_html.tradeoff_png(board, task, ceiling)
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
    with atomic_path(out / "figures" / "charts", kind="dir") as tmp:
        tmp.mkdir()
        for file, png in charts.items():
            if png is not None:
                (tmp / file).write_bytes(png)

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
