"""`agebench merge-seeds RUN_DIR...`: merge the metrics files of runs with different training seeds."""

from __future__ import annotations

import argparse

from agebench.commands._help_format import command_parser, summary

EXAMPLE = "agebench merge-seeds run_seed0/reports/metrics run_seed1/reports/metrics --out merged/metrics"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(
        sub,
        "merge-seeds",
        "merge the metrics files of runs with different training seeds (PROTOCOL.md s.4 v3)",
        [EXAMPLE],
        "Merge the metrics files of the same methods from separate runs (one training seed each, same "
        "code revision and profile) into files with S seeds: means over seeds, per-face means, seed_spread and "
        "two-level bootstrap intervals (seeds, then faces). real.json must be identical in every run and is copied. "
        "Exit status: 0 written; 2 runs that cannot be merged (another revision or profile, a seed twice).",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_METRICS_DIR", help="reports/metrics of each run")
    p.add_argument("--out", required=True, help="folder for the merged <method>.json files")
    return p


def run(args: argparse.Namespace) -> int:
    """Merge and write; a run folder holding unreadable JSON is a user error (one line, exit 2)."""
    from agebench.infra.errors import report_user_error
    from agebench.pipeline.seeds import merge_seed_dirs

    try:
        written = merge_seed_dirs(args.run_dirs, args.out)
    except ValueError as exc:  # a malformed metrics file (json's decode error is a ValueError)
        return report_user_error("agebench merge-seeds", exc)
    summary(args.out, f"agebench merge-seeds: {len(written)} files from {len(args.run_dirs)} runs")
    return 0
