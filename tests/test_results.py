"""The published CPU-track results are what the committed code renders from them.

`results/cpu/` is written by `agebench publish` from a finished `dvc repro` of the cpu profile; these
tests hold it, the README's copy of its leaderboard, the README's sentences about ranks and the quality
baseline to it, so none can be edited by hand or drift apart. It stays at protocol 2 until it is
republished; the leaderboard renders each protocol as it was published.
"""

from __future__ import annotations

import json
import re

import pytest

from agebench.gate.check import update_baseline
from agebench.params.reading import read_params, section
from agebench.params.sections import CheckConfig
from agebench.report import ranks_markdown, render_leaderboard
from agebench.report.curves_figure import curves_markdown
from agebench.report.publish import learns_table
from tests.conftest import REPO

RESULTS = REPO / "results" / "cpu"
#: Everything a results folder may hold: numbers and charts, never a face (UTKFace licence).
ALLOWED = re.compile(
    r"^(metrics/\w+\.json|runtime/\w+\.json|leaderboard\.(md|csv)|learns\.md|data\.json|run\.json"
    r"|figures/(age_histogram|training_curves|learning_curves|(tradeoff|age_distribution|breakdown)_\w+)\.png"
    r"|curves/(\w+\.json|learning_curves\.md))$"
)


def test_committed_leaderboard_is_the_rendering_of_the_committed_metrics() -> None:
    md, csv = render_leaderboard(RESULTS / "metrics", RESULTS / "runtime")
    assert (RESULTS / "leaderboard.md").read_text(encoding="utf-8") == md
    assert (RESULTS / "leaderboard.csv").read_text(encoding="utf-8") == csv


def test_committed_learning_table_is_the_rendering_of_the_committed_metrics() -> None:
    assert (RESULTS / "learns.md").read_text(encoding="utf-8") == learns_table(RESULTS / "metrics")


def test_readme_shows_the_published_tables_verbatim() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for name in ("leaderboard.md", "learns.md"):
        m = re.search(rf"<!-- results/cpu/{name} -->\n(.*?)<!-- end results/cpu/{name} -->", readme, re.S)
        assert m, f"README lacks the results/cpu/{name} block"
        assert m.group(1) == (RESULTS / name).read_text(encoding="utf-8"), name


def test_readme_rank_sentences_are_generated_from_the_committed_metrics() -> None:
    """Every sentence of the README about ranks and differences is `ranks_markdown`'s, so none can say something the
    intervals do not (protocol 2 said "the three CycleGANs share rank 1: no pair differs", which was false)."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"<!-- results/cpu/ranks -->\n(.*?)<!-- end results/cpu/ranks -->", readme, re.S)
    assert m, "README lacks the generated results/cpu/ranks block"
    assert m.group(1) == ranks_markdown(RESULTS / "metrics", RESULTS / "runtime")
    # No hand-written claim about ranks is left outside the generated blocks (the ranks list, and the leaderboard,
    # whose own rank sentences are rendered from the metrics and held verbatim by the test above).
    outside = readme.replace(m.group(0), "")
    for name in ("leaderboard.md", "learns.md"):
        block = re.search(rf"<!-- results/cpu/{name} -->\n.*?<!-- end results/cpu/{name} -->", outside, re.S)
        assert block, name
        outside = outside.replace(block.group(0), "")
    results = outside[outside.index("## Results") : outside.index("## What is produced where")]
    assert not re.search(r"share rank|not significant|do(es)? not differ|is above", results)


def test_committed_learning_curves_table_is_the_rendering_of_the_committed_curves() -> None:
    """The published learning curves (validation split) and their table agree, and every point was scored on
    validation faces, with the test split never part of it."""
    docs = [json.loads(p.read_text()) for p in sorted((RESULTS / "curves").glob("*.json"))]
    if not docs:
        pytest.skip("no learning curves published in results/cpu/curves")
    assert (RESULTS / "curves" / "learning_curves.md").read_text(encoding="utf-8") == curves_markdown(docs)
    assert (RESULTS / "figures" / "learning_curves.png").is_file()
    for doc in docs:
        assert doc["validation"]["fraction"] > 0 and doc["points"], doc["method"]
        steps = [p["step"] for p in doc["points"]]
        assert steps == sorted(steps) and len(set(steps)) == len(steps)


def test_results_hold_only_face_free_files_of_one_run() -> None:
    files = sorted(str(p.relative_to(RESULTS)) for p in RESULTS.rglob("*") if p.is_file())
    assert [f for f in files if not ALLOWED.match(f)] == []
    run = json.loads((RESULTS / "run.json").read_text())
    docs = [json.loads(p.read_text()) for p in sorted((RESULTS / "metrics").glob("*.json"))]
    assert {d["profile"] for d in docs} == {run["profile"]} == {"cpu"}
    # Every metrics file was produced by one code revision, the one run.json names (`git describe`, 12 hex
    # digits); "-dirty" only for params.yaml (where the data and weights live), never for code.
    (rev,) = run["metrics_git_revisions"]
    assert {d["git_revision"] for d in docs} == {rev}
    assert run["git_revision"].startswith(rev.removesuffix("-dirty"))
    assert run["tracked_files_changed"] == (["params.yaml"] if rev.endswith("-dirty") else [])
    methods = read_params(REPO / "params.yaml")["methods"]
    assert sorted(d["method"] for d in docs) == sorted([*methods, "real"])


def test_cpu_baseline_is_derived_from_the_published_metrics(tmp_path) -> None:
    """baselines/cpu.json is what `agebench baseline update` writes from the published, seed-merged metrics:
    exact rows for identity and real, the trained rows' spread taken from their own training seeds."""
    cfg = section(read_params(REPO / "params.yaml"), "check", CheckConfig)
    committed = json.loads((REPO / "baselines" / "cpu.json").read_text())
    update_baseline(tmp_path / "cpu.json", RESULTS / "metrics", cfg)
    derived = json.loads((tmp_path / "cpu.json").read_text())
    assert {k: v for k, v in committed.items() if k != "source"} == {k: v for k, v in derived.items() if k != "source"}
    n_runs = len(json.loads((RESULTS / "run.json").read_text())["runs"])  # the training seeds published
    assert n_runs >= 2 and committed["fingerprint"] is None  # never bit-exact against a merge
    assert {len(entry["seeds"]) for entry in committed["trained"].values()} == {n_runs}
