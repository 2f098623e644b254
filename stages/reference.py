"""DVC stage `reference`: the `real` reference row of PROTOCOL.md s.5, computed by the same code.

Arguments and file writes only; the work is in `agebench.pipeline.reference`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from agebench.data.faces import load_faces, load_index
from agebench.infra.common import run_main, write_json, write_npz
from agebench.params.load import load_params
from agebench.pipeline.reference import real_row
from agebench.pipeline.scoring import result_context, scorer_for_params


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Compute the `real` reference row.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--out", default="reports/metrics/real.json")
    parser.add_argument(
        "--cache",
        default=None,
        help="content-keyed cache of real-face results (default: $AGEBENCH_CACHE or ~/.cache/agebench)",
    )
    parser.add_argument("--scores", default=None, help="data/scores/real.npz (per-face ages of real targets)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    scorer = scorer_for_params(params, args.params, args.cache)
    index = load_index(args.data)
    faces = load_faces(args.data, params.evaluate.resolution)
    per_face: dict[str, np.ndarray] = {}
    fg = params.evaluate.fgnet_dir
    fg_path = (Path(args.params).resolve().parent / fg) if fg else None
    doc = real_row(scorer, params, index, faces, fg_path, per_face)
    if "skipped" in doc["fgnet"]:
        print(f"reference: {doc['fgnet']['skipped']}")
    doc.update(result_context(params))
    write_json(args.out, doc)
    if args.scores:
        write_npz(args.scores, per_face)
    print(f"reference: real row -> {args.out}")
    return 0


if __name__ == "__main__":
    run_main(main)
