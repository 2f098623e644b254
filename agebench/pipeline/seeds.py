"""Training seeds in a metrics file (PROTOCOL.md s.4 v3): per-seed records, their means, spread and intervals.

A method's metrics file keeps every training seed's scores under `seeds` (ordered by seed; the
pipeline trains one seed per run, so one entry), and per task the method's value is the mean over
seeds, with `seed_spread` (min, max, sd over seeds) and intervals from the two-level bootstrap
(`metrics.stats.two_level_bootstrap`: seeds, then faces). `merge_seed_docs` merges the files of one
method from runs with different seeds (same code revision and profile) into one file with S seeds.

Each task's `per_face` record (face-free, `PER_FACE_KEYS`) lets anyone recompute every headline number:
with S seeds its numeric entries are the per-face means over seeds, so a task's `joint` is always
`mean(per_face.joint)`.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agebench.infra.errors import UserError
from metrics import stats
from metrics.keys import (
    KEY_BREAKDOWN,
    KEY_CI95,
    KEY_CI_WILSON,
    KEY_CYCLE_MISSING,
    KEY_FACE_AGE_IN,
    KEY_FACE_AGE_OUT,
    KEY_FACE_AGE_SCORE,
    KEY_FACE_FILE,
    KEY_FACE_FOUND,
    KEY_FACE_JOINT,
    KEY_FACE_REALISTIC,
    KEY_FACE_VERIFIED,
    KEY_FID_N,
    KEY_METRIC_AGE_ACC,
    KEY_METRIC_AGE_FAIL,
    KEY_METRIC_AGE_SCORE,
    KEY_METRIC_FACE_FAIL,
    KEY_METRIC_FACE_FOUND_IN,
    KEY_METRIC_GAP,
    KEY_METRIC_GAP_CLOSURE,
    KEY_METRIC_ID_FAIL,
    KEY_METRIC_ID_RATE,
    KEY_METRIC_JOINT,
    KEY_METRIC_JOINT_DECADE,
    KEY_METRIC_REALISM,
    KEY_MISSING,
    KEY_N,
    KEY_N_MANIFOLD,
    KEY_N_REAL_TARGET,
    KEY_PER_FACE,
    KEY_SEED_SPREAD,
    KEY_SEEDS,
    PER_FACE_KEYS,
)

#: Per-face keys that are 0/1 for one seed.
_BINARY = (KEY_FACE_FOUND, KEY_FACE_VERIFIED, KEY_FACE_REALISTIC)
#: Task summary metrics recomputed from the per-face record (exactly its means): metric -> (per-face key, valid).
PER_FACE_METRICS = {
    KEY_METRIC_JOINT: KEY_FACE_JOINT,
    KEY_METRIC_AGE_SCORE: KEY_FACE_AGE_SCORE,
    KEY_METRIC_REALISM: KEY_FACE_REALISTIC,
    KEY_METRIC_ID_RATE: KEY_FACE_VERIFIED,
}
#: Task keys that are not a seed's scores (labels, structures) and are never averaged over seeds.
_NOT_SCORES = ("scheme", "source", "target", KEY_CI95, KEY_CI_WILSON, KEY_BREAKDOWN, KEY_PER_FACE, KEY_SEED_SPREAD)
#: Counts that describe the task's inputs, not a seed's result: no spread; merged only when the seeds agree.
_COUNTS = (KEY_N, KEY_MISSING, KEY_FID_N, KEY_CYCLE_MISSING, KEY_N_REAL_TARGET, KEY_N_MANIFOLD)
#: Rates whose interval is Wilson's when counted on few events (pooled over seeds).
_RATES = (
    KEY_METRIC_AGE_ACC,
    KEY_METRIC_ID_RATE,
    KEY_METRIC_REALISM,
    KEY_METRIC_JOINT_DECADE,
    KEY_METRIC_ID_RATE + "_dlib",
    KEY_METRIC_FACE_FOUND_IN,
)


class SeedMergeError(UserError, ValueError):
    """Metrics files that cannot be merged over seeds (another revision, profile or method; a seed twice)."""


def per_face_record(files: Sequence[str], arrays: Mapping[str, np.ndarray]) -> dict[str, list[Any]]:
    """The face-free per-face record of one task, ordered by input file name.

    Args:
        files: (N,) input file names, row-aligned with `arrays`.
        arrays: (N,) per-face arrays from `metrics.suite.score_task` (face_found, age_in, age_out, id_sim,
            verified, age_score, realistic, joint); a key that is absent (its metric not configured) gives
            a list of nulls.
    Returns:
        {key: list} for every key of `PER_FACE_KEYS`; `age_out` is null where the output has no face, `age_in`
        and `id_sim` where they could not be computed; 0/1 keys are ints.
    """
    order = sorted(range(len(files)), key=lambda i: str(files[i]))
    found = np.asarray(arrays[KEY_FACE_FOUND]) > 0.5 if KEY_FACE_FOUND in arrays else np.ones(len(files), bool)
    out: dict[str, list[Any]] = {KEY_FACE_FILE: [str(files[i]) for i in order]}
    for key in PER_FACE_KEYS[1:]:
        if key not in arrays:
            out[key] = [None] * len(files)
            continue
        a = np.asarray(arrays[key], np.float64)
        if key == KEY_FACE_AGE_OUT:
            a = np.where(found, a, np.nan)
        if key in _BINARY:
            out[key] = [int(a[i] > 0.5) for i in order]
        else:
            out[key] = [float(a[i]) if math.isfinite(a[i]) else None for i in order]
    return out


def _scores(task: Mapping[str, Any]) -> dict[str, float]:
    """A task's numeric scores (every number that is not a label, a count of structure or a nested record)."""
    # A null is a score a seed could not compute (written from NaN, e.g. gap_closure without any face).
    return {
        k: v
        for k, v in task.items()
        if k not in _NOT_SCORES and (v is None or isinstance(v, int | float)) and not isinstance(v, bool)
    }


def seed_entry(seed: int | None, tasks: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One `seeds` entry: the seed and, per task, its scores, intervals and per-face record (no breakdown)."""
    out: dict[str, Any] = {}
    for task_id, t in tasks.items():
        out[task_id] = {**_scores(t), KEY_CI95: copy.deepcopy(t.get(KEY_CI95, {})), KEY_PER_FACE: t[KEY_PER_FACE]}
    return {"seed": seed, "tasks": out}


def spread(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """`seed_spread` of one task: {metric: {"min", "max", "sd"}} over the seeds' scores (sd 0 for one seed)."""
    keys = [k for k in _scores(per_seed[0]) if k not in _COUNTS and all(k in t for t in per_seed)] if per_seed else []
    return {k: stats.seed_spread([t[k] for t in per_seed]) for k in keys}


def add_seed_records(doc: dict[str, Any], seed: int | None) -> dict[str, Any]:
    """Give a one-seed metrics document its `seeds` list and each task its `seed_spread` (in place)."""
    entry = seed_entry(seed, doc["tasks"])
    if doc.get("extra_tasks"):
        entry["extra_tasks"] = seed_entry(seed, doc["extra_tasks"])["tasks"]
    for section in ("tasks", "extra_tasks"):
        for t in doc.get(section, {}).values():
            t[KEY_SEED_SPREAD] = spread([t])
    doc[KEY_SEEDS] = [entry]
    return doc


def _mean_per_face(records: Sequence[Mapping[str, list[Any]]]) -> dict[str, list[Any]]:
    """Per-face means over seeds of the numeric entries (nulls left out; null where every seed has null)."""
    out: dict[str, list[Any]] = {KEY_FACE_FILE: list(records[0][KEY_FACE_FILE])}
    for key in PER_FACE_KEYS[1:]:
        a = _per_face_matrix(records, key)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a face null in every seed: its mean is null
            m = np.nanmean(a, axis=0)
        out[key] = [float(v) if math.isfinite(v) else None for v in m]
    return out


def _as_floats(values: Sequence[Any]) -> np.ndarray:
    """float64 array of numbers and nulls (NaN)."""
    return np.array([np.nan if v is None else v for v in values], np.float64)


def _per_face_matrix(records: Sequence[Mapping[str, list[Any]]], key: str) -> np.ndarray:
    """(S, N) float64 of one per-face key over seeds, NaN for nulls."""
    return np.array([[np.nan if v is None else v for v in r[key]] for r in records], np.float64)


def merge_task(per_seed: Sequence[Mapping[str, Any]], name: str, resamples: int, boot_seed: int) -> dict[str, Any]:
    """One task of a merged document from the task records of its S seeds (same faces, same order).

    Values: means over seeds, except `PER_FACE_METRICS`, recomputed as means of the merged per-face record
    (equal to the mean over seeds up to rounding, and exactly `mean(per_face.<key>)`). Intervals: the
    two-level bootstrap (`stats.two_level_bootstrap`, the method's own seed stream `stats.seed_stream(name)`)
    for the per-face metrics and `gap_closure`; Wilson on the pooled counts for rates counted on few events;
    other metrics (fid, kid, cycle_l1, ...) keep the seeds' mean of their interval bounds.
    """
    records = [t[KEY_PER_FACE] for t in per_seed]
    files = records[0][KEY_FACE_FILE]
    for r in records[1:]:
        if r[KEY_FACE_FILE] != files:
            raise SeedMergeError(f"{name}: the seeds' per-face records list different input files; rerun one revision")
    keys = [k for k in _scores(per_seed[0]) if all(k in t for t in per_seed)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a score no seed could compute stays null
        out: dict[str, Any] = {k: float(np.nanmean(_as_floats([t[k] for t in per_seed]))) for k in keys}
    for k in (*_COUNTS, KEY_METRIC_FACE_FAIL, KEY_METRIC_ID_FAIL, KEY_METRIC_AGE_FAIL):
        if k in out and all(per_seed[0].get(k) == t.get(k) for t in per_seed):
            out[k] = per_seed[0][k]  # identical counts stay integers
    merged = _mean_per_face(records)
    ci: dict[str, list[float]] = {}
    for k in dict.fromkeys(k for t in per_seed for k in t.get(KEY_CI95, {})):  # first seed's order: stable bytes
        bounds = [t.get(KEY_CI95, {}).get(k) for t in per_seed]
        if all(b is not None and len(b) == 2 for b in bounds):
            # A bound a seed could not compute is null in its file (e.g. gap_closure when no output had a face).
            lo, hi = (_as_floats([b[i] for b in bounds]) for i in (0, 1))
            ci[k] = [float(lo.mean()), float(hi.mean())]
    stream = stats.seed_stream(name)
    matrices = {metric: _per_face_matrix(records, key) for metric, key in PER_FACE_METRICS.items()}
    if KEY_METRIC_GAP_CLOSURE in out and KEY_METRIC_GAP in out:
        age_in, age_out = _per_face_matrix(records, KEY_FACE_AGE_IN), _per_face_matrix(records, KEY_FACE_AGE_OUT)
        matrices[KEY_METRIC_GAP_CLOSURE] = stats.gap_closure(age_in, age_out, float(per_seed[0][KEY_METRIC_GAP]))
    wilson: list[str] = []
    for metric, values in matrices.items():
        if metric not in out:
            continue
        b = stats.two_level_bootstrap(values, resamples, boot_seed, stream)
        if metric in PER_FACE_METRICS:
            col = _as_floats(merged[PER_FACE_METRICS[metric]])
            out[metric] = float(col.mean()) if np.isfinite(col).all() and len(col) else b.value
        ci[metric] = list(b.ci95)
    for metric in _RATES:
        if metric in out and math.isfinite(out[metric]):
            n_total = int(out.get(KEY_N, len(files))) * len(per_seed)
            k = round(out[metric] * n_total)
            if stats.is_rare(k, n_total):
                ci[metric] = list(stats.wilson_interval(k, n_total))
                wilson.append(metric)
    out.update({k: per_seed[0][k] for k in ("scheme", "source", "target") if k in per_seed[0]})
    out[KEY_CI95] = ci
    if wilson:
        out[KEY_CI_WILSON] = sorted(wilson)
    out[KEY_SEED_SPREAD] = spread(per_seed)
    out[KEY_PER_FACE] = merged
    return out


def _check_same(docs: Sequence[Mapping[str, Any]], key: str, what: str) -> None:
    values = {str(d.get(key)) for d in docs}
    if len(values) > 1:
        raise SeedMergeError(f"{what}: the runs differ in {key} ({', '.join(sorted(values))}); merge runs of one {key}")


def merge_seed_docs(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Merge one method's metrics documents from runs with different training seeds into one with S seeds.

    Every document must come from the same code revision, profile, protocol version and method; seeds must
    differ. Documents whose only seed is null (identity, external rows: nothing trained) must agree face by
    face, and the merge keeps one of them. Returns the merged document (the first document's other keys).
    Raises SeedMergeError naming what differs.
    """
    if not docs:
        raise SeedMergeError("no metrics documents to merge")
    name = str(docs[0].get("method"))
    for key in ("method", "git_revision", "profile", "protocol_version"):
        _check_same(docs, key, name)
    entries = [e for d in docs for e in d.get(KEY_SEEDS, [])]
    if any(KEY_SEEDS not in d for d in docs):
        raise SeedMergeError(f"{name}: a metrics file has no `seeds` list (made before protocol 3); rescore it")
    seeds = [e["seed"] for e in entries]
    if all(s is None for s in seeds):
        first = [e["tasks"] for e in docs[0][KEY_SEEDS]]
        for d in docs[1:]:
            if [e["tasks"] for e in d[KEY_SEEDS]] != first:
                raise SeedMergeError(f"{name}: untrained rows (seed null) differ between runs; rerun one revision")
        return copy.deepcopy(dict(docs[0]))
    if None in seeds or len(set(seeds)) != len(seeds):
        raise SeedMergeError(f"{name}: seeds {seeds} repeat or mix null and numbers; merge runs of distinct seeds")
    entries = sorted(entries, key=lambda e: e["seed"])
    ev = docs[0].get("params", {}).get("evaluate", {})
    resamples, boot_seed = int(ev.get("bootstrap_resamples", 1000)), int(ev.get("bootstrap_seed", 0))
    out = copy.deepcopy(dict(docs[0]))
    for section in ("tasks", "extra_tasks"):
        if section not in out:
            continue
        key = "tasks" if section == "tasks" else "extra_tasks"
        for task_id, task in out[section].items():
            per_seed = [e.get(key, {}).get(task_id) for e in entries]
            if any(t is None for t in per_seed):
                raise SeedMergeError(f"{name}: task {task_id} is missing from a seed's record")
            merged = {**{k: task[k] for k in ("scheme", "source", "target") if k in task}}
            merged.update(merge_task(per_seed, name, resamples, boot_seed))
            if KEY_BREAKDOWN in task:  # per-seed breakdowns are not kept: the first run's, labelled as such
                merged["breakdown_seed"] = entries[0]["seed"]
                merged[KEY_BREAKDOWN] = task[KEY_BREAKDOWN]
            out[section][task_id] = merged
    out[KEY_SEEDS] = copy.deepcopy(entries)
    if any(d.get("reconstruction") for d in docs):
        by_seed = {e["seed"]: d.get("reconstruction") for d in docs for e in d[KEY_SEEDS]}
        if any(r is None for r in by_seed.values()):
            raise SeedMergeError(f"{name}: a run has no reconstruction table; merge runs of one configuration")
        out["reconstruction"] = merge_reconstruction([by_seed[s] for s in sorted(by_seed)])
        out["reconstruction_seeds"] = [{"seed": s, **copy.deepcopy(by_seed[s])} for s in sorted(by_seed)]
    return out


def merge_reconstruction(tables: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Age-cGAN's reconstruction table over S seeds (`agebench.pipeline.evaluate.reconstruction_rates`, one per
    seed, the same `n` inputs): per mode and judge, `id_rate` is the mean over seeds and [id_rate_lo,
    id_rate_hi] the Wilson 95% interval of the pooled count (S x n trials; rare events, PROTOCOL.md s.4 v3);
    `id_fail` and `face_fail` are summed over seeds and `score` is the mean of the seeds' means."""
    n = {int(t["n"]) for t in tables}
    if len(n) != 1:
        raise SeedMergeError(f"reconstruction tables count different inputs {sorted(n)}; merge runs of one data")
    (count,) = n
    out: dict[str, Any] = {"n": count, "n_seeds": len(tables)}
    for mode in (k for k in tables[0] if k != "n"):
        out[mode] = {}
        for judge in tables[0][mode]:
            rows = [t[mode][judge] for t in tables]
            rates = [float(r["id_rate"]) for r in rows]
            successes = sum(round(rate * count) for rate in rates)
            lo, hi = stats.wilson_interval(successes, count * len(rows))
            scores = [float(r["score"]) for r in rows if r.get("score") is not None and not math.isnan(r["score"])]
            out[mode][judge] = {
                "id_rate": float(np.mean(rates)),
                "id_rate_lo": lo,
                "id_rate_hi": hi,
                "score": float(np.mean(scores)) if scores else float("nan"),
                "id_fail": sum(int(r["id_fail"]) for r in rows),
                "face_fail": sum(int(r["face_fail"]) for r in rows),
            }
    return out


def merge_seed_dirs(run_dirs: Sequence[str | Path], out_dir: str | Path) -> list[Path]:
    """`agebench merge-seeds`: merge the metrics files of the same methods from separate runs into `out_dir`.

    Every run folder must hold the same file names (`<method>.json`, `real.json`); `real.json` (no seeds: a
    function of data and code) must be identical in every run and is copied. Returns the written paths.
    """
    from agebench.infra.common import read_json, write_json

    dirs = [Path(d) for d in run_dirs]
    if len(dirs) < 2:
        raise SeedMergeError("give at least two run metrics folders to merge")
    for d in dirs:
        if not d.is_dir():
            raise SeedMergeError(f"{d}: not a folder of metrics files (reports/metrics of a run)")
    names = sorted(p.name for p in dirs[0].glob("*.json"))
    for d in dirs[1:]:
        other = sorted(p.name for p in d.glob("*.json"))
        if other != names:
            raise SeedMergeError(f"{d}: holds {other}, {dirs[0]} holds {names}; merge runs of the same methods")
    out = Path(out_dir)
    written = []
    for fname in names:
        docs = [read_json(d / fname) for d in dirs]
        if KEY_SEEDS not in docs[0] and docs[0].get("method") == "real":
            _check_same(docs, "git_revision", fname)
            if any(d.get("tasks") != docs[0].get("tasks") for d in docs[1:]):
                raise SeedMergeError(
                    f"{fname}: the real row differs between runs (other data?); merge runs of one data"
                )
            merged = docs[0]
        else:
            merged = merge_seed_docs(docs)
        write_json(out / fname, merged)
        written.append(out / fname)
    return written
