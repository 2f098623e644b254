"""The CI gate's modes (agebench.gate.check): exact rows everywhere, bit-exact trained rows on the baseline's
machine, statistical trained rows elsewhere, and a report that says which mode each row ran in and why."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

import agebench
from agebench.cli import main
from agebench.gate import check
from agebench.infra.fingerprint import fingerprint_differences, machine_fingerprint
from agebench.pipeline import probes
from tests.conftest import REPO

AMD = {"vendor": "AuthenticAMD", "model": "AMD EPYC", "isa": ["avx2", "avx512_bf16", "avx512f"], "torch": "2.14.1",
       "onednn": "3.7.1", "threads": 2}  # fmt: skip
INTEL = {**AMD, "vendor": "GenuineIntel", "model": "Intel(R) Xeon(R) Processor", "isa": ["amx_bf16", "avx512f"]}


def task(joint: float, id_rate: float, fid: float, cycle: float, n: int = 50) -> dict:
    return {
        "n": n,
        "joint": joint,
        "id_rate": id_rate,
        "fid": fid,
        "kid_mean": fid / 1000,
        "cycle_l1": cycle,
        "ci95": {"joint": [joint - 0.01, joint + 0.01], "id_rate": [id_rate - 0.05, id_rate + 0.05]},
    }


def doc(name: str, kind: str, t: dict) -> dict:
    return {
        "method": name,
        "kind": kind,
        "protocol_version": agebench.PROTOCOL_VERSION,
        "profile": "smoke",
        "git_revision": "abc",
        "tasks": {"aging": copy.deepcopy(t), "rejuvenation": copy.deepcopy(t)},
    }


def write_run(folder: Path, method: dict, fingerprint: dict | None, identity_fid: float = 100.137227067) -> Path:
    metrics = folder / "reports" / "metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    docs = [doc("identity", "reference", task(0.0, 1.0, identity_fid, 0.0)), doc("cyclegan_keras", "method", method)]
    for d in docs:
        (metrics / f"{d['method']}.json").write_text(json.dumps(d))
    runtime = folder / "reports" / "runtime"
    runtime.mkdir(parents=True, exist_ok=True)
    (runtime / "cyclegan_keras.json").write_text(json.dumps({"fingerprint": fingerprint} if fingerprint else {}))
    return metrics


def write_probes(folder: Path, blank_fail: int = 50) -> Path:
    out = folder / "probes"
    out.mkdir(parents=True, exist_ok=True)
    t = task(0.0, 0.0, 300.0, 0.0)
    t["face_fail"] = blank_fail
    (out / "probe_blank.json").write_text(json.dumps(doc("probe:blank", "probe", t)))
    return out


SEEDS = [task(0.02, 0.10, 380.0, 0.22), task(0.00, 0.05, 350.0, 0.25), task(0.04, 0.15, 400.0, 0.20)]


@pytest.fixture
def baseline(tmp_path: Path, capsys) -> Path:
    """A format-3 baseline: seed 0 trained on the AMD machine, seeds 1 and 2 beside it, and one probe."""
    runs = [write_run(tmp_path / f"seed{i}", t, AMD) for i, t in enumerate(SEEDS)]
    code = main(
        ["baseline", "update", "--baseline", str(tmp_path / "base.json"), "--metrics", str(runs[0]),
         "--probes", str(write_probes(tmp_path / "seed0")), "--seed-runs", str(runs[1]), str(runs[2]),
         "--params", str(REPO / "params.yaml")]
    )  # fmt: skip
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    return tmp_path / "base.json"


def gate(tmp_path: Path, baseline: Path, metrics: Path, capsys, probes_dir: Path | None = None) -> tuple[int, str]:
    probes_dir = probes_dir or write_probes(tmp_path / "now")
    args = ["check", "--baseline", str(baseline), "--metrics", str(metrics), "--probes", str(probes_dir)]
    code = main([*args, "--params", str(REPO / "params.yaml")])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_baseline_records_fingerprint_seeds_and_sections(baseline: Path) -> None:
    doc_ = json.loads(baseline.read_text())
    assert doc_["format"] == check.BASELINE_FORMAT and doc_["fingerprint"] == AMD
    assert doc_["trained"]["cyclegan_keras/aging/fid"]["seeds"] == [380.0, 350.0, 400.0]
    assert doc_["exact"]["identity/tasks/aging/fid"] == 100.137227067
    assert doc_["exact"]["probe:blank/tasks/aging/face_fail"] == 50
    assert not any(k.startswith("cyclegan_keras") for k in doc_["exact"])  # trained rows are never exact rows


def test_another_machine_within_seed_spread_passes_in_statistical_mode(tmp_path: Path, baseline: Path, capsys) -> None:
    """The same code trained on an Intel machine: other numbers, inside what seeds do; the report says why."""
    now = write_run(tmp_path / "intel", task(0.03, 0.12, 365.0, 0.23), INTEL)
    code, out = gate(tmp_path, baseline, now, capsys)
    assert code == 0, out
    assert "| cyclegan_keras/aging/fid | statistical |" in out
    assert "| identity/tasks/aging/fid | exact |" in out
    assert "fingerprint differs" in out and "vendor: 'AuthenticAMD' != 'GenuineIntel'" in out


def test_same_machine_compares_trained_rows_bit_for_bit(tmp_path: Path, baseline: Path, capsys) -> None:
    same = write_run(tmp_path / "same", SEEDS[0], AMD)
    code, out = gate(tmp_path, baseline, same, capsys)
    assert code == 0 and "| cyclegan_keras/tasks/aging/fid | bit-exact |" in out, out
    # A change far inside the seed spread is still caught on the baseline's own machine.
    nudged = write_run(tmp_path / "nudged", {**SEEDS[0], "fid": 380.001}, AMD)
    code, out = gate(tmp_path, baseline, nudged, capsys)
    assert code == 1 and "| cyclegan_keras/tasks/aging/fid | bit-exact |" in out and "CHANGED" in out


def test_planted_scoring_change_fails_on_every_machine(tmp_path: Path, baseline: Path, capsys) -> None:
    """Scoring changed (identity's FID moved 1e-5 relative; the blank probe found a face): exact rows fail."""
    for fp in (AMD, INTEL):
        now = write_run(tmp_path / f"score{fp['vendor']}", SEEDS[0], fp, identity_fid=100.137227067 * (1 + 1e-5))
        code, out = gate(tmp_path, baseline, now, capsys)
        assert code == 1 and "| identity/tasks/aging/fid | exact |" in out and "CHANGED" in out, out
    ok = write_run(tmp_path / "ok", SEEDS[0], INTEL)
    code, out = gate(tmp_path, baseline, ok, capsys, write_probes(tmp_path / "p2", blank_fail=49))
    assert code == 1 and "| probe:blank/tasks/aging/face_fail | exact |" in out


@pytest.mark.parametrize(
    ("case", "broken"),
    [
        # A generator that returns its input blurred: FID and identity "improve" far beyond any seed.
        ("input blurred", task(0.0, 0.92, 140.0, 0.02)),
        # Diverged: non-faces, no identity, a round trip that loses everything.
        ("diverged", task(0.0, 0.0, 480.0, 0.55)),
    ],
)
def test_planted_method_breakage_fails_in_statistical_mode(
    tmp_path: Path, baseline: Path, capsys, case: str, broken: dict
) -> None:
    now = write_run(tmp_path / "broken", broken, INTEL)
    code, out = gate(tmp_path, baseline, now, capsys)
    assert code == 1, out
    failing = [
        line for line in out.splitlines() if "| statistical |" in line and ("REGRESSED" in line or "CHANGED" in line)
    ]
    assert any("cyclegan_keras/aging/" in line for line in failing), (case, out)


def test_without_seed_runs_trained_rows_fall_back_to_tolerance(tmp_path: Path, capsys) -> None:
    run0 = write_run(tmp_path / "s0", SEEDS[0], AMD)
    base = tmp_path / "one.json"
    assert main(["baseline", "update", "--baseline", str(base), "--metrics", str(run0),
                 "--params", str(REPO / "params.yaml")]) == 0  # fmt: skip
    capsys.readouterr()
    worse = write_run(tmp_path / "w", {**SEEDS[0], "fid": 390.0}, INTEL)
    code = main(["check", "--baseline", str(base), "--metrics", str(worse), "--params", str(REPO / "params.yaml")])
    out = capsys.readouterr().out
    assert code == 1 and "| cyclegan_keras/aging/fid | tolerance |" in out and "REGRESSED" in out


@pytest.mark.parametrize("fmt", [2, 3])
def test_a_gate_that_compares_nothing_exits_2(tmp_path: Path, capsys, fmt: int) -> None:
    run0 = write_run(tmp_path / "s0", SEEDS[0], AMD)
    empty = {"format": fmt, "protocol_version": agebench.PROTOCOL_VERSION, "profile": "smoke"}
    empty.update({"metrics": {}} if fmt == 2 else {"exact": {}, "trained": {}, "trained_exact": {}})
    (tmp_path / "empty.json").write_text(json.dumps(empty))
    code = main(["check", "--baseline", str(tmp_path / "empty.json"), "--metrics", str(run0),
                 "--params", str(REPO / "params.yaml")])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "compare nothing" in err, err


def test_fingerprint_fields_and_differences() -> None:
    intel = "vendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu avx2 avx512f amx_tile sse\n"
    fp = machine_fingerprint(threads=1, cpuinfo=intel)
    assert fp["vendor"] == "GenuineIntel" and fp["isa"] == ["amx_tile", "avx2", "avx512f"] and fp["threads"] == 1
    assert fp["torch"] and fp["onednn"]  # torch's own build says which oneDNN it carries
    assert fingerprint_differences(fp, dict(fp)) == []
    assert fingerprint_differences(fp, {**fp, "threads": 2}) == ["threads: 1 != 2"]
    assert fingerprint_differences(None, fp) == ["fingerprint: not recorded"]


def test_probe_transforms() -> None:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    assert (probes.blank(x) == probes.BLANK_VALUE).all() and probes.blank(x).shape == x.shape
    assert (probes.other_person(x)[0] == x[1]).all() and (probes.other_person(x)[2] == x[0]).all()
    b = probes.brighten(x)
    assert b.dtype == np.uint8 and (b >= x).all() and (b[x < 200] == x[x < 200] + probes.BRIGHTEN_BY).all()
    blurred = probes.blur(x)
    assert blurred.shape == x.shape and blurred.std() < x.std() / 2  # noise is smoothed away
    for name in probes.PROBES:
        assert check.EXACT_KINDS and probes.row_name(name).startswith("probe:")


def test_exact_rows_allow_float32_rounding_only(tmp_path: Path, baseline: Path, capsys) -> None:
    """A summation order that moves the last float32 digits passes; 1e-5 relative (a scoring change) does not."""
    rounding = write_run(tmp_path / "r", SEEDS[0], INTEL, identity_fid=100.137227067 * (1 + check.EXACT_RTOL / 10))
    code, out = gate(tmp_path, baseline, rounding, capsys)
    assert code == 0, out
    assert check.EXACT_RTOL <= 1e-6  # looser would let a real change of the scorer through


def test_committed_smoke_baseline_admits_both_cpu_kinds_met() -> None:
    """Smoke runs of the same methods made earlier on an Intel Xeon and on an AMD EPYC, held against
    baselines/smoke.json (seeds trained on an AMD EPYC): the Intel run differs bit for bit yet lies inside the
    seeds' statistical band; the AMD run trained to the same bits (FID and KID moved only by the float32
    rounding of the faster Inception runtime, inside the exact tolerance)."""
    from agebench.params.reading import read_params, section
    from agebench.params.sections import CheckConfig

    cfg = section(read_params(REPO / "params.yaml"), "check", CheckConfig)
    base = json.loads((REPO / "baselines" / "smoke.json").read_text())
    others = json.loads((REPO / "tests" / "data" / "smoke_other_machines.json").read_text())["machines"]
    assert base["format"] == check.BASELINE_FORMAT and len(base["seed_runs"]) >= 2
    intel = others["Intel Xeon"]
    rows = check.compare_statistical({k: base["trained"][k] for k in intel}, intel, cfg)
    assert len(rows) == len(intel) > 30
    assert [r.key for r in rows if r.verdict != "ok"] == []
    assert sum(not check._same(base["trained"][k]["value"], v["value"]) for k, v in intel.items()) > 10
    amd = others["AMD EPYC"]
    assert [k for k, v in amd.items() if not check._same(base["trained"][k]["value"], v["value"])] == []


@pytest.mark.parametrize("broken_as", ["probe:blur", "identity", "probe:blank"])
def test_committed_smoke_baseline_fails_a_method_that_returns_its_input_blurred(broken_as: str) -> None:
    """Real numbers from baselines/smoke.json: each trained method replaced by a generator that returns its input
    blurred (the blur probe's scores), returns it unchanged (identity's) or returns a blank (the blank probe's)
    fails the statistical gate on another machine."""
    from agebench.params.reading import read_params, section
    from agebench.params.sections import CheckConfig

    cfg = section(read_params(REPO / "params.yaml"), "check", CheckConfig)
    base = json.loads((REPO / "baselines" / "smoke.json").read_text())
    methods = sorted({k.split("/")[0] for k in base["trained"]})
    assert len(methods) == 4
    checked = []
    for method in methods:
        entries = {k: v for k, v in base["trained"].items() if k.startswith(f"{method}/")}
        now = {}
        for key in entries:
            _, task, metric = key.split("/")
            value = base["exact"].get(f"{broken_as}/tasks/{task}/{metric}")
            if value is not None:
                now[key] = {"value": value, "half_width": None}
        rows = check.compare_statistical(entries, now, cfg)
        failing = [r.key for r in rows if r.verdict in ("REGRESSED", "CHANGED")]
        if broken_as == "probe:blank" and not finds_faces(base, method):
            # A smoke method that already finds no face in some seed's outputs cannot be told from a blank one.
            continue
        checked.append(method)
        assert failing, (method, broken_as)
    assert len(checked) >= (1 if broken_as == "probe:blank" else 4)


def finds_faces(base: dict, method: str) -> bool:
    """Every training seed's outputs hold a face in at least 90% of the images, on both tasks."""
    for task in ("aging", "rejuvenation"):
        n = base["exact"][f"identity/tasks/{task}/n"]
        if max(base["trained"][f"{method}/{task}/face_fail"]["seeds"]) > 0.1 * n:
            return False
    return True


def write_merged_run(folder: Path) -> Path:
    """A seed-merged run (as `agebench merge-seeds` writes it): the trained row's means, plus each seed's own
    record under `seeds`; the untrained identity row carries one untrained seed."""
    metrics = write_run(folder, task(0.02, 0.10, 376.666666667, 0.223333333), AMD)
    keras = json.loads((metrics / "cyclegan_keras.json").read_text())
    keras["seeds"] = [{"seed": i, "tasks": {"aging": t, "rejuvenation": t}} for i, t in enumerate(SEEDS)]
    (metrics / "cyclegan_keras.json").write_text(json.dumps(keras))
    return with_untrained_seed(metrics)


def with_untrained_seed(metrics: Path) -> Path:
    """The identity row as every protocol-3 run writes it: one untrained seed record (seed null)."""
    ident = json.loads((metrics / "identity.json").read_text())
    ident["seeds"] = [{"seed": None, "tasks": ident["tasks"]}]
    (metrics / "identity.json").write_text(json.dumps(ident))
    return metrics


def test_a_seed_merged_baseline_judges_one_seed_against_the_seeds_it_merged(tmp_path: Path, capsys) -> None:
    """The CPU track's baseline is made from published, seed-merged metrics: its spread is their seeds, and
    it is never bit-exact (a single-seed rerun on the same machine is not the seeds' mean, bit for bit)."""
    merged = write_merged_run(tmp_path / "published")
    base = tmp_path / "cpu.json"
    args = ["--params", str(REPO / "params.yaml")]
    assert main(["baseline", "update", "--baseline", str(base), "--metrics", str(merged), *args]) == 0
    capsys.readouterr()
    doc_ = json.loads(base.read_text())
    assert doc_["fingerprint"] is None and doc_["trained_exact"] == {}
    assert doc_["trained"]["cyclegan_keras/aging/fid"]["seeds"] == [380.0, 350.0, 400.0]
    assert doc_["exact"]["identity/tasks/aging/fid"] == 100.137227067
    # Seed 1 retrained on the very machine of the baseline's runs: statistical, inside the seeds' range.
    code, out = gate(tmp_path, base, with_untrained_seed(write_run(tmp_path / "again", SEEDS[1], AMD)), capsys)
    assert code == 0 and "merges training seeds" in out and "bit-exact" not in out.split("\n\n")[1], out
    # A diverged method still fails.
    bad = with_untrained_seed(write_run(tmp_path / "bad", task(0.0, 0.0, 480.0, 0.55), AMD))
    code, out = gate(tmp_path, base, bad, capsys)
    assert code == 1 and "| cyclegan_keras/aging/fid | statistical |" in out and "REGRESSED" in out, out
    # Seeds given twice (merged and as --seed-runs) are refused, nothing written.
    other = write_run(tmp_path / "s1", SEEDS[1], AMD)
    code = main(["baseline", "update", "--baseline", str(tmp_path / "x.json"), "--metrics", str(merged),
                 "--seed-runs", str(other), *args])  # fmt: skip
    assert code == 2 and "seed-merged" in capsys.readouterr().err and not (tmp_path / "x.json").exists()
