"""`identity`: the reference method whose output is its input (PROTOCOL.md section 5)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from methods.base import Method, TrainData


@dataclasses.dataclass(frozen=True)
class IdentityConfig:
    """`identity:` the no-change baseline; its resolution is the evaluation resolution."""

    resolution: int = 128


class Identity(Method):
    """Returns its input: what "no aging at all" scores on every metric."""

    config_cls = IdentityConfig
    scheme = "pair"

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def modules(self) -> dict[str, nn.Module]:
        return {}

    def num_steps(self, data: TrainData) -> int:
        return 0

    def sample_batch(self, data: TrainData, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        raise RuntimeError("identity has nothing to train")

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        raise RuntimeError("identity has nothing to train")

    def translate(self, images: torch.Tensor, source: str, target: str) -> torch.Tensor:
        return images.clone()

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state:
            raise ValueError(f"identity has no state, got keys {sorted(state)}")
