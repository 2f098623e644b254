"""`agebench publish` copies only face-free files, and only from a finished, consistent run."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from agebench.report import render_leaderboard
from agebench.report.publish import PublishError, learns_table, load_summary, publish
from tests.test_report import metrics_doc, real_doc, write_docs

PAIR = {"pair": {"young": [20, 29], "old": [50, 59]}}
PAIR_TASKS = {
    "aging": {"scheme": "pair", "source": "young", "target": "old"},
    "rejuvenation": {"scheme": "pair", "source": "old", "target": "young"},
}


def with_gains(doc: dict, gains: dict[str, tuple[float, float, float, float]]) -> dict:
    """`doc` with per-task (age_gain, ci low, ci high, id_rate) and the params that define the tasks."""
    doc["params"].update({"tasks": PAIR_TASKS, "groups": PAIR})
    for task, (gain, lo, hi, id_rate) in gains.items():
        t = doc["tasks"][task]
        t["age_gain"], t["ci95"]["age_gain"], t["id_rate"] = gain, [lo, hi], id_rate
    return doc


def workspace(tmp_path: Path) -> Path:
    """A git checkout holding what `dvc repro` leaves in reports/ (metrics, runtime, leaderboard, charts)."""
    ws = tmp_path / "ws"
    reports = ws / "reports"
    gains = {"aging": (1.0, 0.0, 2.0, 1.0), "rejuvenation": (0.2, -0.5, 1.0, 1.0)}
    docs = [
        with_gains(metrics_doc("identity", 0.1, "reference"), gains),
        with_gains(
            metrics_doc("cyclegan_keras", 0.4),
            {"aging": (8.0, 6.0, 10.0, 0.8)} | {"rejuvenation": (-3.0, -5.0, -1.0, 0.4)},
        ),
        with_gains(
            metrics_doc("cyclegan_agevec", 0.3),
            {"aging": (3.0, 1.5, 4.0, 0.9), "rejuvenation": (-2.0, -3.0, -1.0, 0.7)},
        ),
        real_doc(),
    ]
    write_docs(reports / "metrics", docs)
    (reports / "runtime").mkdir()
    (reports / "runtime" / "cyclegan_keras.json").write_text(json.dumps({"train": {"seconds": 10.0}}))
    md, csv = render_leaderboard(reports / "metrics", reports / "runtime")
    (reports / "leaderboard.md").write_text(md)
    (reports / "leaderboard.csv").write_text(csv)
    (reports / "data.json").write_text("{}")
    (reports / "figures" / "charts").mkdir(parents=True)
    (reports / "figures" / "charts" / "tradeoff_aging.png").write_bytes(b"chart")
    (reports / "figures" / "age_histogram.png").write_bytes(b"hist")
    # What must never be published: the page and the progression strips hold faces.
    (reports / "index.html").write_text("<img>")
    (reports / "figures" / "progression").mkdir()
    (reports / "figures" / "progression" / "cyclegan_agevec.png").write_bytes(b"faces")
    (ws / "params.yaml").write_text("profile: cpu\n")
    # The always-run stage is read from dvc.yaml: `dvc status` listing it does not block publishing.
    (ws / "dvc.yaml").write_text("stages:\n  fgnet:\n    cmd: x\n    always_changed: true\n  report:\n    cmd: y\n")
    for args in (
        ["init", "-q"],
        ["add", "params.yaml"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
    ):
        subprocess.run(["git", *args], cwd=ws, check=True)
    (ws / "params.yaml").write_text("profile: cpu\ndata: {source: ../shared/data/utkface/UTKFace}\n")
    return ws


def up_to_date(ws: Path) -> dict:
    return {"fgnet": ["always changed"]}


def test_publishes_the_face_free_files_and_the_run_record(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    log = tmp_path / "load.log"
    log.write_text("10:00:00 1.50 1.2 1.0\n10:01:00 2.50 1.3 1.0\n10:02:00 2.00 1.4 1.1\n")
    out = tmp_path / "results" / "cpu"
    written = publish(ws, out, status=up_to_date, load_log=log, notes="test run")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert (
        files
        == sorted(written)
        == [
            "data.json",
            "figures/age_histogram.png",
            "figures/tradeoff_aging.png",
            "leaderboard.csv",
            "leaderboard.md",
            "learns.md",
            "metrics/cyclegan_agevec.json",
            "metrics/cyclegan_keras.json",
            "metrics/identity.json",
            "metrics/real.json",
            "run.json",
            "runtime/cyclegan_keras.json",
        ]
    )
    # The published leaderboard is what its own metrics files render to.
    assert render_leaderboard(out / "metrics", out / "runtime") == (
        (out / "leaderboard.md").read_text(),
        (out / "leaderboard.csv").read_text(),
    )
    run = json.loads((out / "run.json").read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ws, capture_output=True, text=True).stdout.strip()
    assert run["git_revision"] == head and run["tracked_files_changed"] == ["params.yaml"]
    assert "+data: {source: ../shared/data/utkface/UTKFace}" in run["params_diff"]
    assert run["load_average_1min"] == {"samples": 3, "min": 1.5, "median": 2.0, "max": 2.5}
    assert run["dvc_status"] == "up to date (always-run stages: fgnet)"  # from the workspace's dvc.yaml
    assert run["machine"]["cores"] >= 1 and run["notes"] == "test run"


@pytest.mark.parametrize("problem", ["stale stage", "hand-edited leaderboard", "missing charts"])
def test_refuses_an_unfinished_or_inconsistent_run_and_writes_nothing(tmp_path: Path, problem: str) -> None:
    ws = workspace(tmp_path)
    status = up_to_date
    if problem == "stale stage":

        def status(ws: Path) -> dict:
            return {"fgnet": ["always changed"], "evaluate@cyclegan_keras": [{"changed deps": {}}]}
    elif problem == "hand-edited leaderboard":
        md = ws / "reports" / "leaderboard.md"
        md.write_text(md.read_text().replace("cyclegan_keras", "cyclegan_kerass", 1))
    else:
        for p in (ws / "reports" / "figures" / "charts").iterdir():
            p.unlink()
        (ws / "reports" / "figures" / "charts").rmdir()
    out = tmp_path / "results" / "cpu"
    out.mkdir(parents=True)
    (out / "previous.json").write_text("kept")
    with pytest.raises(PublishError, match={"stale stage": "evaluate@cyclegan_keras", "hand-edited leaderboard":
                                            "differs from what the metrics files render", "missing charts":
                                            "reports/figures/charts"}[problem]):  # fmt: skip
        publish(ws, out, status=status)
    assert [p.name for p in out.iterdir()] == ["previous.json"]  # the previous results are untouched


def test_load_summary_of_an_empty_log(tmp_path: Path) -> None:
    (tmp_path / "l.log").write_text("")
    assert load_summary(tmp_path / "l.log") == {"samples": 0}


def test_learns_needs_an_age_change_beyond_identity_and_the_person_kept(tmp_path: Path) -> None:
    ws = workspace(tmp_path)
    rows = [r.split(" | ") for r in learns_table(ws / "reports" / "metrics").splitlines()[2:]]
    verdicts = {(r[0].strip("| "), r[1]): (r[4], r[6], r[7].strip(" |")) for r in rows}
    assert verdicts == {
        # aging: [6, 10] entirely above identity's [0, 2], id_rate 0.8: learns.
        ("cyclegan_keras", "aging"): ("yes", "yes", "**yes**"),
        # rejuvenation: [-5, -1] entirely below identity's [-0.5, 1], but id_rate 0.4 < 0.5: not learned.
        ("cyclegan_keras", "rejuvenation"): ("yes", "no", "no"),
        # aging: [1.5, 4] overlaps identity's [0, 2]: not learned, whatever the identity rate.
        ("cyclegan_agevec", "aging"): ("no", "yes", "no"),
        # rejuvenation: [-3, -1] vs identity's [-0.5, 1]: apart on the right (younger) side.
        ("cyclegan_agevec", "rejuvenation"): ("yes", "yes", "**yes**"),
    }
    assert "identity |" not in learns_table(ws / "reports" / "metrics")  # the yardstick is not a row
