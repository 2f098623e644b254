"""DVC stage `generate`: translate the held-out test faces with a trained method, losslessly.

Arguments and file writes only; the work is in `agebench.pipeline.generate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from agebench.data.faces import faces_nchw, load_faces, load_index
from agebench.infra.common import atomic_path, run_main, write_json
from agebench.infra.devices import select_device
from agebench.params.load import load_params
from agebench.pipeline.generate import extra_tables, load_trained_checkpoint, progression, task_list, translate_all


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Translate the test faces with a trained method.")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--method", required=True)
    parser.add_argument("--data", default="data/prepared")
    parser.add_argument("--model", required=True, help="models/<method>")
    parser.add_argument("--out", required=True, help="outputs/<method>")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    torch.manual_seed(params.train.seed)
    device = select_device(params.train.device)
    method, ckpt = load_trained_checkpoint(args.method, params, Path(args.model), device)
    index = load_index(args.data)
    faces = load_faces(args.data, method.resolution)
    test = index[index["split"] == "test"]
    tasks = task_list(method, params.groups, params.tasks, params.generate.extra_tasks)
    bs, size = params.generate.batch_size, params.evaluate.resolution
    with atomic_path(Path(args.out), kind="dir") as tmp:
        tmp.mkdir(parents=True)
        counts: dict[str, int] = {}
        for task_id, t in tasks.items():
            rows = t.test_rows(index)
            inputs = faces_nchw(faces, rows)
            fake, cycle = translate_all(
                method,
                inputs,
                t.method_source,
                t.method_target,
                bs,
                size,
                desc=f"generate {args.method} {task_id}",
            )
            np.savez(tmp / f"{task_id}.npz", rows=rows, fake=fake, cycle=cycle)
            counts[task_id] = len(rows)
        t = tasks["aging"]  # extra tables (e.g. Age-cGAN's reconstructions) use the aging task's inputs
        for table, arrays in extra_tables(method, faces, t.test_rows(index), t.method_source, bs, size).items():
            np.savez(tmp / f"{table}.npz", **arrays)
        strips = progression(method, faces, test, size, params.generate.progression_faces)
        if strips is not None:
            np.savez(tmp / "progression.npz", **strips)
        write_json(
            tmp / "tasks.json",
            {
                "method": args.method,
                "resolution": method.resolution,
                "eval_resolution": size,
                "train": ckpt.get("summary", {}),
                # Scoring networks the method trains/translates with: evaluate copies this into the
                # metrics JSON and the report flags what those networks judged (PROTOCOL.md s.4).
                "uses_scoring_networks": list(method.uses_scoring_networks),
                "tasks": {task_id: t.record(counts[task_id]) for task_id, t in tasks.items()},
            },
        )
    print(f"generate {args.method}: " + ", ".join(f"{k} ({n})" for k, n in counts.items()))
    return 0


if __name__ == "__main__":
    run_main(main)
