"""The `agebench` command: score folders of faces, and the benchmark's helper commands."""

from __future__ import annotations

import argparse
import json
import math
import sys

from agebench.help_format import HelpFormatter

#: One example per subcommand, shown under `agebench CMD --help` (and all of them under `agebench --help`).
EXAMPLES = {
    "fid": "agebench fid real_faces/ aged_faces/ --json fid.json",
    "age": "agebench age aged_faces/ --csv ages.csv",
    "verify": "agebench verify inputs/ aged_faces/ --judge sface --csv same.csv",
    "check": "agebench check --baseline baselines/cpu.json --metrics reports/metrics",
    "new-method": "agebench new-method my_method && dvc repro",
    "baseline": "agebench baseline update --baseline baselines/cpu.json --metrics reports/metrics",
    "export-inputs": "agebench export-inputs --out external/inputs",
    "score-outputs": "agebench score-outputs external/my_method/ --name my_method --json my_method.json",
    "age-photo": "agebench age-photo me.jpg --method cyclegan_keras --to old --out me_old.png",
    "feature-maps": "agebench feature-maps face.png --method cyclegan_agevec --to 60s --out maps/",
    "doctor": "agebench doctor --params params.yaml",
    "probes": "agebench probes --data data/prepared --out reports/probes",
    "publish": "agebench publish --workspace ../cpu-run --out results/cpu --load-log load.log",
    "merge-seeds": "agebench merge-seeds run_seed0/reports/metrics run_seed1/reports/metrics --out merged/metrics",
    "leaderboard": "agebench leaderboard results/cpu/metrics --out leaderboard.md",
}


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `agebench` and its subcommands."""
    p = argparse.ArgumentParser(
        prog="agebench",
        description=__doc__,
        formatter_class=HelpFormatter,
        epilog="examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES.values()) + "\n\n`agebench CMD --help` for more.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    fid = sub.add_parser("fid", help="FID/KID between two folders of images (TF-Inception, torch-fidelity compatible)")
    fid.add_argument("real_dir", help="folder of real images (PNG/JPEG, any size: resized to 299 for Inception)")
    fid.add_argument("fake_dir", help="folder of generated images")
    fid.add_argument("--json", dest="json_out", help="write {fid, kid_mean, kid_std, n_real, n_fake} here")
    fid.add_argument("--batch-size", type=_positive_int, default=64, help="Inception batch size")
    fid.add_argument("--params", default=None, help="read KID settings from this params.yaml (default: PROTOCOL's)")

    age = sub.add_parser("age", help="estimated age of every image in a folder")
    age.add_argument("dir", help="folder of face images (UTKFace-like crops)")
    age.add_argument("--csv", dest="csv_out", help="write file,age here (default: stdout)")

    ver = sub.add_parser(
        "verify",
        help="face verification of same-named files in two folders",
        description="Face verification of same-named files in two folders. CSV columns: file; similarity "
        "(--judge sface: cosine of SFace embeddings after YuNet alignment on a 50% black border) or distance "
        "(--judge dlib: Euclidean distance of dlib descriptors); same (true when similarity >= 0.363, or "
        "distance < 0.6). Empty score and same=false where no face was found in either image.",
    )
    ver.add_argument("dir_a", help="folder of faces (e.g. the inputs)")
    ver.add_argument("dir_b", help="folder of faces with the same file names (e.g. the translations)")
    ver.add_argument("--judge", choices=("sface", "dlib"), default="sface", help="sface (the judge) or dlib")
    ver.add_argument(
        "--csv", dest="csv_out", help="write file,similarity,same (sface) or file,distance,same (dlib) here"
    )
    ver.add_argument("--threshold", type=float, default=None, help="default: 0.363 (sface) or 0.6 (dlib)")

    chk = sub.add_parser(
        "check",
        help="regression gate: compare metrics with a baseline (PROTOCOL.md s.6)",
        description="Compare metrics with a baseline (PROTOCOL.md s.6). Exit status: 0 all metrics within "
        "tolerance; 1 a regression or a metric missing now; 2 bad input (a missing or malformed file, a "
        "non-numeric value, results of another protocol_version or profile than the baseline).",
    )
    chk.add_argument("--baseline", required=True, help="baseline JSON written by `agebench baseline update`")
    chk.add_argument("--metrics", default="reports/metrics", help="folder of <method>.json metrics files")
    chk.add_argument("--params", default="params.yaml", help="where `check:` (directions, tolerances) is read")
    chk.add_argument(
        "--probes",
        default=None,
        help="folder of the probes' metrics files (`agebench probes`), for a format-3 baseline",
    )

    new = sub.add_parser("new-method", help="add a method: methods/NAME.py, its params section and registration")
    new.add_argument("name", help="the method's name: lowercase letters, digits and _ (e.g. my_method)")
    new.add_argument("--repo", default=".", help="the agebench repository")

    base = sub.add_parser("baseline", help="manage the regression baseline")
    base_sub = base.add_subparsers(dest="action", required=True)
    upd = base_sub.add_parser(
        "update",
        help="write the current metrics as the new baseline (on purpose)",
        description="Replace the baseline file with the current metrics (this is the point of the command). "
        "Exit status: 0 written; 2 bad input, nothing written (malformed metrics, results of another protocol "
        "version than this agebench's or of mixed profiles, a baseline path that is a folder).",
    )
    upd.add_argument("--baseline", required=True, help="baseline JSON to (over)write")
    upd.add_argument("--metrics", default="reports/metrics", help="folder of <method>.json metrics files")
    upd.add_argument("--params", default="params.yaml", help="where `check:` (directions, tolerances) is read")
    upd.add_argument("--probes", default=None, help="folder of the probes' metrics files (`agebench probes`)")
    upd.add_argument(
        "--seed-runs",
        nargs="*",
        default=[],
        metavar="METRICS_DIR",
        help="metrics folders of the same methods trained with other seeds: the statistical gate's spread",
    )

    prb = sub.add_parser(
        "probes",
        help="score fixed transforms of the real test faces (the gate's exact probes)",
        description="Score fixed transforms of the prepared test faces (blur, brighten, another person's face, "
        "a blank image) with the pipeline's scorer; writes one metrics file per probe. No image is written "
        "outside a temporary folder. Exit status: 0 written; 2 bad input (no prepared data, bad params).",
    )
    prb.add_argument("--params", default="params.yaml", help="the run's params.yaml")
    prb.add_argument("--data", default="data/prepared", help="the prepare stage's folder")
    prb.add_argument("--out", default="reports/probes", help="folder for probe:<name>.json files")
    prb.add_argument("--cache", default=None, help="content-keyed scoring cache (default: as the evaluate stage)")

    mrg = sub.add_parser(
        "merge-seeds",
        help="merge the metrics files of runs with different training seeds (PROTOCOL.md s.4 v3)",
        description="Merge the metrics files of the same methods from separate runs (one training seed each, same "
        "code revision and profile) into files with S seeds: means over seeds, per-face means, seed_spread and "
        "two-level bootstrap intervals (seeds, then faces). real.json must be identical in every run and is copied. "
        "Exit status: 0 written; 2 runs that cannot be merged (another revision or profile, a seed twice).",
    )
    mrg.add_argument("run_dirs", nargs="+", metavar="RUN_METRICS_DIR", help="reports/metrics of each run")
    mrg.add_argument("--out", required=True, help="folder for the merged <method>.json files")

    # External rows (PROTOCOL.md s.6): the arguments live in agebench.external.
    from agebench.external import add_cli_arguments

    add_cli_arguments(
        sub.add_parser(
            "export-inputs", help="write the protocol's test inputs as PNG + manifest for a method run elsewhere"
        ),
        sub.add_parser("score-outputs", help="score a folder of outputs made elsewhere (an external row)"),
    )

    # Parsed by agebench.age_photo (see `agebench age-photo --help`); listed here for the overview.
    sub.add_parser("age-photo", help="age every face of a photo with trained methods", add_help=False)
    sub.add_parser("feature-maps", help="dump cyclegan_agevec's intermediate feature maps for a face", add_help=False)
    sub.add_parser(
        "doctor", help="pre-flight: check data, weights, disk and device for params.yaml in seconds", add_help=False
    )
    sub.add_parser("publish", help="copy a finished run's face-free results to results/<profile>", add_help=False)
    from agebench.report.command import add_parser as add_leaderboard  # argparse only: no pandas, no torch

    add_leaderboard(sub)
    for name, parser in sub.choices.items():  # defaults and an example in every subcommand's --help
        parser.formatter_class = HelpFormatter
        if name in EXAMPLES and parser.epilog is None:
            parser.epilog = f"example:\n  {EXAMPLES[name]}"
    upd.formatter_class, upd.epilog = HelpFormatter, f"example:\n  {EXAMPLES['baseline']}"
    return p


def _summary(out_file: str | None, line: str) -> None:
    """The command's one-line summary, also when the table or JSON went to a file. On stderr: stdout carries
    only the data (so `agebench age DIR > ages.csv` stays a clean CSV)."""
    print(f"{line}; wrote {out_file}" if out_file else line, file=sys.stderr)


def _gate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agebench import check
    from agebench.config import CheckConfig, ParamsError, read_params, section

    try:
        cfg = section(read_params(args.params), "check", CheckConfig)
        probes = Path(args.probes) if args.probes else None
        if args.command == "check":
            status, report = check.check(
                Path(args.baseline), Path(args.metrics), cfg, probes, check.run_fingerprint(Path(args.metrics))
            )
            print(report)
            return status
        seeds = tuple(Path(p) for p in args.seed_runs)
        n = check.update_baseline(Path(args.baseline), Path(args.metrics), cfg, seeds, probes)
        print(f"agebench baseline update: {n} values written to {args.baseline}")
        return 0
    except (check.GateInputError, ParamsError, OSError) as exc:
        print(f"agebench {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _probes(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agebench.common import write_json
    from agebench.config import ParamsError, load_params
    from agebench.probes import score_probes
    from agebench.scoring import scorer_for_params

    try:
        params = load_params(args.params)
        if not (Path(args.data) / "index.csv").is_file():
            raise FileNotFoundError(f"{args.data}/index.csv not found: run `dvc repro prepare` first")
        scorer = scorer_for_params(params, args.params, args.cache)
        docs = score_probes(params, Path(args.data), scorer)
    except (ParamsError, FileNotFoundError, OSError) as exc:
        print(f"agebench probes: error: {exc}", file=sys.stderr)
        return 2
    for name, doc in docs.items():
        write_json(Path(args.out) / f"{name.replace(':', '_')}.json", doc)
    _summary(args.out, f"agebench probes: {len(docs)} probes scored ({', '.join(docs)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `agebench` console script: `_main`, with Ctrl-C as one line and exit status 130."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("agebench: interrupted (Ctrl-C); outputs already in place are unchanged", file=sys.stderr)
        return 130


def _main(argv: list[str] | None = None) -> int:
    """The `agebench` command.

    Returns 0 on success and 2, after one `agebench CMD: error: ...` line on stderr, for unusable input
    (a missing or image-less folder, too few images, no common names, an unwritable output, missing
    weights). Bad arguments exit 2 through argparse.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["age-photo"]:
        from agebench.age_photo import cli

        return cli(argv[1:])
    if argv[:1] == ["publish"]:
        from agebench.publish import main as publish

        return publish(argv[1:])
    if argv[:1] == ["doctor"]:
        from agebench.doctor import main as doctor

        return doctor(argv[1:])
    if argv[:1] == ["feature-maps"]:
        from agebench.common import OutputPathError
        from agebench.config import ParamsError
        from agebench.feature_maps import main as feature_maps

        try:
            return feature_maps(argv[1:])
        except (ParamsError, FileNotFoundError, OutputPathError) as exc:
            print(f"agebench feature-maps: error: {exc}", file=sys.stderr)
            return 2
    args = build_parser().parse_args(argv)
    if args.command in ("check", "baseline"):
        return _gate(args)
    if args.command == "leaderboard":
        from agebench.report.command import run as leaderboard

        return leaderboard(args)
    if args.command == "probes":
        return _probes(args)
    if args.command == "merge-seeds":
        from agebench.seeds import SeedMergeError, merge_seed_dirs

        try:
            written = merge_seed_dirs(args.run_dirs, args.out)
        except (SeedMergeError, OSError, ValueError) as exc:
            print(f"agebench merge-seeds: error: {exc}", file=sys.stderr)
            return 2
        _summary(args.out, f"agebench merge-seeds: {len(written)} files from {len(args.run_dirs)} runs")
        return 0
    if args.command in ("export-inputs", "score-outputs"):
        from agebench.external import run_cli

        return run_cli(args.command, args)
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
    from agebench.config import ParamsError
    from metrics.backbones import BackboneError

    try:
        if args.command == "fid":
            cfg = None
            if args.params:
                from agebench.config import load_params

                cfg = load_params(args.params).evaluate
            result = cli_score.cmd_fid(args.real_dir, args.fake_dir, args.json_out, args.batch_size, cfg)
            if not args.json_out:
                # Valid JSON even if a value is not finite (null, as in the --json file).
                finite = {k: v if not isinstance(v, float) or math.isfinite(v) else None for k, v in result.items()}
                print(json.dumps(finite, indent=2, allow_nan=False))
            _summary(
                args.json_out,
                f"agebench fid: FID {result['fid']:.3f}, KID {result['kid_mean']:.5f} +- {result['kid_std']:.5f} "
                f"({result['n_real']} real, {result['n_fake']} generated images)",
            )
        elif args.command == "age":
            rows = cli_score.cmd_age(args.dir, args.csv_out)
            ages = [a for _, a in rows if math.isfinite(a)]
            mean = f", mean age {sum(ages) / len(ages):.1f}" if ages else ""
            _summary(args.csv_out, f"agebench age: {len(rows)} images, {len(rows) - len(ages)} without an age{mean}")
        elif args.command == "verify":
            rows = cli_score.cmd_verify(args.dir_a, args.dir_b, args.csv_out, args.threshold, args.judge)
            same = sum(r[2] for r in rows)
            failed = sum(not math.isfinite(r[1]) for r in rows)
            _summary(
                args.csv_out,
                f"agebench verify ({args.judge}): {len(rows)} pairs, {same} same person, {failed} without a face",
            )
    # OSError covers missing paths and outputs that cannot be written (a folder, no permission).
    except (cli_score.FolderError, BackboneError, ParamsError, OSError) as exc:
        print(f"agebench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
