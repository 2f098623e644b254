"""`agebench verify DIR_A DIR_B`: face verification of same-named files in two folders."""

from __future__ import annotations

import argparse
import math

from agebench.commands._help_format import command_parser, summary

EXAMPLE = "agebench verify inputs/ aged_faces/ --judge sface --csv same.csv"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(
        sub,
        "verify",
        "face verification of same-named files in two folders",
        [EXAMPLE],
        "Face verification of same-named files in two folders. CSV columns: file; similarity "
        "(--judge sface: cosine of SFace embeddings after YuNet alignment on a 50% black border) or distance "
        "(--judge dlib: Euclidean distance of dlib descriptors); same (true when similarity >= 0.363, or "
        "distance < 0.6). Empty score and same=false where no face was found in either image.",
    )
    p.add_argument("dir_a", help="folder of faces (e.g. the inputs)")
    p.add_argument("dir_b", help="folder of faces with the same file names (e.g. the translations)")
    p.add_argument("--judge", choices=("sface", "dlib"), default="sface", help="sface (the judge) or dlib")
    p.add_argument("--csv", dest="csv_out", help="write file,similarity,same (sface) or file,distance,same (dlib) here")
    p.add_argument("--threshold", type=float, default=None, help="default: 0.363 (sface) or 0.6 (dlib)")
    return p


def run(args: argparse.Namespace) -> int:
    """One row per pair on stdout or in --csv; one summary line on stderr."""
    from agebench.pipeline import score_folders

    rows = score_folders.cmd_verify(args.dir_a, args.dir_b, args.csv_out, args.threshold, args.judge)
    same = sum(r[2] for r in rows)
    failed = sum(not math.isfinite(r[1]) for r in rows)
    summary(
        args.csv_out, f"agebench verify ({args.judge}): {len(rows)} pairs, {same} same person, {failed} without a face"
    )
    return 0
