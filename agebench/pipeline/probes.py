"""Reference transforms of the real test faces, scored by the pipeline's own scorer: the gate's probes.

No training touches them, so on every machine they score like the `identity` and `real` rows do, and
the CI gate compares them exactly (`agebench.gate.check`, to float32 rounding). Each one drives a path of the scorer
that the identity row leaves alone:

- `blur`: a fixed Gaussian blur (radius 3 px at 128 px). Identity mostly holds, realism and FID drop.
- `brighten`: +48 on every channel, clipped. The face check and ages see a shifted histogram.
- `other_person`: each input replaced by the next test face of its group (sorted order, wrapped), a
  real face of another person: the judges must reject it, while age and realism stay real.
- `blank`: a flat grey image. The face check must reject every one (`face_fail` = n).

The images are made at run time from the prepared data and only live in memory: nothing derived from
UTKFace is ever written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFilter

if TYPE_CHECKING:
    from agebench.params.sections import Params
    from agebench.pipeline.tasks import MethodOutputs, TaskSpec
    from metrics.scorer import Scorer

BLUR_RADIUS = 3.0
BRIGHTEN_BY = 48
BLANK_VALUE = 128


def blur(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> the same, each blurred by PIL's Gaussian of radius `BLUR_RADIUS`."""
    return np.stack([np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(BLUR_RADIUS))) for a in images])


def brighten(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> the same + `BRIGHTEN_BY` on every channel, clipped to [0, 255]."""
    return np.clip(images.astype(np.int16) + BRIGHTEN_BY, 0, 255).astype(np.uint8)


def other_person(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> image i replaced by image i+1 (the last by the first): another person's face."""
    return np.roll(images, -1, axis=0)


def blank(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> flat grey images of the same shape (no face anywhere)."""
    return np.full_like(images, BLANK_VALUE)


#: Probe name -> transform. The round trip of a probe is the transform applied to its own output.
PROBES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "blur": blur,
    "brighten": brighten,
    "other_person": other_person,
    "blank": blank,
}


def row_name(probe: str) -> str:
    """The metrics row of a probe (never a method name: methods are lowercase identifiers without ':')."""
    return f"probe:{probe}"


def probe_outputs(
    probe: str, tasks: Mapping[str, TaskSpec], rows: Mapping[str, np.ndarray], faces: np.ndarray
) -> MethodOutputs:
    """`probe`'s outputs of every task, as scoring takes them: the transform of each input, and as round
    trip the transform of that output; every output present, nothing trained (the seed reads as a method's).

    `tasks`: task id -> the task; `rows`: task id -> (N,) index rows of its inputs; `faces`: the
    prepared (M, S, S, 3) uint8 faces at the evaluation resolution, indexed by row.
    """
    from agebench.pipeline.tasks import MethodOutputs, TaskOutputs

    fn = PROBES[probe]
    outputs = {}
    for task_id, t in tasks.items():
        fake = fn(faces[rows[task_id]])
        outputs[task_id] = TaskOutputs(t, rows[task_id], fake, fn(fake))
    return MethodOutputs(outputs, resolution=int(faces.shape[1]))


def score_probes(
    params: Params, prepared: Path, scorer: Scorer, probes: tuple[str, ...] = tuple(PROBES)
) -> dict[str, Any]:
    """Score every probe on the two common tasks; returns {row name: metrics document}.

    `params`: the loaded `Params`; `prepared`: the prepare stage's folder; `scorer`: the pipeline's
    `Scorer` (`agebench.pipeline.scoring.scorer_for_params`). The documents are what `evaluate_method` writes for
    a method, so every metric the pipeline computes is computed for them, by the same code.
    """
    from agebench.data.faces import load_faces, load_index
    from agebench.pipeline.evaluate import evaluate_method
    from agebench.pipeline.tasks import TaskSpec

    index = load_index(prepared)
    tasks = {task_id: TaskSpec.same_groups(t.scheme, t.source, t.target) for task_id, t in params.tasks.items()}
    rows = {task_id: t.test_rows(index) for task_id, t in tasks.items()}
    faces = load_faces(prepared, params.evaluate.resolution)
    docs: dict[str, Any] = {}
    for probe in probes:
        doc = evaluate_method(row_name(probe), params, prepared, probe_outputs(probe, tasks, rows, faces), scorer)
        doc["kind"] = "probe"
        docs[row_name(probe)] = doc
    return docs
