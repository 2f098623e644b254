"""`agebench check` / `baseline update`: the regression gate of PROTOCOL.md s.6."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from agebench.cli import main
from tests.conftest import REPO


def metrics_doc(method: str, joint: float = 0.30, fid: float = 50.0, ci: float = 0.04) -> dict:
    task = {
        "n": 100,
        "joint": joint,
        "age_acc": 0.5,
        "id_rate": 0.6,
        "fid": fid,
        "kid_mean": 0.01,
        "cycle_l1": 0.1,
        "ci95": {
            "joint": [joint - ci, joint + ci],
            "age_acc": [0.45, 0.55],
            "id_rate": [0.55, 0.65],
            "cycle_l1": [0.099, 0.101],
        },
    }
    return {"method": method, "tasks": {"aging": task, "rejuvenation": copy.deepcopy(task)}}


def write_metrics(folder: Path, docs: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in folder.glob("*.json"):
        f.unlink()
    for d in docs:
        (folder / f"{d['method']}.json").write_text(json.dumps(d))
    return folder


def run(args: list[str], capsys) -> tuple[int, str, str]:
    code = main([*args, "--params", str(REPO / "params.yaml")])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture
def baseline(tmp_path: Path, capsys) -> Path:
    write_metrics(tmp_path / "m", [metrics_doc("a"), metrics_doc("b")])
    code, out, _ = run(
        ["baseline", "update", "--baseline", str(tmp_path / "base.json"), "--metrics", str(tmp_path / "m")], capsys
    )
    assert code == 0 and "metrics written" in out
    return tmp_path / "base.json"


def test_identical_metrics_pass(tmp_path: Path, baseline: Path, capsys) -> None:
    code, out, _ = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 0
    assert "| metric | baseline | now | delta | allowed | verdict |" in out
    assert "REGRESSED" not in out and "all 24 metrics within tolerance" in out


def test_worsened_beyond_tolerance_fails_and_is_named(tmp_path: Path, baseline: Path, capsys) -> None:
    write_metrics(tmp_path / "m", [metrics_doc("a", fid=55.0), metrics_doc("b", joint=0.20)])
    code, out, _ = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 1
    regressed = [line for line in out.splitlines() if "REGRESSED" in line]
    assert {line.split("|")[1].strip() for line in regressed} == {
        "a/aging/fid",
        "a/rejuvenation/fid",
        "b/aging/joint",
        "b/rejuvenation/joint",
    }


def test_change_inside_interval_or_tolerance_passes(tmp_path: Path, baseline: Path, capsys) -> None:
    # joint -0.03 is beyond its tolerance (0.02) but inside its 95% half-width (0.04): not a regression.
    write_metrics(tmp_path / "m", [metrics_doc("a", joint=0.27, fid=51.5), metrics_doc("b")])
    code, out, _ = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 0, out
    # Without the interval the same move fails.
    write_metrics(tmp_path / "m", [metrics_doc("a", joint=0.27, ci=0.0), metrics_doc("b")])
    assert run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)[0] == 1


def test_improvement_passes_and_is_shown(tmp_path: Path, baseline: Path, capsys) -> None:
    write_metrics(tmp_path / "m", [metrics_doc("a", joint=0.5, fid=30.0), metrics_doc("b")])
    code, out, _ = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 0
    assert "| a/aging/joint | 0.3 | 0.5 | 0.2 |" in out and "improved" in out


def test_missing_metric_or_method_is_reported_not_ignored(tmp_path: Path, baseline: Path, capsys) -> None:
    doc = metrics_doc("a")
    del doc["tasks"]["aging"]["fid"]
    write_metrics(tmp_path / "m", [doc])  # method b gone entirely
    code, out, _ = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 1
    assert "| a/aging/fid |" in out and "missing now" in out
    assert sum("missing now" in line for line in out.splitlines()) == 1 + 12
    # A metric only the current run has is reported as new and does not fail.
    write_metrics(tmp_path / "m", [metrics_doc("a"), metrics_doc("b"), metrics_doc("c")])
    code, out, _ = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 0 and "| c/aging/joint |" in out and "new" in out


def test_unusable_input_exits_2(tmp_path: Path, baseline: Path, capsys) -> None:
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = run(["check", "--baseline", str(tmp_path / "bad.json"), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 2 and "not valid JSON" in err and "bad.json" in err
    code, _, err = run(["check", "--baseline", str(tmp_path / "nope.json"), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 2 and "file not found" in err
    (tmp_path / "m" / "a.json").write_text("[1, 2")
    code, _, err = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 2 and "a.json" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "empty")], capsys)
    assert code == 2 and "no metrics files" in err
