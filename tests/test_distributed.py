"""Data-parallel training on CPU with 2 gloo processes: gradients equal the single-process full batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from agebench.infra import distributed
from tests.conftest import REPO
from tests.test_train import params_file, prepared  # noqa: F401  (the module's fixture)


def tiny_gan() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(5)
    g = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.InstanceNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    d = nn.Sequential(nn.Conv2d(3, 2, 4, stride=2), nn.Flatten(), nn.LazyLinear(1))
    d(torch.zeros(1, 3, 8, 8))
    return g, d


def gan_backward(g: nn.Module, d: nn.Module, x: torch.Tensor) -> None:
    """A GAN step's gradient pattern: G's loss through a frozen D, then D's loss, two backward passes."""
    for p in d.parameters():
        p.requires_grad_(False)
    fake = g(x)
    (d(fake) - 1).pow(2).mean().backward()
    for p in d.parameters():
        p.requires_grad_(True)
    (d(fake.detach()).pow(2).mean() + (d(x) - 1).pow(2).mean()).backward()
    # A second pass into G's grads before any step: accumulation must still average correctly.
    (g(x) - x).abs().mean().backward()


def batch() -> torch.Tensor:
    return torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(9))


def _worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    g, d = tiny_gan()
    if rank == 1:  # a different start: broadcast_state must make it rank 0's
        for p in g.parameters():
            p.data.add_(1.0)
    distributed.broadcast_state([g, d])
    distributed.average_gradients([g, d], 2)
    gan_backward(g, d, batch()[2 * rank : 2 * rank + 2])
    grads = {f"{n}.{k}": p.grad.clone() for n, m in (("g", g), ("d", d)) for k, p in m.named_parameters()}
    torch.save(grads, f"{out}.{rank}")
    torch.distributed.destroy_process_group()


def test_averaged_gradients_equal_the_full_batch_gradients(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(str(tmp_path / "store"), str(tmp_path / "grads")), nprocs=2, join=True)
    g, d = tiny_gan()
    gan_backward(g, d, batch())
    ref = {f"{n}.{k}": p.grad for n, m in (("g", g), ("d", d)) for k, p in m.named_parameters()}
    for rank in (0, 1):
        got = torch.load(tmp_path / f"grads.{rank}")
        assert got.keys() == ref.keys()
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-5, atol=1e-7, msg=f"rank {rank} {k}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_train_and_rank0_writes(prepared: Path, tmp_path: Path) -> None:  # noqa: F811
    params = params_file(tmp_path)
    out = tmp_path / "model"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
        "-m", "stages.train", "--params", str(params), "--method", "cyclegan_keras",
        "--data", str(prepared), "--out", str(out), "--live", str(tmp_path / "live"),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "train.json").read_text())
    assert summary["processes"] == 2 and summary["steps"] == 6
    assert "x 2 processes" in result.stdout and result.stdout.count("train cyclegan_keras: 6 steps") == 1
    assert not (out / "last.pt").exists()
    ckpt = torch.load(out / "model.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == 6
