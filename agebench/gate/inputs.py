"""The regression gate's inputs: metrics files, probe files and baselines read and checked value by value (a
malformed file is one GateInputError line naming the file and the key)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from agebench.infra.errors import UserError
from agebench.params.sections import CheckConfig


def _validate_tasks(doc: dict[str, Any], where: str, gated: Any = ()) -> None:
    """Every task value a gate may read is a number or null, and every interval two of them."""
    for task, t in _mapping(doc["tasks"], f"{where}: tasks").items():
        t = _mapping(t, f"{where}: tasks.{task}")
        for key, value in t.items():
            if key == "ci95":
                for metric, ci in _mapping(value, f"{where}: tasks.{task}.ci95").items():
                    _half_width(ci, f"{where}: tasks.{task}.ci95.{metric}")
            elif key in gated or not isinstance(value, dict | list | str):
                _number(value, f"{where}: tasks.{task}.{key}")


TASKS = ("aging", "rejuvenation")


class GateInputError(UserError, ValueError):
    """A baseline or metrics file that cannot be used (missing, malformed)."""


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
        doc, method = _results_doc(f, seen)
        out.update(gated_values(doc, method, cfg, where=str(f)))
    version, profile = _one_version(seen, metrics_dir, "rerun `dvc repro` so every method is scored")
    return out, version, profile


def _results_doc(f: Path, seen: dict[tuple[int, str | None], Path]) -> tuple[dict[str, Any], str]:
    """A metrics file's document and row name; its (protocol_version, profile) is added to `seen`."""
    doc = _read(f)
    if not isinstance(doc, dict) or "tasks" not in doc:
        raise GateInputError(f"{f}: not an agebench metrics file (no 'tasks')")
    try:
        seen.setdefault(results_version(doc), f)
    except GateInputError as exc:
        raise GateInputError(f"{f}: {exc}") from None
    name = doc.get("method", f.stem)
    if not isinstance(name, str):
        raise GateInputError(f"{f}: method: expected a name, got {name!r}")
    return doc, name


def _one_version(seen: dict[tuple[int, str | None], Path], folder: Path, rerun: str) -> tuple[int, str | None]:
    """The one (protocol_version, profile) of the files read; GateInputError naming two files when they differ."""
    if len(seen) > 1:
        (v1, p1), (v2, p2) = list(seen)[:2]
        f1, f2 = seen[(v1, p1)], seen[(v2, p2)]
        raise GateInputError(
            f"{folder}: mixed results: {f1.name} is protocol {v1}, profile {p1}, {f2.name} is protocol {v2}, "
            f"profile {p2}; {rerun} under one protocol and profile"
        )
    ((version, profile),) = seen
    return version, profile


def gated_values(
    doc: dict[str, Any], name: str, cfg: CheckConfig, where: str | None = None
) -> dict[str, dict[str, Any]]:
    """A row's gated metrics: '<name>/<task>/<metric>' -> {"value", "half_width"}; errors name `where`
    (default: the row's name)."""
    where = name if where is None else where
    out: dict[str, dict[str, Any]] = {}
    tasks = _mapping(doc["tasks"], f"{where}: tasks")
    for task in TASKS:
        t = tasks.get(task)
        if t is None:
            continue
        t = _mapping(t, f"{where}: tasks.{task}")
        cis = _mapping(t.get("ci95", {}), f"{where}: tasks.{task}.ci95")
        for metric in cfg.metrics:
            if metric in t:
                out[f"{name}/{task}/{metric}"] = {
                    "value": _number(t[metric], f"{where}: tasks.{task}.{metric}"),
                    "half_width": _half_width(cis.get(metric), f"{where}: tasks.{task}.ci95.{metric}"),
                }
    return out


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


def read_docs(
    metrics_dir: Path, probes_dir: Path | None = None, gated: Any = ()
) -> tuple[dict[str, dict[str, Any]], int, str | None]:
    """Every metrics document of a run ({row name: doc}), with the (protocol_version, profile) they share.

    Each document's gated values are checked on reading, so a malformed file is named as one line.

    `probes_dir`: the probes' documents (`agebench probes`), added under their row names. Raises
    GateInputError for a malformed file, no files, or mixed versions or profiles.
    """
    files = sorted(metrics_dir.glob("*.json"))
    if not files:
        raise GateInputError(f"{metrics_dir}: no metrics files (*.json); run `dvc repro` first")
    if probes_dir is not None:
        probe_files = sorted(probes_dir.glob("*.json"))
        if not probe_files:
            raise GateInputError(f"{probes_dir}: no probe files (*.json); run `agebench probes` first")
        files += probe_files
    docs: dict[str, dict[str, Any]] = {}
    seen: dict[tuple[int, str | None], Path] = {}
    for f in files:
        doc, name = _results_doc(f, seen)
        _validate_tasks(doc, str(f), gated)
        docs[name] = doc
    version, profile = _one_version(seen, metrics_dir, "rerun so every row is scored")
    return docs, version, profile


def run_fingerprint(metrics_dir: Path) -> dict[str, Any] | None:
    """The fingerprint the run's training recorded (`reports/runtime/*.json`, beside `reports/metrics`), or None.

    Raises GateInputError when the run's methods were trained on machines with different fingerprints.
    """
    found: dict[str, Any] | None = None
    for f in sorted((metrics_dir.parent / "runtime").glob("*.json")):
        doc = _read(f)
        fp = doc.get("fingerprint") if isinstance(doc, dict) else None
        if fp is None:
            continue
        if found is not None and fp != found:
            raise GateInputError(f"{f}: trained on another machine than the run's other methods ({fp} != {found})")
        found = fp
    return found
