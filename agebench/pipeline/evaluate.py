"""`evaluate` stage: score one method's generated outputs (PROTOCOL.md s.4) into a metrics JSON.

Writes `reports/metrics/<method>.json`: every metric of both common tasks (and of every extra
group pair the method supports) with 95% intervals, gender/race breakdowns and the face-free
per-face record (`per_face`), the training seed's record (`seeds`, `seed_spread`: one seed per run,
`agebench merge-seeds` merges runs), plus the protocol version, resolved params, git revision,
backbone provenance and the training summary.
That file is a pure function of code, params and data (two smoke runs give identical bytes); what a
run measured about the machine (training wall time, hardware) goes to `reports/runtime/<method>.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agebench.data.faces import faces_nchw, load_faces, load_index, test_faces
from agebench.infra.common import read_json
from agebench.infra.registry import resolve_metrics
from agebench.params.sections import Params
from agebench.pipeline.scoring import result_context
from agebench.pipeline.seeds import add_seed_records, per_face_record
from agebench.pipeline.tasks import TaskSpec
from metrics.keys import KEY_PER_FACE
from metrics.scorer import Scorer
from metrics.stats import wilson_interval
from metrics.suite import score_task

REFERENCE_METHODS = ("identity",)
#: Training-summary keys that describe the machine and the run, not the result.
RUNTIME_KEYS = ("train_seconds", "hardware", "fingerprint", "device", "processes")


def nchw(arr: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) uint8 array -> (N, 3, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(0, 3, 1, 2).contiguous()


def evaluate_method(
    name: str,
    params: Params,
    prepared: Path,
    outputs: Path,
    scorer: Scorer,
    per_face: dict[str, np.ndarray] | None = None,
    runtime: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every task in `outputs/tasks.json`; returns the metrics document.

    A task's `<task>.npz` holds `rows`, `fake` and optionally `cycle` (round trips), `present` and
    `cycle_present` ((N,) bool masks of the outputs / round trips that exist; an external row writes them,
    the `generate` stage does not: every output present). Each task result carries `per_face`
    (`agebench.pipeline.seeds.per_face_record`: the face-free per-face record, ordered by input file name) and
    `seed_spread`; the document carries `seeds`, one entry whose seed is `tasks.json`'s `seed` when it names
    one (an external row: null), else null for a reference method (nothing trained) and `train.seed`
    otherwise. The real gap G of each task comes from the real test faces of its two groups (found by
    YuNet), the realism manifold from the real train faces of the target group, as in the `real` row.
    The document's `uses_scoring_networks` (a list, [] by default) comes from `tasks.json` (top level,
    else its `train` summary).

    `per_face`, when given, receives `<task>/rows` and the metrics' per-face arrays `<task>/<name>` (age_in,
    age_out, face_found, id_sim, id_dist, ...);
    `runtime` receives the training summary's machine-dependent keys (`RUNTIME_KEYS`), which the
    document leaves out.
    """
    meta = read_json(outputs / "tasks.json")
    index = load_index(prepared)
    faces = load_faces(prepared, params.evaluate.resolution)
    schemes = params.groups.schemes()
    metrics = resolve_metrics(params.evaluate.metrics)
    tasks: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for task_id, record in tqdm(meta["tasks"].items(), desc=f"evaluate {name}", unit="task"):
        t = TaskSpec.from_record(record)
        data = np.load(outputs / f"{task_id}.npz")
        rows = data["rows"]
        masks = {k: data[k].astype(bool) for k in ("present", "cycle_present") if k in data.files}
        faces_out: dict[str, np.ndarray] = {}
        sub = index.set_index("row").loc[rows]
        in_target = index[t.scheme] == t.target
        target_rows = index.loc[in_target, "row"].to_numpy()
        target_train = (index.loc[in_target, "split"] == "train").to_numpy()
        target_test = test_faces(index, t.scheme, t.target)["row"].to_numpy()
        source_test = t.test_rows(index)
        result = score_task(
            scorer,
            faces_nchw(faces, rows),
            nchw(data["fake"]),
            nchw(data["cycle"]) if "cycle" in data.files else None,
            faces_nchw(faces, target_rows),
            faces_nchw(faces, target_test),
            tuple(schemes[t.scheme][t.target]),
            sub["gender"].astype(str).to_numpy(),
            sub["race"].astype(str).to_numpy(),
            metrics,
            per_face=faces_out,
            real_source_test=faces_nchw(faces, source_test),
            real_target_train=target_train,
            **masks,
        )
        result[KEY_PER_FACE] = per_face_record(sub["file"].astype(str).tolist(), faces_out)
        if per_face is not None:
            per_face[f"{task_id}/rows"] = rows
            per_face.update({f"{task_id}/{k}": v for k, v in faces_out.items()})
        result.update({"scheme": t.scheme, "source": t.source, "target": t.target})
        (tasks if t.common else extra)[task_id] = result
    doc: dict[str, Any] = {
        "method": name,
        "kind": "reference" if name in REFERENCE_METHODS else "method",
        "profile": params.profile,
        "tasks": tasks,
    }
    if extra:
        doc["extra_tasks"] = extra
    seed = meta.get("seed", None if name in REFERENCE_METHODS else params.train.seed)
    add_seed_records(doc, seed)
    recon = outputs / "reconstruction.npz"
    if recon.is_file():
        doc["reconstruction"] = reconstruction_rates(np.load(recon), faces, scorer)
    train = meta.get("train", {})
    doc["uses_scoring_networks"] = list(meta.get("uses_scoring_networks", train.get("uses_scoring_networks", [])))
    doc["train"] = {k: v for k, v in train.items() if k not in RUNTIME_KEYS}
    if runtime is not None:
        runtime.update({k: v for k, v in train.items() if k in RUNTIME_KEYS})
    doc["resolution"] = meta.get("resolution")
    doc.update(result_context(params, name))
    return doc


def reconstruction_rates(data: Any, faces: np.ndarray, scorer: Scorer) -> dict[str, Any]:
    """Identity rate of reconstructions per latent mode (Age-cGAN's initial / pixel-wise / IP table), by
    every judge of the scorer, through the face-validity gate like every output (PROTOCOL.md s.4 v3).

    Returns:
        {"n", mode: {judge: {"id_rate", "id_rate_lo", "id_rate_hi", "score", "id_fail", "face_fail"}}}: a
        reconstruction where YuNet finds no face is not verified and counts in `id_fail` and `face_fail`;
        [id_rate_lo, id_rate_hi] is its Wilson 95% interval (the table's rates are counted on few events);
        `score` is the mean cosine similarity (SFace) or descriptor distance (dlib) over the pairs that
        could be computed on found faces.
    """
    inputs = faces_nchw(faces, data["rows"])
    out: dict[str, Any] = {"n": len(inputs)}
    for mode in ("initial", "pixel", "ip"):
        images = nchw(data[mode])
        found = scorer.faces_found(images) if len(images) else np.zeros(0, bool)
        out[mode] = {}
        for judge in sorted(scorer.judges):
            v = scorer.verify(inputs, images, judge)
            failed = v.failed | ~found
            same = v.same & found
            lo, hi = wilson_interval(int(same.sum()), len(same))
            out[mode][judge] = {
                "id_rate": float(same.mean()) if len(same) else float("nan"),
                "id_rate_lo": lo,
                "id_rate_hi": hi,
                "score": float(np.nanmean(v.score[~failed])) if (~failed).any() else float("nan"),
                "id_fail": int(failed.sum()),
                "face_fail": int((~found).sum()),
            }
    return out
