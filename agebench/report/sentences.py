"""Sentences about ranks and differences, generated from the numbers (never written by hand).

Every sentence names two rows (or a row and `identity`, "no change"), the task, and the paired difference
with its 95% interval, e.g. "cyclegan_keras is above cyclegan_agevec on aging: +0.028 [+0.013, +0.046]".
A pair whose interval contains 0 "does not differ"; nothing is said that the interval does not show.
"""

from __future__ import annotations

from collections.abc import Mapping

from agebench.report.ranking import NO_CHANGE, Difference, TaskRanking


def signed(v: float, digits: int = 3) -> str:
    """A difference with its sign: +0.028, -0.006; one that rounds to zero is +0.000, never -0.000."""
    return f"{round(v, digits) + 0.0:+.{digits}f}"


def interval_text(d: Difference) -> str:
    """ "+0.028 [+0.013, +0.046]"."""
    return f"{signed(d.value)} [{signed(d.ci95[0])}, {signed(d.ci95[1])}]"


def pair_sentence(d: Difference | None, a: str, b: str, task: str) -> str:
    """One sentence about rows a (ranked above) and b on `task`, from their paired difference a - b."""
    if d is None:
        return f"{a} and {b} cannot be compared on {task} (no per-face records of the same faces)."
    if d.ci95[0] > 0:
        return f"{a} is above {b} on {task}: {interval_text(d)}."
    if d.ci95[1] < 0:
        return f"{b} is above {a} on {task}: {interval_text(d.flipped())}."
    return f"{a} and {b} do not differ on {task}: {interval_text(d)}."


def no_change_sentence(d: Difference, a: str, task: str) -> str:
    """Whether row a lies above doing nothing (`identity`) on `task` ("is below" when the interval lies below 0)."""
    verdict = "is above" if d.ci95[0] > 0 else "is below" if d.ci95[1] < 0 else "is not above"
    return f"{a} {verdict} no change ({NO_CHANGE}) on {task}: {interval_text(d)}."


def group_sentence(r: TaskRanking) -> str:
    """ "Rank groups on aging: 1: a, b; 3: c." (each group: its leader's position, then its members)."""
    groups: dict[int, list[str]] = {}
    for name, rank in zip(r.order, r.ranks):
        groups.setdefault(rank, []).append(name)
    return f"Rank groups on {r.task}: " + "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items()) + "."


def rank_sentences(r: TaskRanking, groups: bool = True) -> list[str]:
    """Every sentence of one task: its rank groups (optional), every pair of ranked rows (higher first),
    and every ranked row against no change."""
    out = [group_sentence(r)] if groups and r.order else []
    for i, a in enumerate(r.order):
        for b in r.order[i + 1 :]:
            out.append(pair_sentence(r.pairs.get((a, b)), a, b, r.task))
    for a in r.order:
        d = r.vs_no_change(a)
        if d is not None:
            out.append(no_change_sentence(d, a, r.task))
    return out


def sentences_markdown(rankings: Mapping[str, TaskRanking], groups: bool = True) -> str:
    """A markdown list of every task's sentences (the README's generated Results block)."""
    lines = [f"- {s}" for r in rankings.values() for s in rank_sentences(r, groups)]
    return "\n".join(lines) + "\n"
