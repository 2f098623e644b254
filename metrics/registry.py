"""The metric registry: the name used in `evaluate.metrics` (params.yaml) -> a task metric function.

A task metric is a function `(ctx: metrics.suite.TaskContext) -> dict[str, value]` whose keys are
leaderboard columns; per-face intermediate results (ages, descriptors) are shared through `ctx`.
"""

from collections.abc import Callable
from typing import Any

from agebench.registry import Registry

METRICS: Registry[Callable[[Any], dict[str, Any]]] = Registry("metric")
