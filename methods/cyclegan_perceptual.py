"""`cyclegan_perceptual`: junyanz CycleGAN with a VGG-16 style (Gram) identity loss (docs/METHODS.md s.2).

Source: a blog post that trained the original PyTorch CycleGAN (junyanz/pytorch-CycleGAN-and-pix2pix)
with one change, the identity loss. Domain A = "young" (20-29), B = "old" (50-59) of the "pair" scheme.

- Networks as junyanz at 128x128: ResNet generator with 6 blocks, 70x70 PatchGAN (3 strided layers),
  InstanceNorm without affine, N(0, 0.02) init; least-squares GAN loss; a pool of 50 earlier fakes
  feeds each discriminator; Adam 2e-4 (0.5, 0.999); lr constant for `n_epochs`, then linear decay
  to ~0 over `n_epochs_decay` (stepped by `end_of_epoch`); batch 1; cycle loss L1 * lambda_cycle.
- The change: identity loss = Gram-matrix style distance (Johnson et al. 2016) of VGG-16 relu1_2,
  relu2_2, relu3_3, relu4_3 features between G_AB(b) and b and between G_BA(a) and a, weighted
  lambda_identity * lambda_cycle (junyanz's convention, 0.5 * 10). Gram = F F^T / (C H W) of the
  (C, H*W) feature matrix; the distance is the squared Frobenius norm of the difference, summed
  over the layers and averaged over the batch.
- VGG-16 comes in as `aux["vgg16"]`: torchvision's `vgg16().features` with ImageNet weights, loaded by
  the stage (e.g. with `vgg16_features_from_state_dict`); it is frozen and kept in eval mode.
  Images in [-1, 1] are mapped to [0, 1] and normalised with ImageNet's mean/std before it.
- Augmentation: random left-right flip only (junyanz also resizes to a larger load size and
  crops at random; faces here are already aligned crops, so that jitter is left out).

Per step in junyanz's order (`CycleGANModel.optimize_parameters`): forward both cycles, update the
generators with the discriminators frozen, then the discriminators on real faces and pooled fakes,
loss 0.5 * (real + fake). Steps per epoch = ceil(max(|A|, |B|) / batch), as junyanz's unaligned
dataset; faces are drawn uniformly with replacement, independently per domain.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from methods.base import TrainData
from methods.blocks import (
    ImagePool,
    LinearDecay,
    NLayerDiscriminator,
    ResnetGenerator,
    new_seed,
    pixel_loss,
    steps_per_epoch,
    vgg16_features_from_state_dict,  # noqa: F401 - re-exported: builds aux["vgg16"]
)
from methods.cyclegan_base import TwoDomainCycleGAN

#: Index in torchvision's `vgg16().features` of each ReLU whose output the style loss uses.
VGG16_RELU = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_normalize(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) float in [-1, 1] -> (N, 3, H, W) float, ((x + 1) / 2 - mean) / std per RGB channel."""
    mean = images.new_tensor(IMAGENET_MEAN)[None, :, None, None]
    std = images.new_tensor(IMAGENET_STD)[None, :, None, None]
    return ((images + 1) / 2 - mean) / std


def vgg_style_features(vgg: nn.Module, images: torch.Tensor, layers: tuple[str, ...]) -> list[torch.Tensor]:
    """Features of `images` ((N, 3, H, W) float in [-1, 1]) at the named VGG-16 ReLUs, in `layers` order.

    `vgg` is torchvision's `vgg16().features`; it runs only up to the deepest requested layer.
    Returns (N, C_l, H_l, W_l) float tensors.
    """
    wanted = {VGG16_RELU[name]: name for name in layers}
    found: dict[str, torch.Tensor] = {}
    h = imagenet_normalize(images)
    for i, layer in enumerate(vgg):
        h = layer(h)
        if i in wanted:
            found[wanted[i]] = h
            if len(found) == len(wanted):
                break
    return [found[name] for name in layers]


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) float -> (N, C, C) float32 Gram matrices F F^T / (C H W) (Johnson et al. 2016)."""
    n, c, h, w = features.shape
    f = features.float().reshape(n, c, h * w)
    return f @ f.transpose(1, 2) / (c * h * w)


def gram_loss(features_x: list[torch.Tensor], features_y: list[torch.Tensor]) -> torch.Tensor:
    """Style distance: sum over layers of ||G(x_l) - G(y_l)||_F^2, averaged over the batch (float32 scalar)."""
    total = features_x[0].new_zeros((), dtype=torch.float32)
    for fx, fy in zip(features_x, features_y, strict=True):
        total = total + (gram_matrix(fx) - gram_matrix(fy)).pow(2).sum(dim=(1, 2)).mean()
    return total


@dataclasses.dataclass(frozen=True)
class CycleGANPerceptualConfig:
    """`cyclegan_perceptual:` docs/METHODS.md s.2 (seed values: junyanz defaults and the blog post)."""

    ngf: int = 64  # junyanz --ngf 64
    n_blocks: int = 6  # junyanz: 6 residual blocks at 128x128 (resnet_6blocks)
    ndf: int = 64  # junyanz --ndf 64
    n_layers_d: int = 3  # junyanz basic D: 70x70 PatchGAN, 3 strided layers
    resolution: int = 128  # blog post: 128x128 inputs
    batch_size: int = 1  # junyanz / blog post: batch 1
    pool_size: int = 50  # junyanz --pool_size 50
    lr: float = 2e-4  # junyanz --lr 0.0002
    beta1: float = 0.5  # junyanz --beta1 0.5
    beta2: float = 0.999  # junyanz: Adam betas (beta1, 0.999)
    n_epochs: int = 100  # junyanz --n_epochs 100 (constant lr)
    n_epochs_decay: int = 100  # junyanz --n_epochs_decay 100 (linear decay to ~0)
    lambda_cycle: float = 10.0  # junyanz --lambda_A = --lambda_B = 10
    lambda_identity: float = 0.5  # junyanz --lambda_identity 0.5 (x lambda_cycle)
    style_layers: tuple[str, ...] = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")  # Johnson et al. 2016
    #: State dict of torchvision vgg16().features; "" = torchvision's file in the torch hub cache.
    #: Read by the train stage (agebench/infra/aux_networks.py), never by the method.
    weights_path: str = ""
    max_steps: int = 0  # 0: no cap (the smoke profile caps training)
    amp_bf16: bool = False  # engineering: bfloat16 autocast
    channels_last: bool = False  # engineering: NHWC layout
    compile: bool = False  # engineering: torch.compile (CUDA only)

    def __post_init__(self) -> None:
        unknown = [name for name in self.style_layers if name not in VGG16_RELU]
        if unknown or not self.style_layers:
            raise ValueError(
                f"style_layers must be a non-empty subset of {sorted(VGG16_RELU)}, got {self.style_layers}"
            )
        if self.resolution % 4:
            raise ValueError(f"resolution must be a multiple of 4, got {self.resolution}")


class CycleGANPerceptual(TwoDomainCycleGAN):
    """junyanz CycleGAN with a VGG-16 Gram (style) identity loss (docs/METHODS.md s.2).

    junyanz calls the networks G_A, G_B, D_B, D_A (see `TwoDomainCycleGAN` for the symbols).
    """

    config_cls = CycleGANPerceptualConfig
    method_name = "cyclegan_perceptual"
    aux_networks = ("vgg16",)
    sample_identity = True

    config: CycleGANPerceptualConfig

    def build(self) -> None:
        super().build()
        c = self.config
        vgg = self.aux.get("vgg16")
        if vgg is None:
            raise ValueError(
                "cyclegan_perceptual needs aux['vgg16']: torchvision vgg16().features with ImageNet weights "
                "(build it with vgg16_features_from_state_dict from the weights file the train stage reads; "
                "see docs/BACKBONES.md). A randomly initialised VGG is never built here."
            )
        if not isinstance(vgg, nn.Sequential) or len(vgg) <= max(VGG16_RELU[n] for n in c.style_layers):
            raise ValueError("aux['vgg16'] must be torchvision's vgg16().features (an nn.Sequential of 31 layers)")
        self.G_AB = ResnetGenerator(ngf=c.ngf, n_blocks=c.n_blocks)
        self.G_BA = ResnetGenerator(ngf=c.ngf, n_blocks=c.n_blocks)
        self.D_A = NLayerDiscriminator(ndf=c.ndf, n_layers=c.n_layers_d)
        self.D_B = NLayerDiscriminator(ndf=c.ndf, n_layers=c.n_layers_d)
        self._set_networks({"G_AB": self.G_AB, "G_BA": self.G_BA, "D_A": self.D_A, "D_B": self.D_B}, "normal", 0.02)
        self.vgg = vgg.to(self.device).eval().requires_grad_(False)
        self._adam(c.lr, (c.beta1, c.beta2))
        decay = LinearDecay(c.n_epochs, c.n_epochs_decay)
        self.sched_G = torch.optim.lr_scheduler.LambdaLR(self.opt_G, decay)
        self.sched_D = torch.optim.lr_scheduler.LambdaLR(self.opt_D, decay)
        # Pools of fakes: fake_A_pool feeds D_A (judges A), fake_B_pool feeds D_B.
        self.fake_A_pool = ImagePool(c.pool_size, new_seed())
        self.fake_B_pool = ImagePool(c.pool_size, new_seed())

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def _stateful(self) -> dict[str, object]:
        return {"opt_G": self.opt_G, "opt_D": self.opt_D, "sched_G": self.sched_G, "sched_D": self.sched_D,
                "fake_A_pool": self.fake_A_pool, "fake_B_pool": self.fake_B_pool}  # fmt: skip

    def epoch_lengths(self, data: TrainData) -> list[int]:
        """Steps in each of the n_epochs + n_epochs_decay epochs (uncapped): ceil(max(|A|, |B|) / batch)."""
        epochs = self.config.n_epochs + self.config.n_epochs_decay
        return [steps_per_epoch(self.domain_sizes(data), self.config.batch_size)] * epochs

    # ---- training ----------------------------------------------------------------------------
    def sample_batch(self, data: TrainData, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """{"A": young, "B": old}, each (batch_size, 3, R, R) float32 in [-1, 1]."""
        return self.sample_pair(data, self.config.resolution, self.config.batch_size, generator)

    def _style(self, generated: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        layers = self.config.style_layers
        with torch.no_grad():
            target = vgg_style_features(self.vgg, real, layers)
        return gram_loss(vgg_style_features(self.vgg, generated, layers), target)

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """One junyanz step: update G_AB and G_BA, then D_A and D_B. Returns every loss term.

        Names (junyanz's in brackets): loss_G_AB = LS(D_Y(G(a)), 1) [G_A], loss_G_BA = LS(D_X(F(b)), 1)
        [G_B]; loss_cycle_A = |F(G(a)) - a|_1, loss_cycle_B = |G(F(b)) - b|_1; loss_idt_A = style(F(a), a),
        loss_idt_B = style(G(b), b) (Gram distance, unweighted); loss_G = the weighted generator total;
        loss_D_A / loss_D_B = 0.5 * (LS(D(real), 1) + LS(D(pooled fake), 0)) of D_X / D_Y.
        """
        c, e = self.config, self.engine
        real_a, real_b = e.inputs(batch["A"]), e.inputs(batch["B"])
        for net in self.modules().values():
            net.train()

        # Generators, with the discriminators frozen.
        g = self._generator_pass(real_a, real_b)
        with e.autocast():
            loss_idt = self._style(g.idt_a, real_a), self._style(g.idt_b, real_b)
        loss_cycle = pixel_loss("mae", g.rec_a, real_a), pixel_loss("mae", g.rec_b, real_b)
        loss_g = (
            g.loss_g_ab
            + g.loss_g_ba
            + c.lambda_cycle * (loss_cycle[0] + loss_cycle[1])
            + c.lambda_cycle * c.lambda_identity * (loss_idt[0] + loss_idt[1])
        )
        self._generator_update(loss_g)

        # Discriminators on real faces and on fakes drawn through the history pools.
        pooled_a, pooled_b = self.fake_A_pool.query(g.fake_a), self.fake_B_pool.query(g.fake_b)
        loss_d = self._discriminator_update(real_a, real_b, pooled_a, pooled_b)
        return self._named_losses(loss_d, g, loss_cycle, loss_idt, loss_g)

    def end_of_epoch(self, epoch: int) -> None:
        """Step junyanz's linear-decay schedules (constant for n_epochs, then linear to ~0)."""
        self.sched_G.step()
        self.sched_D.step()
