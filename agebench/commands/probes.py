"""`agebench probes`: score fixed transforms of the real test faces (the gate's exact probes)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agebench.commands._help_format import add_run_options, command_parser, summary

EXAMPLE = "agebench probes --data data/prepared --out reports/probes"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(
        sub,
        "probes",
        "score fixed transforms of the real test faces (the gate's exact probes)",
        [EXAMPLE],
        "Score fixed transforms of the prepared test faces (blur, brighten, another person's face, "
        "a blank image) with the pipeline's scorer; writes one metrics file per probe. No image is written "
        "(the transforms stay in memory). Exit status: 0 written; 2 bad input (no prepared data, bad params).",
    )
    add_run_options(p, "the run's params.yaml")
    p.add_argument("--out", default="reports/probes", help="folder for probe:<name>.json files")
    return p


def run(args: argparse.Namespace) -> int:
    """Score every probe, then write one `<probe>.json` each (nothing is written on an error)."""
    from agebench.infra.common import write_json
    from agebench.params.load import load_params
    from agebench.pipeline.probes import score_probes
    from agebench.pipeline.scoring import scorer_for_params

    params = load_params(args.params)
    if not (Path(args.data) / "index.csv").is_file():
        raise FileNotFoundError(f"{args.data}/index.csv not found: run `dvc repro prepare` first")
    scorer = scorer_for_params(params, args.params, args.cache)
    docs = score_probes(params, Path(args.data), scorer)
    for name, doc in docs.items():
        write_json(Path(args.out) / f"{name.replace(':', '_')}.json", doc)
    summary(args.out, f"agebench probes: {len(docs)} probes scored ({', '.join(docs)})")
    return 0
