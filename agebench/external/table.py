"""The printed summary of an external row: its metrics per task as a markdown table, and its problems."""

from __future__ import annotations

import math
from typing import Any

from metrics.keys import (
    KEY_METRIC_AGE_ACC,
    KEY_METRIC_CYCLE_L1,
    KEY_METRIC_FID,
    KEY_METRIC_ID_RATE,
    KEY_METRIC_JOINT,
    KEY_METRIC_KID_MEAN,
    KEY_MISSING,
    KEY_N,
)

#: How a missing or non-finite value prints in the table.
NA = "–"


def _fmt(value: Any, digits: int = 3) -> str:

    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return NA
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_table(doc: dict[str, Any]) -> str:
    """The row of `doc` per task as a markdown table (absent or NaN values as "–")."""
    cols = [
        (KEY_METRIC_JOINT, 3),
        (KEY_METRIC_AGE_ACC, 3),
        (KEY_METRIC_ID_RATE, 3),
        (KEY_METRIC_FID, 2),
        (KEY_METRIC_KID_MEAN, 4),
        (KEY_METRIC_CYCLE_L1, 4),
    ]
    head = "| task | n | missing | " + " | ".join(c for c, _ in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 3)]
    for task_id, res in doc["tasks"].items():
        cells = [_fmt(res.get(c), d) for c, d in cols]
        lines.append(f"| {task_id} | {res.get(KEY_N, NA)} | {res.get(KEY_MISSING, 0)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def problem_lines(doc: dict[str, Any], show: int = 5) -> list[str]:
    """Printable lines for `doc["external"]["problems"]`."""
    out = []
    for p in doc.get("external", {}).get("problems", []):
        items = p["items"]
        more = f", ... ({len(items) - show} more)" if len(items) > show else ""
        out.append(f"{p['task']}: {p['count']} {p['message']}: {', '.join(items[:show])}{more}")
    return out
