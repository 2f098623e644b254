"""The `report` stage's library: the leaderboard (PROTOCOL.md s.6) from every metrics file, and the HTML report.

- `docs`: reading and validating metrics documents, runtime files, independence flags;
- `ranking`: protocol 3's ranking of a task from the per-face records (rank groups, pairwise matrix,
  "not above no change"), on `metrics.ranking`'s paired two-level bootstrap;
- `frame`: the leaderboard frame (every number, leaderboard.csv), protocol 2 as published and protocol 3;
- `markdown`, `markdown_v3`, `sentences`: leaderboard.md and the sentences about ranks, generated;
- `page`: the self-contained HTML page as bytes (imports the data layer, so torch; nothing else here does).

`render_leaderboard(metrics_dir)` is what the stage writes and what `agebench leaderboard` rebuilds: a
function of the metrics (and runtime) files alone.
"""

import importlib
from typing import Any

#: Public names re-exported lazily (importing `agebench.commands.leaderboard` for the CLI's parser must not load
#: pandas): name -> the submodule that defines it.
_EXPORTS = {
    "ReportInputError": "docs",
    "load_metrics": "docs",
    "read_metrics_dir": "docs",
    "validate_docs": "docs",
    "joint_from_scores": "frame",
    "leaderboard_csv": "frame",
    "leaderboard_frame": "frame",
    "build_leaderboard": "markdown",
    "leaderboard_markdown": "markdown",
    "ranks_markdown": "markdown",
    "render_leaderboard": "markdown",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'agebench.report' has no attribute {name!r}")
    return getattr(importlib.import_module(f"agebench.report.{_EXPORTS[name]}"), name)
