"""DVC stage `generate`: translate the held-out test faces with a trained method, losslessly.

Arguments and file writes only; the work is in `agebench.generate`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from agebench.common import atomic_path, run_main, write_json
from agebench.config import load_params
from agebench.data import faces_nchw, load_faces, load_index
from agebench.generate import load_trained, progression, task_list, to_eval_resolution, translate_all
from agebench.train import select_device
from methods.base import float_to_uint8, uint8_to_float


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
    method = load_trained(args.method, params, Path(args.model), device)
    index = load_index(args.data)
    faces = load_faces(args.data, method.resolution)
    test = index[index["split"] == "test"]
    tasks = task_list(method, params)
    bs, size = params.generate.batch_size, params.evaluate.resolution
    with atomic_path(Path(args.out)) as tmp:
        tmp.mkdir(parents=True)
        for task_id, t in tasks.items():
            rows = test.loc[test[t["scheme"]] == t["source"], "row"].to_numpy()
            inputs = faces_nchw(faces, rows)
            fake, cycle = translate_all(
                method,
                inputs,
                t["method_source"],
                t["method_target"],
                bs,
                size,
                desc=f"generate {args.method} {task_id}",
            )
            np.savez(tmp / f"{task_id}.npz", rows=rows, fake=fake, cycle=cycle)
            t["n"] = len(rows)
        if hasattr(method, "reconstruct"):  # Age-cGAN: the paper's reconstruction table
            t = tasks["aging"]
            rows = test.loc[test[t["scheme"]] == t["source"], "row"].to_numpy()
            recon = {}
            for mode in ("initial", "pixel", "ip"):
                outs = []
                for s in tqdm(range(0, len(rows), bs), desc=f"reconstruct {mode}", unit="batch"):
                    x = uint8_to_float(faces_nchw(faces, rows[s : s + bs]).to(device))
                    outs.append(
                        to_eval_resolution(float_to_uint8(method.reconstruct(x, t["method_source"], mode)), size)
                    )
                recon[mode] = np.concatenate(outs) if outs else np.zeros((0, size, size, 3), np.uint8)
            np.savez(tmp / "reconstruction.npz", rows=rows, **recon)
        strips = progression(method, faces, test, size, params.generate.progression_faces)
        if strips is not None:
            np.savez(tmp / "progression.npz", **strips)
        train_summary = torch.load(Path(args.model) / "model.pt", map_location="cpu", weights_only=False).get(
            "summary", {}
        )
        write_json(
            tmp / "tasks.json",
            {
                "method": args.method,
                "resolution": method.resolution,
                "eval_resolution": size,
                "train": train_summary,
                "tasks": tasks,
            },
        )
    counts = ", ".join(f"{k} ({v['n']})" for k, v in tasks.items())
    print(f"generate {args.method}: {counts}")
    return 0


if __name__ == "__main__":
    run_main(main)
