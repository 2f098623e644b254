"""The leaderboard frame (PROTOCOL.md s.6): one row per metrics document, every number the tables show.

Protocol 2 (as published in results/cpu): each task ordered by its `joint` (ties: lower `fid`, then the
name); a row whose paired interval with the row above contains 0 shares its rank ("=k"); per-face outcomes
from each file's `joint_faces`.

Protocol 3: the order, rank groups (against the group's leader), pairwise matrix and "not above no change"
marks come from the per-face records over seeds (`agebench.report.ranking`); the seed spread and the real
row's gap, ceilings and two sample sizes are columns too.

A function of the metrics (and runtime) documents alone, whatever their file order; no torch.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from agebench.report import html as report_html
from agebench.report.docs import RANKED_KINDS, TASKS, protocol_of, scoring_networks
from agebench.report.ranking import NO_CHANGE, Difference, TaskRanking, check_real_row, rank_task
from metrics import stats
from metrics.keys import (
    KEY_CI95,
    KEY_METRIC_AGE_ACC,
    KEY_METRIC_AGE_ACC_REAL,
    KEY_METRIC_AGE_ACC_REL,
    KEY_METRIC_AGE_SCORE,
    KEY_METRIC_CYCLE_L1,
    KEY_METRIC_FACE_FAIL,
    KEY_METRIC_FID,
    KEY_METRIC_GAP,
    KEY_METRIC_GAP_CLOSURE,
    KEY_METRIC_ID_RATE,
    KEY_METRIC_ID_SIM,
    KEY_METRIC_JOINT,
    KEY_METRIC_JOINT_DECADE,
    KEY_METRIC_KID_MEAN,
    KEY_METRIC_KID_STD,
    KEY_METRIC_REALISM,
    KEY_N,
    KEY_SEED_SPREAD,
    KEY_SEEDS,
)
from metrics.sface import SFACE_THRESHOLD

TASK_COLUMNS = (
    KEY_METRIC_JOINT, KEY_METRIC_AGE_ACC, KEY_METRIC_AGE_ACC_REL, KEY_METRIC_ID_RATE, KEY_METRIC_FID,
    KEY_METRIC_KID_MEAN, KEY_METRIC_CYCLE_L1, KEY_METRIC_FACE_FAIL, KEY_METRIC_ID_RATE + "_dlib",
    KEY_METRIC_JOINT + "_dlib",
)  # fmt: skip
#: Protocol 3's columns (PROTOCOL.md s.6 v3, then dlib's second opinion), each with an interval and a seed spread.
TASK_COLUMNS_V3 = (
    KEY_METRIC_JOINT, KEY_METRIC_AGE_SCORE, KEY_METRIC_GAP_CLOSURE, KEY_METRIC_ID_RATE, KEY_METRIC_ID_SIM,
    KEY_METRIC_REALISM, KEY_METRIC_FID, KEY_METRIC_KID_MEAN, KEY_METRIC_CYCLE_L1, KEY_METRIC_FACE_FAIL,
    KEY_METRIC_JOINT_DECADE, KEY_METRIC_AGE_ACC, KEY_METRIC_ID_RATE + "_dlib", KEY_METRIC_JOINT + "_dlib",
)  # fmt: skip
#: The real row's own protocol-3 numbers (PROTOCOL.md s.4-5): the gap and the ceilings.
REAL_COLUMNS_V3 = (KEY_METRIC_GAP, "age_score_real", "realism_real", KEY_METRIC_AGE_ACC_REAL)
#: Per-face `joint` outcomes in a protocol-2 metrics file's task section (a string of "0"/"1", one per test face).
PER_FACE_JOINT = "joint_faces"
SPREAD = ("min", "max", "sd")
PROVENANCE_COLUMNS = (
    "resolution", "train_seconds", "hardware", "parameters", "git_revision", "protocol_version", "profile",
)  # fmt: skip


def per_face_joint_v2(doc: Mapping[str, Any], task: str) -> np.ndarray | None:
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


def _base_row(d: Mapping[str, Any], runtime: Mapping[str, Mapping[str, Any]], protocol: int) -> dict[str, Any]:
    """A document's numbers under the frame's column names (intervals as *_lo/_hi, seed spread *_min/_max/_sd)."""
    row: dict[str, Any] = {"method": d["method"], "kind": d.get("kind", "method"), "source": d.get("source")}
    row["uses_scoring_networks"] = ",".join(scoring_networks(d))
    if protocol >= 3:
        row["seeds"] = len(d.get(KEY_SEEDS) or [None])
    columns = TASK_COLUMNS_V3 + REAL_COLUMNS_V3 if protocol >= 3 else TASK_COLUMNS
    for task in TASKS:
        t = d.get("tasks", {}).get(task, {})
        for col in columns:
            row[f"{task}.{col}"] = _num(t.get(col))
            lo_hi = t.get(KEY_CI95, {}).get(col)
            if lo_hi:
                row[f"{task}.{col}_lo"], row[f"{task}.{col}_hi"] = _num(lo_hi[0]), _num(lo_hi[1])
            spread = t.get(KEY_SEED_SPREAD, {}).get(col) if protocol >= 3 else None
            for k in SPREAD if spread else ():
                row[f"{task}.{col}_{k}"] = _num(spread.get(k))
        row[f"{task}.kid_std"] = _num(t.get(KEY_METRIC_KID_STD))
        row[f"{task}.n"] = t.get(KEY_N)
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
    return row


def leaderboard_frame(
    docs: list[dict[str, Any]],
    runtime: dict[str, dict[str, Any]] | None = None,
    scores: Mapping[str, Mapping[str, np.ndarray]] | None = None,
) -> pd.DataFrame:
    """One row per document with every leaderboard column (intervals as *_lo / *_hi).

    scores (protocol 2 only): method -> its `data/scores/<method>.npz` arrays, used only for documents
    without per-face `joint_faces` (`joint_from_scores`); without it the frame depends on the documents alone.

    Per task: `<task>.order` (1-based position in that task's ranking, NaN for reference rows) and
    `<task>.rank` ("k" or "=k"). Protocol 2: `<task>.joint_diff_above` (+ _lo/_hi: paired interval of
    joint(row above) - joint(row)). Protocol 3: `<task>.leader` (the row's group leader), `<task>.diff_leader`
    (+ _lo/_hi: joint(L) - joint(row) where L is the leader the row was compared with: its group's, or for a
    new group's leader the leader of the group above), `<task>.vs_identity` (+ _lo/_hi: joint(row) - joint(identity))
    and `<task>.not_above_no_change` (True/False). Rows are sorted as the `aging` table (ranked kinds first),
    reference rows last. `frame.attrs`: "protocol"; "paired"[task][(a, b)] = {"value", "ci95"} for the
    matrix; protocol 3 also "rankings"[task] (`TaskRanking`).
    """
    runtime = runtime or {}
    protocol = protocol_of(docs)
    df = pd.DataFrame([_base_row(d, runtime, protocol) for d in docs])
    attrs: dict[str, Any] = {"protocol": protocol, "paired": {}, "rankings": {}}
    if df.empty:
        df.attrs.update(attrs)
        return df
    resamples, seed = _bootstrap_settings(docs)
    ranked = df["kind"].isin(RANKED_KINDS)
    if protocol >= 3:
        for d in docs:
            if d.get("method") == "real":
                check_real_row(d)
        for task in TASKS:
            attrs["rankings"][task] = r = rank_task(docs, task, resamples, seed)
            attrs["paired"][task] = {k: {"value": d.value, "ci95": list(d.ci95)} for k, d in r.pairs.items()}
            _add_v3_ranking(df, r)
    else:
        attrs["paired"] = _add_v2_ranking(df, docs, scores, resamples, seed)
    df = df.reindex(columns=frame_columns(protocol))  # one column order whatever the documents hold (csv bytes)
    df["_ref"] = (~ranked).astype(int)
    df["_order"] = pd.to_numeric(df["aging.order"]).fillna(math.inf)
    df = df.sort_values(["_ref", "_order", "method"], kind="stable").drop(columns=["_ref", "_order"])
    if protocol >= 3:  # counts stay integers in the csv even where some rows have none
        counts = ["seeds", *(f"{t}.{c}" for t in TASKS for c in ("n", "n_floor", "n_rest", "order"))]
        df[counts] = df[counts].apply(lambda col: pd.to_numeric(col).round().astype("Int64"))
    df = df.reset_index(drop=True).copy()  # one block per dtype: columns were added one at a time
    df.attrs.update(attrs)
    return df


def _add_v3_ranking(df: pd.DataFrame, r: TaskRanking) -> None:
    """Protocol 3's ranking columns of one task, in place."""
    t = r.task
    for col in ("order", "rank", "leader", *_triple("diff_leader"), *_triple("vs_identity"), "not_above_no_change"):
        df[f"{t}.{col}"] = pd.Series([None] * len(df), dtype=object)
    for pos, (name, label) in enumerate(zip(r.order, r.labels), start=1):
        i = df.index[df["method"] == name][0]
        df.at[i, f"{t}.order"], df.at[i, f"{t}.rank"], df.at[i, f"{t}.leader"] = pos, label, r.leader(name)
        for col, d in (("diff_leader", r.vs_leader(name)), ("vs_identity", r.vs_no_change(name))):
            if d is not None:
                df.at[i, f"{t}.{col}"] = d.value
                df.at[i, f"{t}.{col}_lo"], df.at[i, f"{t}.{col}_hi"] = d.ci95
        df.at[i, f"{t}.not_above_no_change"] = r.not_above_no_change(name)


def _triple(col: str) -> tuple[str, str, str]:
    return col, f"{col}_lo", f"{col}_hi"


def _add_v2_ranking(
    df: pd.DataFrame,
    docs: Sequence[Mapping[str, Any]],
    scores: Mapping[str, Mapping[str, np.ndarray]] | None,
    resamples: int,
    seed: int,
) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    """Protocol 2's ranking columns, in place (each row against the row above); returns the paired matrix."""
    paired: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    by_method = {d["method"]: d for d in docs}
    ranked = df["kind"].isin(RANKED_KINDS)
    for task in TASKS:
        order = sorted(df[ranked].to_dict("records"), key=lambda r, t=task: _order_key(r, t))
        names = [r["method"] for r in order]
        outcomes = {m: per_face_joint_v2(by_method[m], task) for m in names}
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
        for col in ("order", "rank", *_triple("joint_diff_above")):
            df[f"{task}.{col}"] = pd.Series([None] * len(df), dtype=object)
        for pos, (name, label) in enumerate(zip(names, labels), start=1):
            i = df.index[df["method"] == name][0]
            df.at[i, f"{task}.order"] = pos
            df.at[i, f"{task}.rank"] = label
            if pos > 1 and (p := paired[task].get((names[pos - 2], name))) is not None:
                df.at[i, f"{task}.joint_diff_above"] = p["value"]
                df.at[i, f"{task}.joint_diff_above_lo"], df.at[i, f"{task}.joint_diff_above_hi"] = p["ci95"]
    return paired


def frame_columns(protocol: int = 2) -> list[str]:
    """Every column of `leaderboard_frame`, in leaderboard.csv's order."""
    cols = ["method", "kind", "source", "uses_scoring_networks"]
    if protocol >= 3:
        cols.append("seeds")
        for task in TASKS:
            cols += [f"{task}.order", f"{task}.rank", f"{task}.leader"]
            for col in TASK_COLUMNS_V3:
                cols += [f"{task}.{col}{s}" for s in ("", "_lo", "_hi", *(f"_{k}" for k in SPREAD))]
            cols += [f"{task}.{c}" for c in ("kid_std", "n", "n_floor", "n_rest")]
            cols += [*_prefixed(task, _triple("diff_leader")), *_prefixed(task, _triple("vs_identity"))]
            cols.append(f"{task}.not_above_no_change")
            for col in REAL_COLUMNS_V3:
                cols += _prefixed(task, _triple(col))
        return cols + list(PROVENANCE_COLUMNS)
    for task in TASKS:
        cols += [f"{task}.order", f"{task}.rank"]
        for col in TASK_COLUMNS:
            cols += [f"{task}.{col}", f"{task}.{col}_lo", f"{task}.{col}_hi"]
        cols += [f"{task}.{c}" for c in ("kid_std", "n", "n_floor", "n_rest", "faces_from")]
        cols += [f"{task}.joint_diff_above{s}" for s in ("", "_lo", "_hi")]
    return cols + list(PROVENANCE_COLUMNS)


def _prefixed(task: str, cols: Sequence[str]) -> list[str]:
    return [f"{task}.{c}" for c in cols]


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def leaderboard_csv(df: pd.DataFrame) -> str:
    """leaderboard.csv: every column of the frame, one row per method and reference row."""
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def v2_rankings(df: pd.DataFrame, docs: Sequence[Mapping[str, Any]]) -> dict[str, TaskRanking]:
    """Protocol-2 frames as `TaskRanking`s, for the generated sentences: the published order and paired
    differences (one face resample per task, v2), plus each row against `identity` from its `joint_faces`.

    `ranks` are the positions (protocol 2's "=k" labels chain and are left to its table).
    """
    resamples, seed = _bootstrap_settings(docs)
    by_method = {d["method"]: d for d in docs}
    out: dict[str, TaskRanking] = {}
    for task, paired in df.attrs.get("paired", {}).items():
        ranked = df[df["kind"].isin(RANKED_KINDS)]
        names = list(ranked.assign(_o=pd.to_numeric(ranked[f"{task}.order"])).sort_values("_o")["method"])
        pairs = {k: Difference(k[0], k[1], float(p["value"]), tuple(p["ci95"])) for k, p in paired.items()}
        outcomes = {m: per_face_joint_v2(by_method[m], task) for m in [*names, NO_CHANGE] if m in by_method}
        values = {m: float(o.mean()) for m, o in outcomes.items() if o is not None}
        base = outcomes.get(NO_CHANGE)
        for m in names:
            o = outcomes.get(m)
            if base is None or o is None or len(o) != len(base):
                continue
            p = stats.paired_difference(o, base, stats.bootstrap_indices(len(o), resamples, seed))
            pairs[(m, NO_CHANGE)] = d = Difference(m, NO_CHANGE, float(p["value"]), tuple(p["ci95"]))
            pairs[(NO_CHANGE, m)] = d.flipped()
        out[task] = TaskRanking(
            task=task,
            order=tuple(names),
            ranks=tuple(range(1, len(names) + 1)),
            values=values,
            seeds={m: 1 for m in values},
            pairs=pairs,
            unpaired=tuple(m for m in names if m not in values),
        )
    return out
