"""DVC stage `report`: the leaderboard (PROTOCOL.md s.6) from every metrics file, and the HTML report.

Arguments and file writes only; the work is in `agebench.report`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agebench.infra.common import atomic_path, run_main
from agebench.params.load import load_params
from agebench.report import ReportInputError, build_leaderboard, leaderboard_csv, leaderboard_markdown, load_metrics
from agebench.report.page import build_report_page


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
        # `render_leaderboard(folder, runtime)`, a function of the metrics files alone.
        load_metrics(folder, list(params.methods))  # a configured method without results is an error
        docs, df = build_leaderboard(folder, args.runtime, args.scores)
    except ReportInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out)
    paths = {k: Path(getattr(args, k)) for k in ("scores", "outputs", "data", "live")}
    page = build_report_page(params, docs, df, paths)
    with atomic_path(out / "leaderboard.csv") as tmp:
        tmp.write_text(leaderboard_csv(df), encoding="utf-8")
    with atomic_path(out / "leaderboard.md") as tmp:
        tmp.write_text(leaderboard_markdown(df, docs), encoding="utf-8")
    with atomic_path(out / "figures" / "charts", kind="dir") as tmp:
        tmp.mkdir()
        for name, png in page.charts.items():
            (tmp / name).write_bytes(png)
    (out / "figures" / "progression").mkdir(parents=True, exist_ok=True)  # a DVC out, even when empty
    for name, png in page.strips.items():
        with atomic_path(out / "figures" / "progression" / f"{name}.png") as tmp:
            tmp.write_bytes(png)
    with atomic_path(out / "index.html") as tmp:
        tmp.write_bytes(page.html)
    print(f"report: {len(df)} rows -> {out / 'leaderboard.md'}, {out / 'index.html'}")
    return 0


if __name__ == "__main__":
    run_main(main)
