"""`agebench publish`: copy a finished run's face-free results to results/<profile> (`agebench.report.publish`)."""

from __future__ import annotations

import argparse

from agebench.commands._help_format import command_parser

#: What `agebench.report.publish` does (not imported: `--help` stays instant).
DESCRIPTION = "`agebench publish`: copy a finished pipeline run's face-free results into `results/<profile>/`."
EXAMPLE = "agebench publish --workspace ../cpu-run --out results/cpu --load-log load.log"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(
        sub,
        "publish",
        "copy a finished run's face-free results to results/<profile>",
        [EXAMPLE],
        DESCRIPTION + " Exit status: 0 written; 2 refused, nothing written.",
    )
    p.add_argument("--workspace", default=".", help="checkout where `dvc repro` finished")
    p.add_argument("--out", required=True, help="results folder to (re)write, e.g. results/cpu")
    p.add_argument("--load-log", default=None, help="load averages sampled during the run (`HH:MM:SS l1 l5 l15`)")
    p.add_argument("--notes", default="", help="free text kept in run.json (how the run was made)")
    return p


def run(args: argparse.Namespace) -> int:
    """Write the results folder; one line with the number of files."""
    from agebench.report.publish import publish

    files = publish(args.workspace, args.out, load_log=args.load_log, notes=args.notes)
    print(f"agebench publish: {len(files)} files written to {args.out}")
    return 0
