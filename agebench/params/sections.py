"""The sections of `params.yaml` that several stages share, as frozen dataclasses (method sections live
next to their method)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

#: Networks that score a method (PROTOCOL.md s.4 "Independence"), as a method or an external entry names them.
SCORING_NETWORKS = ("age", "sface", "yunet", "dlib", "facenet", "inception")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """`data:` where UTKFace comes from and how it is prepared (PROTOCOL.md sections 1-2)."""

    #: A URL of UTKFace.tar.gz, or a local path to an archive or to a folder of UTKFace images.
    source: str = "https://huggingface.co/datasets/py97/UTKFace-Cropped/resolve/main/UTKFace.tar.gz"
    #: sha256 of the archive; checked before anything is unpacked (URL and local archive).
    sha256: str = "2c0655397b498e81b82d685ee74bee8c2e4364a5897caf3afec6ea48929024a7"
    #: Square sizes every kept face is stored at (PIL antialiased bicubic from 200x200).
    resolutions: tuple[int, ...] = (64, 128, 256)
    #: Fraction of files kept, chosen by a stable hash of the name (1.0: all; the smoke profile shrinks it).
    subsample: float = 1.0
    #: Worker processes for decoding and resizing (0: one per core).
    workers: int = 0
    #: Download retries per attempt chain (URL sources).
    retries: int = 5
    #: Unpacking an archive stops with an error past this many bytes in all (UTKFace: 106 MB packed).
    max_unpacked_bytes: int = 1_000_000_000
    #: ... or past this many bytes in one member (UTKFace's faces are ~10 kB each).
    max_member_bytes: int = 50_000_000
    #: `prepare` excludes ("too many pixels") images with more pixels than this, before decoding them.
    max_image_pixels: int = 25_000_000

    def __post_init__(self) -> None:
        if not 0.0 < self.subsample <= 1.0:
            raise ValueError(f"subsample must be in (0, 1], got {self.subsample}")
        if not self.resolutions or any(r < 8 for r in self.resolutions):
            raise ValueError(f"resolutions must be a non-empty list of sizes >= 8, got {self.resolutions}")


@dataclasses.dataclass(frozen=True)
class GroupsConfig:
    """`groups:` age groups per scheme, inclusive bounds (PROTOCOL.md section 2)."""

    pair: Mapping[str, tuple[int, int]] = dataclasses.field(
        default_factory=lambda: {"young": (20, 29), "old": (50, 59)}
    )
    cgan6: Mapping[str, tuple[int, int]] = dataclasses.field(
        default_factory=lambda: {
            "0-18": (0, 18),
            "19-29": (19, 29),
            "30-39": (30, 39),
            "40-49": (40, 49),
            "50-59": (50, 59),
            "60+": (60, 200),
        }
    )
    decades: Mapping[str, tuple[int, int]] = dataclasses.field(
        default_factory=lambda: {
            "10s": (10, 19),
            "20s": (20, 29),
            "30s": (30, 39),
            "40s": (40, 49),
            "50s": (50, 59),
            "60s": (60, 69),
        }
    )

    def schemes(self) -> dict[str, Mapping[str, tuple[int, int]]]:
        """Scheme name -> {group name: (low, high)}, in a fixed order."""
        return {"pair": self.pair, "cgan6": self.cgan6, "decades": self.decades}


@dataclasses.dataclass(frozen=True)
class TaskConfig:
    """One translation task: every test face of `source` translated to `target` within `scheme`."""

    scheme: str
    source: str
    target: str


@dataclasses.dataclass(frozen=True)
class TasksConfig:
    """`tasks:` the two common tasks every method is scored on (PROTOCOL.md section 3)."""

    aging: TaskConfig = TaskConfig("pair", "young", "old")
    rejuvenation: TaskConfig = TaskConfig("pair", "old", "young")

    def items(self) -> list[tuple[str, TaskConfig]]:
        """(task name, task) pairs in leaderboard order."""
        return [("aging", self.aging), ("rejuvenation", self.rejuvenation)]


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """`train:` the training loop shared by all methods."""

    seed: int = 0
    #: "auto" picks cuda when available.
    device: str = "auto"
    #: Log named losses to dvclive every this many steps.
    log_every: int = 50
    #: Write a sample grid every this many steps (0: never).
    sample_every: int = 500
    #: Save a resumable checkpoint every this many steps.
    checkpoint_every: int = 500
    #: CPU threads for torch (0: leave torch's default). Fixed for bit-reproducible smoke runs.
    threads: int = 0
    #: Use torch's deterministic algorithms (slower on GPU; on for reproducible CPU runs).
    deterministic: bool = True
    #: Train the full profile even without a GPU (the pre-flight otherwise stops with the estimated hours).
    allow_cpu_full: bool = False
    #: Declared training budget of each method per seed, in core-minutes (CPU time of all threads) on a
    #: CPU; the pre-flight (agebench.infra.preflight_speed) times a few real steps of each method and stops
    #: when the estimate is over 2x this. 0: none declared, not checked (GPU profiles, smoke).
    budget_core_minutes: float = 0.0
    #: Share of the train split held out as the validation split (learning curves and every tuning choice;
    #: never the test faces), chosen by a stable hash of the file name independent of the test split's
    #: hash (`agebench.data.faces.in_validation`). Validation faces are never trained on. 0: none.
    validation: float = 0.0
    #: Evenly spaced model snapshots written during training (`models/<m>/snapshots/`, with the CPU time
    #: spent so far) for the learning curves (`agebench curves`). 0: none.
    snapshots: int = 0
    #: Speed switches applied from outside every method (agebench.infra.speed; none changes a method):
    #: NHWC layout of all networks, bfloat16 autocast around each train step, torch.compile in place.
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.validation < 1.0:
            raise ValueError(f"validation must be in [0, 1), got {self.validation}")
        if self.snapshots < 0:
            raise ValueError(f"snapshots must be >= 0, got {self.snapshots}")


@dataclasses.dataclass(frozen=True)
class GenerateConfig:
    """`generate:` translating the held-out faces."""

    batch_size: int = 32
    #: Also translate every (source -> target) group pair a multi-group method supports.
    extra_tasks: bool = True
    #: Test faces shown translated to every group (the progression strips) for methods with > 2 groups.
    progression_faces: int = 6


@dataclasses.dataclass(frozen=True)
class EvaluateConfig:
    """`evaluate:` scoring settings (PROTOCOL.md section 4)."""

    #: Registered task metrics to compute (agebench.infra.registry.METRICS); each name is a leaderboard column group.
    metrics: tuple[str, ...] = ("face", "age", "identity", "joint", "identity_dlib", "joint_dlib", "fid", "cycle")
    resolution: int = 128
    batch_size: int = 16
    #: Verification threshold of the dlib second opinion (dlib's own; PROTOCOL.md s.4). The judge, SFace, uses
    #: OpenCV's published 0.363 (metrics.sface.SFACE_THRESHOLD), part of the protocol, not a setting.
    id_threshold: float = 0.6
    #: Threshold on L2-normalised FaceNet embeddings (facenet backend only; not calibrated on UTKFace).
    facenet_threshold: float = 1.1
    bootstrap_resamples: int = 1000
    bootstrap_seed: int = 0
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    kid_seed: int = 0
    #: Age estimator backend: "onnx" (default, bundled) or "deepface" (optional, needs its weights).
    age_backend: Literal["onnx", "deepface"] = "onnx"
    #: Second-opinion identity backend beside the SFace judge: "dlib" (default, bundled) or "facenet"
    #: (optional; its metrics are then identity_facenet / joint_facenet; needs `facenet_weights`, a
    #: state dict of facenet-pytorch's InceptionResnetV1; relative to params.yaml).
    id_backend: Literal["dlib", "facenet"] = "dlib"
    facenet_weights: str = ""
    #: Where the identity network and Inception run: "auto" (cuda when available), "cpu", "cuda", ...
    device: str = "auto"
    #: FG-NET images for the `real` row's cross-age verification (relative to params.yaml; "" skips it).
    fgnet_dir: str = "../shared/data/fgnet/images"


@dataclasses.dataclass(frozen=True)
class MetricRule:
    """How the regression gate judges one metric."""

    direction: Literal["higher", "lower"]
    tolerance: float


@dataclasses.dataclass(frozen=True)
class CheckConfig:
    """`check:` the CI regression gate (PROTOCOL.md s.6): per-metric good direction and tolerance."""

    metrics: Mapping[str, MetricRule] = dataclasses.field(
        default_factory=lambda: {
            "joint": MetricRule("higher", 0.02),
            "age_score": MetricRule("higher", 0.02),
            "realism": MetricRule("higher", 0.02),
            "age_acc": MetricRule("higher", 0.02),
            "id_rate": MetricRule("higher", 0.02),
            "fid": MetricRule("lower", 2.0),
            "kid_mean": MetricRule("lower", 0.002),
            "cycle_l1": MetricRule("lower", 0.005),
        }
    )


@dataclasses.dataclass(frozen=True)
class Params:
    """The sections every stage may read, built from one params file."""

    profile: str
    data: DataConfig
    groups: GroupsConfig
    tasks: TasksConfig
    train: TrainConfig
    generate: GenerateConfig
    evaluate: EvaluateConfig
    methods: tuple[str, ...]
    raw: Mapping[str, Any]
    #: External rows (PROTOCOL.md s.6): folders of outputs made outside the pipeline, scored like methods.
    external: tuple[ExternalEntry, ...] = ()


@dataclasses.dataclass(frozen=True)
class ExternalEntry:
    """One `external:` entry: a method run elsewhere, scored from its folder of outputs (PROTOCOL.md s.6).

    `name` is the leaderboard row and `reports/metrics/<name>.json`; `folder` holds `<task>/<id>.png`
    (relative to params.yaml); `source` is free text (paper, commit, weights) shown beside the row;
    `uses_networks` (v3) names the scoring networks its method trained or translated with
    (`SCORING_NETWORKS`), so the independence flags apply to it as to any method.
    """

    name: str
    folder: str
    source: str = ""
    uses_networks: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        import re

        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", self.name):
            raise ValueError(f"name {self.name!r}: use letters, digits, '_' and '-'")
        if not self.folder:
            raise ValueError(f"{self.name}: folder is empty; give the folder of <task>/<id>.png outputs")
        unknown = [n for n in self.uses_networks if n not in SCORING_NETWORKS]
        if unknown:
            raise ValueError(
                f"{self.name}: uses_networks: {unknown[0]!r} is not a scoring network; use any of "
                f"{', '.join(SCORING_NETWORKS)}"
            )
