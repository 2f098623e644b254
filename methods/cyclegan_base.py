"""The skeleton the CycleGAN-family methods share (docs/METHODS.md sections 1, 2 and 4).

`CycleGANFamily` holds what every CycleGAN method needs once: the group checks, the engineering
switches (`Engine`), step counting (sum of `epoch_lengths`, capped by `max_steps`), translation
dispatch in eval mode, the sample grid, and `state_dict` (networks plus every optimiser, scheduler
and image pool). `TwoDomainCycleGAN` adds the two-generator, two-discriminator young <-> old layout
of `cyclegan_keras` and `cyclegan_perceptual`. Each method file keeps only what makes it that method:
its config, networks, losses, schedule and training step.

Configs of these methods carry `max_steps`, `amp_bf16`, `channels_last` and `compile`.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from methods.base import Method, TrainData
from methods.blocks import Engine, eval_mode, group_indices, init_weights, lsgan_loss, random_faces, set_requires_grad


class CycleGANFamily(Method):
    """Shared skeleton; subclasses set `method_name`, `required_groups` and, in `build`, create their networks
    with `_set_networks`, then implement the schedule, `sample_batch`, `train_step`, `_translator` and
    `_sample_images`, and list their optimisers/schedulers/pools in `_stateful`."""

    #: The registry name, for messages.
    method_name: ClassVar[str]
    #: Groups of `scheme` the method cannot work without (checked when it is built).
    required_groups: ClassVar[tuple[str, ...]] = ()

    def build(self) -> None:
        """Check the groups and set up the engine; a subclass's `build` then creates its networks."""
        super().build()
        for g in self.required_groups:
            if g not in self.group_names:
                raise ValueError(
                    f"{self.method_name} needs group {g!r} in scheme {self.scheme!r}, got {self.group_names}"
                )
        c = self.config
        self.engine = Engine(self.device, c.amp_bf16, c.channels_last, c.compile)
        self._nets: dict[str, nn.Module] = {}
        self._run: dict[str, Callable[..., torch.Tensor]] = {}

    def _set_networks(self, nets: dict[str, nn.Module], init: str, gain: float = 0.02) -> None:
        """Register the trained networks (`modules()` order), initialise them, and prepare each for the
        device; `self._run[name]` is the callable to run it with (possibly compiled)."""
        self._nets = dict(nets)
        for net in self._nets.values():
            init_weights(net, init, gain)  # type: ignore[arg-type]
        self._run = {k: self.engine.prepare(m) for k, m in self._nets.items()}

    def modules(self) -> dict[str, nn.Module]:
        return dict(self._nets)

    # ---- schedule ----------------------------------------------------------------------------
    def num_steps(self, data: TrainData) -> int:
        """Sum of `epoch_lengths`, capped by `max_steps` (0: no cap)."""
        total = sum(self.epoch_lengths(data))
        return min(total, self.config.max_steps) if self.config.max_steps > 0 else total

    def group_sizes(self, data: TrainData, groups: tuple[str, ...] | None = None) -> list[int]:
        """Training faces in each of `groups` (default: all the method's groups); a group with none raises."""
        return [group_indices(data, self.scheme, g).numel() for g in (groups or self.group_names)]

    # ---- inference ---------------------------------------------------------------------------
    @abstractmethod
    def _translator(self, source: str, target: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """The network call mapping `source` faces to `target` (ValueError naming a bad group)."""

    def translate(self, images: torch.Tensor, source: str, target: str) -> torch.Tensor:
        """(N, 3, R, R) float32 in [-1, 1] -> (N, 3, R, R) float32 in [-1, 1] (eval mode, no grad)."""
        run = self._translator(source, target)
        with eval_mode(self.modules().values()), self.engine.autocast():
            return run(self.engine.inputs(images)).float().contiguous()

    @abstractmethod
    def _sample_images(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The sample grid's images for `batch` (called in eval mode, no grad, under autocast)."""

    def samples(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """name -> (B, 3, R, R) float32 in [-1, 1] (see each method's `_sample_images`)."""
        with eval_mode(self.modules().values()), self.engine.autocast():
            out = self._sample_images(batch)
        return {k: v.float().contiguous() for k, v in out.items()}

    # ---- state -------------------------------------------------------------------------------
    @abstractmethod
    def _stateful(self) -> dict[str, Any]:
        """Name -> object with `state_dict`/`load_state_dict` (optimisers, lr schedulers, image pools)."""

    def state_dict(self) -> dict[str, Any]:
        """{"nets": name -> network state, then one entry per `_stateful` object}. Tensors alias live
        ones: save or copy at once."""
        return {"nets": {k: m.state_dict() for k, m in self._nets.items()}} | {
            k: obj.state_dict() for k, obj in self._stateful().items()
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned; other keys (a checkpoint of another version) raise."""
        expected = {"nets", *self._stateful()}
        if set(state) != expected:
            raise ValueError(f"{self.method_name} state has keys {sorted(state)}, expected {sorted(expected)}")
        for k, m in self._nets.items():
            m.load_state_dict(state["nets"][k])
        for k, obj in self._stateful().items():
            obj.load_state_dict(state[k])


class GeneratorPass(NamedTuple):
    """Both generators on a batch (a, b) of `TwoDomainCycleGAN`: translations fake_B = G(a), fake_A = F(b),
    round trips rec_A = F(G(a)), rec_B = G(F(b)), identity maps idt_A = F(a), idt_B = G(b), and the
    generators' adversarial losses loss_G_AB = LS(D_Y(G(a)), 1), loss_G_BA = LS(D_X(F(b)), 1)."""

    fake_a: torch.Tensor
    fake_b: torch.Tensor
    rec_a: torch.Tensor
    rec_b: torch.Tensor
    idt_a: torch.Tensor
    idt_b: torch.Tensor
    loss_g_ab: torch.Tensor
    loss_g_ba: torch.Tensor


class TwoDomainCycleGAN(CycleGANFamily):
    """CycleGAN between domain A = "young" (20-29) and B = "old" (50-59) of the "pair" scheme.

    Code names -> paper symbols (Zhu et al. 2017): G_AB = G (young -> old), G_BA = F (old -> young),
    D_A = D_X (judges young faces), D_B = D_Y (judges old faces). Subclasses register exactly these four
    networks with `_set_networks`.
    """

    scheme = "pair"
    domain_a: ClassVar[str] = "young"
    domain_b: ClassVar[str] = "old"
    required_groups = ("young", "old")
    #: Also show the identity mappings F(a), G(b) in the sample grid.
    sample_identity: ClassVar[bool] = False

    def _adam(self, lr: float, betas: tuple[float, float]) -> None:
        """opt_G over both generators, opt_D over both discriminators (junyanz and Keras-GAN alike)."""
        n = self._nets
        self.opt_G = torch.optim.Adam([*n["G_AB"].parameters(), *n["G_BA"].parameters()], lr=lr, betas=betas)
        self.opt_D = torch.optim.Adam([*n["D_A"].parameters(), *n["D_B"].parameters()], lr=lr, betas=betas)

    def _generator_pass(self, real_a: torch.Tensor, real_b: torch.Tensor) -> GeneratorPass:
        """Freeze both discriminators and run both generators (engine autocast); `_generator_update`
        unfreezes them. The calls run in this order in every two-domain method (it fixes the float results)."""
        g_ab, g_ba, d_a, d_b = (self._run[k] for k in ("G_AB", "G_BA", "D_A", "D_B"))
        set_requires_grad([self._nets["D_A"], self._nets["D_B"]], False)
        with self.engine.autocast():
            fake_b, fake_a = g_ab(real_a), g_ba(real_b)
            rec_a, rec_b = g_ba(fake_b), g_ab(fake_a)
            idt_a, idt_b = g_ba(real_a), g_ab(real_b)
            loss_g_ab = lsgan_loss(d_b(fake_b), True)
            loss_g_ba = lsgan_loss(d_a(fake_a), True)
        return GeneratorPass(fake_a, fake_b, rec_a, rec_b, idt_a, idt_b, loss_g_ab, loss_g_ba)

    def _generator_update(self, loss_g: torch.Tensor) -> None:
        """One optimiser step of both generators on `loss_g`, then unfreeze the discriminators."""
        self.opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_G.step()
        set_requires_grad([self._nets["D_A"], self._nets["D_B"]], True)

    def _discriminator_update(
        self, real_a: torch.Tensor, real_b: torch.Tensor, fake_a: torch.Tensor, fake_b: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimiser step of both discriminators; returns (loss_D_A, loss_D_B), each
        0.5 * (LS(D(real), 1) + LS(D(fake), 0)) of D_X / D_Y (`fake_*`: the fakes each one judges)."""
        d_a, d_b = self._run["D_A"], self._run["D_B"]
        with self.engine.autocast():
            loss_d_a = 0.5 * (lsgan_loss(d_a(real_a), True) + lsgan_loss(d_a(fake_a), False))
            loss_d_b = 0.5 * (lsgan_loss(d_b(real_b), True) + lsgan_loss(d_b(fake_b), False))
        self.opt_D.zero_grad(set_to_none=True)
        (loss_d_a + loss_d_b).backward()
        self.opt_D.step()
        return loss_d_a, loss_d_b

    @staticmethod
    def _named_losses(
        loss_d: tuple[torch.Tensor, torch.Tensor],
        g: GeneratorPass,
        loss_cycle: tuple[torch.Tensor, torch.Tensor],
        loss_idt: tuple[torch.Tensor, torch.Tensor],
        loss_g: torch.Tensor,
    ) -> dict[str, float]:
        """The step's loss terms by name (the `train_step` contract), as floats."""
        losses = {
            "loss_D_A": loss_d[0], "loss_D_B": loss_d[1], "loss_G_AB": g.loss_g_ab, "loss_G_BA": g.loss_g_ba,
            "loss_cycle_A": loss_cycle[0], "loss_cycle_B": loss_cycle[1],
            "loss_idt_A": loss_idt[0], "loss_idt_B": loss_idt[1], "loss_G": loss_g,
        }  # fmt: skip
        return {k: float(v.detach()) for k, v in losses.items()}

    def supported_tasks(self) -> list[tuple[str, str]]:
        return [(self.domain_a, self.domain_b), (self.domain_b, self.domain_a)]

    def domain_sizes(self, data: TrainData) -> list[int]:
        """[|A|, |B|]: training faces of the two domains."""
        return self.group_sizes(data, (self.domain_a, self.domain_b))

    def sample_pair(
        self, data: TrainData, size: int, batch: int, generator: torch.Generator
    ) -> dict[str, torch.Tensor]:
        """{"A": young, "B": old}, each (batch, 3, size, size) float32 in [-1, 1], drawn independently per
        domain, uniformly with replacement, flipped left-right at random (`random_faces`)."""
        return {
            "A": random_faces(data, size, group_indices(data, self.scheme, self.domain_a), batch, generator),
            "B": random_faces(data, size, group_indices(data, self.scheme, self.domain_b), batch, generator),
        }

    def _translator(self, source: str, target: str) -> Callable[[torch.Tensor], torch.Tensor]:
        if (source, target) == (self.domain_a, self.domain_b):
            return self._run["G_AB"]
        if (source, target) == (self.domain_b, self.domain_a):
            return self._run["G_BA"]
        raise ValueError(f"{self.method_name} translates young <-> old only, not {source!r} -> {target!r}")

    def _sample_images(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """real_A, fake_B = G(a), rec_A = F(G(a)) (and idt_A = F(a)), then the same for B."""
        g_ab, g_ba = self._run["G_AB"], self._run["G_BA"]
        a, b = self.engine.inputs(batch["A"]), self.engine.inputs(batch["B"])
        fake_b, fake_a = g_ab(a), g_ba(b)
        out = {"real_A": a, "fake_B": fake_b, "rec_A": g_ba(fake_b)}
        if self.sample_identity:
            out["idt_A"] = g_ba(a)
        out |= {"real_B": b, "fake_A": fake_a, "rec_B": g_ab(fake_a)}
        if self.sample_identity:
            out["idt_B"] = g_ab(b)
        return out
