"""`cyclegan_keras`: the Keras-style CycleGAN of docs/METHODS.md s.1, 20s <-> 50s with progressive resizing.

Source: a tutorial that adapted Keras-GAN's CycleGAN (eriklindernoren/Keras-GAN, `cyclegan/cyclegan.py`)
to age conversion on UTKFace. Domain A = "young" (20-29), B = "old" (50-59) of the "pair" scheme.

- Networks: a ResNet generator (c7s1-64, d128, d256, 9 residual blocks, u128, u64, c7s1-3, tanh) and
  the Keras-GAN 4-layer PatchGAN (16x16 map at 256), both with keras_contrib's `InstanceNormalization()`
  as Keras-GAN builds it (axis=None: one mean and std per sample over C, H, W; a scalar gamma and
  beta; `KerasInstanceNorm`) and TF "same" padding (stride-2 convs pad (0, 1); transposed convs crop
  at the end). Both fully convolutional, so the same weights train at every size.
- Progressive resizing (the tutorial's main trick): `epochs_per_size[i]` epochs at `sizes[i]` with
  batch `batch_per_size[i]`, in order; `translate` works at the last size.
- Per step, in Keras-GAN's order: the discriminators first, on real faces and on the current
  generators' fakes (loss 0.5 * (real + fake), least squares); then the generators through the
  frozen discriminators. Keras-GAN has no history pool of fakes, and neither does this method.
  Keras-GAN makes two `train_on_batch` calls per discriminator (real, then fake) and only reports
  0.5 * (real + fake); docs/METHODS.md specifies one update on 0.5 * (real + fake), which is what runs here.
- Generator loss: L = L_adv + lambda_cycle * L_cycle + lambda_id * L_identity with the adversarial
  terms least squares and the cycle/identity terms MAE (`pixel_loss: mae`, default: what Keras-GAN and
  the tutorial's notebook compile and therefore what produced the tutorial's results; its prose says
  MSE, available as `pixel_loss: mse`).

Steps per epoch at a size = int(min(|A|, |B|) / batch), as Keras-GAN's `DataLoader.load_batch`.
Deviation: Keras-GAN draws each epoch's faces without replacement; here faces are drawn uniformly
with replacement (the loop's batch sampler is pure), independently per domain, and flipped
left-right at random as Keras-GAN does.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import torch

from methods.base import TrainData
from methods.blocks import KerasPatchDiscriminator, ResnetGenerator, pixel_loss
from methods.cyclegan_base import TwoDomainCycleGAN


@dataclasses.dataclass(frozen=True)
class CycleGANKerasConfig:
    """`cyclegan_keras:` docs/METHODS.md s.1 (seed values of the tutorial / Keras-GAN)."""

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
    # Keras-GAN and the tutorial's notebook compile cycle/identity as MAE; the tutorial's prose says MSE.
    pixel_loss: Literal["mse", "mae"] = "mae"
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


class Phase(NamedTuple):
    """One size of the progressive schedule: steps [start, end) train at `size` with `batch`."""

    start: int
    end: int
    size: int
    batch: int


def keras_epoch_length(domain_sizes: list[int], batch: int) -> int:
    """Batches in one Keras-GAN epoch: int(min(|A|, |B|) / batch) (`DataLoader.load_batch`'s n_batches)."""
    return int(min(domain_sizes) / batch)


class CycleGANKeras(TwoDomainCycleGAN):
    """Keras-GAN-style CycleGAN with progressive resizing (docs/METHODS.md s.1)."""

    config_cls = CycleGANKerasConfig
    method_name = "cyclegan_keras"

    config: CycleGANKerasConfig

    def build(self) -> None:
        super().build()
        c = self.config
        gen = dict(ngf=c.ngf, n_blocks=c.n_blocks, padding=c.padding, norm="keras", strided="tf_same")
        self.G_AB, self.G_BA = ResnetGenerator(**gen), ResnetGenerator(**gen)
        self.D_A, self.D_B = KerasPatchDiscriminator(ndf=c.ndf), KerasPatchDiscriminator(ndf=c.ndf)
        self._set_networks({"G_AB": self.G_AB, "G_BA": self.G_BA, "D_A": self.D_A, "D_B": self.D_B}, c.init)
        self._adam(c.lr, (c.beta1, c.beta2))

    @property
    def resolution(self) -> int:
        return self.config.sizes[-1]

    def _stateful(self) -> dict[str, object]:
        return {"opt_G": self.opt_G, "opt_D": self.opt_D}

    # ---- schedule ----------------------------------------------------------------------------
    def schedule(self, data: TrainData) -> list[Phase]:
        """The progressive schedule on `data` (uncapped), one `Phase` per size, in order."""
        per_epoch = self.domain_sizes(data)
        phases, start = [], 0
        for size, epochs, batch in zip(self.config.sizes, self.config.epochs_per_size, self.config.batch_per_size):
            end = start + epochs * keras_epoch_length(per_epoch, batch)
            phases.append(Phase(start, end, size, batch))
            start = end
        return phases

    def phase(self, data: TrainData, step: int) -> Phase:
        """The phase `step` trains in (after the last phase: the last one)."""
        phases = self.schedule(data)
        return next((p for p in phases if step < p.end), phases[-1])

    def epoch_lengths(self, data: TrainData) -> list[int]:
        """Steps in each epoch, in order (uncapped): int(min(|A|, |B|) / batch of that epoch's size)."""
        sizes = self.domain_sizes(data)
        return [
            keras_epoch_length(sizes, batch)
            for epochs, batch in zip(self.config.epochs_per_size, self.config.batch_per_size)
            for _ in range(epochs)
        ]

    def train_resolutions(self) -> tuple[int, ...]:
        """All sizes of the progressive schedule."""
        return tuple(self.config.sizes)

    # ---- training ----------------------------------------------------------------------------
    def sample_batch(self, data: TrainData, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """{"A": young, "B": old}, each (batch, 3, R, R) float32 in [-1, 1], R and batch of `phase(step)`."""
        p = self.phase(data, step)
        return self.sample_pair(data, p.size, p.batch, generator)

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """One Keras-GAN step: update D_A and D_B, then G_AB and G_BA. Returns every loss term.

        Names: loss_D_A / loss_D_B = 0.5 * (LS(D(real), 1) + LS(D(fake), 0)) of D_X / D_Y;
        loss_G_AB / loss_G_BA = LS(D_Y(G(a)), 1) / LS(D_X(F(b)), 1); loss_cycle_A = |F(G(a)) - a|,
        loss_cycle_B = |G(F(b)) - b| and loss_idt_A = |F(a) - a|, loss_idt_B = |G(b) - b| in the
        configured pixel loss, unweighted; loss_G = the weighted generator total.
        """
        c, e = self.config, self.engine
        g_ab, g_ba = self._run["G_AB"], self._run["G_BA"]
        real_a, real_b = e.inputs(batch["A"]), e.inputs(batch["B"])
        for net in self.modules().values():
            net.train()

        # Discriminators first, on the current generators' translations (Keras-GAN order).
        with torch.no_grad(), e.autocast():
            fake_b, fake_a = g_ab(real_a), g_ba(real_b)
        loss_d = self._discriminator_update(real_a, real_b, fake_a, fake_b)

        # Generators through the frozen discriminators (Keras-GAN's `combined` model).
        g = self._generator_pass(real_a, real_b)
        loss_cycle = pixel_loss(c.pixel_loss, g.rec_a, real_a), pixel_loss(c.pixel_loss, g.rec_b, real_b)
        loss_idt = pixel_loss(c.pixel_loss, g.idt_a, real_a), pixel_loss(c.pixel_loss, g.idt_b, real_b)
        loss_g = (
            g.loss_g_ab
            + g.loss_g_ba
            + c.lambda_cycle * (loss_cycle[0] + loss_cycle[1])
            + c.lambda_id * (loss_idt[0] + loss_idt[1])
        )
        self._generator_update(loss_g)
        return self._named_losses(loss_d, g, loss_cycle, loss_idt, loss_g)
