"""`agebench curves`: learning curves of trained methods on the validation split (never the test faces)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agebench.commands._help_format import add_run_options, command_parser, positive_int, summary

EXAMPLE = "agebench curves --method cyclegan_keras --out reports/curves"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(
        sub,
        "curves",
        "learning curves of trained methods on the validation split",
        [EXAMPLE, "agebench curves --figure-only --out reports/curves"],
        "Translate the validation faces (train.validation) of both common tasks with every training snapshot "
        "(train.snapshots) of each method and score gap_closure, age_score, id_rate, realism, joint, FID and the "
        "share of outputs without a face, with the untouched input and the real faces' ceilings beside them. "
        "Writes <out>/<method>.json per method, and <out>/learning_curves.png (face-free) and "
        "learning_curves.md (the numbers) over every JSON there. "
        "Exit status: 0 written; 2 bad input (no snapshots, no validation split, bad params).",
    )
    add_run_options(p, "the run's params.yaml (train.validation, tasks, evaluate)")
    p.add_argument("--method", action="append", default=[], help="a method to score (repeatable)")
    p.add_argument("--models", default="models", help="folder of models/<method>/snapshots")
    p.add_argument("--out", default="reports/curves", help="folder for <method>.json and learning_curves.png")
    p.add_argument("--limit", type=positive_int, default=200, help="validation faces per group (stable hash pick)")
    p.add_argument(
        "--reference-limit",
        type=int,
        default=2000,
        help="train faces per target group kept as the realism manifold and FID reference (0: all)",
    )
    p.add_argument("--last", type=int, default=0, help="score only the last N snapshots (0: all)")
    p.add_argument("--figure-only", action="store_true", help="only redraw the figure from the JSONs in --out")
    return p


def run(args: argparse.Namespace) -> int:
    """Score each --method's snapshots, write its JSON at once (a long run keeps what it finished), then redraw."""
    from agebench.infra.common import atomic_path, read_json, write_json
    from agebench.report.curves_figure import curves_markdown, curves_png

    out = Path(args.out)
    if args.method and not args.figure_only:
        from agebench.infra.devices import select_device
        from agebench.params.load import load_params
        from agebench.pipeline.curves import learning_curve
        from agebench.pipeline.scoring import scorer_for_params

        params = load_params(args.params)
        if not (Path(args.data) / "index.csv").is_file():
            raise FileNotFoundError(f"{args.data}/index.csv not found: run `dvc repro prepare` first")
        scorer = scorer_for_params(params, args.params, args.cache)
        device = select_device(params.train.device)
        for name in args.method:
            doc = learning_curve(
                name,
                params,
                Path(args.data),
                Path(args.models) / name,
                scorer,
                args.limit,
                device,
                args.reference_limit,
                args.last,
            )
            write_json(out / f"{name}.json", doc)
    docs = [read_json(p) for p in sorted(out.glob("*.json"))]
    if not docs:
        raise FileNotFoundError(f"{out}: no learning-curve JSONs; run `agebench curves --method NAME` first")
    for file, blob in (
        ("learning_curves.png", curves_png(docs)),
        ("learning_curves.md", curves_markdown(docs).encode()),
    ):
        with atomic_path(out / file) as tmp:
            tmp.write_bytes(blob)
    summary(str(out), f"agebench curves: {len(docs)} methods drawn in {out / 'learning_curves.png'}")
    return 0
