"""The `agebench` command: score folders of faces, and the benchmark's helper commands."""

from __future__ import annotations

import argparse
import json
import math
import sys


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `agebench` and its subcommands."""
    p = argparse.ArgumentParser(prog="agebench", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    fid = sub.add_parser("fid", help="FID/KID between two folders of images (TF-Inception, torch-fidelity compatible)")
    fid.add_argument("real_dir")
    fid.add_argument("fake_dir")
    fid.add_argument("--json", dest="json_out", help="write {fid, kid_mean, kid_std, n_real, n_fake} here")
    fid.add_argument("--batch-size", type=_positive_int, default=64)

    age = sub.add_parser("age", help="estimated age of every image in a folder")
    age.add_argument("dir")
    age.add_argument("--csv", dest="csv_out", help="write file,age here (default: stdout)")

    ver = sub.add_parser("verify", help="face verification of same-named files in two folders")
    ver.add_argument("dir_a")
    ver.add_argument("dir_b")
    ver.add_argument("--csv", dest="csv_out", help="write file,distance,same here (default: stdout)")
    ver.add_argument("--threshold", type=float, default=0.6)

    chk = sub.add_parser("check", help="regression gate: compare metrics with a baseline (PROTOCOL.md s.6)")
    chk.add_argument("--baseline", required=True, help="baseline JSON written by `agebench baseline update`")
    chk.add_argument("--metrics", default="reports/metrics", help="folder of <method>.json metrics files")
    chk.add_argument("--params", default="params.yaml", help="where `check:` (directions, tolerances) is read")

    new = sub.add_parser("new-method", help="add a method: methods/NAME.py, its params section and registration")
    new.add_argument("name")
    new.add_argument("--repo", default=".", help="the agebench repository (default: here)")

    base = sub.add_parser("baseline", help="manage the regression baseline")
    base_sub = base.add_subparsers(dest="action", required=True)
    upd = base_sub.add_parser("update", help="write the current metrics as the new baseline (on purpose)")
    upd.add_argument("--baseline", required=True, help="baseline JSON to (over)write")
    upd.add_argument("--metrics", default="reports/metrics")
    upd.add_argument("--params", default="params.yaml")

    # Parsed by agebench.age_photo (see `agebench age-photo --help`); listed here for the overview.
    sub.add_parser("age-photo", help="age every face of a photo with trained methods", add_help=False)
    sub.add_parser("feature-maps", help="dump cyclegan_agevec's intermediate feature maps for a face", add_help=False)
    return p


def _gate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agebench import check
    from agebench.config import CheckConfig, ParamsError, read_params, section

    try:
        cfg = section(read_params(args.params), "check", CheckConfig)
        if args.command == "check":
            status, report = check.check(Path(args.baseline), Path(args.metrics), cfg)
            print(report)
            return status
        n = check.update_baseline(Path(args.baseline), Path(args.metrics), cfg)
        print(f"agebench baseline update: {n} metrics written to {args.baseline}")
        return 0
    except (check.GateInputError, ParamsError, OSError) as exc:
        print(f"agebench {args.command}: error: {exc}", file=sys.stderr)
        return 2


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `agebench` console script.

    Returns 0 on success and 2, after one `agebench CMD: error: ...` line on stderr, for unusable input
    (a missing or image-less folder, too few images, no common names, an unwritable output, missing
    weights). Bad arguments exit 2 through argparse.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["age-photo"]:
        from agebench.age_photo import cli

        return cli(argv[1:])
    if argv[:1] == ["feature-maps"]:
        from agebench.config import ParamsError
        from agebench.feature_maps import main as feature_maps

        try:
            return feature_maps(argv[1:])
        except (ParamsError, FileNotFoundError) as exc:
            print(f"agebench feature-maps: error: {exc}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    if args.command in ("check", "baseline"):
        return _gate(args)
    if args.command == "new-method":
        from pathlib import Path

        from agebench.new_method import NewMethodError, add_method

        try:
            changed = add_method(Path(args.repo), args.name)
        except NewMethodError as exc:
            print(f"agebench new-method: error: {exc}", file=sys.stderr)
            return 2
        print(
            f"agebench new-method: wrote {', '.join(str(p) for p in changed)}; run `dvc repro` to train, "
            f"score and rank {args.name}"
        )
        return 0
    from agebench import cli_score
    from metrics.backbones import BackboneError

    try:
        if args.command == "fid":
            result = cli_score.cmd_fid(args.real_dir, args.fake_dir, args.json_out, args.batch_size)
            if not args.json_out:
                # Valid JSON even if a value is not finite (null, as in the --json file).
                finite = {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in result.items()}
                print(json.dumps(finite, indent=2, allow_nan=False))
        elif args.command == "age":
            cli_score.cmd_age(args.dir, args.csv_out)
        elif args.command == "verify":
            cli_score.cmd_verify(args.dir_a, args.dir_b, args.csv_out, args.threshold)
    # OSError covers missing paths and outputs that cannot be written (a folder, no permission).
    except (cli_score.FolderError, BackboneError, OSError) as exc:
        print(f"agebench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
