"""`agebench check`: the regression gate, metrics against a baseline (PROTOCOL.md s.6)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agebench.commands._help_format import add_gate_options, command_parser

EXAMPLE = "agebench check --baseline baselines/cpu.json --metrics reports/metrics"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(
        sub,
        "check",
        "regression gate: compare metrics with a baseline (PROTOCOL.md s.6)",
        [EXAMPLE],
        "Compare metrics with a baseline (PROTOCOL.md s.6). Exit status: 0 all metrics within "
        "tolerance; 1 a regression or a metric missing now; 2 bad input (a missing or malformed file, a "
        "non-numeric value, results of another protocol_version or profile than the baseline).",
    )
    add_gate_options(p, "baseline JSON written by `agebench baseline update`")
    return p


def run(args: argparse.Namespace) -> int:
    """Print the gate's report; 0 within tolerance, 1 a regression or a missing metric."""
    from agebench.gate import check
    from agebench.params.reading import read_params, section
    from agebench.params.sections import CheckConfig

    cfg = section(read_params(args.params), "check", CheckConfig)
    probes = Path(args.probes) if args.probes else None
    metrics = Path(args.metrics)
    status, report = check.check(Path(args.baseline), metrics, cfg, probes, check.run_fingerprint(metrics))
    print(report)
    return status
