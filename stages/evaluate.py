"""DVC stage `evaluate`: score one method's generated outputs (PROTOCOL.md s.4) into a metrics JSON.

Arguments and file writes only; the work is in `agebench.pipeline.evaluate`.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from agebench.infra.common import run_main, write_json, write_npz
from agebench.params.load import load_params
from agebench.pipeline.evaluate import evaluate_method
from agebench.pipeline.scoring import scorer_for_params
from agebench.pipeline.tasks import read_outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score a method's outputs.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--method", required=True)
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--outputs", required=True, help="outputs/<method>")
    parser.add_argument("--out", required=True, help="reports/metrics/<method>.json")
    parser.add_argument("--scores", default=None, help="data/scores/<method>.npz (per-face ages, distances)")
    parser.add_argument("--runtime", default=None, help="reports/runtime/<method>.json (timings, hardware)")
    parser.add_argument(
        "--cache",
        default=None,
        help="content-keyed cache of real-face results (default: $AGEBENCH_CACHE or ~/.cache/agebench)",
    )
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    params = load_params(args.params)
    scorer = scorer_for_params(params, args.params, args.cache)
    per_face: dict[str, np.ndarray] = {}
    runtime: dict[str, Any] = {"method": args.method}
    outputs = read_outputs(Path(args.outputs))
    doc = evaluate_method(args.method, params, Path(args.data), outputs, scorer, per_face, runtime)
    write_json(args.out, doc)
    if args.scores:
        write_npz(args.scores, per_face)
    if args.runtime:
        write_json(args.runtime, {**runtime, "evaluate_seconds": round(time.perf_counter() - t0, 3)})
    a = doc["tasks"].get("aging", {})
    nan = float("nan")
    print(
        f"evaluate {args.method}: aging joint {a.get('joint', nan):.3f} age_score {a.get('age_score', nan):.3f} "
        f"id_rate {a.get('id_rate', nan):.3f} realism {a.get('realism', nan):.3f} fid {a.get('fid', nan):.2f}"
    )
    return 0


if __name__ == "__main__":
    run_main(main)
