"""`agebench repro`: prepare first, the trainings `jobs` at a time, the rest last; failures named with their logs.

A stand-in `dvc` (a script) records each call's arguments with its start and end times and sleeps, so the
test sees the plan's order and overlap without running a pipeline.
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import pytest

from agebench.pipeline.repro import ReproError, parallel_repro

FAKE_DVC = """#!{python}
import json, sys, time
args = sys.argv[1:]
start = time.time()
stage = args[-1] if "--single-item" in args else " ".join(args)
time.sleep({sleep} if "--single-item" in args else 0.0)
if stage in {fail!r}:
    print("boom: " + stage)
    sys.exit(3)
with open({calls!r}, "a") as f:
    f.write(json.dumps({{"args": args, "start": start, "end": time.time()}}) + "\\n")
"""


def fake_dvc(tmp_path: Path, sleep: float = 0.5, fail: tuple[str, ...] = ()) -> tuple[str, Path]:
    calls = tmp_path / "calls.jsonl"
    script = tmp_path / "dvc"
    script.write_text(FAKE_DVC.format(python=sys.executable, sleep=sleep, fail=list(fail), calls=str(calls)))
    script.chmod(0o755)
    return str(script), calls


def read_calls(calls: Path) -> list[dict]:
    return [json.loads(line) for line in calls.read_text().splitlines()]


def test_two_jobs_overlap_trainings_between_prepare_and_the_rest(tmp_path: Path) -> None:
    dvc, calls = fake_dvc(tmp_path)
    methods = ("a", "b", "c", "d")
    record = parallel_repro(tmp_path, methods, 2, tmp_path / "logs", dvc=dvc, echo=lambda _: None)
    done = read_calls(calls)
    assert done[0]["args"] == ["repro", "prepare"] and done[-1]["args"] == ["repro"]
    trains = done[1:-1]
    assert sorted(c["args"][-1] for c in trains) == [f"train@{m}" for m in methods]
    assert all(c["args"][:3] == ["--wait-for-lock", "repro", "--single-item"] for c in trains)
    # Every training starts after prepare ended and ends before the rest starts.
    assert min(c["start"] for c in trains) >= done[0]["end"] and max(c["end"] for c in trains) <= done[-1]["start"]
    # Two at once, never three: at each training's start exactly one other is running.
    running = [sum(o["start"] <= c["start"] < o["end"] for o in trains) for c in trains]
    assert max(running) == 2
    assert record.wall_s >= max(c["end"] for c in done) - min(c["start"] for c in done)
    written = json.loads((tmp_path / "logs" / "repro.json").read_text())
    assert written["jobs"] == 2 and next(s["stage"] for s in written["stages"]) == "prepare"
    assert len(written["stages"]) == 6 and all(s["returncode"] == 0 for s in written["stages"])


def test_one_job_runs_the_trainings_one_after_another(tmp_path: Path) -> None:
    dvc, calls = fake_dvc(tmp_path, sleep=0.2)
    parallel_repro(tmp_path, ("a", "b", "c"), 1, tmp_path / "logs", dvc=dvc, echo=lambda _: None)
    trains = read_calls(calls)[1:-1]
    assert [c["args"][-1] for c in trains] == ["train@a", "train@b", "train@c"]
    assert all(later["start"] >= earlier["end"] for earlier, later in itertools.pairwise(trains))


def test_a_failed_training_is_named_with_its_log_the_others_finish_and_the_rest_does_not_run(tmp_path: Path) -> None:
    dvc, calls = fake_dvc(tmp_path, sleep=0.1, fail=("train@b",))
    with pytest.raises(ReproError, match=r"1 stage\(s\) failed: train@b \(exit 3, log .*train_b\.log\)"):
        parallel_repro(tmp_path, ("a", "b", "c"), 2, tmp_path / "logs", dvc=dvc, echo=lambda _: None)
    ran = [c["args"][-1] for c in read_calls(calls)]
    assert ran[0] == "prepare" and sorted(ran[1:]) == ["train@a", "train@c"]  # no `dvc repro` of the rest
    assert (tmp_path / "logs" / "train_b.log").read_text() == "boom: train@b\n"
    record = json.loads((tmp_path / "logs" / "repro.json").read_text())
    assert {s["stage"]: s["returncode"] for s in record["stages"]}["train@b"] == 3


def test_a_failed_prepare_trains_nothing(tmp_path: Path) -> None:
    dvc, calls = fake_dvc(tmp_path, fail=("repro prepare",))
    with pytest.raises(ReproError, match=r"prepare \(exit 3\)"):
        parallel_repro(tmp_path, ("a", "b"), 2, tmp_path / "logs", dvc=dvc, echo=lambda _: None)
    assert not calls.exists()


def test_jobs_below_one_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ReproError, match="--jobs must be >= 1, got 0"):
        parallel_repro(tmp_path, ("a",), 0, tmp_path / "logs", dvc="dvc")


def test_the_record_is_written_after_each_stage_and_a_resumed_run_keeps_the_earlier_one(tmp_path: Path) -> None:
    """repro.json holds the stages so far while the plan runs (a run killed at a session's end keeps its
    trainings' timings), and a second run keeps the first one's record under `earlier`."""
    logs = tmp_path / "logs"
    dvc, calls = fake_dvc(tmp_path, sleep=0.1, fail=("repro",))  # the rest fails: trainings ran, plan incomplete
    with pytest.raises(ReproError, match=r"rest \(exit 3\)"):
        parallel_repro(tmp_path, ("a", "b"), 2, logs, dvc=dvc, echo=lambda _: None)
    first = json.loads((logs / "repro.json").read_text())
    assert first["complete"] is False and first["earlier"] == []
    assert sorted(s["stage"] for s in first["stages"]) == ["prepare", "rest", "train@a", "train@b"]
    # While the plan runs: the stand-in dvc copies repro.json when the rest starts; the trainings are in it.
    seen = tmp_path / "seen.json"
    script = Path(dvc)
    script.write_text(
        FAKE_DVC.format(python=sys.executable, sleep=0.1, fail=[], calls=str(calls))
        + f"if args == ['repro']:\n    import shutil; shutil.copyfile({str(logs / 'repro.json')!r}, {str(seen)!r})\n"
    )
    parallel_repro(tmp_path, ("a", "b"), 2, logs, dvc=dvc, echo=lambda _: None)
    during = json.loads(seen.read_text())
    assert during["complete"] is False and sorted(s["stage"] for s in during["stages"]) == [
        "prepare",
        "train@a",
        "train@b",
    ]
    second = json.loads((logs / "repro.json").read_text())
    assert second["complete"] is True and len(second["stages"]) == 4
    assert second["earlier"] == [{k: v for k, v in first.items() if k != "earlier"}]
    # A third run keeps both, oldest first.
    parallel_repro(tmp_path, ("a",), 1, logs, dvc=dvc, echo=lambda _: None)
    third = json.loads((logs / "repro.json").read_text())
    assert [e["started_utc"] for e in third["earlier"]] == [first["started_utc"], second["started_utc"]]
    assert third["earlier"][1]["stages"] == second["stages"]


def test_each_stage_records_the_cpu_time_of_the_command_dvc_ran(tmp_path: Path) -> None:
    """`cpu_s` counts the stage's own processes, the command dvc waited for included, not the stages beside it."""
    calls = tmp_path / "calls.jsonl"
    script = tmp_path / "dvc"
    burn = "import time\nwhile time.process_time() < 0.4: pass\n"
    script.write_text(
        FAKE_DVC.format(python=sys.executable, sleep=0.0, fail=[], calls=str(calls))
        + f"if stage == 'train@busy':\n    import subprocess; subprocess.run([{sys.executable!r}, '-c', {burn!r}])\n"
    )
    script.chmod(0o755)
    record = parallel_repro(tmp_path, ("busy", "idle"), 2, tmp_path / "logs", dvc=str(script), echo=lambda _: None)
    cpu = {r.stage: r.cpu_s for r in record.runs}
    assert cpu["train@busy"] >= 0.4  # the grandchild's 0.4 s of CPU is counted
    assert cpu["train@idle"] < cpu["train@busy"] - 0.3  # ran at the same time, not charged with it
    written = json.loads((tmp_path / "logs" / "repro.json").read_text())
    assert {s["stage"]: s["cpu_s"] for s in written["stages"]} == cpu
