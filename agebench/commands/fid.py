"""`agebench fid REAL_DIR FAKE_DIR`: FID/KID between two folders of images."""

from __future__ import annotations

import argparse
import json
import math

from agebench.commands._help_format import command_parser, positive_int, summary

EXAMPLE = "agebench fid real_faces/ aged_faces/ --json fid.json"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(
        sub, "fid", "FID/KID between two folders of images (TF-Inception, torch-fidelity compatible)", [EXAMPLE]
    )
    p.add_argument("real_dir", help="folder of real images (PNG/JPEG, any size: resized to 299 for Inception)")
    p.add_argument("fake_dir", help="folder of generated images")
    p.add_argument("--json", dest="json_out", help="write {fid, kid_mean, kid_std, n_real, n_fake} here")
    p.add_argument("--batch-size", type=positive_int, default=64, help="Inception batch size")
    p.add_argument("--params", default=None, help="read KID settings from this params.yaml (default: PROTOCOL's)")
    return p


def run(args: argparse.Namespace) -> int:
    """Score the two folders; the values on stdout (or in --json), one summary line on stderr."""
    from agebench.pipeline import score_folders

    cfg = None
    if args.params:
        from agebench.params.load import load_params

        cfg = load_params(args.params).evaluate
    result = score_folders.cmd_fid(args.real_dir, args.fake_dir, args.json_out, args.batch_size, cfg)
    if not args.json_out:
        # Valid JSON even if a value is not finite (null, as in the --json file).
        finite = {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in result.items()}
        print(json.dumps(finite, indent=2, allow_nan=False))
    summary(
        args.json_out,
        f"agebench fid: FID {result['fid']:.3f}, KID {result['kid_mean']:.5f} +- {result['kid_std']:.5f} "
        f"({result['n_real']} real, {result['n_fake']} generated images)",
    )
    return 0
