"""The metrics file's key names (metrics.keys) are the names PROTOCOL.md (and README) define: a renamed constant value
would change every published metrics file, so each value is checked against the protocol text."""

from __future__ import annotations

import re

from metrics import keys
from tests.conftest import REPO


def _protocol() -> str:
    return (REPO / "PROTOCOL.md").read_text(encoding="utf-8")


def test_per_face_keys_are_the_protocols_record_in_order() -> None:
    text = " ".join(_protocol().split())
    record = text.split("sorted by file name:", 1)[1].split("The `real` row", 1)[0]
    assert tuple(re.findall(r"`([a-z_]+)`", record)) == keys.PER_FACE_KEYS


def test_every_task_metric_key_is_documented() -> None:
    # The protocol defines the scored values; README's metrics-file section the diagnostic counts.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`([a-z_0-9]+)`", _protocol() + readme))
    values = {v for k, v in vars(keys).items() if k.startswith("KEY_METRIC_")}
    assert values and not sorted(values - named)


def test_key_values_are_unique_per_meaning() -> None:
    # Two constants may share a value only as aliases (the per-face record reuses a task metric's name).
    consts = {k: v for k, v in vars(keys).items() if k.startswith("KEY_")}
    by_value: dict[str, list[str]] = {}
    for k, v in consts.items():
        by_value.setdefault(v, []).append(k)
    shared = {v: ks for v, ks in by_value.items() if len(ks) > 1}
    assert all(any(k.startswith("KEY_FACE_") for k in ks) for ks in shared.values()), shared
