"""`agebench score-outputs FOLDER --name NAME`: score a folder of outputs made elsewhere (an external row)."""

from __future__ import annotations

import argparse
from pathlib import Path

from agebench.commands._help_format import add_run_options, command_parser

EXAMPLE = "agebench score-outputs external/my_method/ --name my_method --json my_method.json"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(sub, "score-outputs", "score a folder of outputs made elsewhere (an external row)", [EXAMPLE])
    p.add_argument("folder", help="FOLDER/<task>/<id>.png (and optionally FOLDER/<task>_cycle/<id>.png)")
    p.add_argument("--name", required=True, help="the row's name (letters, digits, _ and -)")
    p.add_argument("--source", default="", help="free text: paper, commit, weights")
    p.add_argument("--json", dest="json_out", default=None, help="write the metrics file here")
    p.add_argument("--scores", default=None, help="write per-face ages and distances (.npz) here")
    p.add_argument("--manifest", default=None, help="manifest.json to check (default: FOLDER/manifest.json)")
    add_run_options(p, "the params file (data, groups, tasks, evaluate)")
    return p


def run(args: argparse.Namespace) -> int:
    """Check the arguments and the folder's layout in seconds, then score; the table on stdout."""
    import numpy as np
    from tqdm import tqdm

    from agebench.external.score import ExternalError, check_layout, check_name, reserved_names, score_folder
    from agebench.external.table import markdown_table, problem_lines
    from agebench.infra.common import check_output_path, write_json, write_npz
    from agebench.params.load import load_params
    from agebench.pipeline.scoring import scorer_for_params

    params = load_params(args.params)
    name = check_name(args.name)
    if name in reserved_names():
        raise ExternalError(f"--name {name!r} is a built-in row; choose another name for an external row")
    # Everything that can be wrong with the arguments is found now, in seconds, not after the scoring.
    for out in (args.json_out, args.scores):
        if out:
            check_output_path(out, "file", inputs=[args.folder])
    check_layout(Path(args.folder), params.tasks, Path(args.data))
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
    # The fixed costs (networks, the real faces' features) are phases of their own.
    phases = tqdm(total=2, desc="score-outputs", unit="phase", disable=None)
    phases.set_postfix_str("loading the scoring networks")
    scorer = scorer_for_params(params, args.params, args.cache)
    phases.update()
    phases.set_postfix_str("reading and scoring the outputs")
    per_face: dict[str, np.ndarray] = {}
    manifest_path = Path(args.manifest) if args.manifest else None
    doc = score_folder(
        Path(args.folder), name, args.source, params, Path(args.data), scorer, per_face, None, manifest_path
    )
    phases.update()
    phases.close()
    if args.json_out:
        write_json(args.json_out, doc)
    if args.scores:
        write_npz(args.scores, per_face)
    print(markdown_table(doc))
    for line in problem_lines(doc):
        print(f"problem: {line}")
    if args.json_out:
        print(f"metrics: {args.json_out}")
    return 0
