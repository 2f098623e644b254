"""`agebench age DIR`: the estimated age of every image in a folder."""

from __future__ import annotations

import argparse
import math

from agebench.commands._help_format import command_parser, summary

EXAMPLE = "agebench age aged_faces/ --csv ages.csv"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(sub, "age", "estimated age of every image in a folder", [EXAMPLE])
    p.add_argument("dir", help="folder of face images (UTKFace-like crops)")
    p.add_argument("--csv", dest="csv_out", help="write file,age here (default: stdout)")
    return p


def run(args: argparse.Namespace) -> int:
    """One row per image (file, age) on stdout or in --csv; one summary line on stderr."""
    from agebench.pipeline import score_folders

    rows = score_folders.cmd_age(args.dir, args.csv_out)
    ages = [a for _, a in rows if math.isfinite(a)]
    mean = f", mean age {sum(ages) / len(ages):.1f}" if ages else ""
    summary(args.csv_out, f"agebench age: {len(rows)} images, {len(rows) - len(ages)} without an age{mean}")
    return 0
