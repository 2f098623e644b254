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
    # A previous publication: its learning curves (written by `agebench curves`) survive; the rest is replaced.
    (out / "curves").mkdir(parents=True)
    (out / "curves" / "cyclegan_keras.json").write_text('{"curve": 1}')
    (out / "figures").mkdir()
    (out / "figures" / "learning_curves.png").write_bytes(b"curve chart")
    (out / "figures" / "tradeoff_aging.png").write_bytes(b"old chart")
    (out / "stale.json").write_text("gone")
    written = publish(ws, out, status=up_to_date, load_log=log, notes="test run")
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert (out / "curves" / "cyclegan_keras.json").read_text() == '{"curve": 1}'
    assert (out / "figures" / "learning_curves.png").read_bytes() == b"curve chart"
    assert (out / "figures" / "tradeoff_aging.png").read_bytes() != b"old chart"
    assert (
        files
        == sorted(written)
        == [
            "curves/cyclegan_keras.json",
            "data.json",
            "figures/age_histogram.png",
            "figures/learning_curves.png",
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


def v3_docs(recon_rate: float = 0.25) -> list[dict]:
    """Protocol-3 metrics files, only the keys the targets read: two tasks, identity and real rows."""

    def task(gap: float, id_rate: float, fail: float, realism: float, fid: float) -> dict:
        # `face_fail` is a count of the task's n = 200 outputs (a share `fail`).
        n = 200
        return {"n": n, "gap_closure": gap, "id_rate": id_rate, "face_fail": round(fail * n), "realism": realism,
                "fid": fid}  # fmt: skip

    head = {"protocol_version": 3, "kind": "method"}
    return [
        {**head, "method": "identity", "kind": "reference", "seeds": [{"seed": None}],
         "tasks": {"aging": task(0.0, 1.0, 0.0, 0.6, 50.0), "rejuvenation": task(0.0, 1.0, 0.0, 0.6, 60.0)}},
        {**head, "method": "real", "kind": "reference",
         "tasks": {"aging": {"realism_real": 0.7}, "rejuvenation": {"realism_real": 0.8}}},
        # Every target met on aging (each at its bound); on rejuvenation each one missed in turn is shown below.
        {**head, "method": "cyclegan_keras", "seeds": [{"seed": 0}, {"seed": 1}, {"seed": 2}],
         "tasks": {"aging": task(0.5, 0.6, 0.02, 0.35, 100.0), "rejuvenation": task(0.49, 0.9, 0.0, 0.5, 90.0)}},
        # Age-cGAN's identity target is 0.2; its reconstruction table has its own target.
        {**head, "method": "age_cgan", "seeds": [{"seed": 0}, {"seed": 1}, {"seed": 2}],
         "tasks": {"aging": task(0.8, 0.25, 0.0, 0.4, 99.0), "rejuvenation": task(0.8, 0.25, 0.03, 0.39, 121.0)},
         "reconstruction": {"n": 100, "ip": {"sface": {"id_rate": recon_rate, "id_rate_lo": 0.1, "id_rate_hi": 0.3}}}},
    ]  # fmt: skip


def test_targets_table_applies_each_target_at_its_bound() -> None:
    from agebench.report.targets import targets_table

    md = targets_table(v3_docs())
    assert "as means over 3 training seed(s)" in md
    lines = [line.split("|") for line in md.splitlines() if line.startswith("| ") and "task" not in line]
    rows = {tuple(c.strip() for c in cells[1:3]): [c.strip() for c in cells[3:-1]] for cells in lines}
    assert rows[("cyclegan_keras", "aging")] == [
        "0.50 yes", "0.600 yes", "2.0% yes", "0.350 (>= 0.350) yes", "100.0 (<= 100.0) yes", "**yes**"
    ]  # fmt: skip
    # gap_closure 0.49 < 0.5; realism 0.5 against half of rejuvenation's own ceiling 0.8 (0.4): met.
    rejuvenation = rows[("cyclegan_keras", "rejuvenation")]
    assert rejuvenation[0] == "0.49 **no**" and rejuvenation[-1] == "no"
    assert rejuvenation[3] == "0.500 (>= 0.400) yes"
    # Age-cGAN: id_rate 0.25 meets its 0.2; on rejuvenation 3% without a face, realism under 0.4, FID over 120.
    assert rows[("age_cgan", "aging")][1] == "0.250 yes" and rows[("age_cgan", "aging")][-1] == "**yes**"
    verdicts = [c.split()[-1] for c in rows[("age_cgan", "rejuvenation")][:5]]
    assert verdicts == ["yes", "yes", "**no**", "**no**", "**no**"]
    assert rows[("age_cgan", "0.250 [0.100, 0.300]")] == ["0.2", "**yes**"]
    assert "0.150 [0.100, 0.300] | 0.2 | no" in targets_table(v3_docs(recon_rate=0.15))
    # The yardsticks are not rows, and the targets cannot be judged without them.
    assert "| identity |" not in md and "| real |" not in md
    with pytest.raises(ValueError, match="identity and real rows"):
        targets_table([d for d in v3_docs() if d["method"] != "real"])


def test_learns_table_of_a_protocol_3_run_is_the_targets_table(tmp_path: Path) -> None:
    from agebench.report.targets import targets_table

    write_docs(tmp_path / "metrics", v3_docs())
    assert learns_table(tmp_path / "metrics") == targets_table(v3_docs())
