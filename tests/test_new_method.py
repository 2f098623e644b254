"""`agebench new-method NAME`: one command adds a registered, trainable, configurable method."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agebench.cli import main
from tests.test_pipeline import copy_repo


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repo(tmp_path_factory.mktemp("copy"))


def test_new_method_is_registered_configured_and_trains(repo: Path, capsys) -> None:
    assert main(["new-method", "my_method", "--repo", str(repo)]) == 0
    assert "dvc repro" in capsys.readouterr().out
    params = (repo / "params.yaml").read_text()
    assert "  - my_method\n" in params and "\nmy_method:\n" in params and "smoke:\n  my_method: {steps: 20}\n" in params
    assert "cpu:\n  my_method: {resolution: 64}\n" in params
    script = """
import torch, yaml
from agebench.params.load import load_params
from agebench.params.reading import section
from agebench.infra.registry import METHODS
from methods.base import TrainData, uint8_to_float
p = load_params("params.yaml")
assert "my_method" in p.methods
cls = METHODS.get("my_method")
cfg = section(p.raw, "my_method", cls.config_cls)
m = cls(cfg, ("young", "old"), torch.device("cpu"))
g = torch.Generator().manual_seed(0)
data = TrainData({128: torch.randint(0, 256, (8, 3, 128, 128), dtype=torch.uint8, generator=g)},
                 {"pair": torch.tensor([0, 1] * 4)}, {"pair": ("young", "old")})
before = [q.clone() for q in m.nets.parameters()]
losses = m.train_step(m.sample_batch(data, 0, g), 0)
assert set(losses) == {"loss_stats", "loss_keep"}
assert any(not torch.equal(a, b) for a, b in zip(before, m.nets.parameters()))
y = m.translate(uint8_to_float(data.images[128][:2]), "young", "old")
assert y.shape == (2, 3, 128, 128) and y.min() >= -1 and y.max() <= 1
print("ok", m.num_steps(data))
"""
    # -W error: the scaffold must run warning-free (a warning becomes a failing exception).
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["ok", "200"]
    # What CI runs on every file: both must pass on the scaffold as written.
    for cmd in (["check"], ["format", "--check", "--diff"]):
        lint = subprocess.run(
            [sys.executable, "-m", "ruff", *cmd, "methods/my_method.py"], cwd=repo, capture_output=True, text=True
        )
        assert lint.returncode == 0, f"ruff {' '.join(cmd)}:\n{lint.stdout}{lint.stderr}"


def test_bad_names_and_duplicates_are_refused(repo: Path, capsys) -> None:
    for bad in ("My-Method", "class", "9lives", ""):
        assert main(["new-method", bad, "--repo", str(repo)]) == 2
        assert "not a valid method name" in capsys.readouterr().err
    assert main(["new-method", "identity", "--repo", str(repo)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["new-method", "x_method", "--repo", str(repo / "nowhere")]) == 2
    assert "not found" in capsys.readouterr().err
