"""Protocol 3's leaderboard from metrics files alone (PROTOCOL.md s.6 v3): rank groups against the leader,
the pairwise matrix, "not above no change", the seed spread, the real row, generated sentences, and
`agebench leaderboard` giving the report stage's leaderboard.md byte for byte without torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agebench.report import leaderboard_frame, leaderboard_markdown, render_leaderboard
from agebench.report.ranking import rank_task
from metrics import stats
from tests.conftest import REPO
from tests.test_protocol3 import run_eval, tiny_run  # noqa: F401 (tiny_run: a pytest fixture used by name)

TASKS = ("aging", "rejuvenation")
N = 400


def per_face(joint: np.ndarray, face_found: np.ndarray | None = None) -> dict:
    """A face-free per-face record (PROTOCOL.md s.4 v3) whose `joint` is the given array."""
    n = len(joint)
    found = np.ones(n, int) if face_found is None else np.asarray(face_found, int)
    return {
        "file": [f"{i:04d}_face.jpg" for i in range(n)],
        "face_found": found.tolist(),
        "age_in": [25.0] * n,
        "age_out": [None if not f else 45.0 + 10 * j for f, j in zip(found, joint)],
        "id_sim": [None if not f else 0.5 for f in found],
        "verified": (joint > 0).astype(int).tolist(),
        "age_score": joint.tolist(),
        "realistic": [1] * n,
        "joint": joint.tolist(),
    }


def task_summary(seeds: list[np.ndarray], fid: float) -> dict:
    means = [float(s.mean()) for s in seeds]
    j = float(np.mean(means))
    sd = float(np.std(means, ddof=1)) if len(means) > 1 else 0.0
    metrics = {"joint": j, "age_score": j, "gap_closure": 0.5, "id_rate": 0.8, "id_sim": 0.5, "realism": 0.7,
               "joint_decade": j / 2, "age_acc": 0.3, "cycle_l1": 0.1, "id_rate_dlib": 0.7,
               "joint_dlib": j / 2}  # fmt: skip
    return {
        "n": len(seeds[0]),
        "scheme": "pair",
        "source": "young",
        "target": "old",
        **metrics,
        "fid": fid,
        "kid_mean": 0.01,
        "kid_std": 0.001,
        "face_fail": 0,
        "ci95": {k: [v - 0.01, v + 0.01] for k, v in metrics.items()},
        "seed_spread": {"joint": {"min": min(means), "max": max(means), "sd": sd}},
        "per_face": per_face(np.mean(seeds, axis=0)),
    }


def v3_doc(method: str, seeds: list[np.ndarray], kind: str = "method", fid: float = 100.0) -> dict:
    """A protocol-3 metrics document with the same per-seed joint arrays on both tasks."""
    return {
        "method": method,
        "kind": kind,
        "profile": "smoke",
        "protocol_version": 3,
        "git_revision": "abc123",
        "resolution": 128,
        "train": {"parameter_count": 1000},
        "params": {"evaluate": {"bootstrap_resamples": 1000, "bootstrap_seed": 0}},
        "tasks": {t: task_summary(seeds, fid) for t in TASKS},
        "seeds": [
            {
                "seed": k if kind == "method" else None,
                "tasks": {t: {"joint": float(s.mean()), "per_face": per_face(s)} for t in TASKS},
            }
            for k, s in enumerate(seeds)
        ],
    }


def real_v3() -> dict:
    tasks = {}
    for t, gap in (("aging", 20.4), ("rejuvenation", -20.4)):
        tasks[t] = {
            "n": 217, "n_floor": N, "n_rest": 1595, "gap": gap, "age_score_real": 0.61, "realism_real": 0.765,
            "age_acc_real": 0.295, "fid": 18.9, "kid_mean": 0.0001, "kid_std": 0.0001,
            "ci95": {"gap": [gap - 1.5, gap + 1.5], "age_score_real": [0.58, 0.64], "realism_real": [0.7, 0.82]},
        }  # fmt: skip
    return {"method": "real", "kind": "reference", "profile": "smoke", "protocol_version": 3, "tasks": tasks}


def chain() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A > C with A = B and B = C by neighbours: B loses 23 of A's successes and gains 13, C does it again."""
    a = np.zeros(N)
    a[:200] = 1
    b = a.copy()
    b[0:23], b[200:213] = 0, 1
    c = b.copy()
    c[23:46], c[213:226] = 0, 1
    return a, b, c


def ranks(df, task: str = "aging") -> dict[str, str]:
    return dict(zip(df["method"], df[f"{task}.rank"]))


def test_rank_groups_never_chain() -> None:
    a, b, c = chain()
    ident = np.zeros(N)
    docs = [v3_doc("c", [c]), v3_doc("a", [a]), v3_doc("b", [b]), v3_doc("identity", [ident], "reference")]
    # The planted data: neighbours do not differ, the ends do (v2's face bootstrap, the same draws at S = 1).
    idx = stats.bootstrap_indices(N, 1000, 0)
    ab, bc, ac = (stats.paired_difference(x, y, idx)["ci95"] for x, y in ((a, b), (b, c), (a, c)))
    assert ab[0] < 0 < ab[1] and bc[0] < 0 < bc[1] and ac[0] > 0
    # Protocol 2's rule (each row against the row above) chains them into one rank; that is the bug.
    assert stats.shared_ranks([None, tuple(ab), tuple(bc)]) == ["=1", "=1", "=1"]
    df = leaderboard_frame(docs)
    assert ranks(df) == {"a": "=1", "b": "=1", "c": "3", "identity": None}
    assert dict(zip(df["method"], df["aging.leader"]))["c"] == "c"
    # The interval that decided c's group is (leader a - c), the one that excludes 0.
    c_row = df[df["method"] == "c"].iloc[0]
    assert c_row["aging.diff_leader_lo"] > 0 and c_row["aging.diff_leader"] == pytest.approx(0.05)
    md = leaderboard_markdown(df, docs)
    assert "| =1 | a |" in md and "| =1 | b |" in md and "| 3 | c |" in md
    assert "Rank groups on aging: 1: a, b; 3: c." in md
    assert "a is above c on aging: +0.050 [" in md and "a and b do not differ on aging: +0.025 [" in md


def test_two_leaders_and_new_groups_follow_their_leader() -> None:
    """After a new group starts, later rows are compared with the new leader, not the first one."""
    a, b, c = chain()
    d = c.copy()
    d[46:69], d[226:239] = 0, 1  # d = c by neighbours; d vs leader c decides
    r = rank_task([v3_doc(m, [x]) for m, x in zip("abcd", (a, b, c, d))], "aging", 1000, 0)
    assert r.order == ("a", "b", "c", "d") and r.ranks == (1, 1, 3, 3)
    assert r.labels == ["=1", "=1", "=3", "=3"]


def test_pairwise_matrix_is_antisymmetric_and_in_the_markdown() -> None:
    a, b, c = chain()
    docs = [v3_doc("a", [a]), v3_doc("b", [b]), v3_doc("c", [c]), v3_doc("identity", [np.zeros(N)], "reference")]
    df = leaderboard_frame(docs)
    r = df.attrs["rankings"]["aging"]
    names = r.matrix_rows
    assert names == ["a", "b", "c", "identity"]
    assert len(r.pairs) == len(names) * (len(names) - 1)
    for x in names:
        assert (x, x) not in r.pairs
        for y in names:
            if x != y:
                d, e = r.pairs[(x, y)], r.pairs[(y, x)]
                assert d.value == -e.value and d.ci95 == (-e.ci95[1], -e.ci95[0])
                assert d.ci95[0] <= d.value <= d.ci95[1]
    md = leaderboard_markdown(df, docs)
    aging = md.split("## rejuvenation")[0]
    assert "| joint(row) − joint(column) | a | b | c | identity |" in aging
    row_a = next(line for line in aging.splitlines() if line.startswith("| a |") and "joint(" not in line)
    cells = [x.strip() for x in row_a.strip("|").split("|")]
    ac = r.pairs[("a", "c")]
    assert cells[3] == f"{ac.value:+.3f} [{ac.ci95[0]:+.3f}, {ac.ci95[1]:+.3f}]*"  # excludes 0: starred
    assert "*" not in cells[2]  # a vs b contains 0


def test_row_equal_to_identity_is_marked_not_above_no_change() -> None:
    rng = np.random.default_rng(0)
    base = (rng.random(N) < 0.1).astype(float)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:60]] = 1  # 60 more successes than doing nothing
    docs = [v3_doc("same", [base.copy()]), v3_doc("better", [better]), v3_doc("identity", [base], "reference")]
    df = leaderboard_frame(docs)
    mark = dict(zip(df["method"], df["aging.not_above_no_change"]))
    assert mark["same"] is True and mark["better"] is False
    md = leaderboard_markdown(df, docs)
    same_line = next(line for line in md.splitlines() if line.startswith("| 2 | same |"))
    assert "+0.000 [+0.000, +0.000] not above no change" in same_line
    better_line = next(line for line in md.splitlines() if line.startswith("| 1 | better |"))
    assert "not above no change" not in better_line
    assert "same is not above no change (identity) on aging: +0.000 [+0.000, +0.000]." in md
    assert "better is above no change (identity) on aging: +0.150 [" in md


def test_single_seed_interval_is_the_paired_face_bootstrap() -> None:
    a, b, _ = chain()
    r = rank_task([v3_doc("a", [a]), v3_doc("b", [b])], "aging", 1000, 0)
    v2 = stats.paired_difference(a, b, stats.bootstrap_indices(N, 1000, 0))
    assert r.pairs[("a", "b")].ci95 == pytest.approx(tuple(v2["ci95"]), abs=1e-12)
    md = leaderboard_markdown(leaderboard_frame([v3_doc("a", [a]), v3_doc("b", [b])]))
    assert " seeds " not in md.split("## aging")[1].split("## rejuvenation")[0].replace("| seeds |", "")


def test_three_seeds_widen_the_interval_and_show_the_spread() -> None:
    a, b, _ = chain()
    # Three seeds of "a" that differ a lot from each other; the one-seed comparison has their per-face mean.
    lo_seed, hi_seed = a.copy(), a.copy()
    lo_seed[:40] = 0
    hi_seed[200:240] = 1
    seeds3 = [lo_seed, a, hi_seed]
    one = rank_task([v3_doc("a", [np.mean(seeds3, axis=0)]), v3_doc("b", [b])], "aging", 1000, 0)
    three = rank_task([v3_doc("a", seeds3), v3_doc("b", [b])], "aging", 1000, 0)
    assert three.seeds["a"] == 3 and one.seeds["a"] == 1
    assert three.values["a"] == pytest.approx(one.values["a"])
    w1, w3 = (np.diff(r.pairs[("a", "b")].ci95)[0] for r in (one, three))
    assert w3 > w1  # seed-to-seed spread is part of the uncertainty
    docs = [v3_doc("a", seeds3), v3_doc("b", [b])]
    md = leaderboard_markdown(leaderboard_frame(docs), docs)
    a_line = next(line for line in md.splitlines() if "| a | 3 |" in line)
    lo, hi = (float(s.mean()) for s in (lo_seed, hi_seed))
    assert f"seeds {lo:.3f}–{hi:.3f}" in a_line
    b_line = next(line for line in md.splitlines() if "| b | 1 |" in line)
    assert "seeds " not in b_line.replace("| b | 1 |", "")


def test_real_row_shows_gap_ceilings_and_both_sample_sizes() -> None:
    a, b, _ = chain()
    docs = [v3_doc("a", [a]), v3_doc("b", [b]), real_v3()]
    md = leaderboard_markdown(leaderboard_frame(docs), docs)
    header = next(line for line in md.splitlines() if line.startswith("| task | gap (years) |"))
    assert "n (age ceiling)" in header and "n_floor (FID floor)" in header
    aging = next(line for line in md.splitlines() if line.startswith("| aging | 20.40 "))
    cells = [x.strip() for x in aging.strip("|").split("|")]
    assert cells[1] == "20.40 [18.90, 21.90]" and cells[2] == "0.610 [0.580, 0.640]"
    assert cells[3] == "0.765 [0.700, 0.820]" and cells[-2:] == ["217", "400"]
    assert "| rejuvenation | -20.40 [-21.90, -18.90] |" in md


def test_summary_joint_must_be_the_mean_of_the_per_face_records() -> None:
    from agebench.report import ReportInputError

    a, b, _ = chain()
    doc = v3_doc("a", [a])
    doc["tasks"]["aging"]["joint"] += 0.01  # edited by hand
    with pytest.raises(ReportInputError, match="not the mean of its per-face records"):
        leaderboard_frame([doc, v3_doc("b", [b])])


def write_docs(folder: Path, docs: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for d in docs:
        (folder / f"{d['method']}.json").write_text(json.dumps(d), encoding="utf-8")


def test_leaderboard_command_rebuilds_without_torch_and_ignores_file_order(tmp_path: Path) -> None:
    a, b, c = chain()
    docs = [v3_doc("a", [a, b, a]), v3_doc("b", [b]), v3_doc("c", [c]), v3_doc("identity", [c], "reference"),
            real_v3()]  # fmt: skip
    write_docs(tmp_path / "m1", docs)
    other = tmp_path / "m2"
    other.mkdir()
    for i, d in enumerate(reversed(docs)):
        (other / f"{i}_{d['method']}.json").write_text(json.dumps(d), encoding="utf-8")
    out = tmp_path / "lb.md"
    code = (
        "import sys; from agebench.cli import main; "
        f"rc = main(['leaderboard', {str(tmp_path / 'm1')!r}, '--out', {str(out)!r}]); "
        "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    md, _ = render_leaderboard(tmp_path / "m1")
    assert out.read_text(encoding="utf-8") == md == render_leaderboard(other)[0]
    assert md.startswith("# agebench leaderboard\n\nProfile **smoke** · protocol 3.")


def test_leaderboard_command_refuses_mixed_protocols_in_one_line(tmp_path: Path, capsys) -> None:
    from agebench.cli import main

    a, b, _ = chain()
    old = v3_doc("b", [b])
    old["protocol_version"] = 2
    write_docs(tmp_path / "m", [v3_doc("a", [a]), old])
    assert main(["leaderboard", str(tmp_path / "m"), "--out", str(tmp_path / "lb.md")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "protocol version" in err and not (tmp_path / "lb.md").exists()


def test_committed_results_rebuild_byte_for_byte(tmp_path: Path) -> None:
    """`agebench leaderboard` on the published track gives its leaderboard.md byte for byte (each protocol renders
    as it was published: results/cpu is protocol 2 until it is republished)."""
    from agebench.cli import main

    results = REPO / "results" / "cpu"
    out = tmp_path / "lb.md"
    assert (
        main(["leaderboard", str(results / "metrics"), "--runtime", str(results / "runtime"), "--out", str(out)]) == 0
    )
    assert out.read_bytes() == (results / "leaderboard.md").read_bytes()


def test_ranking_reads_merge_seeds_output_and_agrees_with_its_intervals() -> None:
    """Files merged over seeds by `agebench merge-seeds` rank as they are; the ranking's replicates are the ones
    behind the merged file's own `joint` interval (same seed stream per method, same face draws)."""
    from agebench.pipeline.seeds import merge_seed_docs

    a, b, c = chain()
    runs = []
    for k, x in enumerate((a, b, c)):
        d = v3_doc("m", [x])
        d["seeds"][0]["seed"] = k
        runs.append(d)
    merged = merge_seed_docs(runs)
    assert [s["seed"] for s in merged["seeds"]] == [0, 1, 2]
    r = rank_task([merged, v3_doc("other", [c])], "aging", 1000, 0)
    assert r.seeds["m"] == 3 and r.values["m"] == pytest.approx(merged["tasks"]["aging"]["joint"], abs=1e-12)
    boot = stats.two_level_bootstrap(np.stack([a, b, c]), 1000, 0, stats.seed_stream("m"))
    assert tuple(merged["tasks"]["aging"]["ci95"]["joint"]) == pytest.approx(boot.ci95)
    md = leaderboard_markdown(leaderboard_frame([merged, v3_doc("other", [c])]))
    lo, hi = (
        merged["tasks"]["aging"]["seed_spread"]["joint"]["min"],
        merged["tasks"]["aging"]["seed_spread"]["joint"]["max"],
    )
    assert f"seeds {lo:.3f}–{hi:.3f}" in md


def test_real_row_must_be_what_its_per_face_record_gives() -> None:
    from agebench.report import ReportInputError

    rng = np.random.default_rng(0)
    src, tgt = rng.normal(28, 6, 300), rng.normal(48, 8, 120)
    real = real_v3()
    for t in real["tasks"].values():
        gap = float(tgt.mean() - src.mean())
        t["per_face_real"] = {"age_source": src.tolist(), "age_target": tgt.tolist(), "realistic_target": [1, 0] * 60}
        t.update(gap=gap, age_score_real=stats.all_pairs_age_score(src, tgt, gap), realism_real=0.5)
    a, b, _ = chain()
    leaderboard_frame([v3_doc("a", [a]), v3_doc("b", [b]), real])  # consistent: accepted
    real["tasks"]["rejuvenation"]["age_score_real"] += 0.01
    with pytest.raises(ReportInputError, match="rejuvenation age_score_real"):
        leaderboard_frame([v3_doc("a", [a]), v3_doc("b", [b]), real])


def test_leaderboard_of_files_the_scoring_code_wrote(tiny_run, tmp_path: Path) -> None:  # noqa: F811
    """End to end on metrics files written by `evaluate_method` and `real_floor` themselves (stand-in networks):
    the leaderboard accepts them (joint = mean of the per-face records, the real row = its per_face_real),
    ranks from their records, and `agebench leaderboard` gives the same bytes."""
    from agebench.cli import main
    from agebench.pipeline.evaluate import evaluate_method
    from agebench.pipeline.reference import real_floor
    from agebench.pipeline.tasks import read_outputs
    from tests.test_suite import make_scorer

    params = tiny_run["params"]

    def as_read(doc: dict) -> dict:
        return json.loads(json.dumps(doc, default=float))

    docs = [
        run_eval(tiny_run, tiny_run["outputs"], 0),
        as_read(evaluate_method("cyclegan_perceptual", params, tiny_run["prepared"],
                                read_outputs(tiny_run["root"] / "outputs_b"), make_scorer())),
        as_read(evaluate_method("identity", params, tiny_run["prepared"], read_outputs(tiny_run["outputs"]),
                                make_scorer())),
    ]  # fmt: skip
    real_tasks = real_floor(make_scorer(), params, tiny_run["index"], tiny_run["faces"])
    first = docs[0]
    docs.append(as_read({"method": "real", "kind": "reference", "profile": first["profile"],
                         "protocol_version": first["protocol_version"], "tasks": real_tasks}))  # fmt: skip
    metrics = tmp_path / "metrics"
    write_docs(metrics, docs)
    md, _ = render_leaderboard(metrics)
    out = tmp_path / "lb.md"
    assert main(["leaderboard", str(metrics), "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == md
    df = leaderboard_frame(docs)
    for task, _ in params.tasks.items():
        r = df.attrs["rankings"][task]
        assert set(r.order) == {"cyclegan_keras", "cyclegan_perceptual"} and r.unpaired == ()
        for d in docs[:3]:
            assert r.values[d["method"]] == pytest.approx(d["tasks"][task]["joint"], abs=1e-12)
        assert set(r.matrix_rows) == {"cyclegan_keras", "cyclegan_perceptual", "identity"}
        real_line = next(line for line in md.splitlines() if line.startswith(f"| {task} | "))
        cells = [x.strip() for x in real_line.strip("|").split("|")]
        assert cells[-2:] == [str(real_tasks[task]["n"]), str(real_tasks[task]["n_floor"])]
