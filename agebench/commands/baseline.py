"""`agebench baseline update`: write the current metrics as the regression baseline, on purpose."""

from __future__ import annotations

import argparse
from pathlib import Path

from agebench.commands._help_format import add_gate_options, command_parser

EXAMPLE = "agebench baseline update --baseline baselines/cpu.json --metrics reports/metrics"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command (and its one action, `update`) on the `agebench` subparsers."""
    p = command_parser(sub, "baseline", "manage the regression baseline", [EXAMPLE])
    actions = p.add_subparsers(dest="action", required=True)
    upd = command_parser(
        actions,
        "update",
        "write the current metrics as the new baseline (on purpose)",
        [EXAMPLE],
        "Replace the baseline file with the current metrics (this is the point of the command). "
        "Exit status: 0 written; 2 bad input, nothing written (malformed metrics, results of another protocol "
        "version than this agebench's or of mixed profiles, a baseline path that is a folder).",
    )
    add_gate_options(upd, "baseline JSON to (over)write")
    upd.add_argument(
        "--seed-runs",
        nargs="*",
        default=[],
        metavar="METRICS_DIR",
        help="metrics folders of the same methods trained with other seeds: the statistical gate's spread",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Write the baseline; one line with the number of values written."""
    from agebench.gate import check
    from agebench.params.reading import read_params, section
    from agebench.params.sections import CheckConfig

    cfg = section(read_params(args.params), "check", CheckConfig)
    probes = Path(args.probes) if args.probes else None
    seeds = tuple(Path(p) for p in args.seed_runs)
    n = check.update_baseline(Path(args.baseline), Path(args.metrics), cfg, seeds, probes)
    print(f"agebench baseline update: {n} values written to {args.baseline}")
    return 0
