"""`agebench repro`: the DVC pipeline with several trainings at once (one per core by default)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agebench.commands._help_format import command_parser, positive_int

EXAMPLE = "agebench repro --jobs 2"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(
        sub,
        "repro",
        "dvc repro with several training stages at once",
        [EXAMPLE, "agebench repro --jobs 1   # plain dvc repro, in three steps"],
        "Run `dvc repro prepare`, then the training stages of params.yaml's methods JOBS at a time (each its own "
        "`dvc --wait-for-lock repro --single-item train@<method>`, output in LOGS/train_<method>.log), then "
        "`dvc repro` for the rest. Writes LOGS/repro.json: jobs, each dvc process's start, end and exit status, "
        "and the whole wall time. Run again to resume: finished stages are up to date and a training resumes "
        "from its last checkpoint. Exit status: 0 done; 2 a stage failed (named with its log) or bad params.",
    )
    p.add_argument("--params", default="params.yaml", help="the project's params.yaml (its folder holds dvc.yaml)")
    p.add_argument("--jobs", type=positive_int, default=None, help="trainings at once (default: one per usable core)")
    p.add_argument("--logs", default="logs/repro", help="folder for the trainings' logs and repro.json")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the plan (it writes repro.json, also after a failed stage)."""
    from agebench.params.load import load_params
    from agebench.pipeline.repro import default_jobs, parallel_repro

    params = load_params(args.params)
    project = Path(args.params).resolve().parent
    jobs = args.jobs or default_jobs()
    record = parallel_repro(project, params.methods, jobs, project / args.logs)
    out = project / args.logs / "repro.json"
    print(f"agebench repro: done in {record.wall_s / 60:.1f} min with {jobs} training(s) at once; wrote {out}")
    return 0
