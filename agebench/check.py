"""`agebench check` / `agebench baseline update`: the metric regression gate (PROTOCOL.md s.6).

A metric regresses when it moves in its bad direction by more than the larger of its configured
tolerance (`check.metrics` in params.yaml) and its 95% interval half-width (the current run's, or
the baseline's when the current metric has no interval). The baseline is a JSON file written on purpose by
`agebench baseline update`; `check` never rewrites it.

Exit status of `check`: 0 every metric within tolerance, 1 a regression (or a metric missing now),
2 unusable input (a missing, non-UTF-8 or malformed file, a non-numeric value, an interval that is
not two numbers) or results not comparable with the baseline (another `protocol_version` or
`profile`): a broken file is never reported as a regression. `baseline update` writes only results
of this code's protocol version, all of one profile, and records both in the baseline.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agebench
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
    except IsADirectoryError:
        raise GateInputError(f"{path}: is a folder, not a JSON file") from None
    except UnicodeDecodeError as exc:
        raise GateInputError(
            f"{path}: not UTF-8 text (byte {exc.start}); not a JSON file written by agebench"
        ) from None
    except json.JSONDecodeError as exc:
        raise GateInputError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None


def _number(value: Any, where: str) -> float | None:
    """A metric value: a number, or None for null (NaN is written as null); anything else is bad input."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise GateInputError(f"{where}: expected a number or null, got {type(value).__name__} {value!r}")
    return None if math.isnan(value) else float(value)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise GateInputError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _half_width(ci: Any, where: str) -> float | None:
    """Half-width of a 95% interval [low, high] (None when either end is null)."""
    if ci is None:
        return None
    if not isinstance(ci, list) or len(ci) != 2:
        raise GateInputError(f"{where}: expected a 95% interval [low, high], got {ci!r}")
    low, high = _number(ci[0], f"{where}[0]"), _number(ci[1], f"{where}[1]")
    return None if low is None or high is None else (high - low) / 2


def results_version(doc: dict[str, Any]) -> tuple[int, str | None]:
    """(protocol_version, profile) a metrics file (or baseline) was made under; files without a
    protocol_version predate it and are protocol 1, a baseline without a profile does not say."""
    version = doc.get("protocol_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise GateInputError(f"protocol_version: expected an integer, got {version!r}")
    profile = doc.get("profile")
    return version, profile if isinstance(profile, str) else None


def collect_versioned(metrics_dir: Path, cfg: CheckConfig) -> tuple[dict[str, dict[str, Any]], int, str | None]:
    """`collect` plus the (protocol_version, profile) every file shares (GateInputError when they differ)."""
    files = sorted(metrics_dir.glob("*.json"))
    if not files:
        raise GateInputError(f"{metrics_dir}: no metrics files (*.json); run `dvc repro` first")
    out: dict[str, dict[str, Any]] = {}
    seen: dict[tuple[int, str | None], Path] = {}
    for f in files:
        doc = _read(f)
        if not isinstance(doc, dict) or "tasks" not in doc:
            raise GateInputError(f"{f}: not an agebench metrics file (no 'tasks')")
        try:
            seen.setdefault(results_version(doc), f)
        except GateInputError as exc:
            raise GateInputError(f"{f}: {exc}") from None
        method = doc.get("method", f.stem)
        if not isinstance(method, str):
            raise GateInputError(f"{f}: method: expected a name, got {method!r}")
        tasks = _mapping(doc["tasks"], f"{f}: tasks")
        for task in TASKS:
            t = tasks.get(task)
            if t is None:
                continue
            t = _mapping(t, f"{f}: tasks.{task}")
            cis = _mapping(t.get("ci95", {}), f"{f}: tasks.{task}.ci95")
            for metric in cfg.metrics:
                if metric not in t:
                    continue
                value = _number(t[metric], f"{f}: tasks.{task}.{metric}")
                half = _half_width(cis.get(metric), f"{f}: tasks.{task}.ci95.{metric}")
                out[f"{method}/{task}/{metric}"] = {"value": value, "half_width": half}
    if len(seen) > 1:
        (v1, p1), (v2, p2) = list(seen)[:2]
        f1, f2 = seen[(v1, p1)], seen[(v2, p2)]
        raise GateInputError(
            f"{metrics_dir}: mixed results: {f1.name} is protocol {v1}, profile {p1}, {f2.name} is protocol {v2}, "
            f"profile {p2}; rerun `dvc repro` so every method is scored under one protocol and profile"
        )
    ((version, profile),) = seen
    return out, version, profile


def _baseline_metrics(base: Any, path: Path) -> dict[str, dict[str, Any]]:
    """The baseline's metrics, each checked to be {"value": number|null, "half_width": number|null}."""
    if not isinstance(base, dict) or not isinstance(base.get("metrics"), dict):
        raise GateInputError(f"{path}: not an agebench baseline (no 'metrics' mapping)")
    out = {}
    for key, entry in base["metrics"].items():
        entry = _mapping(entry, f"{path}: metrics.{key}")
        out[key] = {
            "value": _number(entry.get("value"), f"{path}: metrics.{key}.value"),
            "half_width": _number(entry.get("half_width"), f"{path}: metrics.{key}.half_width"),
        }
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
    baseline = _baseline_metrics(base, baseline_path)
    try:
        b_version, b_profile = results_version(base)
    except GateInputError as exc:
        raise GateInputError(f"{baseline_path}: {exc}") from None
    current, version, profile = collect_versioned(metrics_dir, cfg)
    if version != b_version:
        raise GateInputError(
            f"{metrics_dir} holds protocol {version} results, {baseline_path} is a protocol {b_version} baseline: "
            "they are not comparable; regenerate the baseline on purpose with `agebench baseline update`"
        )
    if b_profile is not None and profile != b_profile:
        raise GateInputError(
            f"{metrics_dir} holds profile {profile!r} results, {baseline_path} is a {b_profile!r} baseline: "
            "they are not comparable; compare against the baseline of the same profile"
        )
    rows = compare(baseline, current, cfg)
    bad = [r for r in rows if r.verdict in ("REGRESSED", "missing now")]
    summary = (
        f"{len(bad)} of {len(rows)} metrics regressed or missing"
        if bad
        else f"all {len(rows)} metrics within tolerance"
    )
    return (1 if bad else 0), markdown(rows) + "\n\n" + summary + "\n"


def update_baseline(baseline_path: Path, metrics_dir: Path, cfg: CheckConfig) -> int:
    """Write the current metrics as the new baseline (replacing the file, on purpose); returns the count.

    Refuses (GateInputError, nothing written) results of another protocol version than this code's,
    or results of mixed versions or profiles, and a baseline path that is a folder.
    """
    current, version, profile = collect_versioned(metrics_dir, cfg)
    if version != agebench.PROTOCOL_VERSION:
        raise GateInputError(
            f"{metrics_dir} holds protocol {version} results; this agebench implements protocol "
            f"{agebench.PROTOCOL_VERSION}: rerun `dvc repro` before updating the baseline (nothing was written)"
        )
    doc = {"format": 2, "protocol_version": version, "profile": profile, "source": str(metrics_dir)}
    write_json(baseline_path, {**doc, "metrics": current})
    return len(current)


def machine_key(cpuinfo: str | None = None) -> str:
    """The CPU vendor of this machine ("GenuineIntel", "AuthenticAMD", ...), or `platform.machine()` where
    /proc/cpuinfo has none; `cpuinfo` is that file's text (read when None).

    The smoke profile is bit-exact on one kind of CPU only: oneDNN picks its kernels by instruction set,
    so the same seeded smoke run gives other numbers on another vendor's CPU (measured 2026-12-02: 8 of 66
    smoke metrics beyond tolerance on an Intel Xeon against the baseline made on an AMD EPYC, the code
    unchanged). Smoke baselines are therefore kept per vendor: `baselines/smoke-<machine_key>.json`.
    """
    import platform
    import re

    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    m = re.search(r"^vendor_id\s*:\s*(\S+)", cpuinfo, re.MULTILINE)
    key = m.group(1) if m else (platform.machine() or "unknown")
    return re.sub(r"[^A-Za-z0-9_.-]", "_", key)
