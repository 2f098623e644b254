"""`TaskSpec`: one translation task as the pipeline steps pass it (generate, probes, evaluate).

A task names its groups twice: in the protocol's scheme (what it is scored against, PROTOCOL.md s.3) and in
the method's own scheme (what the method is asked to translate between; the same groups for a method that
uses the protocol's scheme). `record` is the task's entry in an outputs folder's `tasks.json`, so a folder
written by `generate` or by an external row carries the same keys in the same order.

`TaskOutputs` / `MethodOutputs` are what scoring takes (`agebench.pipeline.evaluate.evaluate_method`): arrays in
memory. Probes and external rows hand them over directly; `read_outputs` reads an outputs folder (the files
the `generate` stage writes) into them, at the evaluate stage's edge.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from agebench.data.faces import test_faces
from agebench.infra.common import read_json, write_json


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task: every test face of `source` translated to `target` within `scheme`.

    `method_source` / `method_target` are the method's own groups containing them; `common` is True for the
    protocol's common tasks (ranked) and False for a method's extra group pairs (reported only).
    """

    scheme: str
    source: str
    target: str
    method_source: str
    method_target: str
    common: bool = True

    @classmethod
    def same_groups(cls, scheme: str, source: str, target: str, common: bool = True) -> TaskSpec:
        """A task whose method translates between the protocol's own groups."""
        return cls(scheme, source, target, source, target, common)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> TaskSpec:
        """The task of a `tasks.json` entry (`record`'s keys; extra keys such as `n` are ignored). Scoring
        needs only the protocol groups, so an entry without the method's groups reads as the same groups."""
        source, target = str(record["source"]), str(record["target"])
        return cls(
            str(record["scheme"]),
            source,
            target,
            str(record.get("method_source", source)),
            str(record.get("method_target", target)),
            bool(record["common"]),
        )

    def record(self, n: int) -> dict[str, Any]:
        """The task's `tasks.json` entry with `n`, the number of inputs."""
        return {**dataclasses.asdict(self), "n": n}

    def test_rows(self, index: pd.DataFrame) -> np.ndarray:
        """(N,) index rows of the task's inputs: the test faces of its source group, in index order."""
        return test_faces(index, self.scheme, self.source)["row"].to_numpy()


@dataclasses.dataclass(frozen=True)
class TaskOutputs:
    """One task's outputs, row-aligned with its inputs.

    Attributes:
        spec: the task.
        rows: (N,) int64 index rows of the inputs (the prepared faces).
        fake: (N, S, S, 3) uint8 outputs at the evaluation size S.
        cycle: (N, S, S, 3) uint8 round trips (source -> target -> source), or None when there are none.
        present, cycle_present: (N,) bool, the outputs / round trips that exist (an external row may lack
            some; the pixels of a missing one are never scored), or None: every one exists.
    """

    spec: TaskSpec
    rows: np.ndarray
    fake: np.ndarray
    cycle: np.ndarray | None = None
    present: np.ndarray | None = None
    cycle_present: np.ndarray | None = None

    def masks(self) -> dict[str, np.ndarray]:
        """The masks that are given, by `metrics.suite.score_task`'s argument names."""
        given = {"present": self.present, "cycle_present": self.cycle_present}
        return {k: v for k, v in given.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class MethodOutputs:
    """Every task's outputs of one row (a method, a probe, an external row) and what its run recorded.

    Attributes:
        tasks: task id -> its outputs, common tasks first (iterated once, in order, by scoring).
        seed: the training seed of the run; "train" means the pipeline's own (`train.seed`; none for a
            reference method); None: no training seed of this pipeline (an external row).
        train: the training summary (the checkpoint's; {} when nothing was trained here).
        uses_scoring_networks: scoring networks the method trained or translated with (PROTOCOL.md s.4).
        resolution: the side the method works at (None: unknown).
        reconstruction: the reconstruction table's arrays (`rows` and one (N, S, S, 3) uint8 array per
            latent mode; Age-cGAN), or None.
    """

    tasks: Mapping[str, TaskOutputs]
    seed: int | Literal["train"] | None = "train"
    train: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    uses_scoring_networks: tuple[str, ...] = ()
    resolution: int | None = None
    reconstruction: Mapping[str, np.ndarray] | None = None


class _FolderTasks(Mapping[str, TaskOutputs]):
    """The tasks of an outputs folder, each read from `<task>.npz` when asked for (one in memory at a time)."""

    def __init__(self, folder: Path, specs: Mapping[str, TaskSpec]) -> None:
        self._folder, self._specs = folder, specs

    def __getitem__(self, task_id: str) -> TaskOutputs:
        spec = self._specs[task_id]
        with np.load(self._folder / f"{task_id}.npz") as data:
            arrays = {k: data[k] for k in data.files}

        def mask(k: str) -> np.ndarray | None:
            return arrays[k].astype(bool) if k in arrays else None

        return TaskOutputs(
            spec, arrays["rows"], arrays["fake"], arrays.get("cycle"), mask("present"), mask("cycle_present")
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


def write_outputs(folder: Path, outputs: MethodOutputs, eval_resolution: int) -> None:
    """Write `outputs` as an outputs folder `read_outputs` reads back equal: `<task>.npz` with `rows`, `fake`
    and each of `present`, `cycle`, `cycle_present` that is given, and `tasks.json` (`seed` written only when
    it is not "train"). The report's sample grids read such a folder."""
    folder.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {"method": None, "resolution": outputs.resolution, "eval_resolution": eval_resolution}
    meta["train"] = dict(outputs.train)
    meta["uses_scoring_networks"] = list(outputs.uses_scoring_networks)
    if outputs.seed != "train":
        meta["seed"] = outputs.seed
    meta["tasks"] = {}
    for task_id, t in outputs.tasks.items():
        given = {"present": t.present, "cycle": t.cycle, "cycle_present": t.cycle_present}
        arrays = {"rows": t.rows, "fake": t.fake, **{k: v for k, v in given.items() if v is not None}}
        np.savez(folder / f"{task_id}.npz", **arrays)
        meta["tasks"][task_id] = t.spec.record(len(t.rows))
    write_json(folder / "tasks.json", meta)


def read_outputs(folder: Path) -> MethodOutputs:
    """Read an outputs folder: `tasks.json` and, per task, `<task>.npz` with `rows`, `fake` and optionally
    `cycle`, `present`, `cycle_present` (read on access), plus `reconstruction.npz` when present.

    `tasks.json`'s optional `seed` (absent: "train"), `train`, `uses_scoring_networks` (top level, else
    the `train` summary's) and `resolution` fill the record's fields.
    """
    folder = Path(folder)
    meta = read_json(folder / "tasks.json")
    specs = {task_id: TaskSpec.from_record(record) for task_id, record in meta["tasks"].items()}
    train = meta.get("train", {})
    recon = folder / "reconstruction.npz"
    reconstruction = None
    if recon.is_file():
        with np.load(recon) as data:
            reconstruction = {k: data[k] for k in data.files}
    return MethodOutputs(
        tasks=_FolderTasks(folder, specs),
        seed=meta.get("seed", "train"),
        train=train,
        uses_scoring_networks=tuple(meta.get("uses_scoring_networks", train.get("uses_scoring_networks", []))),
        resolution=meta.get("resolution"),
        reconstruction=reconstruction,
    )
