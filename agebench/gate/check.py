"""`agebench check` / `agebench baseline update`: the regression gate (PROTOCOL.md s.6).

A gate that no machine fails merely by being different. Each compared value runs in one of four
modes, and the report says which and why:

- `exact`: rows no training touches (`identity`, `real`, external rows and the probes of
  `agebench.pipeline.probes`). Scoring fixed images is the same computation on every machine, so every
  number must equal the baseline's to `EXACT_RTOL` (counts and rates exactly). Passes everywhere;
  catches any change in scoring, data or protocol, in either direction.
- `bit-exact`: a trained method when this run's machine fingerprint (`agebench.infra.fingerprint`)
  equals the baseline's: the same seeded training gives the same bits, so it is compared like an
  exact row.
- `statistical`: a trained method on a machine with another fingerprint. Two machines train like
  two seeds, so the baseline records the metric over several training seeds and the gate accepts
  anything within `SPREAD_K` seed standard deviations of the seeds' range (never less than the
  metric's configured tolerance or its 95% half-width). Beyond it in the bad direction is a
  regression; beyond it in the good direction is a change too (a generator that returns its input
  blurred "improves" FID and identity): both fail until the baseline is updated on purpose. It
  catches a method that stops learning, diverges, loses a loss term or makes non-faces; it cannot
  catch a changed bit.
  A baseline made from seed-merged results (the CPU track's `baselines/cpu.json`) takes the spread from
  the seeds it merged and records no fingerprint, so its trained rows are always statistical.
- `tolerance`: a baseline made from one run without seed runs: a metric fails when it moves in its bad
  direction by more than the larger of its tolerance and its 95% half-width.

Exit status of `check`: 0 every value within its mode's tolerance, 1 a regression or change (or a
value missing now), 2 unusable input (a missing, non-UTF-8 or malformed file, a non-numeric value,
results of another `protocol_version` or `profile`, or a gate that compared nothing).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import agebench
from agebench.gate.inputs import (
    GateInputError,
    _baseline_metrics,
    _mapping,
    _number,
    _read,
    collect_versioned,
    gated_values,
    read_docs,
    results_version,
    run_fingerprint,
)
from agebench.infra.common import write_json
from agebench.infra.fingerprint import fingerprint_differences
from agebench.params.sections import CheckConfig
from metrics.keys import KEY_SEEDS

#: Relative tolerance of an exact row. The features behind FID, KID and realism are float32 (epsilon 1.2e-7),
#: so a kernel that sums in another order on another CPU may move the last float32 digits; a change in
#: scoring moves far more (swapping torch for OpenVINO's float32 Inception moved FID by 8.6e-8 relative).
EXACT_RTOL = 1e-6
#: Statistical rows: how many seed standard deviations beyond the seeds' range are still "the same method".
SPREAD_K = 6.0
#: Rows whose numbers involve no training: compared exactly on every machine.
EXACT_KINDS = ("reference", "probe", "external")
#: Parts of a metrics document that are not results (provenance and configuration).
NOT_RESULTS = frozenset(
    {
        "method",
        "kind",
        "profile",
        "params",
        "backbones",
        "protocol_version",
        "agebench_version",
        "git_revision",
        "python",
        "torch",
        "train",
        "resolution",
        "uses_scoring_networks",
        "source",
    }
)
BASELINE_FORMAT = 3


@dataclass(frozen=True)
class Row:
    """One compared metric."""

    key: str  # method/task/metric
    baseline: float | None
    now: float | None
    allowed: float
    verdict: str  # "ok", "improved", "REGRESSED", "CHANGED", "missing now", "new"
    mode: str = "tolerance"  # "exact", "bit-exact", "statistical", "tolerance"

    @property
    def delta(self) -> float | None:
        return None if self.baseline is None or self.now is None else self.now - self.baseline


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


def _compare_rows_format2(baseline_path: Path, base: dict[str, Any], metrics_dir: Path, cfg: CheckConfig) -> list[Row]:
    baseline = _baseline_metrics(base, baseline_path)
    if not baseline:
        raise GateInputError(f"{baseline_path}: the baseline holds no metrics: the gate would compare nothing")
    current, _, _ = collect_versioned(metrics_dir, cfg)
    return compare(baseline, current, cfg)


def _leaves(value: Any, prefix: str, out: dict[str, Any]) -> None:
    """Flatten a JSON value: mappings by key; a list of numbers or strings stays one leaf (compared whole)."""
    if isinstance(value, dict):
        for k in sorted(value):
            _leaves(value[k], f"{prefix}/{k}", out)
    elif isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        for i, v in enumerate(value):
            _leaves(v, f"{prefix}/{i}", out)
    elif isinstance(value, bool | int | float | str | list) or value is None:
        out[prefix] = value


def exact_values(doc: dict[str, Any], name: str) -> dict[str, Any]:
    """Every result a row reports, flattened to '<row>/<path>' -> number, string, null or list of those."""
    out: dict[str, Any] = {}
    for key in sorted(doc):
        if key not in NOT_RESULTS:
            _leaves(doc[key], f"{name}/{key}", out)
    return out


def _same(a: Any, b: Any) -> bool:
    """Equal to `EXACT_RTOL` for floats, exactly for everything else; NaN and null are one missing value."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    fa, fb = _scalar(a), _scalar(b)
    if fa is None or fb is None:  # not both numbers: equal only as the same value, or both missing
        return a == b or (_missing(a) and _missing(b))
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if math.isnan(fa) or math.isnan(fb):
        return math.isnan(fa) and math.isnan(fb)
    return abs(fa - fb) <= EXACT_RTOL * max(abs(fa), abs(fb), 1e-12)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _scalar(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def compare_exact(baseline: dict[str, Any], current: dict[str, Any], mode: str = "exact") -> list[Row]:
    """Every value of either side; a row fails ("CHANGED") when it differs beyond `EXACT_RTOL`."""
    rows = []
    for key in sorted(set(baseline) | set(current)):
        if key not in current:
            rows.append(Row(key, _scalar(baseline[key]), None, 0.0, "missing now", mode))
        elif key not in baseline:
            rows.append(Row(key, None, _scalar(current[key]), 0.0, "new", mode))
        else:
            b, c = baseline[key], current[key]
            rows.append(Row(key, _scalar(b), _scalar(c), 0.0, "ok" if _same(b, c) else "CHANGED", mode))
    return rows


def compare_statistical(
    baseline: dict[str, dict[str, Any]], current: dict[str, dict[str, Any]], cfg: CheckConfig
) -> list[Row]:
    """Each trained metric against the band its baseline's training seeds span (module docstring)."""
    rows = []
    for key in sorted(set(baseline) | set(current)):
        rule = cfg.metrics.get(key.rsplit("/", 1)[1])
        if rule is None:
            continue
        b, c = baseline.get(key), current.get(key)
        if c is None:
            rows.append(Row(key, _v(b), None, rule.tolerance, "missing now", "statistical"))
            continue
        if b is None:
            rows.append(Row(key, None, _v(c), rule.tolerance, "new", "statistical"))
            continue
        seeds = [s for s in b.get("seeds", []) if s is not None]
        cv = _v(c)
        if len(seeds) < 2:  # no spread recorded: the tolerance rule
            (row,) = compare({key: b}, {key: c}, cfg)
            rows.append(row)
            continue
        sd = statistics.stdev(seeds)
        half = c.get("half_width") or 0.0
        margin = max(rule.tolerance, SPREAD_K * sd, half)
        low, high = min(seeds) - margin, max(seeds) + margin
        if cv is None:
            verdict = "REGRESSED"
        elif low <= cv <= high:
            verdict = "ok"
        else:
            worse = cv < low if rule.direction == "higher" else cv > high
            verdict = "REGRESSED" if worse else "CHANGED"
        rows.append(Row(key, statistics.fmean(seeds), cv, margin, verdict, "statistical"))
    return rows


def check(
    baseline_path: Path,
    metrics_dir: Path,
    cfg: CheckConfig,
    probes_dir: Path | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> tuple[int, str]:
    """Exit status (0 pass, 1 a regression, a change or a value missing now) and the markdown report.

    `fingerprint`: the machine the run was trained on (default: what its runtime records say, else
    none, which never matches). Raises GateInputError for unusable input or a gate that compared nothing.
    """
    base = _read(baseline_path)
    if not isinstance(base, dict):
        raise GateInputError(f"{baseline_path}: not an agebench baseline (not a JSON object)")
    try:
        b_version, b_profile = results_version(base)
    except GateInputError as exc:
        raise GateInputError(f"{baseline_path}: {exc}") from None
    docs, version, profile = read_docs(
        metrics_dir, probes_dir if base.get("format") == BASELINE_FORMAT else None, cfg.metrics
    )
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
    notes: list[str] = []
    if base.get("format") != BASELINE_FORMAT:
        rows = _compare_rows_format2(baseline_path, base, metrics_dir, cfg)
        notes.append("every row: tolerance (a baseline without seed runs or fingerprint)")
    else:
        rows = _compare_format3(baseline_path, base, docs, cfg, fingerprint, notes)
    if not rows:
        raise GateInputError(f"{baseline_path}: nothing was compared (the baseline and the run share no metric)")
    bad = [r for r in rows if r.verdict in ("REGRESSED", "CHANGED", "missing now")]
    by_mode = {m: sum(r.mode == m for r in rows) for m in ("exact", "bit-exact", "statistical", "tolerance")}
    counts = ", ".join(f"{n} {m}" for m, n in by_mode.items() if n)
    summary = (
        f"{len(bad)} of {len(rows)} values regressed, changed or missing ({counts})"
        if bad
        else f"all {len(rows)} values within tolerance ({counts})"
    )
    return (1 if bad else 0), "\n".join(notes) + "\n\n" + markdown(
        rows, only_bad=len(rows) > 200
    ) + "\n\n" + summary + "\n"


def _baseline_section(base: dict[str, Any], path: Path, name: str) -> dict[str, Any]:
    section_ = base.get(name)
    if not isinstance(section_, dict):
        raise GateInputError(f"{path}: not a format-{BASELINE_FORMAT} agebench baseline (no '{name}' mapping)")
    return section_


def _compare_format3(
    path: Path,
    base: dict[str, Any],
    docs: dict[str, dict[str, Any]],
    cfg: CheckConfig,
    fingerprint: dict[str, Any] | None,
    notes: list[str],
) -> list[Row]:
    exact_base = _baseline_section(base, path, "exact")
    trained_base = _baseline_section(base, path, "trained")
    if not exact_base and not trained_base:
        raise GateInputError(f"{path}: the baseline holds no values: the gate would compare nothing")
    exact_now: dict[str, Any] = {}
    trained_now: dict[str, dict[str, Any]] = {}
    trained_exact_now: dict[str, Any] = {}
    for name, doc in docs.items():
        if doc.get("kind") in EXACT_KINDS:
            exact_now.update(exact_values(doc, name))
        else:
            trained_now.update(gated_values(doc, name, cfg))
            trained_exact_now.update(exact_values(doc, name))
    notes.append(
        "exact: rows no training touches (identity, real, external, probes); scoring fixed images is the same "
        "computation on every machine"
    )
    rows = compare_exact(exact_base, exact_now)
    differences = fingerprint_differences(base.get("fingerprint"), fingerprint)
    if not differences:
        notes.append("bit-exact: trained rows; this run was trained on a machine with the baseline's fingerprint")
        rows += compare_exact(_baseline_section(base, path, "trained_exact"), trained_exact_now, mode="bit-exact")
    else:
        seeds = {len(v.get("seeds", [])) for v in trained_base.values() if isinstance(v, dict)}
        why = (
            "the baseline records no machine fingerprint (one that merges training seeds never does: a merge is "
            "no one run's bits)"
            if base.get("fingerprint") is None
            else f"this run's machine fingerprint differs from the baseline's ({'; '.join(differences)})"
        )
        notes.append(
            f"statistical: trained rows, against the spread of {max(seeds, default=0)} training seeds, because {why}"
        )
        checked = {}
        for key, entry in trained_base.items():
            entry = _mapping(entry, f"{path}: trained.{key}")
            seeds_ = entry.get("seeds", [])
            if not isinstance(seeds_, list):
                raise GateInputError(f"{path}: trained.{key}.seeds: expected a list of numbers")
            checked[key] = {
                "value": _number(entry.get("value"), f"{path}: trained.{key}.value"),
                "half_width": _number(entry.get("half_width"), f"{path}: trained.{key}.half_width"),
                "seeds": [_number(s, f"{path}: trained.{key}.seeds") for s in seeds_],
            }
        rows += compare_statistical(checked, trained_now, cfg)
    return rows


def markdown(rows: list[Row], only_bad: bool = False) -> str:
    """The comparison as a markdown table (with `only_bad`, the rows that fail plus a count of the rest)."""

    def f(v: float | None) -> str:
        return "–" if v is None else f"{v:.6g}"

    shown = [r for r in rows if r.verdict not in ("ok",)] if only_bad else rows
    lines = ["| value | mode | baseline | now | delta | allowed | verdict |", "|---|---|---:|---:|---:|---:|---|"]
    lines += [
        f"| {r.key} | {r.mode} | {f(r.baseline)} | {f(r.now)} | {f(r.delta)} | {r.allowed:.4g} | {r.verdict} |"
        for r in shown
    ]
    if only_bad:
        lines.append(f"\n({len(rows) - len(shown)} further values ok, not listed)")
    return "\n".join(lines)


def update_baseline(
    baseline_path: Path,
    metrics_dir: Path,
    cfg: CheckConfig,
    seed_runs: tuple[Path, ...] = (),
    probes_dir: Path | None = None,
    fingerprint: dict[str, Any] | None = None,
) -> int:
    """Write the run in `metrics_dir` (plus its probes and the same methods trained with other seeds in
    `seed_runs`) as the new baseline, replacing the file on purpose; returns the number of values.

    `fingerprint`: the machine the run was trained on (default: its runtime records). Seed-merged results
    (`agebench merge-seeds`, e.g. the published CPU track) carry their seeds: those are the spread, and the
    baseline records no fingerprint, so its trained rows are always compared statistically. Refuses
    (GateInputError, nothing written) results of another protocol version than this code's, mixed
    versions or profiles, seed runs of another profile or with other methods, and a folder as the path.
    """
    docs, version, profile = read_docs(metrics_dir, probes_dir, cfg.metrics)
    if version != agebench.PROTOCOL_VERSION:
        raise GateInputError(
            f"{metrics_dir} holds protocol {version} results; this agebench implements protocol "
            f"{agebench.PROTOCOL_VERSION}: rerun `dvc repro` before updating the baseline (nothing was written)"
        )
    runs = [docs]
    for other in seed_runs:
        more, v, p = read_docs(other, None, cfg.metrics)
        if (v, p) != (version, profile):
            raise GateInputError(
                f"{other}: protocol {v}, profile {p}; the run is protocol {version}, profile {profile}"
            )
        trained = {n for n, d in docs.items() if d.get("kind") not in EXACT_KINDS}
        if not trained <= set(more):
            raise GateInputError(f"{other}: lacks {sorted(trained - set(more))}: a seed run must train every method")
        runs.append(more)
    merged = sorted(n for n, d in docs.items() if d.get("kind") not in EXACT_KINDS and len(d.get(KEY_SEEDS) or []) > 1)
    if merged and seed_runs:
        raise GateInputError(
            f"{metrics_dir} holds seed-merged results ({', '.join(merged)}): their own training seeds are the "
            "spread; give no --seed-runs (nothing was written)"
        )
    exact: dict[str, Any] = {}
    trained_exact: dict[str, Any] = {}
    trained: dict[str, dict[str, Any]] = {}
    for name, doc in docs.items():
        if doc.get("kind") in EXACT_KINDS:
            exact.update(exact_values(doc, name))
            continue
        if name in merged:  # `agebench merge-seeds` output: each seed's own record is one run
            per_seed = [{"tasks": _mapping(s, f"{name}: seeds").get("tasks", {})} for s in doc[KEY_SEEDS]]
        else:
            trained_exact.update(exact_values(doc, name))
            per_seed = [run[name] for run in runs]
        seed_values = [gated_values(s, name, cfg) for s in per_seed] if len(per_seed) > 1 else []
        for key, entry in gated_values(doc, name, cfg).items():
            trained[key] = {**entry, "seeds": [v.get(key, {}).get("value") for v in seed_values]}
    if merged:
        # A merge of several runs is no one run's bits: a single-seed rerun compared bit for bit with the
        # seeds' means would always fail, so such a baseline records no fingerprint and no bit-exact values
        # (never bit-exact), and its trained rows are judged against the spread of the seeds it merged.
        fingerprint, trained_exact = None, {}
    elif fingerprint is None:
        fingerprint = run_fingerprint(metrics_dir)
    doc = {
        "format": BASELINE_FORMAT,
        "protocol_version": version,
        "profile": profile,
        "source": str(metrics_dir),
        "seed_runs": [str(p) for p in seed_runs],
        "fingerprint": fingerprint,
        "exact": exact,
        "trained": trained,
        "trained_exact": trained_exact,
    }
    write_json(baseline_path, doc)
    return len(exact) + len(trained)
