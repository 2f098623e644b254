"""The contract every face-aging method implements, and the data it trains on.

A method is a `Method` subclass registered under the name used in `params.yaml` (`methods:` list
and the method's own section). It holds networks and optimisers and does no file IO, printing or
global state: the `train`/`generate` stages own the loop, checkpoints and files.

Images cross this boundary as float tensors (N, 3, R, R) in [-1, 1] at the method's resolution.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class TrainData:
    """Training faces resident in memory (on the training device), built by the train stage.

    Attributes:
        images: resolution -> (N, 3, R, R) uint8 tensor, RGB, same face order at every resolution.
        groups: scheme name -> (N,) int64 group index into `group_names[scheme]`; -1 when the face
            is in no group of that scheme.
        group_names: scheme name -> group names in index order (e.g. "pair" -> ("young", "old")).
    """

    images: Mapping[int, torch.Tensor]
    groups: Mapping[str, torch.Tensor]
    group_names: Mapping[str, tuple[str, ...]]

    def indices(self, scheme: str, group: str) -> torch.Tensor:
        """(K,) int64 indices of the faces in `group` of `scheme` (on the data's device)."""
        gid = self.group_names[scheme].index(group)
        return torch.nonzero(self.groups[scheme] == gid, as_tuple=False).flatten()


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) uint8 in [0, 255] -> float32 in [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)


def float_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [-1, 1] (clamped) -> uint8 in [0, 255], rounded to nearest."""
    return images.detach().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)


class Method(ABC):
    """A face-aging method: networks, losses, one training step and translation.

    Class attributes every subclass sets:
        config_cls: the frozen dataclass of the method's `params.yaml` section.
        scheme: the age-group scheme it works in ("pair", "cgan6", "decades"; PROTOCOL.md s. 2).
        aux_networks: names of pretrained helper networks the stage must pass in (e.g. "vgg16",
            "face_descriptor"); loading them is the stage's job.
    """

    config_cls: ClassVar[type]
    scheme: ClassVar[str] = "pair"
    aux_networks: ClassVar[tuple[str, ...]] = ()
    #: Scoring networks of the benchmark (the judges' names, e.g. "dlib", "sface") the method trains or
    #: translates with; generate records them (tasks.json `uses_scoring_networks`) so the report flags
    #: every metric such a network produced for this method as not independent (PROTOCOL.md s.4).
    uses_scoring_networks: ClassVar[tuple[str, ...]] = ()
    #: Extra image tables generate writes for the aging task's inputs: table name -> the image names
    #: `extra_images` returns (e.g. Age-cGAN's reconstruction table); none by default.
    extra_tables: ClassVar[Mapping[str, tuple[str, ...]]] = {}

    def __init__(
        self,
        config: Any,
        group_names: tuple[str, ...],
        device: torch.device,
        aux: Mapping[str, nn.Module] | None = None,
    ) -> None:
        self.config = config
        self.group_names = tuple(group_names)
        self.device = device
        self.aux = dict(aux or {})
        self.build()

    def build(self) -> None:  # noqa: B027 (optional hook: a method without networks builds nothing)
        """Build the networks, optimisers and pools from `self.config` (called once, at the end of `__init__`).

        The one place a method's construction lives, so no subclass restates the constructor. An override
        calls `super().build()` first; the order in which it creates networks decides the random draws of
        their initial weights, so it is part of the method. Nothing to build by default.
        """

    # ---- what the stages ask -----------------------------------------------------------------
    @property
    @abstractmethod
    def resolution(self) -> int:
        """Side of the square images `translate` takes and returns (the final training size)."""

    def supported_tasks(self) -> list[tuple[str, str]]:
        """(source group, target group) pairs this method can translate, within `scheme`."""
        return [(s, t) for s in self.group_names for t in self.group_names if s != t]

    @abstractmethod
    def modules(self) -> dict[str, nn.Module]:
        """Named networks (for parameter counts, train/eval mode, DDP wrapping)."""

    def parameter_count(self) -> int:
        """Number of trainable parameters over all `modules()` (what the leaderboard reports)."""
        return sum(p.numel() for m in self.modules().values() for p in m.parameters() if p.requires_grad)

    # ---- training ----------------------------------------------------------------------------
    @abstractmethod
    def num_steps(self, data: TrainData) -> int:
        """Total optimisation steps for this config on `data` (0: nothing to train)."""

    def train_resolutions(self) -> tuple[int, ...]:
        """Every resolution `sample_batch` may ask `TrainData.images` for (what the stage loads)."""
        return (self.resolution,)

    def epoch_lengths(self, data: TrainData) -> list[int]:
        """Steps in each epoch, in order, before any `max_steps` cap; the loop calls `end_of_epoch`
        at their running sums. Default: one epoch of `num_steps`."""
        return [self.num_steps(data)]

    @abstractmethod
    def sample_batch(self, data: TrainData, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Draw the batch for `step` from `data` with `generator` (pure: no state is changed).

        Returns named tensors on the data's device, images as float (B, 3, R, R) in [-1, 1].
        """

    @abstractmethod
    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """One optimisation step; returns every named loss (`loss_<name>`) as a Python float."""

    def end_of_epoch(self, epoch: int) -> None:  # noqa: B027 - optional hook
        """Called by the loop when an epoch ends (learning-rate schedules)."""

    # ---- inference ---------------------------------------------------------------------------
    @abstractmethod
    def translate(self, images: torch.Tensor, source: str, target: str) -> torch.Tensor:
        """Translate faces of group `source` to group `target`.

        Args:
            images: (N, 3, R, R) float32 in [-1, 1], R = `resolution`.
        Returns:
            (N, 3, R, R) float32 in [-1, 1].
        """

    def round_trip(self, images: torch.Tensor, fake: torch.Tensor, source: str, target: str) -> torch.Tensor:
        """The round trip source -> target -> source that `cycle_l1` scores (PROTOCOL.md s.4).

        Args:
            images: (N, 3, R, R) float32 in [-1, 1], the inputs (of group `source`).
            fake: (N, 3, R, R) float32 in [-1, 1], their translation to `target` as the benchmark stored
                it (quantised to uint8 and back).
        Returns:
            (N, 3, R, R) float32 in [-1, 1]. Default: `translate(fake, target, source)`; a latent method
            overrides it to go back through the latent it found for `images`.
        """
        return self.translate(fake, target, source)

    def extra_images(self, table: str, images: torch.Tensor, source: str) -> dict[str, torch.Tensor]:
        """The images of extra table `table` (a key of `extra_tables`) for faces of group `source`.

        images (N, 3, R, R) float32 in [-1, 1] -> {name: (N, 3, R, R) float32 in [-1, 1]} for every
        name in `extra_tables[table]`.
        """
        raise KeyError(f"{type(self).__name__} has no extra table {table!r} (it has {sorted(self.extra_tables)})")

    def samples(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Images for the training sample grid: name -> (B, 3, R, R) float in [-1, 1]."""
        return {}

    # ---- state -------------------------------------------------------------------------------
    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume training exactly (networks, optimisers, pools)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
