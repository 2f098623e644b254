"""`report` stage: the leaderboard (PROTOCOL.md s.6) from every metrics file.

Writes `leaderboard.csv` (one row per method and reference, every number) and `leaderboard.md`
(methods ranked by `joint` on `aging`, ties broken by lower `fid`; reference rows shown apart).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pandas as pd

from agebench.config import load_params
from stages.common import atomic_path, read_json, run_main

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


def leaderboard_frame(docs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per document with every leaderboard column (intervals as *_lo / *_hi)."""
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
        train = d.get("train", {})
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
        df["_fid"] = df["aging.fid"].fillna(math.inf)
        df = df.sort_values(["kind", "aging.joint", "_fid"], ascending=[False, False, True], na_position="last").drop(
            columns="_fid"
        )
    return df.reset_index(drop=True)


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _fmt(row: pd.Series, task: str, col: str) -> str:
    v = row.get(f"{task}.{col}")
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    digits = 1 if col == "fid" else 3
    text = f"{v:.{digits}f}"
    lo, hi = row.get(f"{task}.{col}_lo"), row.get(f"{task}.{col}_hi")
    if lo is not None and hi is not None and not (math.isnan(lo) or math.isnan(hi)):
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


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
                f"{'–' if _missing(secs) else f'{secs:.0f}'} | {_text(row.get('hardware'))} | "
                f"{_text(row.get('git_revision'))} | {_int(row.get('protocol_version'))} | "
                f"{_text(row.get('profile'))} |"
            )
        lines.append("")
    return "\n".join(lines)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _text(v: Any) -> str:
    return "–" if _missing(v) else str(v)


def _int(v: Any) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{int(v):,}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the leaderboard from the metrics files.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics", default="reports/metrics")
    parser.add_argument("--out", default="reports")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    folder = Path(args.metrics)
    names = list(params.methods) + [r for r in ("real",) if (folder / f"{r}.json").is_file()]
    df = leaderboard_frame(load_metrics(folder, names))
    out = Path(args.out)
    with atomic_path(out / "leaderboard.csv") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out / "leaderboard.md") as tmp:
        tmp.write_text(leaderboard_markdown(df), encoding="utf-8")
    print(f"report: {len(df)} rows -> {out / 'leaderboard.md'}")
    return 0


if __name__ == "__main__":
    run_main(main)
