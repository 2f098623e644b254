"""DVC stage `report`: the leaderboard (PROTOCOL.md s.6) from every metrics file, and the HTML report.

Arguments and file writes only; the work is in `agebench.report`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from agebench.common import atomic_path, run_main
from agebench.config import load_params
from agebench.report import leaderboard_frame, leaderboard_markdown, load_metrics, load_runtime, write_html_report


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
    names = list(params.methods) + [r for r in ("real",) if (folder / f"{r}.json").is_file()]
    docs = load_metrics(folder, names)
    df = leaderboard_frame(docs, load_runtime(Path(args.runtime), names))
    out = Path(args.out)
    with atomic_path(out / "leaderboard.csv") as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(out / "leaderboard.md") as tmp:
        tmp.write_text(leaderboard_markdown(df), encoding="utf-8")
    paths = {k: Path(getattr(args, k)) for k in ("scores", "outputs", "data", "live")}
    page = write_html_report(params, docs, df, paths, out)
    print(f"report: {len(df)} rows -> {out / 'leaderboard.md'}, {page}")
    return 0


if __name__ == "__main__":
    run_main(main)
