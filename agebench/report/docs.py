"""Reading the leaderboard's inputs: metrics documents (one per row), runtime files, independence flags.

No torch and no images: `agebench leaderboard` rebuilds `leaderboard.md` from these files alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

import agebench
from agebench.infra.common import read_json
from agebench.infra.errors import UserError

TASKS = ("aging", "rejuvenation")
#: Row kinds ranked against each other (external rows, PROTOCOL.md s.6, rank with the methods).
RANKED_KINDS = ("method", "external")
#: Protocol versions this code renders: 2 as it was published (results/cpu), 3 with v3's ranking.
RENDERED_PROTOCOLS = (2, 3)
#: The metrics each scoring network produces (PROTOCOL.md s.4 "Independence"), by the names a method
#: may declare in `uses_scoring_networks` (short names and metrics/backbones.py keys). Protocol 3: the joint
#: needs the age network (age_score), the judge and Inception (realistic); YuNet's face check gates them all.
NETWORK_METRICS: dict[str, tuple[str, ...]] = {
    "dlib": ("id_rate_dlib", "id_dist_dlib", "joint_dlib"),
    "sface": ("id_rate", "id_sim", "joint", "joint_decade"),
    "yunet": ("face_fail", "age_acc", "age_acc_rel", "age_score", "gap_closure", "realism", "id_rate", "id_sim",
              "joint", "joint_decade", "id_rate_dlib", "joint_dlib"),
    "age": ("age_acc", "age_acc_rel", "age_score", "gap_closure", "joint", "joint_decade", "joint_dlib"),
    "inception": ("fid", "kid_mean", "realism", "joint", "joint_dlib"),
}  # fmt: skip
#: Protocol 2's map, kept so its published leaderboard renders as it was.
NETWORK_METRICS_V2: dict[str, tuple[str, ...]] = {
    "dlib": ("id_rate_dlib", "id_dist_dlib", "joint_dlib"),
    "sface": ("id_rate", "id_sim", "joint"),
    "yunet": ("face_fail", "age_acc", "age_acc_rel", "id_rate", "id_sim", "joint", "id_rate_dlib", "joint_dlib"),
    "age": ("age_acc", "age_acc_rel", "joint", "joint_dlib"),
    "inception": ("fid", "kid_mean"),
}
_NETWORK_ALIASES = {
    "dlib_face_resnet": "dlib", "dlib_landmarks5": "dlib", "age_onnx": "age", "age_landmarks5": "age",
    "tf_inception": "inception",
}  # fmt: skip
DAGGER = "†"


class ReportInputError(UserError, ValueError):
    """Metrics files the leaderboard cannot rank together (another protocol version, mixed profiles, not
    a metrics file): the stage prints one line and exits 2 without writing anything."""


def load_metrics(folder: Path, names: list[str]) -> list[dict[str, Any]]:
    """Metrics documents of `names` (in that order) that exist in `folder`; a missing one is an error."""
    docs = []
    for name in names:
        path = folder / f"{name}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: run `dvc repro evaluate@{name}` first")
        try:
            docs.append(read_json(path))
        except ValueError as exc:  # JSON or UTF-8 errors: a broken file, one line
            raise ReportInputError(
                f"{path}: not a readable metrics file ({exc}); run `dvc repro -f evaluate@{name}`"
            ) from None
    return docs


def read_metrics_dir(folder: Path) -> list[dict[str, Any]]:
    """Every `*.json` metrics document of `folder`, by file name; a file that is not one is refused."""
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise FileNotFoundError(f"{folder}: no metrics files (*.json); run `dvc repro` first")
    docs = []
    for f in files:
        try:
            doc = read_json(f)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ReportInputError(f"{f}: not valid JSON ({exc}); re-run the stage that wrote it") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict) or "method" not in doc:
            raise ReportInputError(f"{f}: not an agebench metrics file (no 'method'/'tasks'); move it out of {folder}")
        docs.append(doc)
    return docs


def validate_docs(docs: Sequence[Mapping[str, Any]], current_only: bool = True) -> int:
    """The one protocol version of `docs`; refuse another version than this code's, or mixed profiles.

    current_only: require `agebench.PROTOCOL_VERSION` (the pipeline's report stage); False accepts any
    version in RENDERED_PROTOCOLS (`agebench leaderboard` re-renders published results), one at a time.

    Raises:
        ReportInputError: one line naming the offending rows and what to do.
    """
    want = agebench.PROTOCOL_VERSION
    versions = {d.get("protocol_version") for d in docs}
    if current_only or len(versions) > 1 or not versions <= set(RENDERED_PROTOCOLS):
        old = [f"{d['method']} ({d.get('protocol_version')})" for d in docs if d.get("protocol_version") != want]
        if old:
            raise ReportInputError(
                f"metrics of another protocol version than {want}: {', '.join(old)}; re-run `dvc repro` with this "
                "code (results of different protocols are never ranked together)"
            )
    profiles: dict[str, list[str]] = {}
    for d in docs:
        profiles.setdefault(str(d.get("profile")), []).append(str(d["method"]))
    if len(profiles) > 1:
        mix = "; ".join(f"{p}: {', '.join(ms)}" for p, ms in sorted(profiles.items()))
        raise ReportInputError(f"metrics files mix profiles ({mix}); rank one profile at a time (PROTOCOL.md s.6)")
    return int(next(iter(versions))) if versions else want


def protocol_of(docs: Sequence[Mapping[str, Any]]) -> int:
    """The protocol version the documents were scored under (the first one that records it)."""
    for d in docs:
        if d.get("protocol_version") is not None:
            return int(d["protocol_version"])
    return agebench.PROTOCOL_VERSION


def load_runtime(folder: Path, names: list[str]) -> dict[str, dict[str, Any]]:
    """`reports/runtime/<name>.json` (training time, hardware) of those names that have one."""
    return {n: read_json(folder / f"{n}.json") for n in names if (folder / f"{n}.json").is_file()}


def scoring_networks(doc: Mapping[str, Any]) -> tuple[str, ...]:
    """The scoring networks a row's method trains or translates with (default: none)."""
    nets = doc.get("uses_scoring_networks")
    if nets is None:
        nets = doc.get("train", {}).get("uses_scoring_networks", ())
    return tuple(str(n) for n in nets)


def network_name(name: str) -> str:
    """A declared network name normalised to a NETWORK_METRICS key (e.g. "dlib_face_resnet" -> "dlib")."""
    return _NETWORK_ALIASES.get(name.lower(), name.lower())


def flagged_metrics(networks: Sequence[str], protocol: int = agebench.PROTOCOL_VERSION) -> set[str]:
    """Metric names produced by any of `networks` (PROTOCOL.md s.4 "Independence")."""
    table = NETWORK_METRICS if protocol >= 3 else NETWORK_METRICS_V2
    out: set[str] = set()
    for n in networks:
        out.update(table.get(network_name(n), ()))
    return out


def flagged_nets(doc: Mapping[str, Any]) -> set[str]:
    """Normalised network names a document declares."""
    return {network_name(n) for n in scoring_networks(doc)}


def read_npz(path: Path) -> dict[str, np.ndarray] | None:
    """Every array of an .npz file (loaded, the file closed), or None when there is no such file."""
    if not path.is_file():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
