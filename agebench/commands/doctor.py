"""`agebench doctor`: the pre-flight check of params.yaml, data, weights, disk, devices (`agebench.infra.preflight`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agebench.commands._help_format import command_parser

EXAMPLE = "agebench doctor --params params.yaml"
#: The first paragraph of `agebench.infra.preflight`'s docstring (not imported: `--help` stays instant).
DESCRIPTION = (
    "Pre-flight (`agebench doctor`, and the first thing the `download` stage does): in seconds, before any\n"
    "long work, check everything the configured methods and metrics will need and print each problem with\n"
    "its fix."
)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(
        sub,
        "doctor",
        "pre-flight: check data, weights, disk and device for params.yaml in seconds",
        [EXAMPLE, "agebench doctor", "agebench doctor --measure-cpu path/to/UTKFace"],
        DESCRIPTION,
    )
    p.add_argument("--params", type=Path, default=Path("params.yaml"), help="the params file to check")
    p.add_argument(
        "--measure-cpu",
        type=Path,
        metavar="UTKFACE_DIR",
        help="instead: measure each method's seconds per full-profile training step on this CPU (minutes)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """0 when nothing is wrong, 2 after the list of problems."""
    from agebench.infra.preflight import measure_cpu, preflight

    if args.measure_cpu:
        measure_cpu(args.params, args.measure_cpu)
        return 0
    return preflight(args.params, "agebench doctor")
