"""Loading the whole `params.yaml`: every section typed and checked, or every problem listed.

The sections themselves are in `agebench.params.sections`; how one section is read is in
`agebench.params.reading`.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agebench.infra.errors import UserError
from agebench.params.reading import (
    PROFILES,
    ParamsError,
    _apply_profile,
    _check_raw_ranges,
    _coerce,
    _read_yaml,
    build,
    read_params,
    section,
    section_errors,
)
from agebench.params.sections import (
    CheckConfig,
    DataConfig,
    EvaluateConfig,
    ExternalEntry,
    GenerateConfig,
    GroupsConfig,
    Params,
    TasksConfig,
    TrainConfig,
)


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
    from agebench.infra.registry import UnknownNameError

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
    from agebench.infra.registry import METHODS

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
    from agebench.infra.registry import METHODS

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
            except UserError as exc:  # a bad value or an unknown method name
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
