"""`train` stage: train one registered method on the prepared train split.

Resumable: a checkpoint (`last.pt`, carrying config, step and every RNG state) is written every
`train.checkpoint_every` steps; rerunning after a kill continues from it and ends at the same step
count. A non-finite loss stops training with a clear message and keeps the last good checkpoint.
Named losses and sample grids are logged with dvclive (`dvc plots show`).

Under `torchrun --nproc_per_node N -m agebench.train ...` the same command trains data-parallel
(`agebench.distributed`): every process draws its own batches, gradients are averaged before each
optimiser step (an N-times larger effective batch, the same number of steps), and rank 0 alone logs,
checkpoints and writes; at the end the ranks' weights are compared and must be identical.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agebench import distributed
from agebench.aux_networks import load_aux
from agebench.common import atomic_path, hardware, provenance, write_json
from agebench.config import Params, section, to_dict
from agebench.data import build_train_data
from agebench.registry import METHODS
from methods.base import Method

#: Offset between the batch-sampler seeds of data-parallel processes.
RANK_SEED_STRIDE = 1_000_003


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite."""


def select_device(name: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool, threads: int) -> None:
    """Seed python, numpy and torch; pin threads and deterministic kernels for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads > 0:
        torch.set_num_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_method(name: str, params: Params, device: torch.device, need_aux: bool = True) -> Method:
    """Construct the registered method `name` from its params.yaml section."""
    cls = METHODS.get(name)
    config = section(params.raw, name, cls.config_cls)
    group_names = tuple(params.groups.schemes()[cls.scheme])
    aux = load_aux(cls.aux_networks, config, device) if need_aux else {}
    return cls(config, group_names, device, aux)


def fingerprint(name: str, params: Params, prepared: Path) -> str:
    """What a checkpoint must match to be resumed: method config, train params and data digest."""
    cls = METHODS.get(name)
    data_json = prepared / "data.json"
    blob = json.dumps(
        {
            "method": name,
            "config": to_dict(section(params.raw, name, cls.config_cls)),
            "train": to_dict(params.train),
            "groups": to_dict(params.groups),
            "data": data_json.read_text() if data_json.is_file() else "",
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def save_checkpoint(
    path: Path, method: Method, name: str, step: int, gen: torch.Generator, fp: str, extra: dict[str, Any]
) -> None:
    """Atomically write a resumable checkpoint with config, step and RNG states."""
    state = {
        "method": name,
        "config": to_dict(method.config),
        "step": step,
        "fingerprint": fp,
        "state": method.state_dict(),
        "rng": {
            "sampler": gen.get_state(),
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
        },
        "provenance": provenance(),
        **extra,
    }
    if torch.cuda.is_available():
        state["rng"]["cuda"] = torch.cuda.get_rng_state_all()
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def restore_rng(rng: dict[str, Any], gen: torch.Generator) -> None:
    gen.set_state(rng["sampler"])
    torch.set_rng_state(rng["torch"])
    np.random.set_state(rng["numpy"])
    random.setstate(rng["python"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def train(
    name: str, params: Params, prepared: Path, out: Path, live_dir: Path | None, progress: bool = True
) -> dict[str, Any]:
    """Train method `name`; returns the training summary written to train.json."""
    tc = params.train
    seed_everything(tc.seed, tc.deterministic, tc.threads)
    device = select_device(tc.device)
    world = distributed.init_from_env(device.type)
    if world.size > 1 and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    progress = progress and world.is_main
    method = build_method(name, params, device)
    if world.size > 1:
        distributed.broadcast_state(method.modules().values())
        distributed.average_gradients(method.modules().values(), world.size)
    data = build_train_data(prepared, method.scheme, params.groups, method.train_resolutions(), device)
    total = method.num_steps(data)
    epoch_ends = {end: i for i, end in enumerate(itertools.accumulate(method.epoch_lengths(data)))}
    fp = fingerprint(name, params, prepared)
    # Each process its own batches; rank 0 draws exactly what a single-process run draws.
    gen = torch.Generator(device="cpu").manual_seed(tc.seed + RANK_SEED_STRIDE * world.rank)
    out.mkdir(parents=True, exist_ok=True)
    last = out / "last.pt"
    start, elapsed = 0, 0.0
    if last.is_file():
        ckpt = torch.load(last, map_location=device, weights_only=False)
        if ckpt.get("fingerprint") == fp and ckpt["step"] <= total:
            method.load_state_dict(ckpt["state"])
            restore_rng(ckpt["rng"], gen)
            start, elapsed = ckpt["step"], ckpt.get("elapsed_s", 0.0)
            if world.size > 1:  # the checkpoint holds rank 0's sampler state: give the others their own
                gen.manual_seed(tc.seed + RANK_SEED_STRIDE * world.rank + start)
            print(f"train {name}: resuming from step {start}/{total} ({last})")
        else:
            print(f"train {name}: {last} belongs to other params or data; starting afresh")

    live = _open_live(live_dir, resume=start > 0) if world.is_main else None
    t0 = time.perf_counter() - elapsed
    images_seen = 0
    bar = tqdm(total=total, initial=start, desc=f"train {name}", unit="step", disable=not progress)
    step = start
    for step in range(start, total):
        batch = method.sample_batch(data, step, gen)
        losses = method.train_step(batch, step)
        bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
        if world.size > 1 and distributed.any_rank(bool(bad), device) and not bad:
            bad = {"another rank": float("nan")}  # all ranks stop together, none waits in a collective
        if bad:
            raise NonFiniteLossError(
                f"train {name}: non-finite loss at step {step}: {bad}; the last good checkpoint "
                f"({last if last.is_file() else 'none yet'}) is kept. Lower the learning rate or check the data."
            )
        images_seen += _batch_size(batch) * world.size
        done = step + 1
        if done in epoch_ends:
            method.end_of_epoch(epoch_ends[done])
        if live is not None and (done % tc.log_every == 0 or done == total):
            live.step = done
            for k, v in losses.items():
                live.log_metric(f"train/{k}", v)
        if live is not None and tc.sample_every and done % tc.sample_every == 0:
            live.step = done
            _log_samples(live, method, batch, done)
        if world.is_main and done % tc.checkpoint_every == 0 and done < total:
            save_checkpoint(last, method, name, done, gen, fp, {"elapsed_s": time.perf_counter() - t0})
        rate = images_seen / max(time.perf_counter() - t0 - elapsed, 1e-9)
        bar.set_postfix(
            {**{k.removeprefix("loss_"): f"{v:.3g}" for k, v in losses.items()}, "img/s": f"{rate:.1f}"}, refresh=False
        )
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - t0
    if world.size > 1:
        sums = distributed.state_checksums(method.modules().values(), device)
        if not bool((sums == sums[0]).all()):
            raise RuntimeError(f"train {name}: the {world.size} processes ended with different weights {sums.tolist()}")
    summary = {
        "method": name,
        "steps": total,
        "train_seconds": round(seconds, 3),
        "hardware": hardware(),
        "processes": world.size,
        "device": str(device),
        "parameter_count": method.parameter_count(),
        "resolution": method.resolution,
        "train_faces": int(next(iter(data.images.values())).shape[0]),
        "config": to_dict(method.config),
        **provenance(),
    }
    if not world.is_main:
        return summary
    final = {
        "method": name,
        "config": to_dict(method.config),
        "step": total,
        "fingerprint": fp,
        "state": method.state_dict(),
        "summary": summary,
    }
    with atomic_path(out / "model.pt") as tmp:
        torch.save(final, tmp)
    write_json(out / "train.json", summary)
    if last.is_file():
        last.unlink()
    if live is not None:
        live.end()
        # DVC tracks this folder as plots; a method with nothing to train still gets an (empty) one.
        (live_dir / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
    return summary


def _batch_size(batch: dict[str, torch.Tensor]) -> int:
    return sum(int(v.shape[0]) for v in batch.values() if v.dim() == 4)


def _open_live(live_dir: Path | None, resume: bool):
    if live_dir is None:
        return None
    from dvclive import Live

    return Live(dir=str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=None, report=None)


def _log_samples(live, method: Method, batch: dict[str, torch.Tensor], step: int) -> None:
    from torchvision.utils import make_grid

    imgs = method.samples(batch)
    if not imgs:
        return
    rows = [v[:4].detach().float().cpu() for v in imgs.values()]
    grid = make_grid(torch.cat(rows), nrow=min(4, rows[0].shape[0]), normalize=True, value_range=(-1, 1))
    arr = (grid.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    live.log_image(f"samples/step_{step:07d}.png", arr)
