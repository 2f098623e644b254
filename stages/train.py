"""DVC stage `train`: train one registered method on the prepared train split.

Arguments and file writes only; the work is in `agebench.pipeline.train`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from agebench.infra.common import run_main
from agebench.params.load import load_params
from agebench.pipeline.train import train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train one method on the prepared UTKFace train split.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--method", required=True)
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--out", required=True, help="checkpoint folder (models/<method>)")
    parser.add_argument("--live", default=None, help="dvclive folder (dvclive/<method>)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if args.method not in params.methods:
        print(f"note: {args.method} is not in params.yaml methods: {list(params.methods)}")
    summary = train(args.method, params, Path(args.data), Path(args.out), Path(args.live) if args.live else None)
    if int(os.environ.get("RANK", "0")) == 0:
        procs = f" x {summary['processes']} processes" if summary["processes"] > 1 else ""
        print(
            f"train {args.method}: {summary['steps']} steps in {summary['train_seconds']:.1f} s "
            f"on {summary['hardware']}{procs}"
        )
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    run_main(main)
