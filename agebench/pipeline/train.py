"""`train` stage: train one registered method on the prepared train split.

Resumable: a checkpoint (`last.pt`, carrying config, step and every RNG state) is written every
`train.checkpoint_every` steps; rerunning after a kill continues from it and ends at the same step
count. A non-finite loss stops training with a clear message and keeps the last good checkpoint.
Named losses and sample grids are logged with dvclive (`dvc plots show`).

Checkpoints hold only tensors and plain Python values (dict, list, str, int, float, bool, None) and
are always read with `torch.load(..., weights_only=True)`: a file that would run code when unpickled
is refused, never executed. An unreadable or refused `last.pt` is moved aside (`last.pt.bad`) with
one line saying so, and training starts afresh.

Under `torchrun --nproc_per_node N -m stages.train ...` the same command trains data-parallel
(`agebench.infra.distributed`): every process draws its own batches, gradients are averaged before each
optimiser step (an N-times larger effective batch, the same number of steps), and rank 0 alone logs,
checkpoints and writes; at the end the ranks' weights are compared and must be identical.
"""

from __future__ import annotations

import dataclasses
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

from agebench.data.faces import build_train_data
from agebench.infra import distributed
from agebench.infra.aux_networks import load_aux
from agebench.infra.common import NonFiniteLossError, atomic_path, hardware, provenance, write_json
from agebench.infra.devices import select_device
from agebench.infra.errors import UserError
from agebench.infra.fingerprint import machine_fingerprint
from agebench.infra.registry import METHODS
from agebench.infra.speed import configure_threads, prepare_for_speed
from agebench.params.reading import ParamsError, build, section, to_dict
from agebench.params.sections import Params
from methods.base import Method, TrainData

#: Offset between the batch-sampler seeds of data-parallel processes.
RANK_SEED_STRIDE = 1_000_003
#: Layout of the checkpoint dict (`checkpoint_dict`); bumped when its keys change meaning.
CHECKPOINT_FORMAT = 2


class CheckpointError(UserError, FileNotFoundError):
    """A checkpoint that cannot be used: unreadable, refused by the safe loader, or made by other code.

    A `FileNotFoundError` on purpose: "no usable model here" is handled wherever a missing model is
    (one line, exit status 2), and the fix is the same: train again.
    """


def seed_everything(seed: int, deterministic: bool, threads: int) -> None:
    """Seed python, numpy and torch; pin threads and deterministic kernels for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    configure_threads(threads)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def build_method(
    name: str,
    params: Params,
    device: torch.device,
    need_aux: bool = True,
    config: Any = None,
    group_names: tuple[str, ...] | None = None,
) -> Method:
    """Construct the registered method `name`.

    `config` (the method's config dataclass) defaults to its params.yaml section and `group_names` to
    its scheme's groups in params; aux networks are always located through params (they are files on
    this machine, not part of a trained model).
    """
    cls = METHODS.get(name)
    own = section(params.raw, name, cls.config_cls)
    config = own if config is None else config
    groups = tuple(params.groups.schemes()[cls.scheme]) if group_names is None else tuple(group_names)
    aux = load_aux(cls.aux_networks, own, device) if need_aux else {}
    return cls(config, groups, device, aux)


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


# ---- checkpoints -------------------------------------------------------------------------------


def checkpoint_dict(method: Method, name: str, step: int, fp: str, **extra: Any) -> dict[str, Any]:
    """The one checkpoint layout (`last.pt` adds `rng`/`elapsed_s`, `model.pt` adds `summary`).

    Only tensors and plain values, so `torch.load(weights_only=True)` reads it back. `config` is the
    method's config as a plain dict and `group_names` its groups: `load_trained` rebuilds the method
    from them, whatever params.yaml says today. Tensors in `state` alias live ones: save at once.
    """
    meta = {
        "format": CHECKPOINT_FORMAT,
        "method": name,
        "config": to_dict(method.config),
        "group_names": list(method.group_names),
        "step": step,
        "fingerprint": fp,
        "provenance": provenance(),
        **extra,
    }
    return {**plain(meta), "state": method.state_dict()}


def plain(obj: Any) -> Any:
    """`obj` with every str/int/float subclass (e.g. torch's TorchVersion) as the builtin type and tuples
    as lists, tensors kept: what the weights-only unpickler accepts."""
    if isinstance(obj, torch.Tensor) or obj is None:
        return obj
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [plain(v) for v in obj]
    for kind in (bool, int, float, str):
        if isinstance(obj, kind):
            return kind(obj)
    raise TypeError(f"checkpoint: {type(obj).__name__} is not a plain value: {obj!r}")


def rng_state(gen: torch.Generator) -> dict[str, Any]:
    """Every RNG the loop draws from, as tensors and ints (numpy's and python's states converted)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "sampler": gen.get_state(),
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(rng: dict[str, Any], gen: torch.Generator) -> None:
    """Restore what `rng_state` returned."""
    gen.set_state(rng["sampler"].cpu())
    torch.set_rng_state(rng["torch"].cpu())
    n = rng["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    p = rng["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["state"].tolist()), p["gauss"]))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically write a checkpoint dict (from `checkpoint_dict`)."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (`weights_only=True`: tensors and plain values only, no code runs).

    Raises CheckpointError with one line: refused (the file holds Python objects a pickle would build,
    e.g. a crafted file), or unreadable (truncated, not a torch file).
    """
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, ... by cause
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        if "weights only load failed" in str(exc).lower():
            raise CheckpointError(
                f"{path}: refused: it holds Python objects that unpickling would run, not just weights (a crafted "
                f"file, or a checkpoint of an older agebench); agebench never loads those: delete it and retrain"
            ) from None
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or "state" not in ckpt:
        raise CheckpointError(f"{path}: not an agebench checkpoint (no 'state' entry); delete it and retrain")
    return ckpt


def method_config(name: str, ckpt: dict[str, Any], where: Path) -> Any:
    """The method config dataclass stored in a checkpoint (one line when today's code cannot take it)."""
    cls = METHODS.get(name)
    if ckpt.get("method") != name:
        raise CheckpointError(f"{where}: holds method {ckpt.get('method')!r}, not {name!r}")
    try:
        return build(cls.config_cls, ckpt["config"], f"{where}: config")
    except (ParamsError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"{exc} - {name}'s code changed since this model was trained; retrain it (dvc repro train@{name})"
        ) from None


# ---- the loop ----------------------------------------------------------------------------------


@dataclasses.dataclass
class _Run:
    """What the loop's small functions share."""

    name: str
    method: Method
    data: TrainData
    total: int
    epoch_ends: dict[int, int]
    fp: str
    gen: torch.Generator
    last: Path
    world: distributed.World
    device: torch.device
    seed: int
    snapshot_steps: frozenset[int] = frozenset()


def _setup(name: str, params: Params, prepared: Path, out: Path) -> _Run:
    """Seed, pick the device, build the method and its data; refuse a schedule of 0 steps."""
    tc = params.train
    seed_everything(tc.seed, tc.deterministic, tc.threads)
    device = select_device(tc.device)
    world = distributed.init_from_env(device.type)
    if world.size > 1 and device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
    method = prepare_for_speed(build_method(name, params, device), tc.channels_last, tc.bf16, tc.compile)
    if world.size > 1:
        distributed.broadcast_state(method.modules().values())
        distributed.average_gradients(method.modules().values(), world.size)
    data = build_train_data(
        prepared, method.scheme, params.groups, method.train_resolutions(), device, validation=tc.validation
    )
    total = method.num_steps(data)
    if total < 1 and method.parameter_count() > 0:
        faces = int(next(iter(data.images.values())).shape[0])
        raise ParamsError(
            f"{params.raw.get('_file', 'params.yaml')}: {name}: the schedule gives {total} training steps on "
            f"{faces} training faces; raise its epochs or max_steps, or lower its batch size below the smallest "
            f"group's size (an untrained model is never written)"
        )
    epoch_ends = {end: i for i, end in enumerate(itertools.accumulate(method.epoch_lengths(data)))}
    # Each process its own batches; rank 0 draws exactly what a single-process run draws.
    gen = torch.Generator(device="cpu").manual_seed(tc.seed + RANK_SEED_STRIDE * world.rank)
    out.mkdir(parents=True, exist_ok=True)
    fp = fingerprint(name, params, prepared)
    snaps = snapshot_steps(total, tc.snapshots)
    return _Run(name, method, data, total, epoch_ends, fp, gen, out / "last.pt", world, device, tc.seed, snaps)


def snapshot_steps(total: int, n: int) -> frozenset[int]:
    """The `n` evenly spaced steps (1..total, the last one included) after which a snapshot is written."""
    if n <= 0 or total <= 0:
        return frozenset()
    return frozenset(max(1, round(total * k / n)) for k in range(1, n + 1))


def _snapshot(run: _Run, out: Path, done: int, seconds: float, cpu_seconds: float) -> None:
    """`snapshots/step_<done>.pt` (rank 0): the model after `done` steps with the wall and CPU time spent so far
    (CPU time of this process, all its threads: the core-minutes the learning curves are plotted against)."""
    if not (run.world.is_main and done in run.snapshot_steps):
        return
    timing = {"step": done, "train_seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3)}
    save_checkpoint(
        out / "snapshots" / f"step_{done:07d}.pt",
        checkpoint_dict(run.method, run.name, done, run.fp, summary=timing),
    )


def _resume(run: _Run) -> tuple[int, float, float]:
    """(start step, elapsed seconds, CPU seconds) from `last.pt` when it matches these params and data, else
    zeros."""
    last, name = run.last, run.name
    if not last.is_file():
        return 0, 0.0, 0.0
    try:
        ckpt = load_checkpoint(last, run.device)
    except CheckpointError as exc:
        if run.world.is_main:
            bad = last.with_name(last.name + ".bad")
            os.replace(last, bad)
            print(f"train {name}: ignoring {exc}; moved it to {bad} and starting afresh")
        return 0, 0.0, 0.0
    if ckpt.get("fingerprint") != run.fp or not 0 < ckpt.get("step", -1) <= run.total:
        print(f"train {name}: {last} belongs to other params or data; starting afresh")
        return 0, 0.0, 0.0
    try:
        run.method.load_state_dict(ckpt["state"])
        restore_rng(ckpt["rng"], run.gen)
    except (KeyError, ValueError, RuntimeError, TypeError) as exc:
        # The method may be half-loaded now: stop (a rerun starts afresh) rather than train from it.
        bad = last.with_name(last.name + ".bad")
        if run.world.is_main:
            os.replace(last, bad)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise CheckpointError(
            f"{last}: does not fit {name} as this code builds it ({first}); moved it to {bad}: run again to "
            f"train from scratch"
        ) from None
    start = int(ckpt["step"])
    if run.world.size > 1:  # the checkpoint holds rank 0's sampler state: give the others their own
        run.gen.manual_seed(run.seed + RANK_SEED_STRIDE * run.world.rank + start)
    print(f"train {name}: resuming from step {start}/{run.total} ({last})")
    return start, float(ckpt.get("elapsed_s", 0.0)), float(ckpt.get("cpu_s", 0.0))


def _one_step(run: _Run, step: int) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Draw the batch for `step`, train on it, stop every rank on a non-finite loss."""
    batch = run.method.sample_batch(run.data, step, run.gen)
    losses = run.method.train_step(batch, step)
    bad = {k: v for k, v in losses.items() if not math.isfinite(v)}
    if run.world.size > 1 and distributed.any_rank(bool(bad), run.device) and not bad:
        bad = {"another rank": float("nan")}  # all ranks stop together, none waits in a collective
    if bad:
        kept = run.last if run.last.is_file() else "none yet"
        raise NonFiniteLossError(
            f"train {run.name}: non-finite loss at step {step}: {bad}; the last good checkpoint ({kept}) is kept. "
            "Lower the learning rate or check the data."
        )
    if step + 1 in run.epoch_ends:
        run.method.end_of_epoch(run.epoch_ends[step + 1])
    return batch, losses


def _log(live: Any, run: _Run, batch: dict[str, torch.Tensor], losses: dict[str, float], done: int, tc: Any) -> None:
    """Named losses every `log_every` steps (and at the end), sample grids every `sample_every`."""
    if live is None:
        return
    if done % tc.log_every == 0 or done == run.total:
        live.step = done
        for k, v in losses.items():
            live.log_metric(f"train/{k}", v)
    if tc.sample_every and done % tc.sample_every == 0:
        live.step = done
        _log_samples(live, run.method, batch, done)


def _checkpoint(run: _Run, done: int, every: int, seconds: float, cpu_seconds: float) -> None:
    """Resumable `last.pt` every `every` steps (rank 0; never at the last step: `_finish` writes model.pt)."""
    if run.world.is_main and done % every == 0 and done < run.total:
        state = checkpoint_dict(
            run.method, run.name, done, run.fp, rng=rng_state(run.gen), elapsed_s=seconds, cpu_s=cpu_seconds
        )
        save_checkpoint(run.last, state)


def _finish(run: _Run, out: Path, seconds: float) -> dict[str, Any]:
    """Check the ranks agree, write model.pt and train.json (rank 0), drop last.pt; return the summary."""
    method = run.method
    if run.world.size > 1:
        sums = distributed.state_checksums(method.modules().values(), run.device)
        if not bool((sums == sums[0]).all()):
            raise RuntimeError(
                f"train {run.name}: the {run.world.size} processes ended with different weights {sums.tolist()}"
            )
    summary = {
        "method": run.name,
        "steps": run.total,
        "train_seconds": round(seconds, 3),
        "hardware": hardware(),
        # What decides whether another run can match this one bit for bit (agebench.gate.check's gate).
        "fingerprint": machine_fingerprint(),
        "processes": run.world.size,
        "device": str(run.device),
        "parameter_count": method.parameter_count(),
        "resolution": method.resolution,
        "train_faces": int(next(iter(run.data.images.values())).shape[0]),
        "config": to_dict(method.config),
        # Scoring networks the method trains/translates with (Method.uses_scoring_networks); generate
        # also writes them at the top of tasks.json, and the report flags what they judged.
        "uses_scoring_networks": list(method.uses_scoring_networks),
        **provenance(),
    }
    if not run.world.is_main:
        return summary
    save_checkpoint(out / "model.pt", checkpoint_dict(method, run.name, run.total, run.fp, summary=summary))
    write_json(out / "train.json", summary)
    run.last.unlink(missing_ok=True)
    return summary


def train(
    name: str, params: Params, prepared: Path, out: Path, live_dir: Path | None, progress: bool = True
) -> dict[str, Any]:
    """Train method `name`; returns the training summary written to train.json."""
    tc = params.train
    run = _setup(name, params, prepared, out)
    start, elapsed, cpu_spent = _resume(run)
    live = _open_live(live_dir, resume=start > 0) if run.world.is_main else None
    t0 = time.perf_counter() - elapsed
    c0 = time.process_time() - cpu_spent
    images_seen = 0
    bar = tqdm(
        total=run.total, initial=start, desc=f"train {name}", unit="step", disable=not (progress and run.world.is_main)
    )
    for step in range(start, run.total):
        batch, losses = _one_step(run, step)
        done = step + 1
        _log(live, run, batch, losses, done, tc)
        _checkpoint(run, done, tc.checkpoint_every, time.perf_counter() - t0, time.process_time() - c0)
        _snapshot(run, out, done, time.perf_counter() - t0, time.process_time() - c0)
        images_seen += _batch_size(batch) * run.world.size
        rate = images_seen / max(time.perf_counter() - t0 - elapsed, 1e-9)
        bar.set_postfix(
            {**{k.removeprefix("loss_"): f"{v:.3g}" for k, v in losses.items()}, "img/s": f"{rate:.1f}"}, refresh=False
        )
        bar.update(1)
    bar.close()
    summary = _finish(run, out, time.perf_counter() - t0)
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
