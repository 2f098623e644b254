"""`generate` stage: translate the held-out test faces with a trained method, losslessly.

For each task (the two common tasks of PROTOCOL.md s.3, plus every group pair a multi-group method
supports) it writes `<out>/<task>.npz` with `rows` (index rows of the inputs), `fake` (N, 128,
128, 3) uint8 (the outputs, quantised to uint8 and, when the method works at another size,
resized to 128 with PIL antialiased bicubic) and `cycle` (the round trip source -> target ->
source, `Method.round_trip` of the quantised output, same format), and `tasks.json` describing them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agebench.data.faces import faces_nchw, to_eval_size
from agebench.params.sections import GroupsConfig, Params, TasksConfig
from agebench.pipeline.tasks import TaskSpec
from agebench.pipeline.train import CheckpointError, build_method, load_checkpoint, method_config
from methods.base import Method, float_to_uint8, uint8_to_float


def group_containing(bounds: tuple[int, int], groups: Mapping[str, tuple[int, int]]) -> str:
    """Name of the group of another scheme whose range contains `bounds` (e.g. 20-29 in 19-29)."""
    for name, (low, high) in groups.items():
        if low <= bounds[0] and bounds[1] <= high:
            return name
    raise ValueError(f"no group contains ages {bounds[0]}-{bounds[1]} (groups: {dict(groups)})")


def task_list(method: Method, groups: GroupsConfig, common: TasksConfig, extra_tasks: bool) -> dict[str, TaskSpec]:
    """Task id -> the task: the `common` tasks (protocol groups, with the method's groups containing them), then
    the method's extra group pairs when `extra_tasks` (`generate.extra_tasks`) is on."""
    schemes = groups.schemes()
    own = schemes[method.scheme]
    tasks: dict[str, TaskSpec] = {}
    for task_id, task in common.items():
        src_b, tgt_b = schemes[task.scheme][task.source], schemes[task.scheme][task.target]
        tasks[task_id] = TaskSpec(
            task.scheme, task.source, task.target, group_containing(src_b, own), group_containing(tgt_b, own)
        )
    if extra_tasks and method.scheme != "pair":
        for s, t in method.supported_tasks():
            tasks[f"{method.scheme}_{s}_to_{t}"] = TaskSpec.same_groups(method.scheme, s, t, common=False)
    return tasks


def to_eval_resolution(images: torch.Tensor, size: int) -> np.ndarray:
    """(N, 3, R, R) uint8 -> (N, size, size, 3) uint8, each image through `to_eval_size` when R != size."""
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    if arr.shape[1] == size:
        return np.ascontiguousarray(arr)
    return np.stack([to_eval_size(a, size) for a in arr])


def translate_all(
    method: Method,
    inputs: torch.Tensor,
    source: str,
    target: str,
    batch_size: int,
    eval_size: int,
    desc: str,
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Translate uint8 (N, 3, R, R) inputs and their round trips; both as (N, S, S, 3) uint8."""
    fakes, cycles = [], []
    for s in tqdm(range(0, len(inputs), batch_size), desc=desc, unit="batch", disable=not progress):
        x = uint8_to_float(inputs[s : s + batch_size].to(method.device))
        fake = float_to_uint8(method.translate(x, source, target))
        back = float_to_uint8(method.round_trip(x, uint8_to_float(fake), source, target))
        fakes.append(to_eval_resolution(fake, eval_size))
        cycles.append(to_eval_resolution(back, eval_size))
    empty = np.zeros((0, eval_size, eval_size, 3), np.uint8)
    return (np.concatenate(fakes) if fakes else empty), (np.concatenate(cycles) if cycles else empty)


def progression(
    method: Method, faces: np.ndarray, test: Any, eval_size: int, count: int
) -> dict[str, np.ndarray] | None:
    """`count` test faces translated to every group of a method with more than two groups.

    Faces are taken round-robin over the source groups (the lowest index rows of each), so the strips
    start from different ages. Returns {"rows": (K,), "source": (K,) group names, "groups": (G,) names,
    "images": (K, G, S, S, 3) uint8} (the own-group column is the method's output too when it supports
    that, else the input), or None for two-group methods.
    """
    groups = list(method.group_names)
    if len(groups) <= 2 or count <= 0:
        return None
    by_group = {g: test.loc[test[method.scheme] == g, "row"].to_numpy() for g in groups}
    picks: list[tuple[int, str]] = []
    depth = 0
    while len(picks) < count and any(depth < len(r) for r in by_group.values()):
        picks += [(int(r[depth]), g) for g, r in by_group.items() if depth < len(r)]
        depth += 1
    picks = picks[:count]
    supported = set(method.supported_tasks())
    strips = []
    for row, src in picks:
        x = uint8_to_float(faces_nchw(faces, np.array([row])).to(method.device))
        cols = []
        for g in groups:
            if g == src and (src, g) not in supported:
                y = x
            else:
                with torch.no_grad():
                    y = method.translate(x, src, g)
            cols.append(to_eval_resolution(float_to_uint8(y), eval_size)[0])
        strips.append(np.stack(cols))
    return {
        "rows": np.array([r for r, _ in picks]),
        "source": np.array([g for _, g in picks]),
        "groups": np.array(groups),
        "images": np.stack(strips) if strips else np.zeros((0, len(groups), eval_size, eval_size, 3), np.uint8),
    }


def load_trained_checkpoint(
    name: str, params: Params, model_dir: Path, device: torch.device, file: str = "model.pt"
) -> tuple[Method, dict[str, Any]]:
    """Rebuild method `name` from the config stored in `<model_dir>/<file>` (the final `model.pt`, or a
    training snapshot `snapshots/step_<n>.pt`) and load its weights.

    The checkpoint, not today's params.yaml, says how the networks are shaped (a smoke model still
    loads after `profile` went back to full); params only locate this machine's aux networks. Returns
    (the method in eval mode, the checkpoint dict). Raises FileNotFoundError (no model) or
    CheckpointError (refused, unreadable, or made by code that has changed since), each one line.
    """
    path = model_dir / file
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: train the method first (dvc repro train@{name})")
    ckpt = load_checkpoint(path, device)
    config = method_config(name, ckpt, path)
    method = build_method(name, params, device, config=config, group_names=ckpt.get("group_names"))
    try:
        method.load_state_dict(ckpt["state"])
    except (RuntimeError, KeyError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise CheckpointError(
            f"{path}: its weights do not fit {name} as this code builds it ({first}); the method's code changed "
            f"since it was trained: retrain it (dvc repro train@{name})"
        ) from None
    for m in method.modules().values():
        m.eval()
    return method, ckpt


def load_trained(name: str, params: Params, model_dir: Path, device: torch.device) -> Method:
    """Rebuild method `name` from its final checkpoint (see `load_trained_checkpoint`)."""
    return load_trained_checkpoint(name, params, model_dir, device)[0]


def extra_tables(
    method: Method, faces: np.ndarray, rows: np.ndarray, source: str, batch_size: int, eval_size: int
) -> dict[str, dict[str, np.ndarray]]:
    """The method's extra image tables (`Method.extra_tables`) for the faces `rows` of group `source`.

    Returns {table: {"rows": (N,), name: (N, S, S, 3) uint8 for each of the table's image names}}.
    """
    out: dict[str, dict[str, np.ndarray]] = {}
    for table, names in method.extra_tables.items():
        parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
        for s in tqdm(range(0, len(rows), batch_size), desc=f"{table}", unit="batch"):
            x = uint8_to_float(faces_nchw(faces, rows[s : s + batch_size]).to(method.device))
            images = method.extra_images(table, x, source)
            for n in names:
                parts[n].append(to_eval_resolution(float_to_uint8(images[n]), eval_size))
        empty = np.zeros((0, eval_size, eval_size, 3), np.uint8)
        out[table] = {"rows": rows, **{n: np.concatenate(p) if p else empty for n, p in parts.items()}}
    return out
