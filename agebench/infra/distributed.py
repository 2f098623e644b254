"""Data-parallel training under `torchrun`, with no change to a method's code.

`torchrun --nproc_per_node N -m stages.train ...` starts N processes; each trains the same method on
its own random batches, and every gradient is averaged over the processes before the method's
optimisers step, exactly what DistributedDataParallel does for one backward pass. It is done with
per-parameter gradient hooks rather than by wrapping modules in `DistributedDataParallel`, because
GAN steps toggle `requires_grad` on the discriminator and run several forwards and backwards per
step, which DDP's module wrapper does not allow without `find_unused_parameters` and re-wrapping
(StyleGAN3 also averages gradients itself). Averaging is linear, so several backward passes that
accumulate into one `.grad` before a step still give the mean of the per-process sums.

Batch-norm running statistics stay per process (as under DDP without SyncBatchNorm); rank 0 writes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place in the job: rank, world size, local rank (GPU index on its node)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process logs, checkpoints and writes outputs."""
        return self.rank == 0


def init_from_env(device_type: str) -> World:
    """Join the process group that `torchrun` describes in the environment; a single process otherwise.

    NCCL on CUDA (one GPU per local rank), gloo on CPU.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if device_type == "cuda":
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return world


def broadcast_state(modules: Iterable[nn.Module]) -> None:
    """Copy rank 0's parameters and buffers to every process (identical start, as DDP does)."""
    for module in modules:
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)


def average_gradients(modules: Iterable[nn.Module], size: int) -> list[torch.utils.hooks.RemovableHandle]:
    """Register hooks that replace each parameter's accumulated gradient by its mean over processes.

    Hooks fire once per backward pass per parameter that receives a gradient, in the same order on
    every process (same code, same graph), so the collectives match up. Returns the hook handles.
    """
    handles = []

    def hook(p: torch.Tensor) -> None:
        dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
        p.grad.div_(size)

    for module in modules:
        for p in module.parameters():
            handles.append(p.register_post_accumulate_grad_hook(hook))
    return handles


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is true on any process (e.g. a non-finite loss: all ranks must stop together)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def state_checksums(modules: Iterable[nn.Module], device: torch.device) -> torch.Tensor:
    """(world size, 1) float64 sums of every parameter per process: equal rows mean ranks are in sync."""
    total = torch.zeros(1, dtype=torch.float64, device=device)
    for module in modules:
        for p in module.parameters():
            total += p.detach().double().sum()
    gathered = [torch.zeros_like(total) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, total)
    return torch.stack(gathered)
