"""Training loop: resume after a kill ends where an uninterrupted run ends; non-finite losses stop cleanly;
checkpoints load only as weights (a planted pickle runs nothing); a trained model is rebuilt from the
config in its checkpoint; a schedule of 0 steps is refused."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from agebench.infra.common import run_main
from agebench.params.load import load_params
from agebench.params.reading import ParamsError
from agebench.pipeline import train as train_stage
from agebench.pipeline.generate import load_trained

CPU = torch.device("cpu")
TINY = {"ngf": 4, "ndf": 4, "n_blocks": 1, "sizes": [32], "epochs_per_size": [1], "batch_per_size": [2], "max_steps": 6}


@pytest.fixture(scope="module")
def prepared(synthetic_prepared) -> Path:
    return synthetic_prepared(40, (22, 55))


def params_file(tmp_path: Path, checkpoint_every: int = 2, **method: object) -> Path:
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
                "cyclegan_keras": {**TINY, **method},
            }
        )
    )
    return p


def final_state(out: Path) -> dict:
    return torch.load(out / "model.pt", map_location="cpu", weights_only=True)


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
    ckpt = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
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
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 4


def test_dvclive_logs_every_named_loss(prepared: Path, tmp_path: Path) -> None:
    params = load_params(params_file(tmp_path))
    summary = train_stage.train("cyclegan_keras", params, prepared, tmp_path / "run", tmp_path / "live", progress=False)
    logged = {p.stem for p in (tmp_path / "live" / "plots" / "metrics" / "train").glob("*.tsv")}
    assert {"loss_G", "loss_D_A", "loss_D_B", "loss_cycle_A"} <= logged, logged
    rows = (tmp_path / "live" / "plots" / "metrics" / "train" / "loss_G.tsv").read_text().splitlines()
    assert len(rows) == 1 + summary["steps"]  # header + one row per step (log_every 1)
    info = json.loads((tmp_path / "run" / "train.json").read_text())
    assert info["parameter_count"] > 0 and info["steps"] == 6 and "hardware" in info


# ---- safe loading, corrupt checkpoints, rebuilding from the checkpoint ---------------------------------


class Planted:
    """A pickle payload: unpickling it runs a shell command that creates `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def plant(path: Path, marker: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state": Planted(marker), "step": 1, "fingerprint": "x"}, path)


def test_planted_model_pt_is_refused_and_runs_nothing(prepared: Path, tmp_path: Path, capsys) -> None:
    marker = tmp_path / "ran"
    plant(tmp_path / "models" / "cyclegan_keras" / "model.pt", marker)
    params_path = params_file(tmp_path)
    with pytest.raises(train_stage.CheckpointError) as err:
        load_trained("cyclegan_keras", load_params(params_path), tmp_path / "models" / "cyclegan_keras", CPU)
    assert "refused" in str(err.value) and "\n" not in str(err.value)
    assert not marker.exists()
    # The generate stage: one line, exit status 2, nothing ran, no outputs.
    from stages import generate as generate_stage

    argv = ["--params", str(params_path), "--method", "cyclegan_keras", "--data", str(prepared),
            "--model", str(tmp_path / "models" / "cyclegan_keras"), "--out", str(tmp_path / "out")]  # fmt: skip
    with pytest.raises(SystemExit) as exit_:
        run_main(generate_stage.main, argv)
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err_lines) == 1 and "refused" in err_lines[0], err_lines
    assert not marker.exists() and not (tmp_path / "out").exists()
    # Control: the planted file really is a payload (what weights_only=False would have done).
    torch.load(tmp_path / "models" / "cyclegan_keras" / "model.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("kind", ["planted", "truncated"])
def test_bad_last_pt_is_moved_aside_and_training_starts_fresh(prepared: Path, tmp_path: Path, capsys, kind) -> None:
    marker, out = tmp_path / "ran", tmp_path / "run"
    if kind == "planted":
        plant(out / "last.pt", marker)
    else:
        out.mkdir()
        train_stage.save_checkpoint(out / "last.pt", {"state": {"x": torch.zeros(1000)}, "step": 2})
        data = (out / "last.pt").read_bytes()
        (out / "last.pt").write_bytes(data[: len(data) // 2])
    summary = train_stage.train("cyclegan_keras", load_params(params_file(tmp_path)), prepared, out, None, False)
    assert summary["steps"] == 6 and (out / "model.pt").is_file() and not marker.exists()
    notes = [line for line in capsys.readouterr().out.splitlines() if "last.pt" in line]
    assert len(notes) == 1 and "starting afresh" in notes[0] and "last.pt.bad" in notes[0], notes
    assert (out / "last.pt.bad").is_file() and not (out / "last.pt").exists()


def test_zero_step_schedule_is_refused_before_writing_a_model(prepared: Path, tmp_path: Path) -> None:
    # Under 40 faces per domain, batch 64: Keras-GAN's int(min(|A|, |B|) / batch) = 0 steps per epoch.
    params = load_params(params_file(tmp_path, batch_per_size=[64]))
    with pytest.raises(ParamsError, match="0 training steps"):
        train_stage.train("cyclegan_keras", params, prepared, tmp_path / "run", None, progress=False)
    assert not (tmp_path / "run" / "model.pt").exists()


def test_model_is_rebuilt_from_its_checkpoint_config(prepared: Path, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    params = load_params(params_file(small))
    train_stage.train("cyclegan_keras", params, prepared, tmp_path / "model", None, progress=False)
    # params.yaml now describes other networks (as after switching the profile back to full).
    big = load_params(params_file(tmp_path, ngf=8, n_blocks=2, sizes=[64]))
    method = load_trained("cyclegan_keras", big, tmp_path / "model", CPU)
    assert method.config.ngf == 4 and method.resolution == 32
    x = torch.zeros(1, 3, 32, 32)
    assert method.translate(x, "young", "old").shape == (1, 3, 32, 32)

    # A real mismatch: the stored config has a key today's code does not know -> one clear line.
    ckpt = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    train_stage.save_checkpoint(tmp_path / "renamed" / "model.pt", {**ckpt, "config": {**ckpt["config"], "gone": 1}})
    with pytest.raises(train_stage.CheckpointError, match="code changed") as err:
        load_trained("cyclegan_keras", big, tmp_path / "renamed", CPU)
    assert "\n" not in str(err.value)
    # Weights that no longer fit the networks the code builds -> one clear line, not a size-mismatch dump.
    nets = ckpt["state"]["nets"]
    broken = {**nets, "D_A": {k: v[:1] if v.dim() else v for k, v in nets["D_A"].items()}}
    train_stage.save_checkpoint(tmp_path / "shapes" / "model.pt", {**ckpt, "state": {**ckpt["state"], "nets": broken}})
    with pytest.raises(train_stage.CheckpointError, match="code changed") as err:
        load_trained("cyclegan_keras", big, tmp_path / "shapes", CPU)
    assert "\n" not in str(err.value)


def test_generate_goes_through_the_method_hooks() -> None:
    """generate asks the method for its round trip and its extra tables (no name checks)."""
    import numpy as np

    from agebench.pipeline.generate import extra_tables, translate_all
    from methods.identity import Identity, IdentityConfig

    class Hooked(Identity):
        extra_tables = {"extra": ("dark",)}  # noqa: RUF012 - a test double

        def round_trip(self, images, fake, source, target):
            return torch.full_like(images, 0.5)

        def extra_images(self, table, images, source):
            return {"dark": torch.full_like(images, -1.0)}

    m = Hooked(IdentityConfig(resolution=8), ("young", "old"), CPU)
    inputs = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    fake, cycle = translate_all(m, inputs, "young", "old", 2, 8, "t", progress=False)
    assert np.array_equal(fake, inputs.permute(0, 2, 3, 1).numpy()) and (cycle == 191).all()
    faces = inputs.permute(0, 2, 3, 1).numpy()
    tables = extra_tables(m, faces, np.array([2, 0]), "young", 1, 8)
    assert list(tables) == ["extra"] and tables["extra"]["dark"].shape == (2, 8, 8, 3)
    assert (tables["extra"]["dark"] == 0).all() and list(tables["extra"]["rows"]) == [2, 0]


def test_last_pt_that_no_longer_fits_the_code_stops_with_the_fix(prepared: Path, tmp_path: Path) -> None:
    params = load_params(params_file(tmp_path))
    method = train_stage.build_method("cyclegan_keras", params, CPU)
    fp = train_stage.fingerprint("cyclegan_keras", params, prepared)
    state = train_stage.checkpoint_dict(method, "cyclegan_keras", 2, fp, rng=train_stage.rng_state(torch.Generator()))
    state["state"]["nets"]["G_AB"] = {"renamed.weight": torch.zeros(1)}  # as if the method's code changed
    train_stage.save_checkpoint(tmp_path / "run" / "last.pt", state)
    with pytest.raises(train_stage.CheckpointError, match="run again") as err:
        train_stage.train("cyclegan_keras", params, prepared, tmp_path / "run", None, progress=False)
    assert "\n" not in str(err.value) and (tmp_path / "run" / "last.pt.bad").is_file()
    summary = train_stage.train("cyclegan_keras", params, prepared, tmp_path / "run", None, progress=False)
    assert summary["steps"] == 6 and (tmp_path / "run" / "model.pt").is_file()


@pytest.mark.parametrize("command", ["feature-maps", "age-photo"])
def test_planted_model_through_the_cli_is_refused(tmp_path: Path, capsys, request, command: str) -> None:
    """`--models DIR` of a stranger: one line, exit 2, the payload never runs."""
    from agebench.cli import main as cli_main

    marker, models = tmp_path / "ran", tmp_path / "models"
    plant(models / "cyclegan_agevec" / "model.pt", marker)
    face = tmp_path / "face.png"
    photo = Image.fromarray(np.full((400, 400, 3), 128, np.uint8))
    if command == "age-photo":  # it loads a model only once it has found a face: a real UTKFace chip
        with Image.open(request.getfixturevalue("utkface_sample")[0]) as chip:
            photo.paste(chip.convert("RGB"), (100, 100))
    photo.save(face)
    common = ["--method", "cyclegan_agevec", "--to", "60s", "--params", str(params_file(tmp_path))]
    out = ["--out", str(tmp_path / ("maps" if command == "feature-maps" else "aged.png"))]
    code = cli_main([command, str(face), *common, *out, "--models", str(models)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "refused" in err[0], err
    assert not marker.exists()
