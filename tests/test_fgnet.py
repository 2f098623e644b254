"""The `fgnet` stage's record changes exactly when the optional FG-NET folder does."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from agebench.data.fgnet import fgnet_manifest
from tests.conftest import REPO


def run_stage(params: Path, out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "stages.fgnet", "--params", str(params), "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text())


def test_record_follows_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "fgnet"
    assert fgnet_manifest(None, "")["status"] == "not configured"
    absent = fgnet_manifest(folder, "fgnet")
    assert absent == {"fgnet_dir": "fgnet", "status": "absent", "files": 0, "sha256": None}
    folder.mkdir()
    (folder / "001A02.JPG").write_bytes(b"one")
    first = fgnet_manifest(folder, "fgnet")
    assert first["status"] == "present" and first["files"] == 1
    assert fgnet_manifest(folder, "fgnet") == first  # unchanged folder: same record
    (folder / "001A02.JPG").write_bytes(b"two")  # same name and size, other content
    changed = fgnet_manifest(folder, "fgnet")
    assert changed["sha256"] != first["sha256"]
    (folder / "002A10.JPG").write_bytes(b"three")
    assert fgnet_manifest(folder, "fgnet")["files"] == 2
    # The record does not depend on where the folder lives, only on what it holds.
    moved = tmp_path / "elsewhere"
    folder.rename(moved)
    assert fgnet_manifest(moved, "fgnet") == fgnet_manifest(moved, "fgnet") != changed


def test_stage_writes_a_byte_identical_record_while_nothing_changes(tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["evaluate"]["fgnet_dir"] = "photos"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "data" / "fgnet.json"
    assert run_stage(tmp_path / "params.yaml", out)["status"] == "absent"
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "001A02.JPG").write_bytes(b"x")
    record = run_stage(tmp_path / "params.yaml", out)
    assert record["status"] == "present" and record["files"] == 1  # relative to params.yaml's folder
    before = out.read_bytes()
    run_stage(tmp_path / "params.yaml", out)
    assert out.read_bytes() == before  # DVC sees no change: `reference` does not rerun
