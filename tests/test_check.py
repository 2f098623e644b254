"""`agebench check` / `baseline update`: the regression gate of PROTOCOL.md s.6."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

import agebench
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
    return {
        "method": method,
        "protocol_version": agebench.PROTOCOL_VERSION,
        "profile": "smoke",
        "tasks": {"aging": task, "rejuvenation": copy.deepcopy(task)},
    }


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
    assert code == 0 and "values written" in out
    return tmp_path / "base.json"


def test_identical_metrics_pass(tmp_path: Path, baseline: Path, capsys) -> None:
    code, out, _ = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 0
    assert "| value | mode | baseline | now | delta | allowed | verdict |" in out
    assert "REGRESSED" not in out and "all 24 values within tolerance" in out


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
    assert "| a/aging/joint | tolerance | 0.3 | 0.5 | 0.2 |" in out and "improved" in out


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


def _one_line(err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"agebench {command}: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    ("case", "expect"),
    [
        ("tasks is a list", "tasks: expected a JSON object"),
        ("task is a string", "tasks.aging: expected a JSON object"),
        ("non-numeric value", "tasks.aging.joint: expected a number or null, got str"),
        ("boolean value", "tasks.aging.joint: expected a number or null, got bool"),
        ("one-element ci95", "tasks.aging.ci95.joint: expected a 95% interval"),
        ("ci95 end not a number", "tasks.aging.ci95.joint[1]: expected a number"),
        ("ci95 is a list", "tasks.aging.ci95: expected a JSON object"),
        ("non-UTF-8 file", "not UTF-8"),
    ],
)
def test_malformed_metrics_exit_2_not_1(tmp_path: Path, baseline: Path, capsys, case: str, expect: str) -> None:
    """A broken file is bad input (2), never a regression (1)."""
    doc = metrics_doc("a")
    aging = doc["tasks"]["aging"]
    if case == "tasks is a list":
        doc["tasks"] = [aging]
    elif case == "task is a string":
        doc["tasks"]["aging"] = "0.3"
    elif case == "non-numeric value":
        aging["joint"] = "0.3"
    elif case == "boolean value":
        aging["joint"] = True
    elif case == "one-element ci95":
        aging["ci95"]["joint"] = [0.26]
    elif case == "ci95 end not a number":
        aging["ci95"]["joint"] = [0.26, "x"]
    elif case == "ci95 is a list":
        aging["ci95"] = [0.26, 0.34]
    write_metrics(tmp_path / "m", [doc, metrics_doc("b")])
    if case == "non-UTF-8 file":
        (tmp_path / "m" / "a.json").write_bytes(b'{"method": "a", "tasks": {}, "note": "\xff\xfe"}')
    code, out, err = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 2 and out == ""
    line = _one_line(err, "check")
    assert expect in line and "a.json" in line


def test_malformed_baseline_exits_2(tmp_path: Path, baseline: Path, capsys) -> None:
    doc = json.loads(baseline.read_text())
    doc["trained"]["a/aging/joint"]["value"] = "high"
    baseline.write_text(json.dumps(doc))
    code, _, err = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 2 and "trained.a/aging/joint.value: expected a number" in _one_line(err, "check")
    baseline.write_bytes(b"\xff\xfe{}")
    code, _, err = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 2 and "not UTF-8" in _one_line(err, "check")


def test_baseline_records_protocol_and_profile(baseline: Path) -> None:
    doc = json.loads(baseline.read_text())
    assert (doc["protocol_version"], doc["profile"]) == (agebench.PROTOCOL_VERSION, "smoke")


@pytest.mark.parametrize("what", ["protocol_version", "profile"])
def test_other_protocol_or_profile_is_refused(tmp_path: Path, baseline: Path, capsys, what: str) -> None:
    """Results of another protocol version or profile than the baseline: exit 2, one line."""
    docs = [metrics_doc("a"), metrics_doc("b")]
    for d in docs:
        d[what] = agebench.PROTOCOL_VERSION + 1 if what == "protocol_version" else "full"
    write_metrics(tmp_path / "m", docs)
    before = baseline.read_bytes()
    code, out, err = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 2 and out == ""
    assert "not comparable" in _one_line(err, "check")
    assert baseline.read_bytes() == before


def test_mixed_results_are_refused(tmp_path: Path, baseline: Path, capsys) -> None:
    other = metrics_doc("b")
    other["profile"] = "full"
    write_metrics(tmp_path / "m", [metrics_doc("a"), other])
    code, _, err = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    assert code == 2 and "mixed results" in _one_line(err, "check")


def test_old_baseline_without_versions_is_protocol_1(tmp_path: Path, baseline: Path, capsys) -> None:
    """The format-1 baselines carried no protocol_version: they were protocol 1."""
    doc = json.loads(baseline.read_text())
    for key in ("protocol_version", "profile"):
        del doc[key]
    baseline.write_text(json.dumps(doc))
    code, _, err = run(["check", "--baseline", str(baseline), "--metrics", str(tmp_path / "m")], capsys)
    if agebench.PROTOCOL_VERSION == 1:
        assert code == 0
    else:
        assert code == 2 and "protocol 1 baseline" in _one_line(err, "check")


def test_baseline_update_refuses_old_protocol_and_folders(tmp_path: Path, baseline: Path, capsys) -> None:
    """Bad input: nothing overwritten, nothing lost, exit 2."""
    docs = [metrics_doc("a"), metrics_doc("b")]
    for d in docs:
        d["protocol_version"] = agebench.PROTOCOL_VERSION - 1
    write_metrics(tmp_path / "old", docs)
    before = baseline.read_bytes()
    code, _, err = run(["baseline", "update", "--baseline", str(baseline), "--metrics", str(tmp_path / "old")], capsys)
    assert code == 2 and f"protocol {agebench.PROTOCOL_VERSION - 1} results" in _one_line(err, "baseline")
    assert baseline.read_bytes() == before
    # A folder given as the baseline is refused, and its files are kept.
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_text("x")
    code, _, err = run(
        ["baseline", "update", "--baseline", str(tmp_path / "d"), "--metrics", str(tmp_path / "m")], capsys
    )
    assert code == 2 and "is a folder" in _one_line(err, "baseline")
    assert (tmp_path / "d" / "f").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temporaries left


def test_exit_codes_are_documented(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "0 all metrics within tolerance" in text and "1 a regression" in text and "2 bad input" in text
