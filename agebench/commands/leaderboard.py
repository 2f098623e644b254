"""`agebench leaderboard METRICS_DIR`: rebuild leaderboard.md from metrics files alone.

No images, data, networks or torch: the ranking is recomputed from each file's per-face records (protocol
3) or `joint_faces` (protocol 2), with the same renderer as the report stage, so the output equals the
stage's (or a published) leaderboard.md byte for byte.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agebench.commands._help_format import command_parser

EXAMPLE = "agebench leaderboard results/cpu/metrics --out leaderboard.md"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(
        sub,
        "leaderboard",
        "rebuild leaderboard.md from metrics files alone (no images, data or networks)",
        [EXAMPLE],
        __doc__.split("\n\n")[0] + " Exit status: 0 written; 2 unusable metrics files, nothing written.",
    )
    p.add_argument("metrics_dir", metavar="METRICS_DIR", help="folder of <row>.json metrics files")
    p.add_argument(
        "--runtime",
        metavar="RUNTIME_DIR",
        default=None,
        help="training time and hardware per method (default: METRICS_DIR/../runtime when it exists)",
    )
    p.add_argument("--out", metavar="FILE", default=None, help="write leaderboard.md here (default: stdout)")
    p.add_argument("--csv", metavar="FILE", default=None, help="also write leaderboard.csv here")
    return p


def run(args: argparse.Namespace) -> int:
    """Render and write leaderboard.md (stdout without --out) and, with --csv, leaderboard.csv."""
    from agebench.infra.common import atomic_path
    from agebench.report import render_leaderboard

    md, csv = render_leaderboard(Path(args.metrics_dir), args.runtime)
    if args.out is None:
        sys.stdout.write(md)
    else:
        with atomic_path(Path(args.out)) as tmp:
            tmp.write_text(md, encoding="utf-8")
    if args.csv is not None:
        with atomic_path(Path(args.csv)) as tmp:
            tmp.write_text(csv, encoding="utf-8")
    if args.out is not None:
        print(f"agebench leaderboard: wrote {args.out}", file=sys.stderr)
    return 0
