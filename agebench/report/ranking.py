"""Protocol 3 ranking of one task from the metrics documents' per-face records alone (PROTOCOL.md s.6, v3).

Each ranked row's per-face `joint` over its training seeds (`seeds[k].tasks[task].per_face.joint`, an
(S, N) array) gives its value (the mean) and, through the paired two-level bootstrap
(`metrics.stats.two_level_bootstrap`, the same replicates as the row's own interval), the interval of its
difference with every other row: the rank groups against each group's leader, the
pairwise matrix, and the "not above no change" mark against the `identity` row.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from agebench.report.docs import RANKED_KINDS, ReportInputError
from metrics import ranking, stats
from metrics.keys import KEY_FACE_FILE, KEY_FACE_JOINT, KEY_METRIC_FID, KEY_METRIC_JOINT, KEY_PER_FACE, KEY_SEEDS

#: The reference row that does nothing (PROTOCOL.md s.5): a method must lie above it to have done something.
NO_CHANGE = "identity"
#: Largest accepted gap between a file's summary `joint` and the mean of its per-face records.
JOINT_TOLERANCE = 1e-9


@dataclasses.dataclass(frozen=True)
class Difference:
    """value(a) - value(b) of two rows with its paired two-level 95% interval."""

    a: str
    b: str
    value: float
    ci95: tuple[float, float]

    @property
    def separates(self) -> bool:
        """The interval excludes 0: the data tell the two rows apart."""
        return ranking.separates(self.ci95)

    def flipped(self) -> Difference:
        """value(b) - value(a): the same resamples, so exactly the negated interval."""
        return Difference(self.b, self.a, -self.value, (-self.ci95[1], -self.ci95[0]))


@dataclasses.dataclass(frozen=True)
class TaskRanking:
    """One task's ranking.

    order: ranked rows (methods, external rows) best first (joint, then lower fid, then name).
    ranks: per row of `order`, the 1-based position of its group's leader.
    values: per-face mean `joint` of every row with records (ranked rows and `identity`).
    seeds: number of training seeds S per row with records.
    pairs: (a, b) -> Difference for every ordered pair of rows with comparable records.
    unpaired: ranked rows without per-face records (a group of their own, no comparison).
    """

    task: str
    order: tuple[str, ...]
    ranks: tuple[int, ...]
    values: Mapping[str, float]
    seeds: Mapping[str, int]
    pairs: Mapping[tuple[str, str], Difference]
    unpaired: tuple[str, ...]

    @property
    def labels(self) -> list[str]:
        """ "k" or "=k" per row of `order`."""
        return ranking.rank_labels(self.ranks)

    @property
    def matrix_rows(self) -> list[str]:
        """Rows and columns of the pairwise matrix: the ranked rows in order, then `identity` when present."""
        return [*self.order, *([NO_CHANGE] if NO_CHANGE in self.values else [])]

    def leader(self, name: str) -> str:
        """The leader of `name`'s rank group."""
        return self.order[self.ranks[self.order.index(name)] - 1]

    def compared_with(self, name: str) -> str | None:
        """The leader `name` was compared with: its own group's, or for a new group's leader the leader of the
        group above (the comparison that started the new group); None for the first row."""
        pos = self.order.index(name)
        return None if pos == 0 else self.leader(self.order[pos - 1])

    def vs_leader(self, name: str) -> Difference | None:
        """value(compared_with) - value(row), the interval that decided the row's group; None for the first row."""
        other = self.compared_with(name)
        return None if other is None else self.pairs.get((other, name))

    def vs_no_change(self, name: str) -> Difference | None:
        """value(row) - value(identity), None without an identity row or records."""
        return self.pairs.get((name, NO_CHANGE))

    def not_above_no_change(self, name: str) -> bool:
        """PROTOCOL.md s.6: the paired interval against `identity` does not lie above 0 (or cannot be had)."""
        d = self.vs_no_change(name)
        return d is None or not ranking.lies_above_zero(d.ci95)


def per_face_joint(doc: Mapping[str, Any], task: str) -> tuple[list[str] | None, np.ndarray] | None:
    """(input file names or None, (S, N) float64 per-face joint per training seed) of a row, or None.

    Read from `seeds[k].tasks[task].per_face.joint`; a document without `seeds` uses its task's own
    `per_face` as one seed.

    Raises:
        ReportInputError: seeds that disagree on the faces, or values that are not numbers.
    """
    name = doc.get("method")
    seeds = doc.get(KEY_SEEDS) or [{"tasks": doc.get("tasks", {})}]
    records = [s.get("tasks", {}).get(task, {}).get(KEY_PER_FACE) for s in seeds]
    if all(r is None for r in records):
        return None
    if any(r is None or KEY_FACE_JOINT not in r for r in records):
        raise ReportInputError(f"{name}: some seeds lack per_face.joint for {task}; re-run `dvc repro evaluate@{name}`")
    files = [r.get(KEY_FACE_FILE) for r in records]
    if any(f != files[0] for f in files):
        raise ReportInputError(f"{name}: seeds scored different faces for {task}; re-run `dvc repro evaluate@{name}`")
    try:
        values = np.array([r[KEY_FACE_JOINT] for r in records], dtype=np.float64)
    except (TypeError, ValueError):
        raise ReportInputError(f"{name}: per_face.joint of {task} holds a non-number; re-run evaluate") from None
    if values.ndim != 2 or not np.isfinite(values).all():
        raise ReportInputError(f"{name}: per_face.joint of {task} is not a finite list per seed; re-run evaluate")
    summary = doc.get("tasks", {}).get(task, {}).get(KEY_METRIC_JOINT)
    if summary is not None and values.size and abs(float(values.mean()) - float(summary)) > JOINT_TOLERANCE:
        raise ReportInputError(
            f"{name}: {task} joint {summary} is not the mean of its per-face records ({values.mean()}); "
            f"the file was edited or written by other code: re-run `dvc repro evaluate@{name}`"
        )
    return (list(files[0]) if files[0] is not None else None), values


def _sort_key(doc: Mapping[str, Any], task: str, value: float | None) -> tuple[float, float, str]:
    fid = doc.get("tasks", {}).get(task, {}).get(KEY_METRIC_FID)
    return (
        -value if value is not None and math.isfinite(value) else math.inf,
        float(fid) if fid is not None and math.isfinite(float(fid)) else math.inf,
        str(doc["method"]),
    )


def rank_task(docs: Sequence[Mapping[str, Any]], task: str, resamples: int, seed: int) -> TaskRanking:
    """Rank the ranked rows of `docs` on `task` from their per-face records (module docstring).

    Args:
        docs: metrics documents (methods, external and reference rows); reference rows other than
            `identity` are ignored.
        resamples, seed: the bootstrap's (`evaluate.bootstrap_resamples`, `evaluate.bootstrap_seed`).
    """
    ranked = [d for d in docs if d.get("kind", "method") in RANKED_KINDS]
    rows = ranked + [d for d in docs if d.get("method") == NO_CHANGE and d.get("kind") not in RANKED_KINDS]
    records = {str(d["method"]): per_face_joint(d, task) for d in rows}
    records = {m: r for m, r in records.items() if r is not None}
    values = {m: float(v.mean()) for m, (_, v) in records.items()}
    summary = {str(d["method"]): d.get("tasks", {}).get(task, {}).get(KEY_METRIC_JOINT) for d in ranked}
    order = sorted(ranked, key=lambda d: _sort_key(d, task, values.get(str(d["method"]), summary[str(d["method"])])))
    names = [str(d["method"]) for d in order]

    # Each row's replicates: its own seed draws (stream from its name), the faces drawn as every other row's.
    boots = {
        m: stats.two_level_bootstrap(v, resamples, seed, stats.seed_stream(m)).replicates
        for m, (_, v) in records.items()
    }
    pairs: dict[tuple[str, str], Difference] = {}
    members = [m for m in [*names, NO_CHANGE] if m in records]
    for i, a in enumerate(members):
        for b in members[i + 1 :]:
            (fa, va), (fb, vb) = records[a], records[b]
            if va.shape[1] != vb.shape[1] or (fa is not None and fb is not None and fa != fb):
                continue  # other faces: no paired comparison
            d = ranking.difference(va, vb, boots[a], boots[b])
            pairs[(a, b)] = Difference(a, b, float(d["value"]), tuple(d["ci95"]))
            pairs[(b, a)] = pairs[(a, b)].flipped()

    def interval(leader: int, row: int) -> tuple[float, float] | None:
        d = pairs.get((names[leader], names[row]))
        return None if d is None else d.ci95

    ranks = ranking.rank_groups(len(names), interval)
    return TaskRanking(
        task=task,
        order=tuple(names),
        ranks=tuple(ranks),
        values=values,
        seeds={m: int(v.shape[0]) for m, (_, v) in records.items()},
        pairs=pairs,
        unpaired=tuple(m for m in names if m not in records),
    )


def check_real_row(doc: Mapping[str, Any]) -> None:
    """The `real` row's gap and ceilings are what its per-face record gives (PROTOCOL.md s.4 v3):
    gap = mean(age_target) - mean(age_source), realism_real = mean(realistic_target), and age_score_real the
    all-pairs mean (`metrics.stats.all_pairs_age_score`). A task without `per_face_real` is not checked.

    Raises:
        ReportInputError: a value that differs from its recomputation (an edited file or other code).
    """
    for task, t in doc.get("tasks", {}).items():
        rec = t.get("per_face_real")
        if not rec:
            continue
        src = np.asarray(rec.get("age_source", []), np.float64)
        tgt = np.asarray(rec.get("age_target", []), np.float64)
        real = np.asarray(rec.get("realistic_target", []), np.float64)
        gap = stats.real_gap(src, tgt)
        recomputed = {
            "gap": gap,
            "age_score_real": stats.all_pairs_age_score(src, tgt, gap),
            "realism_real": float(real.mean()) if real.size else float("nan"),
        }
        for key, want in recomputed.items():
            have = t.get(key)
            if have is None or not math.isfinite(want):
                continue
            if abs(float(have) - want) > JOINT_TOLERANCE * max(1.0, abs(want)):
                raise ReportInputError(
                    f"real: {task} {key} {have} is not what its per_face_real gives ({want}); the file was edited "
                    "or written by other code: re-run `dvc repro reference`"
                )
