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

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agebench.data.faces import faces_nchw, load_faces, load_index, test_faces
from agebench.infra.registry import resolve_metrics
from agebench.params.sections import Params
from agebench.pipeline.scoring import result_context
from agebench.pipeline.seeds import add_seed_records, per_face_record
from agebench.pipeline.tasks import MethodOutputs
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
    outputs: MethodOutputs,
    scorer: Scorer,
    per_face: dict[str, np.ndarray] | None = None,
    runtime: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every task of `outputs` (in memory; `agebench.pipeline.tasks.read_outputs` reads a folder); returns
    the metrics document.

    A task's masks (`present`, `cycle_present`) are given by an external row; without them every output
    counts as present. Each task result carries `per_face`
    (`agebench.pipeline.seeds.per_face_record`: the face-free per-face record, ordered by input file name) and
    `seed_spread`; the document carries `seeds`, one entry whose seed is `outputs.seed` when it names one (an
    external row: null), else ("train") null for a reference method (nothing trained) and `train.seed`
    otherwise. The real gap G of each task comes from the real test faces of its two groups (found by
    YuNet), the realism manifold from the real train faces of the target group, as in the `real` row.
    The document's `uses_scoring_networks` is `outputs.uses_scoring_networks`, as a list.

    `per_face`, when given, receives `<task>/rows` and the metrics' per-face arrays `<task>/<name>` (age_in,
    age_out, face_found, id_sim, id_dist, ...);
    `runtime` receives the training summary's machine-dependent keys (`RUNTIME_KEYS`), which the
    document leaves out.
    """
    index = load_index(prepared)
    faces = load_faces(prepared, params.evaluate.resolution)
    schemes = params.groups.schemes()
    metrics = resolve_metrics(params.evaluate.metrics)
    tasks: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for task_id, out in tqdm(outputs.tasks.items(), desc=f"evaluate {name}", unit="task"):
        t, rows = out.spec, out.rows
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
            nchw(out.fake),
            nchw(out.cycle) if out.cycle is not None else None,
            faces_nchw(faces, target_rows),
            faces_nchw(faces, target_test),
            tuple(schemes[t.scheme][t.target]),
            sub["gender"].astype(str).to_numpy(),
            sub["race"].astype(str).to_numpy(),
            metrics,
            per_face=faces_out,
            real_source_test=faces_nchw(faces, source_test),
            real_target_train=target_train,
            **out.masks(),
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
    seed = outputs.seed
    if seed == "train":
        seed = None if name in REFERENCE_METHODS else params.train.seed
    add_seed_records(doc, seed)
    if outputs.reconstruction is not None:
        doc["reconstruction"] = reconstruction_rates(outputs.reconstruction, faces, scorer)
    train = outputs.train
    doc["uses_scoring_networks"] = list(outputs.uses_scoring_networks)
    doc["train"] = {k: v for k, v in train.items() if k not in RUNTIME_KEYS}
    if runtime is not None:
        runtime.update({k: v for k, v in train.items() if k in RUNTIME_KEYS})
    doc["resolution"] = outputs.resolution
    doc.update(result_context(params, name))
    return doc


def reconstruction_rates(data: Mapping[str, np.ndarray], faces: np.ndarray, scorer: Scorer) -> dict[str, Any]:
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
