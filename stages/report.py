"""DVC stage `report`: the leaderboard (PROTOCOL.md s.6) from every metrics file, and the HTML report.

Arguments and file writes only; the work is in `agebench.report`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agebench.common import atomic_path, run_main
from agebench.config import load_params
from agebench.report import (
    ReportInputError,
    build_leaderboard,
    leaderboard_csv,
    leaderboard_markdown,
    load_metrics,
    write_html_report,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the leaderboard from the metrics files.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--metrics", default="reports/metrics")
    parser.add_argument("--runtime", default="reports/runtime", help="training time and hardware per method")
    parser.add_argument("--scores", default="data/scores", help="per-face ages and distances (evaluate)")
    parser.add_argument("--outputs", default="outputs", help="generated faces (generate)")
    parser.add_argument("--data", default="data/prepared", help="prepared faces (sample grid inputs)")
    parser.add_argument("--live", default="dvclive", help="training curves")
    parser.add_argument("--out", default="reports")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    folder = Path(args.metrics)
    try:
        # Every metrics file of the folder (methods, reference rows, external rows): leaderboard.md is then
        # `render_leaderboard(folder, runtime)`, a function of the metrics files alone, when they all carry
        # per-face `joint_faces` (data/scores is only a fallback for files without them).
        load_metrics(folder, list(params.methods))  # a configured method without results is an error
        docs, df = build_leaderboard(folder, args.runtime, args.scores)
    except ReportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    with atomic_path(out / "leaderboard.csv") as tmp:
        tmp.write_text(leaderboard_csv(df), encoding="utf-8")
    with atomic_path(out / "leaderboard.md") as tmp:
        tmp.write_text(leaderboard_markdown(df, docs), encoding="utf-8")
    paths = {k: Path(getattr(args, k)) for k in ("scores", "outputs", "data", "live")}
    page = write_html_report(params, docs, df, paths, out)
    print(f"report: {len(df)} rows -> {out / 'leaderboard.md'}, {page}")
    return 0


if __name__ == "__main__":
    run_main(main)
