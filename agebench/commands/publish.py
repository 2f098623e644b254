"""`agebench publish`: copy a finished run's face-free results to results/<profile> (`agebench.report.publish`)."""

from __future__ import annotations

import argparse

from agebench.commands._help_format import command_parser

#: What `agebench.report.publish` does (not imported: `--help` stays instant).
DESCRIPTION = "`agebench publish`: copy a finished pipeline run's face-free results into `results/<profile>/`."
EXAMPLE = "agebench publish --workspace ../cpu-run --out results/cpu --load-log load.log"
SEEDS_EXAMPLE = "agebench publish --workspace ../s0 --seed-workspace ../s1 --seed-workspace ../s2 --out results/cpu"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(
        sub,
        "publish",
        "copy a finished run's face-free results to results/<profile>",
        [EXAMPLE, SEEDS_EXAMPLE],
        DESCRIPTION + " With --seed-workspace (runs that differ only in train.seed, at the same git revision) the "
        "published metrics are the seeds' merge (`agebench merge-seeds`) and the leaderboards and charts are "
        "rendered from it. Exit status: 0 written; 2 refused, nothing written.",
    )
    p.add_argument("--workspace", default=".", help="checkout where `dvc repro` finished")
    p.add_argument("--out", required=True, help="results folder to (re)write, e.g. results/cpu")
    p.add_argument("--load-log", default=None, help="load averages sampled during the run (`HH:MM:SS l1 l5 l15`)")
    p.add_argument("--notes", default="", help="free text kept in run.json (how the run was made)")
    p.add_argument(
        "--seed-workspace", action="append", default=[], help="another training seed's finished run (repeatable)"
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Write the results folder; one line with the number of files."""
    from agebench.report.publish import publish

    files = publish(
        args.workspace, args.out, load_log=args.load_log, notes=args.notes, seed_workspaces=args.seed_workspace
    )
    print(f"agebench publish: {len(files)} files written to {args.out}")
    return 0
