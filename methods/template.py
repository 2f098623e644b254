"""`template`: a new face-aging method to copy (`agebench new-method NAME` copies it; replace the network and loss).

The contract (methods/base.py), in short:
- `build()`: build networks and optimisers from `self.config`, `self.group_names`, `self.device`, `self.aux`
  (`Method.__init__` calls it once); no file IO, no printing.
- `num_steps(data)`: how many optimisation steps to run on `data` (a `TrainData` of uint8 faces).
- `sample_batch(data, step, generator)`: draw a batch with `generator` only (so resuming is exact).
- `train_step(batch, step) -> {"loss_<name>": float}`: one optimisation step, every loss named.
- `translate(images, source, target)`: (N, 3, R, R) float32 in [-1, 1] -> same shape and range.
- `state_dict()` / `load_state_dict()`: everything needed to resume exactly.
Group names come from `scheme` ("pair": young/old; "cgan6"; "decades") in params.yaml `groups:`.

This starter is a minimal working translator: a residual 3x3 convolution per direction, trained so
that the translated faces match the mean colour statistics of the target group while staying close to
the input (loss_stats + lambda_keep * loss_keep). It ages nothing convincingly; it shows the plumbing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from methods.base import Method, TrainData, uint8_to_float


@dataclasses.dataclass(frozen=True)
class TemplateConfig:
    """`template:` in params.yaml (the smoke profile overrides `steps`)."""

    resolution: int = 128
    batch_size: int = 16
    steps: int = 200
    lr: float = 0.01
    lambda_keep: float = 1.0


class Template(Method):
    """Residual colour translator between the two groups of the `pair` scheme."""

    config_cls = TemplateConfig
    scheme = "pair"

    config: TemplateConfig

    def build(self) -> None:
        super().build()
        names = self.group_names
        self.nets = nn.ModuleDict(
            {f"{s}_to_{t}": nn.Conv2d(3, 3, 3, padding=1) for s in names for t in names if s != t}
        ).to(self.device)
        for net in self.nets.values():
            nn.init.zeros_(net.weight)
            nn.init.zeros_(net.bias)
        self.opt = torch.optim.Adam(self.nets.parameters(), lr=self.config.lr)

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def modules(self) -> dict[str, nn.Module]:
        return {"nets": self.nets}

    def num_steps(self, data: TrainData) -> int:
        return self.config.steps

    def sample_batch(self, data: TrainData, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        images = data.images[self.resolution]
        batch = {}
        for g in self.group_names:
            idx = data.indices(self.scheme, g)
            pick = idx[torch.randint(len(idx), (self.config.batch_size,), generator=generator).to(idx.device)]
            batch[g] = uint8_to_float(images[pick])
        return batch

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        loss_stats = torch.zeros((), device=self.device)
        loss_keep = torch.zeros((), device=self.device)
        for s in self.group_names:
            for t in self.group_names:
                if s == t:
                    continue
                out = self.translate_train(batch[s], s, t)
                # Match per-channel mean and std of the target group's faces.
                loss_stats = loss_stats + (out.mean((0, 2, 3)) - batch[t].mean((0, 2, 3))).pow(2).sum()
                loss_stats = loss_stats + (out.std((0, 2, 3)) - batch[t].std((0, 2, 3))).pow(2).sum()
                loss_keep = loss_keep + (out - batch[s]).abs().mean()
        loss = loss_stats + self.config.lambda_keep * loss_keep
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        # .item() of detached values: the losses are logged numbers, not part of the graph.
        return {"loss_stats": loss_stats.detach().item(), "loss_keep": loss_keep.detach().item()}

    def translate_train(self, images: torch.Tensor, source: str, target: str) -> torch.Tensor:
        return (images + self.nets[f"{source}_to_{target}"](images)).clamp(-1, 1)

    @torch.no_grad()
    def translate(self, images: torch.Tensor, source: str, target: str) -> torch.Tensor:
        return self.translate_train(images.to(self.device), source, target)

    def state_dict(self) -> dict[str, Any]:
        return {"nets": self.nets.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.nets.load_state_dict(state["nets"])
        self.opt.load_state_dict(state["opt"])
