"""`cyclegan_keras`: the Keras-style CycleGAN of METHODS.md s.1, 20s <-> 50s with progressive resizing.

Source: a tutorial that adapted Keras-GAN's CycleGAN (eriklindernoren/Keras-GAN, `cyclegan/cyclegan.py`)
to age conversion on UTKFace. Domain A = "young" (20-29), B = "old" (50-59) of the "pair" scheme.

- Networks: a ResNet generator (c7s1-64, d128, d256, 9 residual blocks, u128, u64, c7s1-3, tanh,
  InstanceNorm with learned scale/shift as keras_contrib, zero "same" padding) and the Keras-GAN
  4-layer PatchGAN (16x16 map at 256). Both fully convolutional, so the same weights train at every size.
- Progressive resizing (the tutorial's main trick): `epochs_per_size[i]` epochs at `sizes[i]` with
  batch `batch_per_size[i]`, in order; `translate` works at the last size.
- Per step, in Keras-GAN's order: the discriminators first, on real faces and on the current
  generators' fakes (loss 0.5 * (real + fake), least squares); then the generators through the
  frozen discriminators. Keras-GAN has no history pool of fakes, and neither does this method.
  Keras-GAN makes two `train_on_batch` calls per discriminator (real, then fake) and only reports
  0.5 * (real + fake); METHODS.md specifies one update on 0.5 * (real + fake), which is what runs here.
- Generator loss: L = L_adv + lambda_cycle * L_cycle + lambda_id * L_identity with the adversarial
  terms least squares and the cycle/identity terms MSE (tutorial) or MAE (Keras-GAN), `pixel_loss`.

Steps per epoch at a size = ceil(max(|A|, |B|) / batch), as junyanz's unaligned dataset; faces are
drawn uniformly with replacement, independently per domain, and flipped left-right at random.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

import torch
from torch import nn

from methods.base import Method, TrainData
from methods.blocks import (
    Engine,
    KerasPatchDiscriminator,
    ResnetGenerator,
    eval_mode,
    group_indices,
    init_weights,
    lsgan_loss,
    pixel_loss,
    random_faces,
    set_requires_grad,
    steps_per_epoch,
)


@dataclasses.dataclass(frozen=True)
class CycleGANKerasConfig:
    """`cyclegan_keras:` METHODS.md s.1 (seed values of the tutorial / Keras-GAN)."""

    ngf: int = 64  # tutorial generator: gf = 64
    n_blocks: int = 9  # tutorial generator: 9 residual blocks at 4gf
    ndf: int = 64  # Keras-GAN discriminator: df = 64
    padding: Literal["zero", "reflect"] = "zero"  # Keras Conv2D(padding="same") pads with zeros
    init: Literal["glorot", "normal"] = "glorot"  # Keras-GAN sets no initializer: glorot_uniform
    sizes: tuple[int, ...] = (64, 128, 256)  # tutorial: 64x64, then 128x128, then 256x256
    # ~50 epochs in the tutorial; its split over sizes is not published (engineering choice).
    epochs_per_size: tuple[int, ...] = (20, 15, 15)
    # Tutorial: batch 32 at 64x64; larger sizes use smaller batches (its values are not published).
    batch_per_size: tuple[int, ...] = (32, 8, 2)
    pixel_loss: Literal["mse", "mae"] = "mse"  # tutorial: MSE for cycle and identity; Keras-GAN: MAE
    lambda_cycle: float = 10.0  # Keras-GAN; the tutorial's notebook used 0.1
    lambda_id: float = 1.0  # Keras-GAN: 0.1 * lambda_cycle; the tutorial's notebook used 0.01
    lr: float = 2e-4  # Keras-GAN: Adam(0.0002, 0.5)
    beta1: float = 0.5  # Keras-GAN
    beta2: float = 0.999  # Keras default
    max_steps: int = 0  # 0: no cap (the smoke profile caps training)
    amp_bf16: bool = False  # engineering: bfloat16 autocast
    channels_last: bool = False  # engineering: NHWC layout
    compile: bool = False  # engineering: torch.compile (CUDA only)

    def __post_init__(self) -> None:
        n = len(self.sizes)
        if n == 0 or len(self.epochs_per_size) != n or len(self.batch_per_size) != n:
            raise ValueError(
                f"sizes, epochs_per_size and batch_per_size must have the same non-zero length, got "
                f"{self.sizes}, {self.epochs_per_size}, {self.batch_per_size}"
            )
        if any(s % 16 for s in self.sizes):
            raise ValueError(f"sizes must be multiples of 16 (the discriminator halves 4 times), got {self.sizes}")
        if any(b < 1 for b in self.batch_per_size) or any(e < 0 for e in self.epochs_per_size):
            raise ValueError("batch_per_size must be >= 1 and epochs_per_size >= 0")


class CycleGANKeras(Method):
    """Keras-GAN-style CycleGAN with progressive resizing (METHODS.md s.1).

    Code names -> paper symbols (Zhu et al. 2017): G_AB = G (young -> old), G_BA = F (old -> young),
    D_A = D_X (judges young faces), D_B = D_Y (judges old faces).
    """

    config_cls = CycleGANKerasConfig
    scheme = "pair"

    def __init__(
        self,
        config: CycleGANKerasConfig,
        group_names: tuple[str, ...],
        device: torch.device,
        aux: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__(config, group_names, device, aux)
        self.domain_a, self.domain_b = "young", "old"
        for g in (self.domain_a, self.domain_b):
            if g not in self.group_names:
                raise ValueError(f"cyclegan_keras needs group {g!r} in scheme 'pair', got {self.group_names}")
        c = config
        gen = dict(ngf=c.ngf, n_blocks=c.n_blocks, padding=c.padding, norm_affine=True)
        self.G_AB, self.G_BA = ResnetGenerator(**gen), ResnetGenerator(**gen)
        self.D_A, self.D_B = KerasPatchDiscriminator(ndf=c.ndf), KerasPatchDiscriminator(ndf=c.ndf)
        for net in self.modules().values():
            init_weights(net, c.init)
        self.engine = Engine(device, c.amp_bf16, c.channels_last, c.compile)
        self._g_ab, self._g_ba = self.engine.prepare(self.G_AB), self.engine.prepare(self.G_BA)
        self._d_a, self._d_b = self.engine.prepare(self.D_A), self.engine.prepare(self.D_B)
        betas = (c.beta1, c.beta2)
        self.opt_G = torch.optim.Adam([*self.G_AB.parameters(), *self.G_BA.parameters()], lr=c.lr, betas=betas)
        self.opt_D = torch.optim.Adam([*self.D_A.parameters(), *self.D_B.parameters()], lr=c.lr, betas=betas)
        # (end step exclusive, size, batch) per size; set by num_steps(data), which the stage calls first.
        self._schedule: list[tuple[int, int, int]] | None = None

    # ---- what the stages ask -----------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self.config.sizes[-1]

    def modules(self) -> dict[str, nn.Module]:
        return {"G_AB": self.G_AB, "G_BA": self.G_BA, "D_A": self.D_A, "D_B": self.D_B}

    # ---- schedule ----------------------------------------------------------------------------
    def epoch_lengths(self, data: TrainData) -> list[int]:
        """Steps in each epoch, in order (uncapped): ceil(max(|A|, |B|) / batch of that epoch's size)."""
        sizes = [group_indices(data, self.scheme, g).numel() for g in (self.domain_a, self.domain_b)]
        return [
            steps_per_epoch(sizes, batch)
            for epochs, batch in zip(self.config.epochs_per_size, self.config.batch_per_size)
            for _ in range(epochs)
        ]

    def num_steps(self, data: TrainData) -> int:
        """Total steps (capped by `max_steps`); also fixes the size schedule `train_resolution` reads."""
        sizes = [group_indices(data, self.scheme, g).numel() for g in (self.domain_a, self.domain_b)]
        end, schedule = 0, []
        for size, epochs, batch in zip(self.config.sizes, self.config.epochs_per_size, self.config.batch_per_size):
            end += epochs * steps_per_epoch(sizes, batch)
            schedule.append((end, size, batch))
        self._schedule = schedule
        return min(end, self.config.max_steps) if self.config.max_steps > 0 else end

    def _phase(self, step: int) -> tuple[int, int]:
        if self._schedule is None:
            raise RuntimeError("cyclegan_keras: call num_steps(data) before asking for the size schedule")
        for end, size, batch in self._schedule:
            if step < end:
                return size, batch
        return self._schedule[-1][1], self._schedule[-1][2]

    def train_resolutions(self) -> tuple[int, ...]:
        """All sizes of the progressive schedule."""
        return tuple(self.config.sizes)

    def train_resolution(self, step: int) -> int:
        """Image side for `step` under progressive resizing (after the last phase: the last size)."""
        return self._phase(step)[0]

    # ---- training ----------------------------------------------------------------------------
    def sample_batch(self, data: TrainData, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """{"A": young, "B": old}, each (batch, 3, R, R) float32 in [-1, 1], R = train_resolution(step)."""
        size, batch = self._phase(step)
        return {
            "A": random_faces(data, size, group_indices(data, self.scheme, self.domain_a), batch, generator),
            "B": random_faces(data, size, group_indices(data, self.scheme, self.domain_b), batch, generator),
        }

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """One Keras-GAN step: update D_A and D_B, then G_AB and G_BA. Returns every loss term.

        Names: loss_D_A / loss_D_B = 0.5 * (LS(D(real), 1) + LS(D(fake), 0)) of D_X / D_Y;
        loss_G_AB / loss_G_BA = LS(D_Y(G(a)), 1) / LS(D_X(F(b)), 1); loss_cycle_A = |F(G(a)) - a|,
        loss_cycle_B = |G(F(b)) - b| and loss_idt_A = |F(a) - a|, loss_idt_B = |G(b) - b| in the
        configured pixel loss, unweighted; loss_G = the weighted generator total.
        """
        c, e = self.config, self.engine
        real_a, real_b = e.inputs(batch["A"]), e.inputs(batch["B"])
        for net in self.modules().values():
            net.train()

        # Discriminators first, on the current generators' translations (Keras-GAN order).
        with torch.no_grad(), e.autocast():
            fake_b, fake_a = self._g_ab(real_a), self._g_ba(real_b)
        with e.autocast():
            loss_d_a = 0.5 * (lsgan_loss(self._d_a(real_a), True) + lsgan_loss(self._d_a(fake_a), False))
            loss_d_b = 0.5 * (lsgan_loss(self._d_b(real_b), True) + lsgan_loss(self._d_b(fake_b), False))
        self.opt_D.zero_grad(set_to_none=True)
        (loss_d_a + loss_d_b).backward()
        self.opt_D.step()

        # Generators through the frozen discriminators (Keras-GAN's `combined` model).
        set_requires_grad([self.D_A, self.D_B], False)
        with e.autocast():
            fake_b, fake_a = self._g_ab(real_a), self._g_ba(real_b)
            rec_a, rec_b = self._g_ba(fake_b), self._g_ab(fake_a)
            idt_a, idt_b = self._g_ba(real_a), self._g_ab(real_b)
            loss_g_ab = lsgan_loss(self._d_b(fake_b), True)
            loss_g_ba = lsgan_loss(self._d_a(fake_a), True)
        loss_cycle_a, loss_cycle_b = pixel_loss(c.pixel_loss, rec_a, real_a), pixel_loss(c.pixel_loss, rec_b, real_b)
        loss_idt_a, loss_idt_b = pixel_loss(c.pixel_loss, idt_a, real_a), pixel_loss(c.pixel_loss, idt_b, real_b)
        loss_g = (
            loss_g_ab
            + loss_g_ba
            + c.lambda_cycle * (loss_cycle_a + loss_cycle_b)
            + c.lambda_id * (loss_idt_a + loss_idt_b)
        )
        self.opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_G.step()
        set_requires_grad([self.D_A, self.D_B], True)

        losses = {
            "loss_D_A": loss_d_a, "loss_D_B": loss_d_b, "loss_G_AB": loss_g_ab, "loss_G_BA": loss_g_ba,
            "loss_cycle_A": loss_cycle_a, "loss_cycle_B": loss_cycle_b,
            "loss_idt_A": loss_idt_a, "loss_idt_B": loss_idt_b, "loss_G": loss_g,
        }  # fmt: skip
        return {k: float(v.detach()) for k, v in losses.items()}

    # ---- inference ---------------------------------------------------------------------------
    def _generator(self, source: str, target: str) -> Any:
        if (source, target) == (self.domain_a, self.domain_b):
            return self._g_ab
        if (source, target) == (self.domain_b, self.domain_a):
            return self._g_ba
        raise ValueError(f"cyclegan_keras translates young <-> old only, not {source!r} -> {target!r}")

    def supported_tasks(self) -> list[tuple[str, str]]:
        return [(self.domain_a, self.domain_b), (self.domain_b, self.domain_a)]

    def translate(self, images: torch.Tensor, source: str, target: str) -> torch.Tensor:
        """(N, 3, R, R) float32 in [-1, 1] -> (N, 3, R, R) float32 in [-1, 1] (eval mode, no grad)."""
        net = self._generator(source, target)
        with eval_mode(self.modules().values()), self.engine.autocast():
            return net(self.engine.inputs(images)).float().contiguous()

    def samples(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """real_A, fake_B = G(a), rec_A = F(G(a)), real_B, fake_A = F(b), rec_B = G(F(b))."""
        a, b = self.engine.inputs(batch["A"]), self.engine.inputs(batch["B"])
        with eval_mode(self.modules().values()), self.engine.autocast():
            fake_b, fake_a = self._g_ab(a), self._g_ba(b)
            out = {"real_A": a, "fake_B": fake_b, "rec_A": self._g_ba(fake_b),
                   "real_B": b, "fake_A": fake_a, "rec_B": self._g_ab(fake_a)}  # fmt: skip
        return {k: v.float().contiguous() for k, v in out.items()}

    # ---- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers and the size schedule. Tensors alias live ones: save or copy at once."""
        return {
            "nets": {k: m.state_dict() for k, m in self.modules().items()},
            "opt_G": self.opt_G.state_dict(),
            "opt_D": self.opt_D.state_dict(),
            "schedule": None if self._schedule is None else [list(s) for s in self._schedule],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self.modules().items():
            m.load_state_dict(state["nets"][k])
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        sched = state["schedule"]
        self._schedule = None if sched is None else [(int(a), int(b), int(c)) for a, b, c in sched]
