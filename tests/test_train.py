"""Training loop: resume after a kill ends where an uninterrupted run ends; non-finite losses stop cleanly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from agebench import train as train_stage
from agebench.config import DataConfig, GroupsConfig, load_params
from agebench.prepare import prepare

TINY = {"ngf": 4, "ndf": 4, "n_blocks": 1, "sizes": [32], "epochs_per_size": [1], "batch_per_size": [2], "max_steps": 6}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for i in range(40):
        age = (22, 55)[i % 2]
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
            root / f"{age}_{i % 2}_0_2017{i:011d}.jpg.chip.jpg"
        )
    out = tmp_path_factory.mktemp("prepared") / "p"
    prepare(root, out, DataConfig(resolutions=(32,)), GroupsConfig(), workers=1, progress=False)
    (out / "data.json").write_text("{}")
    return out


def params_file(tmp_path: Path, checkpoint_every: int = 2) -> Path:
    p = tmp_path / "params.yaml"
    p.write_text(
        yaml.safe_dump(
            {
                "methods": ["cyclegan_keras"],
                "train": {
                    "seed": 3,
                    "device": "cpu",
                    "checkpoint_every": checkpoint_every,
                    "log_every": 1,
                    "sample_every": 0,
                    "threads": 1,
                },
                "cyclegan_keras": TINY,
            }
        )
    )
    return p


def final_state(out: Path) -> dict:
    return torch.load(out / "model.pt", map_location="cpu", weights_only=False)


def test_resume_after_kill_matches_uninterrupted_run(prepared: Path, tmp_path: Path, monkeypatch) -> None:
    params = load_params(params_file(tmp_path))
    ref = train_stage.train("cyclegan_keras", params, prepared, tmp_path / "ref", None, progress=False)
    assert ref["steps"] == 6

    # Kill the second run at step 5 (after the checkpoint of step 4).
    from methods.cyclegan_keras import CycleGANKeras

    original = CycleGANKeras.train_step

    def dying(self, batch, step):
        if step == 5:
            raise KeyboardInterrupt("killed")
        return original(self, batch, step)

    monkeypatch.setattr(CycleGANKeras, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        train_stage.train("cyclegan_keras", params, prepared, tmp_path / "run", None, progress=False)
    ckpt = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["step"] == 4 and ckpt["config"]["max_steps"] == 6 and not (tmp_path / "run" / "model.pt").exists()

    monkeypatch.setattr(CycleGANKeras, "train_step", original)
    resumed = train_stage.train("cyclegan_keras", params, prepared, tmp_path / "run", None, progress=False)
    assert resumed["steps"] == 6 and not (tmp_path / "run" / "last.pt").exists()
    a, b = final_state(tmp_path / "ref")["state"]["nets"], final_state(tmp_path / "run")["state"]["nets"]
    for net in ("G_AB", "G_BA", "D_A", "D_B"):
        for k, v in a[net].items():
            assert torch.equal(v, b[net][k]), f"{net}.{k} differs after resume"


def test_checkpoint_of_other_params_is_not_resumed(prepared: Path, tmp_path: Path, monkeypatch) -> None:
    params = load_params(params_file(tmp_path))
    from methods.cyclegan_keras import CycleGANKeras

    original = CycleGANKeras.train_step

    def dying(self, batch, step):
        if step == 3:
            raise KeyboardInterrupt
        return original(self, batch, step)

    monkeypatch.setattr(CycleGANKeras, "train_step", dying)
    with pytest.raises(KeyboardInterrupt):
        train_stage.train("cyclegan_keras", params, prepared, tmp_path / "run", None, progress=False)
    monkeypatch.setattr(CycleGANKeras, "train_step", original)
    changed = yaml.safe_load((tmp_path / "params.yaml").read_text())
    changed["cyclegan_keras"]["lr"] = 0.001
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(changed))
    seen = []
    monkeypatch.setattr(
        CycleGANKeras, "train_step", lambda self, batch, step: seen.append(step) or original(self, batch, step)
    )
    train_stage.train(
        "cyclegan_keras", load_params(tmp_path / "params.yaml"), prepared, tmp_path / "run", None, progress=False
    )
    assert seen == list(range(6))  # started afresh


def test_non_finite_loss_stops_with_clear_message_and_keeps_checkpoint(
    prepared: Path, tmp_path: Path, monkeypatch
) -> None:
    params = load_params(params_file(tmp_path))
    from methods.cyclegan_keras import CycleGANKeras

    original = CycleGANKeras.train_step

    def exploding(self, batch, step):
        losses = original(self, batch, step)
        return {**losses, "loss_G": float("nan")} if step == 4 else losses

    monkeypatch.setattr(CycleGANKeras, "train_step", exploding)
    with pytest.raises(train_stage.NonFiniteLossError) as err:
        train_stage.train("cyclegan_keras", params, prepared, tmp_path / "run", None, progress=False)
    msg = str(err.value)
    assert "step 4" in msg and "loss_G" in msg and "last.pt" in msg
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=False)["step"] == 4


def test_dvclive_logs_every_named_loss(prepared: Path, tmp_path: Path) -> None:
    params = load_params(params_file(tmp_path))
    summary = train_stage.train("cyclegan_keras", params, prepared, tmp_path / "run", tmp_path / "live", progress=False)
    logged = {p.stem for p in (tmp_path / "live" / "plots" / "metrics" / "train").glob("*.tsv")}
    assert {"loss_G", "loss_D_A", "loss_D_B", "loss_cycle_A"} <= logged, logged
    rows = (tmp_path / "live" / "plots" / "metrics" / "train" / "loss_G.tsv").read_text().splitlines()
    assert len(rows) == 1 + summary["steps"]  # header + one row per step (log_every 1)
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["parameter_count"] > 0 and info["steps"] == 6 and "hardware" in info
