"""Does each method reach the cpu track's targets? (`learns.md` of a protocol-3 run; README's Results.)

The targets say what "visibly ages faces into realistic faces" means on the cpu track, per task, as means
over training seeds (a metrics file's task values are those means):
- `gap_closure` >= 0.5: the output moves at least half of the real age gap between the groups;
- SFace `id_rate` >= 0.6 (Age-cGAN, whose source rebuilds the face from a latent: >= 0.2);
- no face found (`face_fail`) in at most 2% of outputs;
- `realism` at least half of the real test faces' own `realism_real` (the real row, same task);
- FID at most 2x the `identity` row's (the untouched inputs against the same real faces, same task);
- and for a method with a reconstruction table (Age-cGAN): its identity-preserving reconstruction verified
  by SFace for >= 20% of inputs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

from metrics.keys import (
    KEY_METRIC_FACE_FAIL,
    KEY_METRIC_FID,
    KEY_METRIC_GAP_CLOSURE,
    KEY_METRIC_ID_RATE,
    KEY_METRIC_REALISM,
    KEY_N,
)


@dataclasses.dataclass(frozen=True)
class TrackTargets:
    """A track's per-task targets (see the module docstring); `id_rate_for` holds per-method exceptions."""

    gap_closure: float = 0.5
    id_rate: float = 0.6
    id_rate_for: Mapping[str, float] = dataclasses.field(default_factory=lambda: {"age_cgan": 0.2})
    face_fail: float = 0.02
    #: Share of the real faces' own realism (`realism_real`) a method's realism must reach.
    realism_share: float = 0.5
    #: FID at most this many times the identity row's.
    fid_ratio: float = 2.0
    #: SFace id_rate of the identity-preserving ("ip") reconstruction, where a method has one.
    reconstruction: float = 0.2

    def min_id_rate(self, method: str) -> float:
        """The id_rate target of `method`."""
        return self.id_rate_for.get(method, self.id_rate)


#: The cpu track's targets.
CPU_TRACK_TARGETS = TrackTargets()


def _mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _num(value: Any) -> float:
    return float("nan") if value is None else float(value)


def targets_table(docs: Sequence[Mapping[str, Any]], targets: TrackTargets = CPU_TRACK_TARGETS) -> str:
    """Markdown: each method's value and verdict per target and task, then the reconstruction targets.

    Args:
        docs: the metrics files of one run (protocol >= 3): methods, the `identity` row and the `real` row.
    Raises:
        ValueError: the identity or real row is missing (they are the yardsticks).
    """
    by_name = {str(d["method"]): d for d in docs}
    ident, real = by_name.get("identity"), by_name.get("real")
    if ident is None or real is None:
        raise ValueError("the targets compare against the identity and real rows; both metrics files are needed")
    seeds = {len(d.get("seeds", [])) for d in docs if d.get("kind", "method") == "method" and d["method"] != "identity"}
    lines = [
        f"Targets per task, as means over {'/'.join(str(s) for s in sorted(seeds)) or '?'} training seed(s): "
        f"gap_closure >= {targets.gap_closure}; SFace id_rate >= {targets.id_rate}"
        + "".join(f" ({m}: >= {v})" for m, v in sorted(targets.id_rate_for.items()))
        + f"; no face in <= {targets.face_fail:.0%} of outputs; realism >= {targets.realism_share} x the real "
        f"faces' realism_real; FID <= {targets.fid_ratio} x the identity row's.",
        "",
        "| method | task | gap_closure | id_rate | no face | realism (target) | FID (target) | all targets |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = sorted(
        m for m, d in by_name.items() if d.get("kind", "method") == "method" and m not in ("identity", "real")
    )
    recon = []
    for method in rows:
        doc = by_name[method]
        for task, t in sorted(doc["tasks"].items()):
            gap = _num(t.get(KEY_METRIC_GAP_CLOSURE))
            idr = _num(t.get(KEY_METRIC_ID_RATE))
            # `face_fail` counts the outputs without a face; the target is on their share.
            fail = _num(t.get(KEY_METRIC_FACE_FAIL)) / max(int(t.get(KEY_N) or 0), 1)
            realism = _num(t.get(KEY_METRIC_REALISM))
            realism_min = targets.realism_share * _num(real["tasks"][task].get("realism_real"))
            fid = _num(t.get(KEY_METRIC_FID))
            fid_max = targets.fid_ratio * _num(ident["tasks"][task].get(KEY_METRIC_FID))
            checks = [
                gap >= targets.gap_closure,
                idr >= targets.min_id_rate(method),
                fail <= targets.face_fail,
                realism >= realism_min,
                fid <= fid_max,
            ]
            lines.append(
                f"| {method} | {task} | {gap:.2f} {_mark(checks[0])} | {idr:.3f} {_mark(checks[1])} "
                f"| {fail:.1%} {_mark(checks[2])} | {realism:.3f} (>= {realism_min:.3f}) {_mark(checks[3])} "
                f"| {fid:.1f} (<= {fid_max:.1f}) {_mark(checks[4])} | {'**yes**' if all(checks) else 'no'} |"
            )
        ip = (doc.get("reconstruction") or {}).get("ip", {}).get("sface")
        if ip is not None:
            rate = _num(ip.get("id_rate"))
            ok = not math.isnan(rate) and rate >= targets.reconstruction
            recon.append(
                f"| {method} | {rate:.3f} [{_num(ip.get('id_rate_lo')):.3f}, {_num(ip.get('id_rate_hi')):.3f}] "
                f"| {targets.reconstruction} | {'**yes**' if ok else 'no'} |"
            )
    if recon:
        lines += [
            "",
            "Identity-preserving reconstruction (SFace id_rate of G(z*, own group) against the input, Wilson 95%):",
            "",
            "| method | id_rate [95% CI] | target | reached |",
            "|---|---|---|---|",
            *recon,
        ]
    return "\n".join(lines) + "\n"
