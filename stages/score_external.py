"""DVC stage `score_external`: score one `external:` entry's folder of outputs (PROTOCOL.md s.6, external rows).

Arguments and file writes only; the work is in `agebench.external.score`. The folder is the stage's dep, so new
outputs rescore; the metrics file is written only when scoring succeeded (never half-written).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from agebench.external.score import score_folder
from agebench.external.table import markdown_table, problem_lines
from agebench.external.tasks import ExternalError
from agebench.infra.common import run_main, write_json, write_npz
from agebench.params.load import load_params
from agebench.params.reading import ParamsError
from agebench.pipeline.scoring import scorer_for_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score an external method's folder of outputs.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--name", required=True, help="an entry of `external:` in params.yaml")
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--out", required=True, help="reports/metrics/<name>.json")
    parser.add_argument("--outputs", default=None, help="outputs/<name>: the arrays, in the generate stage's layout")
    parser.add_argument("--scores", default=None, help="data/scores/<name>.npz (per-face ages, distances)")
    parser.add_argument("--runtime", default=None, help="reports/runtime/<name>.json (timings)")
    parser.add_argument("--cache", default=None, help="content-keyed cache (default: $AGEBENCH_CACHE or ~/.cache)")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    params = load_params(args.params)
    entries = {e.name: e for e in params.external}
    if args.name not in entries:
        raise ParamsError(f"{args.params}: external: no entry named {args.name!r} (entries: {', '.join(entries)})")
    entry = entries[args.name]
    folder = Path(args.params).resolve().parent / entry.folder
    scorer = scorer_for_params(params, args.params, args.cache)
    per_face: dict[str, np.ndarray] = {}
    try:
        doc = score_folder(
            folder,
            entry.name,
            entry.source,
            params,
            Path(args.data),
            scorer,
            per_face,
            Path(args.outputs) if args.outputs else None,
        )
    except ExternalError as exc:
        raise ParamsError(f"external {entry.name}: {exc}") from None
    doc["external"]["folder"] = entry.folder  # as declared: the file must not depend on where the checkout is
    write_json(args.out, doc)
    if args.scores:
        write_npz(args.scores, per_face)
    if args.runtime:
        write_json(args.runtime, {"method": entry.name, "evaluate_seconds": round(time.perf_counter() - t0, 3)})
    print(f"score_external {entry.name} ({entry.source}):")
    print(markdown_table(doc))
    for line in problem_lines(doc):
        print(f"  problem: {line}")
    return 0


if __name__ == "__main__":
    run_main(main)
