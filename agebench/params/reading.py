"""Reading `params.yaml` into typed, frozen dataclasses.

Unknown keys and wrong types are errors that name the key and the file, so a typo never silently falls
back to a default. The top-level `profile` key (`full`, `smoke` or `cpu`) selects an overlay: with
`profile: smoke`, the `smoke:` section is merged over the rest before any section is built (`cpu:` likewise).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin, get_type_hints

import yaml

from agebench.infra.errors import UserError

T = TypeVar("T")

PROFILES = ("full", "smoke", "cpu")


class ParamsError(UserError, ValueError):
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
