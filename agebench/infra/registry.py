"""Name -> implementation registries for methods and metrics (the name is the params.yaml key and
leaderboard row or column).

A registry maps each name to a "module:attribute" string and imports the module on first use
(as junyanz's `models/__init__.py` `find_model_using_name`), so parsing params never imports every
GAN. The built-in methods are listed in `methods/registry.yaml`; `agebench new-method` appends a line
there, so registering a method edits no Python.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Generic, TypeVar

import yaml

from agebench.infra.errors import UserError

T = TypeVar("T")


class UnknownNameError(UserError, KeyError):
    """An unknown registry name; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


PROJECT_ROOT = Path(__file__).resolve().parents[2]


class ShadowedPackageError(ImportError):
    """A top-level `methods` or `metrics` package other than agebench's was imported."""


def check_not_shadowed(module: Any) -> None:
    """Stop when `methods.x` / `metrics.x` came from outside agebench's tree (a user's own module of the
    same top-level name earlier on sys.path), instead of running the wrong code."""
    name = module.__name__.split(".")[0]
    where = Path(getattr(module, "__file__", "") or "").resolve()
    if name in ("methods", "metrics") and PROJECT_ROOT not in where.parents:
        raise ShadowedPackageError(
            f"`{name}` was imported from {where}, not from agebench ({PROJECT_ROOT / name}): a module of yours named "
            f"`{name}` shadows agebench's; rename it or run agebench from another directory"
        )


def import_target(target: str) -> Any:
    """Import "package.module:attribute" and return the attribute."""
    module, _, attr = target.partition(":")
    if not attr:
        raise ValueError(f"registry target {target!r} is not of the form 'module:attribute'")
    mod = importlib.import_module(module)
    check_not_shadowed(mod)
    return getattr(mod, attr)


class Registry(Generic[T]):
    """Names -> lazily imported entries; rejects duplicates and entries of the wrong base class.

    Args:
        kind: what the entries are ("method", "metric"), used in error messages.
        entries: name -> "module:attribute".
        base: "module:Class" every entry must subclass (None: any object), checked on first use.
    """

    def __init__(self, kind: str, entries: Mapping[str, str] | None = None, base: str | None = None) -> None:
        self.kind = kind
        self.base = base
        self._targets: dict[str, str] = {}
        self._loaded: dict[str, T] = {}
        for name, target in (entries or {}).items():
            self.add(name, target)

    def add(self, name: str, target: str) -> None:
        """Register `name` -> "module:attribute" (not imported yet)."""
        if name in self._targets:
            raise ValueError(f"{self.kind} {name!r} is already registered ({self._targets[name]})")
        if not isinstance(target, str) or ":" not in target:
            raise ValueError(f"{self.kind} {name!r}: target {target!r} must be 'module:attribute'")
        self._targets[name] = target

    def get(self, name: str) -> T:
        """Return the entry for `name`, importing it on first use; unknown names list the valid ones."""
        if name in self._loaded:
            return self._loaded[name]
        if name not in self._targets:
            valid = ", ".join(sorted(self._targets)) or "(none registered)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {valid}")
        obj = import_target(self._targets[name])
        if self.base is not None:
            base = import_target(self.base)
            if not (isinstance(obj, type) and issubclass(obj, base)):
                raise ValueError(f"{self.kind} {name!r} ({self._targets[name]}) must subclass {base.__name__}")
        self._loaded[name] = obj
        return obj

    def target(self, name: str) -> str:
        """The "module:attribute" string of `name` (no import)."""
        if name not in self._targets:
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid {self.kind}s: {', '.join(self.names())}")
        return self._targets[name]

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


def _method_entries(path: Path | None = None) -> dict[str, str]:
    path = path or PROJECT_ROOT / "methods" / "registry.yaml"
    raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping name: 'module:Class'")
    return {str(k): str(v) for k, v in raw.items()}


METHODS: Registry[Any] = Registry("method", _method_entries(), base="methods.base:Method")
"""Face-aging methods: `params.yaml` name -> `methods.base.Method` subclass."""


METRICS: Registry[Any] = Registry(
    "metric",
    {
        "face": "metrics.suite:face_metric",
        "age": "metrics.suite:age_metric",
        "identity": "metrics.suite:identity_sface",
        "joint": "metrics.suite:joint_sface",
        "identity_dlib": "metrics.suite:identity_dlib",
        "joint_dlib": "metrics.suite:joint_dlib",
        "identity_facenet": "metrics.suite:identity_facenet",
        "joint_facenet": "metrics.suite:joint_facenet",
        "realism": "metrics.suite:realism_metric",
        "fid": "metrics.suite:fid_metric",
        "cycle": "metrics.suite:cycle_metric",
    },
)
"""Task metrics: the name used in `evaluate.metrics` -> a `metrics.suite.Metric` (declares the per-face values
it needs; `score_task` runs the resolved objects and knows no metric by name)."""


def resolve_metrics(names: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """name -> `metrics.suite.Metric` for `score_task`, imported on first use; unknown names list the valid ones."""
    return {name: METRICS.get(name) for name in names}
