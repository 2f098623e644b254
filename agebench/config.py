"""Typed, frozen views of `params.yaml`.

Every section loads into a frozen dataclass. Unknown keys and wrong types are errors that name the
key and the file, so a typo never silently falls back to a default. The top-level `profile` key
(`full`, `smoke` or `cpu`) selects an overlay: with `profile: smoke`, the `smoke:` section is merged
over the rest before any section is built (`cpu:` likewise).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

PROFILES = ("full", "smoke", "cpu")


class ParamsError(ValueError):
    """A params file that cannot be used: names the file, the key and what is wrong."""


def _read_yaml(path: Path) -> dict[str, Any]:
    """The params file as written (overlays not applied); ParamsError when unreadable or not a mapping."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ParamsError(f"{path}: params file not found") from None
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return raw


def _apply_profile(raw: dict[str, Any], path: Path, profile: str, errors: list[str] | None = None) -> dict[str, Any]:
    overlays = {name: raw.pop(name, None) or {} for name in PROFILES if name != "full"}
    if profile != "full":
        overlay = overlays[profile]
        if not isinstance(overlay, Mapping):
            raise ParamsError(f"{path}: {profile}: expected a mapping, got {type(overlay).__name__}")
        raw = _merge(raw, overlay, f"{path}: {profile}", errors)
    raw["profile"] = profile
    raw["_file"] = str(path)
    return raw


def read_params(path: str | Path = "params.yaml", profile: str | None = None) -> dict[str, Any]:
    """Read a params file and apply the selected profile overlay (`profile`: the file's `profile:` when None).

    Returns the merged mapping; raises ParamsError on unreadable YAML, an unknown profile or an
    overlay key that has no counterpart in the base file.
    """
    path = Path(path)
    raw = _read_yaml(path)
    profile = raw.get("profile", "full") if profile is None else profile
    if profile not in PROFILES:
        raise ParamsError(f"{path}: profile: {profile!r} is not one of {', '.join(PROFILES)}")
    return _apply_profile(raw, path, profile)


def _merge(
    base: dict[str, Any], overlay: Mapping[str, Any], where: str, errors: list[str] | None = None
) -> dict[str, Any]:
    """`overlay` merged over `base` (nested mappings key by key). A key of the overlay that the base lacks
    is a ParamsError, or, with `errors`, appended there and skipped (to report every one)."""
    out = dict(base)
    for key, value in overlay.items():
        if key not in base:
            import difflib

            close = difflib.get_close_matches(str(key), [str(k) for k in base], n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            message = f"{where}.{key}: overlay key has no counterpart in the base params{hint}"
            if errors is None:
                raise ParamsError(message)
            errors.append(message)
            continue
        if isinstance(value, Mapping) and isinstance(base[key], Mapping):
            out[key] = _merge(dict(base[key]), value, f"{where}.{key}", errors)
        else:
            out[key] = value
    return out


def section(params: Mapping[str, Any], name: str, cls: type[T]) -> T:
    """Build the frozen dataclass `cls` from `params[name]` (missing section: all defaults)."""
    where = f"{params.get('_file', 'params.yaml')}: {name}"
    data = params.get(name)
    if data is None:
        data = {}
    return build(cls, data, where)


def build(cls: type[T], data: Any, where: str) -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types.

    `where` prefixes every error, e.g. "params.yaml: data".
    """
    if not isinstance(data, Mapping):
        raise ParamsError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields), key=str)
    if unknown:
        raise ParamsError(unknown_key(where, unknown[0], fields))
    hints = get_type_hints(cls)
    kwargs = {key: _coerce(hints[key], value, f"{where}.{key}") for key, value in data.items()}
    for key, value in kwargs.items():
        check_range(key, value, f"{where}.{key}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ParamsError(f"{where}: {exc}") from None
    except ValueError as exc:  # __post_init__ validation
        raise ParamsError(f"{where}: {exc}") from None


def unknown_key(where: str, key: Any, valid: Any) -> str:
    """ "<where>.<key>: unknown key (did you mean <closest>?)", or the valid keys when none is close."""
    import difflib

    names = sorted(map(str, valid))
    close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"valid keys: {', '.join(names) or 'none'}"
    return f"{where}.{key}: unknown key ({hint})"


def section_errors(cls: type, data: Any, where: str, keys: Any = None, whole: bool = True) -> list[str]:
    """Every problem of one section as lines (the same rules as `build`, but all of them, not the first).

    `keys`: check only these keys of `data` (a profile overlay's keys); `whole`: then also build the
    section (required fields, `__post_init__` rules) when those keys are fine. Returns [] when
    `build(cls, data, where)` would succeed.
    """
    if not isinstance(data, Mapping):
        return [f"{where}: expected a mapping, got {type(data).__name__} {data!r}"]
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    hints = get_type_hints(cls)
    errors = []
    for key in sorted(data if keys is None else keys, key=str):
        if key not in fields:
            errors.append(unknown_key(where, key, fields))
            continue
        try:
            check_range(key, _coerce(hints[key], data[key], f"{where}.{key}"), f"{where}.{key}")
        except ParamsError as exc:
            errors.append(str(exc))
    if whole and not errors:
        try:
            build(cls, data, where)
        except ParamsError as exc:
            errors.append(str(exc))
    return errors


# Range rules by field name, for every section (shared ones and each method's `config_cls`), so a
# method gets them without code of its own. 0 is allowed where the field documents 0 as "off"/"no cap".
_ZERO_OK = frozenset(
    {
        "max_steps",
        "sample_every",
        "n_epochs",
        "n_epochs_decay",
        "epochs_per_size",
        "workers",
        "retries",
        "threads",
        "budget_core_minutes",
    }
)
_AT_LEAST_ONE_SUFFIXES = (
    "batch_size",
    "batch_per_size",
    "steps",
    "_every",
    "epochs",
    "resolution",
    "resamples",
    "subsets",
    "subset_size",
    "_bytes",
    "_pixels",
)


def range_rule(name: str) -> tuple[str, float] | None:
    """The range a parameter named `name` must lie in, as (">=" or ">", bound); None when unconstrained.

    Learning rates (`lr`, `*_lr`) must be > 0; batch sizes, steps, epochs, intervals (`*_every`),
    resolutions, resample counts and size caps >= 1; the fields where 0 means "off" or "no cap"
    (`max_steps`, `sample_every`, `workers`, ...) >= 0.
    """
    if name == "lr" or name.endswith("_lr"):
        return (">", 0.0)
    if name in _ZERO_OK or name.endswith(("_decay", "pool_size")):
        return (">=", 0.0)
    if name.endswith(_AT_LEAST_ONE_SUFFIXES) or name in ("steps", "epochs"):
        return (">=", 1.0)
    return None


def check_range(name: str, value: Any, where: str) -> None:
    """Raise ParamsError (one line naming `where`) when a number (or a list item) breaks `range_rule(name)`."""
    rule = range_rule(name)
    if rule is None:
        return
    items = value if isinstance(value, tuple) else (value,)
    op, bound = rule
    for v in items:
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if (op == ">" and not v > bound) or (op == ">=" and not v >= bound):
            raise ParamsError(f"{where}: must be {op} {bound:g}, got {value!r}")


def _check_raw_ranges(data: Any, where: str) -> None:
    """`check_range` on every key of a not-yet-built section (nested mappings too; lists as tuples)."""
    if not isinstance(data, Mapping):
        return
    for key, value in data.items():
        if isinstance(value, Mapping):
            _check_raw_ranges(value, f"{where}.{key}")
        else:
            check_range(str(key), tuple(value) if isinstance(value, list) else value, f"{where}.{key}")


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = get_origin(tp)
    args = get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ParamsError as exc:
                errors.append(str(exc))
        raise ParamsError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ParamsError(f"{where}: expected a list, got {type(value).__name__} {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ParamsError(f"{where}: expected a list of {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ParamsError(f"{where}: expected a mapping, got {type(value).__name__}")
        key_tp, val_tp = args or (Any, Any)
        return types.MappingProxyType(
            {_coerce(key_tp, k, f"{where}"): _coerce(val_tp, v, f"{where}.{k}") for k, v in value.items()}
        )
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ParamsError(f"{where}: expected a number, got {type(value).__name__} {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where}: expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true or false, got {type(value).__name__} {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ParamsError(f"{where}: unsupported parameter type {tp!r}")  # pragma: no cover


def to_dict(obj: Any) -> Any:
    """A JSON-ready copy of a config dataclass (tuples -> lists, mapping proxies -> dicts)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# Sections shared by several stages. Method sections live next to their method.
# --------------------------------------------------------------------------------------------


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
    #: CPU; the pre-flight (agebench.preflight_speed) times a few real steps of each method and stops
    #: when the estimate is over 2x this. 0: none declared, not checked (GPU profiles, smoke).
    budget_core_minutes: float = 0.0
    #: Speed switches applied from outside every method (agebench.speed; none changes a method):
    #: NHWC layout of all networks, bfloat16 autocast around each train step, torch.compile in place.
    channels_last: bool = False
    bf16: bool = False
    compile: bool = False


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

    #: Registered task metrics to compute (agebench.registry.METRICS); each name is a leaderboard column group.
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


#: Networks that score a method (PROTOCOL.md s.4 "Independence"), as a method or an external entry names them.
SCORING_NETWORKS = ("age", "sface", "yunet", "dlib", "facenet", "inception")


def external_section(raw: Mapping[str, Any], method_names: list[str]) -> tuple[ExternalEntry, ...]:
    """Build `external:` (default empty): names unique and different from every method and `real`."""
    where = f"{raw.get('_file', 'params.yaml')}: external"
    entries = _coerce(tuple[ExternalEntry, ...], raw.get("external") or [], where)
    seen: set[str] = set()
    for i, e in enumerate(entries):
        if e.name in seen:
            raise ParamsError(f"{where}[{i}].name: {e.name!r} is listed twice; names must be unique")
        if e.name in method_names or e.name == "real":
            raise ParamsError(f"{where}[{i}].name: {e.name!r} is a built-in row; choose another name")
        seen.add(e.name)
    return entries


SHARED_SECTIONS = (
    "profile",
    "methods",
    "data",
    "groups",
    "tasks",
    "train",
    "generate",
    "evaluate",
    "check",
    "external",
    "_file",
)


def check_top_level(raw: Mapping[str, Any], method_names: list[str]) -> None:
    """Every top-level key is a shared section or a registered method's section; every listed method
    is registered. Raises ParamsError / UnknownNameError naming the key and the file."""
    from agebench.registry import UnknownNameError

    where = raw.get("_file", "params.yaml")
    listed = raw.get("methods", ["identity"])
    if not isinstance(listed, list):
        raise ParamsError(f"{where}: methods: expected a list of method names, got {type(listed).__name__} {listed!r}")
    if not listed:
        raise ParamsError(
            f"{where}: methods: the list is empty; name at least one of {', '.join(sorted(method_names))}"
        )
    for i, name in enumerate(listed):
        if not isinstance(name, str):
            raise ParamsError(f"{where}: methods[{i}]: expected a method name, got {type(name).__name__} {name!r}")
    for key in raw:
        if key not in SHARED_SECTIONS and key not in method_names:
            raise ParamsError(
                f"{where}: {key}: unknown top-level key (valid: "
                f"{', '.join(sorted(set(SHARED_SECTIONS[:-1]) | set(method_names)))})"
            )
    for name in listed:
        if name not in method_names:
            raise UnknownNameError(
                f"{where}: methods: unknown method {name!r}; valid methods: {', '.join(sorted(method_names))}"
            )


SECOND_OPINIONS = ("dlib", "facenet")


def check_second_opinion(cfg: EvaluateConfig, where: str) -> None:
    """`evaluate.metrics` may only name the second-opinion metrics of the configured `id_backend`
    (e.g. `identity_dlib` needs `id_backend: dlib`): caught here, before any network loads."""
    for name in cfg.metrics:
        backend = name.rsplit("_", 1)[-1]
        if backend in SECOND_OPINIONS and backend != cfg.id_backend:
            raise ParamsError(
                f"{where}: evaluate.metrics: {name!r} needs `evaluate.id_backend: {backend}` (it is "
                f"{cfg.id_backend!r}); use {name.rsplit('_', 1)[0]}_{cfg.id_backend} instead"
            )


def load_params(path: str | Path = "params.yaml") -> Params:
    """Load and validate a params file (profile overlay applied): the shared sections are built
    into frozen dataclasses, top-level keys and the `methods:` list are checked against the method
    registry, and every method's section is range-checked by field name (`range_rule`, e.g.
    `batch_size: 0`, `lr: 0`) without importing the method: one ParamsError before any stage reads
    data. The stage that trains a method builds its section with the method's config class."""
    from agebench.registry import METHODS

    raw = read_params(path)
    check_top_level(raw, METHODS.names())
    methods = _coerce(tuple[str, ...], raw.get("methods", ["identity"]), f"{raw['_file']}: methods")
    for name in METHODS.names():  # listed or not: a section in the file is checked
        _check_raw_ranges(raw.get(name), f"{raw['_file']}: {name}")
    evaluate = section(raw, "evaluate", EvaluateConfig)
    check_second_opinion(evaluate, raw["_file"])
    return Params(
        profile=raw["profile"],
        data=section(raw, "data", DataConfig),
        groups=section(raw, "groups", GroupsConfig),
        tasks=section(raw, "tasks", TasksConfig),
        train=section(raw, "train", TrainConfig),
        generate=section(raw, "generate", GenerateConfig),
        evaluate=evaluate,
        methods=methods,
        raw=types.MappingProxyType(raw),
        external=external_section(raw, METHODS.names()),
    )


#: Shared sections and their classes, as `load_params` builds them (the `check` gate reads `check:`).
SHARED_CLASSES: dict[str, type] = {
    "data": DataConfig,
    "groups": GroupsConfig,
    "tasks": TasksConfig,
    "train": TrainConfig,
    "generate": GenerateConfig,
    "evaluate": EvaluateConfig,
    "check": CheckConfig,
}


def params_problems(path: str | Path = "params.yaml") -> list[str]:
    """Every problem of a params file under every profile, one line each (the pre-flight's check).

    Each profile (`full`, then each overlay merged as `read_params` merges it) is checked: top-level keys
    and `methods:`, every shared section, `external:`, and the section of every registered method present
    in the file (listed or not) built with the method's own config class, so an unknown key or a wrong type
    in a method section is found before any stage runs, not when that method's training starts. A bad value
    of the base file is reported once as `<file>: <section>.<key>: ...`; one in an overlay as
    `<file>: <profile>.<section>.<key>: ...`. Imports the method modules (for their config classes).
    """
    from agebench.registry import METHODS, UnknownNameError

    path = Path(path)
    try:
        written = _read_yaml(path)
    except ParamsError as exc:
        return [str(exc)]
    lines: list[str] = []
    active = written.get("profile", "full")
    if active not in PROFILES:
        lines.append(f"{path}: profile: {active!r} is not one of {', '.join(PROFILES)}")
    names = METHODS.names()
    classes: dict[str, type] = dict(SHARED_CLASSES)
    for name in names:
        if name in written:
            try:
                classes[name] = METHODS.get(name).config_cls
            except Exception as exc:  # a method module that does not import: its section cannot be checked
                lines.append(f"{path}: {name}: the method's code cannot be imported ({type(exc).__name__}: {exc})")
    base_bad: set[str] = set()
    for profile in PROFILES:
        overlay = written.get(profile) if profile != "full" else None
        if profile != "full" and not overlay:
            continue
        try:
            raw = _apply_profile(dict(written), path, profile, lines)
        except ParamsError as exc:
            lines.append(str(exc))
            continue
        if profile == "full":
            try:
                check_top_level(raw, names)
            except (ParamsError, UnknownNameError) as exc:
                lines.append(str(exc))
            try:
                external_section(raw, names)
            except ParamsError as exc:
                lines.append(str(exc))
        for name, cls in classes.items():
            if profile == "full":
                found = section_errors(cls, raw.get(name) or {}, f"{path}: {name}")
                base_bad.update([name] if found else [])
            elif isinstance(overlay, Mapping) and name in overlay:
                merged = raw.get(name) or {}
                part = overlay[name] if isinstance(overlay[name], Mapping) else {}
                keys = [k for k in part if isinstance(merged, Mapping) and k in merged]  # others: listed by _merge
                found = section_errors(cls, merged, f"{path}: {profile}.{name}", keys=keys, whole=name not in base_bad)
            else:
                continue
            lines += found
        try:
            evaluate = build(EvaluateConfig, raw.get("evaluate") or {}, f"{path}: evaluate")
        except ParamsError:  # listed above
            continue
        try:
            check_second_opinion(evaluate, str(path))
        except ParamsError as exc:
            if str(exc) not in lines:  # the same problem under every profile is listed once
                lines.append(f"{exc} (profile {profile})" if profile != "full" else str(exc))
    return list(dict.fromkeys(lines))
