"""The pre-flight training-speed check (agebench.infra.preflight_speed): an estimate over 2x the declared
core-minute budget stops the run (exit 2) naming the method, the measured rate and the fix; one under it
passes; no budget, no timing. Verdicts are tested with injected rates (no timing in their assertions);
one real run on a tiny method checks only the structure of what is measured."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agebench.infra import preflight as doctor
from agebench.infra import preflight_speed
from agebench.infra.preflight_speed import (
    OVER_BUDGET_FACTOR,
    UTKFACE_TRAIN_GROUP_SIZES,
    SpeedEstimate,
    StepRate,
    check_training_speed,
    measure_step_rate,
    synthetic_data,
    train_group_labels,
    verdict,
)
from agebench.infra.registry import METHODS
from agebench.params.load import load_params
from agebench.params.reading import ParamsError, build
from agebench.params.sections import GroupsConfig, TrainConfig
from tests.test_doctor import faces, unreachable, write_params

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rate(method: str, steps_per_s: float, bf16: bool = False, load: float = 0.0) -> StepRate:
    """A measured-looking rate: 4 steps of 16 images at `steps_per_s` per core."""
    return StepRate(method, 4, 64, 4 / steps_per_s, 4 / steps_per_s, 1, bf16, load)


def fake_measure(steps_per_s: float, bf16: bool = False):
    calls: list[str] = []

    def measure(name, method, data, threads):
        calls.append(name)
        return rate(name, steps_per_s, bf16)

    measure.calls = calls
    return measure


def test_estimate_and_the_2x_boundary() -> None:
    est = SpeedEstimate(rate("m", 0.5), total_steps=600, budget_core_minutes=10.0)
    assert est.core_minutes == pytest.approx(20.0)  # 600 steps / 0.5 steps/s = 1200 s
    assert OVER_BUDGET_FACTOR == 2.0
    assert not est.over_budget  # exactly 2x: allowed
    assert SpeedEstimate(rate("m", 0.5), 600, 9.9).over_budget
    assert verdict(SpeedEstimate(rate("m", 0.5), 600, 10.0), has_amx=False) is None


def test_verdict_names_method_rate_and_fix() -> None:
    what, fix = verdict(SpeedEstimate(rate("cyclegan_keras", 0.02), 1300, 15.0), has_amx=False)
    assert "cyclegan_keras" in what and "1,083 core-minutes" in what and "1,300 steps" in what
    assert "0.02 steps/s" in what and "0.32 images/s" in what and "fp32" in what  # 64 images / 200 s
    assert "max_steps" in fix and "amp_bf16" not in fix
    what, fix = verdict(SpeedEstimate(rate("cyclegan_keras", 0.02, bf16=True), 1300, 15.0), has_amx=False)
    assert "bf16 autocast" in what
    assert "set cyclegan_keras.amp_bf16: false" in fix and "without AMX, as this one has none" in fix
    _, fix = verdict(SpeedEstimate(rate("cyclegan_keras", 0.02, bf16=True), 1300, 15.0), has_amx=True)
    assert "set cyclegan_keras.amp_bf16: false" in fix and "as this one has none" not in fix
    busy = rate("cyclegan_keras", 0.02, load=50.0)
    assert "busy (load 50.0" in verdict(SpeedEstimate(busy, 1300, 15.0), has_amx=False)[1]


def speed_params(tmp_path: Path, budget: float) -> Path:
    """The smoke profile with a declared budget, cyclegan_keras only (tiny: ngf 16, 60 steps)."""
    return write_params(
        tmp_path / "repo" / "params.yaml",
        profile="smoke",
        methods=["identity", "cyclegan_keras"],
        **{
            "data.source": str(faces(tmp_path / "faces", 1200)),  # ~290 train faces per group
            "smoke.data.subsample": 1.0,
            "train.budget_core_minutes": budget,
        },
    )


@pytest.fixture()
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_doctor_stops_over_budget_and_passes_under_it(tmp_path: Path, monkeypatch, capsys, no_gpu) -> None:
    params = speed_params(tmp_path, budget=0.1)  # 6 core-seconds; the smoke keras trains 60 steps
    slow = fake_measure(0.01)  # 60 steps -> 100 core-minutes, 1000x the budget
    monkeypatch.setattr(preflight_speed, "measure_step_rate", slow)
    assert doctor.preflight(params, "test") == 2
    err = capsys.readouterr().err
    assert "cyclegan_keras: training would take about 100 core-minutes" in err
    assert "0.01 steps/s, 0.16 images/s per core" in err and "fix: lower cyclegan_keras's step count" in err
    assert slow.calls == ["cyclegan_keras"]  # identity trains nothing: not timed

    monkeypatch.setattr(preflight_speed, "measure_step_rate", fake_measure(100.0))  # 0.6 s: within budget
    report = doctor.run_checks(params, probe=unreachable)
    assert report.problems == [], report.text()
    assert any("training speed: cyclegan_keras ~0.0 core-minutes for 60 steps (budget 0.1" in n for n in report.notes)


def test_no_budget_no_timing(tmp_path: Path, monkeypatch, no_gpu) -> None:
    def never(*args):
        raise AssertionError("timed without a declared budget")

    monkeypatch.setattr(preflight_speed, "measure_step_rate", never)
    report = doctor.run_checks(speed_params(tmp_path, budget=0), probe=unreachable)
    assert report.problems == [], report.text()
    assert any("no train.budget_core_minutes declared" in n for n in report.notes)


def test_the_check_counts_the_real_schedule(tmp_path: Path, no_gpu) -> None:
    """The estimate multiplies by the step count the method's schedule gives on the training faces'
    group sizes (from the source folder's names), not on the synthetic timing data's size."""
    params = load_params(speed_params(tmp_path, budget=5.0))
    found = check_training_speed(params, tmp_path / "faces", measure=fake_measure(1.0), has_amx=False)
    (est,) = found.estimates
    assert est.total_steps == 60 and est.core_minutes == pytest.approx(1.0)  # max_steps caps the smoke keras
    assert found.problems == ()


def test_group_labels_from_names_match_the_stored_table(utkface_dir: Path) -> None:
    groups = GroupsConfig()
    for scheme, sizes in UTKFACE_TRAIN_GROUP_SIZES.items():
        from_names = train_group_labels(groups, scheme, utkface_dir, 1.0)
        from_table = train_group_labels(groups, scheme, None, 1.0)
        names = tuple(groups.schemes()[scheme])
        counts = {g: int((from_names == i).sum()) for i, g in enumerate(names)}
        assert counts == sizes
        assert sorted(from_table.tolist()) == sorted(x for x in from_names.tolist() if x >= 0)
        # The validation split is never trained on: left out by its hash, and by its share from the table.
        held_names = train_group_labels(groups, scheme, utkface_dir, 1.0, validation=0.1)
        held_table = train_group_labels(groups, scheme, None, 1.0, validation=0.1)
        for i, g in enumerate(names):
            kept = int((held_names == i).sum())
            assert kept < sizes[g] and abs(kept - 0.9 * sizes[g]) < 0.03 * sizes[g]
            assert int((held_table == i).sum()) == round(0.9 * sizes[g])


def test_the_budget_is_typed_and_not_negative() -> None:
    assert build(TrainConfig, {"budget_core_minutes": 15}, "t").budget_core_minutes == 15.0
    with pytest.raises(ParamsError, match=r"t\.budget_core_minutes: must be >= 0"):
        build(TrainConfig, {"budget_core_minutes": -1}, "t")
    with pytest.raises(ParamsError, match="expected a number"):
        build(TrainConfig, {"budget_core_minutes": "15"}, "t")


def test_changed_groups_without_data_are_not_guessed() -> None:
    groups = build(GroupsConfig, {"pair": {"young": [18, 29], "old": [50, 59]}}, "test")
    with pytest.raises(LookupError, match=r"groups\.pair differs"):
        train_group_labels(groups, "pair", None, 1.0)


def tiny_keras(**overrides):
    cls = METHODS.get("cyclegan_keras")
    cfg = {"ngf": 8, "n_blocks": 1, "ndf": 8, "sizes": [32], "epochs_per_size": [1], "batch_per_size": [2]}
    config = build(cls.config_cls, {**cfg, **overrides}, "test")
    torch.manual_seed(0)
    method = cls(config, ("young", "old"), torch.device("cpu"))
    labels = torch.arange(40) % 2
    data = synthetic_data({"pair": labels}, {"pair": ("young", "old")}, method.train_resolutions())
    return method, data


@pytest.mark.parametrize("amp_bf16", [False, True])
def test_a_real_measurement_has_the_right_structure(amp_bf16: bool) -> None:
    """Real timing, structure only: positive rates, the batches' images counted, the precision observed."""
    method, data = tiny_keras(amp_bf16=amp_bf16)
    assert method.num_steps(data) == 10  # 20 faces per group / batch 2: the synthetic data keeps the schedule
    before = torch.get_rng_state()
    r = measure_step_rate("cyclegan_keras", method, data, threads=1, timed_steps=2)
    assert torch.equal(torch.get_rng_state(), before)
    assert r.method == "cyclegan_keras" and r.steps == 2 and r.images == 2 * 4  # 2 faces x 2 domains per step
    assert r.cpu_seconds > 0 and r.wall_seconds > 0 and r.steps_per_core_second > 0 and r.images_per_second > 0
    assert r.threads == 1
    assert r.bf16 is amp_bf16
