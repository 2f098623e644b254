"""`TaskSpec`: one translation task as the pipeline steps pass it (generate, probes, evaluate).

A task names its groups twice: in the protocol's scheme (what it is scored against, PROTOCOL.md s.3) and in
the method's own scheme (what the method is asked to translate between; the same groups for a method that
uses the protocol's scheme). `record` is the task's entry in an outputs folder's `tasks.json`, so a folder
written by `generate`, by a probe or read back by `evaluate` carries the same keys in the same order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from agebench.data.faces import test_faces


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
