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

from agebench.report.docs import ReportInputError, load_metrics, read_metrics_dir, validate_docs
from agebench.report.frame import joint_from_scores, leaderboard_csv, leaderboard_frame
from agebench.report.markdown import build_leaderboard, leaderboard_markdown, ranks_markdown, render_leaderboard

__all__ = [
    "ReportInputError",
    "build_leaderboard",
    "joint_from_scores",
    "leaderboard_csv",
    "leaderboard_frame",
    "leaderboard_markdown",
    "load_metrics",
    "ranks_markdown",
    "read_metrics_dir",
    "render_leaderboard",
    "validate_docs",
]
