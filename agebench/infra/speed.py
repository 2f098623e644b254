"""CPU (and GPU) performance switches of the training loop, applied from outside a method.

None of them changes a method: networks, losses, optimisers and the data order stay the same; only
how the arithmetic runs differs. Each one is a `train:` key (agebench.params.sections.TrainConfig):

- `threads`: intra-op threads (`torch.set_num_threads`); 0 leaves torch's default (one per core).
- `channels_last`: every network of `Method.modules()` (and its frozen aux networks) moved to NHWC.
  Parameters keep their identity (optimisers hold the same tensors) and their state-dict keys; a
  convolution with an NHWC weight runs NHWC whatever layout its input has, so the method's own
  code needs no change. Measured on the cpu profile's CycleGANs: no gain on this CPU (within +-10%).
- `bf16`: every `train_step` runs under `torch.autocast(<device>, torch.bfloat16)`: convolutions and
  matrix products in bfloat16 (avx512_bf16 / AMX on recent x86), everything autocast keeps in
  float32 (losses, reductions, normalisation statistics) in float32; weights, gradients and
  optimiser states stay float32. The CycleGANs' first-step losses stay within 1% of float32 (tests/
  test_speed.py; benchmarks/train_speed.py --device cpu reports the difference), age_cgan's do not
  (its discriminator's fake loss moved 70%). Its speed depends on the CPU: 1.1-2.1x faster than
  float32 on an Intel Xeon and an AMD EPYC Zen 4, 15-40x slower on another AMD EPYC without AMX, so
  the cpu profile trains in float32 everywhere (README "Precision"; the pre-flight,
  agebench.infra.preflight_speed, stops a bf16 setting that is too slow on the machine at hand).
- `compile`: `nn.Module.compile()` in place on every network (TorchInductor; on CPU it needs a C++
  compiler and compiles for minutes on 2 cores before the first step). Not yet measured on CPU.

The training data are already uint8 tensors resident in memory (agebench.data.faces.build_train_data);
each batch is gathered and converted to float in `Method.sample_batch`.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from methods.base import Method


def configure_threads(threads: int) -> int:
    """Set torch's intra-op thread count when `threads` > 0; returns the count in effect."""
    if threads < 0:
        raise ValueError(f"train.threads must be >= 0 (0: torch's default), got {threads}")
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def networks(method: Method) -> list[nn.Module]:
    """The method's trained networks and its frozen aux networks, each once."""
    seen: dict[int, nn.Module] = {}
    for m in [*method.modules().values(), *method.aux.values()]:
        seen.setdefault(id(m), m)
    return list(seen.values())


def prepare_for_speed(method: Method, channels_last: bool = False, bf16: bool = False, compile: bool = False) -> Method:
    """Apply the switches to `method` in place (call once, after the method is built and before its
    state is loaded or a step is run): NHWC networks, in-place compiled networks, and `train_step`
    wrapped in bfloat16 autocast (`translate` stays float32). Returns `method`."""
    for net in networks(method):
        if channels_last:
            # In place on each parameter's data: optimisers already built keep working.
            net.to(memory_format=torch.channels_last)
        if compile:
            net.compile()
    if bf16:
        step = method.train_step

        @functools.wraps(step)
        def train_step(batch: dict[str, torch.Tensor], index: int) -> dict[str, float]:
            with step_context(method.device, True):
                return step(batch, index)

        method.train_step = train_step  # type: ignore[method-assign]
    return method


def step_context(device: torch.device | str, bf16: bool) -> contextlib.AbstractContextManager[Any]:
    """The context each training step runs in: bfloat16 autocast on `device` when `bf16`, else none."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


@contextlib.contextmanager
def num_threads(threads: int) -> Iterator[None]:
    """Temporarily run with `threads` intra-op threads (0: unchanged); restores the previous count."""
    before = torch.get_num_threads()
    configure_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
