"""`agebench check` / `agebench baseline update`: the metric regression gate (PROTOCOL.md s.6).

A metric regresses when it moves in its bad direction by more than the larger of its configured
tolerance (`check.metrics` in params.yaml) and its 95% interval half-width (the current run's, or
the baseline's when the current metric has no interval). The baseline is a JSON file written on purpose by
`agebench baseline update`; `check` never rewrites it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agebench.common import write_json
from agebench.config import CheckConfig

TASKS = ("aging", "rejuvenation")


class GateInputError(ValueError):
    """A baseline or metrics file that cannot be used (missing, malformed)."""


@dataclass(frozen=True)
class Row:
    """One compared metric."""

    key: str  # method/task/metric
    baseline: float | None
    now: float | None
    allowed: float
    verdict: str  # "ok", "improved", "REGRESSED", "missing now", "new"

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None or self.now is None else self.now - self.baseline


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GateInputError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise GateInputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def collect(metrics_dir: Path, cfg: CheckConfig) -> dict[str, dict[str, Any]]:
    """{"method/task/metric": {"value", "half_width"}} from every `<method>.json` in `metrics_dir`."""
    files = sorted(metrics_dir.glob("*.json"))
    if not files:
        raise GateInputError(f"{metrics_dir}: no metrics files (*.json); run `dvc repro` first")
    out: dict[str, dict[str, Any]] = {}
    for f in files:
        doc = _read(f)
        if not isinstance(doc, dict) or "tasks" not in doc:
            raise GateInputError(f"{f}: not an agebench metrics file (no 'tasks')")
        method = doc.get("method", f.stem)
        for task in TASKS:
            t = doc["tasks"].get(task)
            if t is None:
                continue
            for metric in cfg.metrics:
                if metric not in t:
                    continue
                value = t[metric]
                ci = t.get("ci95", {}).get(metric)
                half = (ci[1] - ci[0]) / 2 if ci and None not in ci else None
                out[f"{method}/{task}/{metric}"] = {"value": value, "half_width": half}
    return out


def compare(baseline: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]], cfg: CheckConfig) -> list[Row]:
    """Compare every metric of either side by the rule in the module docstring."""
    rows = []
    for key in sorted(set(baseline) | set(current)):
        metric = key.rsplit("/", 1)[1]
        rule = cfg.metrics.get(metric)
        if rule is None:
            continue
        b, c = baseline.get(key), current.get(key)
        if c is None:
            rows.append(Row(key, _v(b), None, rule.tolerance, "missing now"))
            continue
        if b is None:
            rows.append(Row(key, None, _v(c), rule.tolerance, "new"))
            continue
        bv, cv = _v(b), _v(c)
        # The interval of the run being judged; the baseline's only when the current one has none.
        half = c.get("half_width") if c.get("half_width") is not None else b.get("half_width")
        allowed = max(rule.tolerance, half or 0.0)
        if bv is None or cv is None:  # NaN on one side
            verdict = "ok" if bv is None and cv is None else "REGRESSED" if cv is None else "improved"
            rows.append(Row(key, bv, cv, allowed, verdict))
            continue
        worse = (bv - cv) if rule.direction == "higher" else (cv - bv)
        verdict = "REGRESSED" if worse > allowed else "improved" if -worse > allowed else "ok"
        rows.append(Row(key, bv, cv, allowed, verdict))
    return rows


def _v(entry: dict[str, Any] | None) -> float | None:
    if entry is None:
        return None
    v = entry.get("value")
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def markdown(rows: list[Row]) -> str:
    """The comparison as a markdown table."""

    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.4g}"

    lines = ["| metric | baseline | now | delta | allowed | verdict |", "|---|---:|---:|---:|---:|---|"]
    lines += [
        f"| {r.key} | {f(r.baseline)} | {f(r.now)} | {f(r.delta)} | {r.allowed:.4g} | {r.verdict} |" for r in rows
    ]
    return "\n".join(lines)


def check(baseline_path: Path, metrics_dir: Path, cfg: CheckConfig) -> tuple[int, str]:
    """Exit status (0 pass, 1 regression or metric missing now) and the markdown report."""
    base = _read(baseline_path)
    if not isinstance(base, dict) or not isinstance(base.get("metrics"), dict):
        raise GateInputError(f"{baseline_path}: not an agebench baseline (no 'metrics' mapping)")
    rows = compare(base["metrics"], collect(metrics_dir, cfg), cfg)
    bad = [r for r in rows if r.verdict in ("REGRESSED", "missing now")]
    summary = (
        f"{len(bad)} of {len(rows)} metrics regressed or missing"
        if bad
        else f"all {len(rows)} metrics within tolerance"
    )
    return (1 if bad else 0), markdown(rows) + "\n\n" + summary + "\n"


def update_baseline(baseline_path: Path, metrics_dir: Path, cfg: CheckConfig) -> int:
    """Write the current metrics as the new baseline; returns the number of metrics written."""
    current = collect(metrics_dir, cfg)
    write_json(baseline_path, {"format": 1, "source": str(metrics_dir), "metrics": current})
    return len(current)
