"""`age_cgan`: Age-cGAN with identity-preserving latent optimisation (docs/METHODS.md section 3).

Antipov, Baccouche, Dugelay 2017, "Face aging with conditional generative adversarial networks"
(arXiv:1702.01983), as given by the Keras walk-through the project was created from. Networks, losses,
optimiser settings and stage order follow that walk-through; deviations are marked "Deviation:".
The network widths are the walk-through's (`WALKTHROUGH_WIDTHS`) divided by `width_divisor` (default 1:
the walk-through's networks); a profile that narrows them (the cpu profile: 4) trains the same layer
structure with fewer channels and dense units, a stated deviation.

Three stages share one step counter (`num_steps`):
  1. cGAN: G(z, y) and D(x, y) trained with binary cross-entropy (the paper's eq. 1).
  2. Initial latent approximation: the encoder E is trained on generated faces so that
     E(G(z, y)) ~ z, Euclidean loss.
  3. At translate time, per face x of group y_x: z0 = E(x), then
       "ip"    : z* = argmin_z ||FR(x) - FR(G(z, y_x))||_2   (identity-preserving, the paper's method)
       "pixel" : z* = argmin_z ||x - G(z, y_x)||_2             (the paper's pixel-wise comparison)
       "initial": z* = z0
     and the aged face is G(z*, y_target).

Paper symbols -> code: G -> `generator`, D -> `discriminator`, E -> `encoder`, FR -> `aux["face_descriptor"]`,
y -> one-hot of a cgan6 group, z -> (N, 100) latent.

Scheme: cgan6 (0-18, 19-29, 30-39, 40-49, 50-59, 60+). The common tasks are posed in the "pair" scheme
(young = 20-29, old = 50-59); `translate` also accepts those names through `GROUP_FOR_PAIR`: every 20-29
face is in cgan6's 19-29 group, and 50-59 is the same range in both schemes.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import Method, TrainData, uint8_to_float

#: Latent size and number of age groups of the paper.
Z_DIM = 100
NUM_GROUPS = 6
RESOLUTION = 64

#: "pair" scheme names -> the cgan6 group that contains them (20-29 is inside 19-29; 50-59 is identical).
GROUP_FOR_PAIR: dict[str, str] = {"young": "19-29", "old": "50-59"}

LatentMode = Literal["initial", "pixel", "ip"]
LATENT_MODES: tuple[str, ...] = ("initial", "pixel", "ip")

# Keras BatchNormalization defaults: momentum 0.99 (torch's convention is 1 - Keras's, so 0.01), eps 1e-3.
_KERAS_BN_MOMENTUM = 0.01
_KERAS_BN_EPS = 1e-3
# The walk-through's generator conv blocks use BatchNormalization(momentum=0.8): 0.2 in torch's convention.
_G_CONV_BN_MOMENTUM = 0.2

#: The walk-through's network widths (docs/METHODS.md s.3): G's dense layer after concat(z, y) and its channels
#: at 8x8 (then 128 and 64 at 16 and 32 px); D's first conv (then 128, 256, 512); E's first conv (then 64, 128,
#: 256) and its dense layer before the 100-d latent. Each stage keeps the source's ratio to the one before, so
#: one divisor narrows every network alike.
WALKTHROUGH_WIDTHS: dict[str, int] = dict(g_dense=2048, g_channels=256, d_channels=64, e_channels=32, e_dense=4096)


@dataclasses.dataclass(frozen=True)
class AgeCganConfig:
    """`age_cgan:` hyper-parameters; defaults are the source's (walk-through / paper) unless noted."""

    #: Every width of `WALKTHROUGH_WIDTHS` is divided by this (1: the walk-through's networks). Deviation where
    #: a profile sets it (the cpu profile: 4): the same layers with fewer channels and dense units.
    width_divisor: int = 1
    #: Faces per cGAN step. Deviation (engineering, docs/METHODS.md preamble): the walk-through uses 2.
    batch_size: int = 64
    #: Passes over the labelled training faces in stage 1 (paper: about 100).
    cgan_epochs: int = 100
    #: Adam for G and D, walk-through: Adam(lr=0.0002, beta_1=0.5, beta_2=0.999, epsilon=10e-8).
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    #: The walk-through writes epsilon=10e-8, which is 1e-7.
    adam_eps: float = 1e-7
    #: One-sided label smoothing of the walk-through (real targets 0.9; its fake targets are zeros * 0.1 = 0).
    real_label: float = 0.9
    #: Draw D's fakes with G in inference mode (dropout off, BN running statistics), as the walk-through's
    #: `generator.predict_on_batch` does; false draws them in training mode (the usual PyTorch practice).
    fakes_in_eval_mode: bool = True
    #: Stage-2 steps. Walk-through: 500 epochs over 5,000 (z, y) at batch 2 = 2.5M samples;
    #: 40,000 x 64 ~ 2.56M. Deviation: fresh (z, y) every step instead of a fixed pool of 5,000.
    encoder_steps: int = 40000
    encoder_batch_size: int = 64
    #: Keras `optimizer='adam'` defaults for the encoder: lr 1e-3, betas (0.9, 0.999), epsilon 1e-7.
    encoder_lr: float = 1e-3
    #: Latent used by `translate`: "ip" (the paper's method), "pixel" or "initial" (z0 = E(x)).
    latent_mode: LatentMode = "ip"
    #: Iterations of the per-face latent optimisation (stage 3).
    latent_steps: int = 100
    #: Adam step size for z (ignored by "lbfgs", whose strong-Wolfe line search starts at a unit step).
    latent_lr: float = 0.01
    #: "adam": all faces of a batch at once (Adam is element-wise, so faces stay independent);
    #: "lbfgs": torch's L-BFGS run face by face (its line search couples everything it optimises jointly).
    latent_optimizer: Literal["adam", "lbfgs"] = "adam"
    #: Cap on stage 1 + 2 steps (0: none; the smoke profile). Half the cap (at most) goes to stage 2.
    max_steps: int = 0
    #: bf16 autocast for the training forward passes (CUDA only; ignored on CPU).
    amp_bf16: bool = False
    #: torch.compile the three networks for training (CUDA only; ignored on CPU).
    compile: bool = False

    def __post_init__(self) -> None:
        # BatchNorm1d after the dense layers needs more than one value per feature in training mode.
        if self.batch_size < 2 or self.encoder_batch_size < 2:
            raise ValueError(
                f"batch_size and encoder_batch_size must be >= 2, got {self.batch_size}, {self.encoder_batch_size}"
            )
        # Every width must stay a whole number of units, and G halves its channels twice (256 -> 128 -> 64).
        divisors = [
            d
            for d in range(1, 33)
            if all(w % (4 * d if k == "g_channels" else d) == 0 for k, w in WALKTHROUGH_WIDTHS.items())
        ]
        if self.width_divisor not in divisors:
            raise ValueError(
                f"width_divisor must be one of {divisors} (it divides every walk-through width), "
                f"got {self.width_divisor}"
            )
        for name in ("lr", "encoder_lr", "latent_lr", "adam_eps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0.0 < self.real_label <= 1.0:
            raise ValueError(f"real_label must be in (0, 1], got {self.real_label}")
        for name in ("cgan_epochs", "encoder_steps", "latent_steps", "max_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @property
    def widths(self) -> dict[str, int]:
        """The networks' widths: `WALKTHROUGH_WIDTHS` divided by `width_divisor`."""
        return {name: width // self.width_divisor for name, width in WALKTHROUGH_WIDTHS.items()}


# ------------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------------


def _keras_same_conv(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Sequential:
    """Conv2d with Keras/TF "same" padding for even inputs: a stride-2 conv pads one more pixel at the
    bottom/right than at the top/left, which torch's symmetric `padding` cannot express."""
    total = max(kernel - stride, 0)
    before, after = total // 2, total - total // 2
    return nn.Sequential(nn.ZeroPad2d((before, after, before, after)), nn.Conv2d(c_in, c_out, kernel, stride=stride))


def _keras_init(module: nn.Module) -> None:
    """Keras defaults: glorot_uniform kernels, zero biases (BN: gamma 1, beta 0, as torch)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)


def labels_to_onehot(labels: torch.Tensor) -> torch.Tensor:
    """(N,) int64 group index in [0, 6) -> (N, 6) float32 one-hot."""
    return F.one_hot(labels, NUM_GROUPS).float()


class Generator(nn.Module):
    """G(z, y): (N, 100) float latent + (N, 6) float one-hot -> (N, 3, 64, 64) float in [-1, 1].

    Walk-through order: Dense 2048 -> LeakyReLU 0.2 -> Dropout 0.2 -> Dense 256*8*8 -> BN -> LeakyReLU ->
    Dropout -> 8x8x256 -> [Up x2, Conv5 128, BN(0.8), LeakyReLU] -> [Up x2, Conv5 64, BN(0.8), LeakyReLU]
    -> [Up x2, Conv5 3] -> tanh. The last block has no BN/LeakyReLU: tanh is the output activation.
    `dense` (2048) and `channels` (256; the conv blocks then have channels / 2 and channels / 4) set the
    widths; the defaults are the walk-through's.
    """

    def __init__(self, dense: int = 2048, channels: int = 256) -> None:
        super().__init__()
        self.channels = channels
        self.fc = nn.Sequential(
            nn.Linear(Z_DIM + NUM_GROUPS, dense),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.2),
            nn.Linear(dense, channels * 8 * 8),
            nn.BatchNorm1d(channels * 8 * 8, eps=_KERAS_BN_EPS, momentum=_KERAS_BN_MOMENTUM),
            nn.LeakyReLU(0.2),
            nn.Dropout(0.2),
        )
        blocks: list[nn.Module] = []
        for c_in, c_out in ((channels, channels // 2), (channels // 2, channels // 4)):
            blocks += [
                nn.Upsample(scale_factor=2, mode="nearest"),  # Keras UpSampling2D default
                nn.Conv2d(c_in, c_out, 5, padding=2),
                # Keras BatchNormalization(momentum=0.8) == torch momentum 0.2 (torch weights the new batch).
                nn.BatchNorm2d(c_out, eps=_KERAS_BN_EPS, momentum=_G_CONV_BN_MOMENTUM),
                nn.LeakyReLU(0.2),
            ]
        blocks += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(channels // 4, 3, 5, padding=2), nn.Tanh()]
        self.up = nn.Sequential(*blocks)
        _keras_init(self)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, y], dim=1))
        # Keras reshapes to (8, 8, 256) channels-last; channels-first is the same up to a fixed permutation
        # of the dense layer's outputs, i.e. the same function class.
        return self.up(h.view(-1, self.channels, 8, 8))


class Discriminator(nn.Module):
    """D(x, y): (N, 3, 64, 64) float in [-1, 1] + (N, 6) float one-hot -> (N, 1) float LOGITS.

    The walk-through ends in Dense 1 sigmoid trained with binary cross-entropy; we return the logit and
    use `binary_cross_entropy_with_logits`, the same loss computed without the sigmoid's saturation.
    `channels` (64) is the first conv's width; the next three have 2x, 4x and 8x (the walk-through's).
    """

    def __init__(self, channels: int = 64) -> None:
        super().__init__()
        c = channels
        self.stem = nn.Sequential(_keras_same_conv(3, c, 3, 2), nn.LeakyReLU(0.2))
        layers: list[nn.Module] = []
        for c_in, c_out in ((c + NUM_GROUPS, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c)):
            layers += [
                _keras_same_conv(c_in, c_out, 3, 2),
                nn.BatchNorm2d(c_out, eps=_KERAS_BN_EPS, momentum=_KERAS_BN_MOMENTUM),
                nn.LeakyReLU(0.2),
            ]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(8 * c * 4 * 4, 1)
        _keras_init(self)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        # The label enters as 6 channels tiled over the 32x32 feature map (walk-through `expand_label_input`).
        tiled = y[:, :, None, None].expand(-1, -1, h.shape[2], h.shape[3]).to(h.dtype)
        h = self.body(torch.cat([h, tiled], dim=1))
        return self.head(h.flatten(1))


class Encoder(nn.Module):
    """E(x): (N, 3, 64, 64) float in [-1, 1] -> (N, 100) float latent.

    Conv5 s2 32 (no BN), 64, 128, 256 (BN), LeakyReLU 0.2 each; flatten; Dense 4096 + BN + LeakyReLU;
    Dense 100. `channels` (32) is the first conv's width, the next three have 2x, 4x, 8x; `dense` (4096)
    is the hidden dense layer's. The defaults are the walk-through's.
    """

    def __init__(self, channels: int = 32, dense: int = 4096) -> None:
        super().__init__()
        c = channels
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(((3, c), (c, 2 * c), (2 * c, 4 * c), (4 * c, 8 * c))):
            layers.append(_keras_same_conv(c_in, c_out, 5, 2))
            if i > 0:
                layers.append(nn.BatchNorm2d(c_out, eps=_KERAS_BN_EPS, momentum=_KERAS_BN_MOMENTUM))
            layers.append(nn.LeakyReLU(0.2))
        self.conv = nn.Sequential(*layers)
        self.fc = nn.Sequential(
            nn.Linear(8 * c * 4 * 4, dense),
            nn.BatchNorm1d(dense, eps=_KERAS_BN_EPS, momentum=_KERAS_BN_MOMENTUM),
            nn.LeakyReLU(0.2),
            nn.Linear(dense, Z_DIM),
        )
        _keras_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).flatten(1))


# ------------------------------------------------------------------------------------------------
# Method
# ------------------------------------------------------------------------------------------------


class AgeCgan(Method):
    """Age-cGAN: conditional GAN + encoder + per-face latent optimisation (identity-preserving by default).

    `aux["face_descriptor"]` (needed only for latent mode "ip") is an nn.Module with
    `forward(images (N, 3, H, W) float in [-1, 1], theta (N, 2, 3)) -> (N, 128)` (differentiable) and
    `theta_for(images (N, 3, H, W) float in [-1, 1]) -> (N, 2, 3)` (alignment, not differentiated).
    """

    config_cls = AgeCganConfig
    scheme = "cgan6"
    aux_networks = ("face_descriptor",)
    # The identity-preserving latent optimisation minimises dlib's descriptor distance: dlib's metrics
    # of this method are not an independent judgement (the report flags them).
    uses_scoring_networks = ("dlib",)
    extra_tables: ClassVar[Mapping[str, tuple[str, ...]]] = {"reconstruction": LATENT_MODES}
    group_for_pair = GROUP_FOR_PAIR

    def __init__(
        self,
        config: AgeCganConfig,
        group_names: tuple[str, ...],
        device: torch.device,
        aux: dict[str, nn.Module] | None = None,
    ) -> None:
        super().__init__(config, group_names, device, aux)
        if len(self.group_names) != NUM_GROUPS:
            raise ValueError(f"age_cgan needs the {NUM_GROUPS} cgan6 groups, got {self.group_names}")
        w = config.widths
        self.generator = Generator(w["g_dense"], w["g_channels"]).to(device)
        self.discriminator = Discriminator(w["d_channels"]).to(device)
        self.encoder = Encoder(w["e_channels"], w["e_dense"]).to(device)
        betas = (config.beta1, config.beta2)
        # fused: one kernel per parameter group (4x faster than foreach on CPU for G's 35M parameters).
        adam = dict(eps=config.adam_eps, betas=betas, fused=True)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=config.lr, **adam)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=config.lr, **adam)
        self.opt_e = torch.optim.Adam(
            self.encoder.parameters(), lr=config.encoder_lr, betas=(0.9, 0.999), eps=1e-7, fused=True
        )
        self.cgan_steps_done = 0
        self.encoder_steps_done = 0
        # (inputs, source group, z*) of the last `translate`, so `round_trip` reuses the latent it found.
        self._last_latent: tuple[torch.Tensor, str, torch.Tensor] | None = None
        cuda = torch.device(device).type == "cuda"
        self._amp = cuda and config.amp_bf16
        # Compiled wrappers share parameters with the plain modules; state_dict uses the plain ones.
        wrap = torch.compile if (cuda and config.compile) else (lambda m: m)
        self._g_train = wrap(self.generator)
        self._d_train = wrap(self.discriminator)
        self._e_train = wrap(self.encoder)

    # ---- groups ----------------------------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return RESOLUTION

    def group_index(self, group: str) -> int:
        """Index of a cgan6 group name, or of the cgan6 group holding a "pair" group (`GROUP_FOR_PAIR`)."""
        name = self.group_for_pair.get(group, group) if group not in self.group_names else group
        if name not in self.group_names:
            valid = ", ".join([*self.group_names, *self.group_for_pair])
            raise ValueError(f"age_cgan: unknown age group {group!r}; valid groups: {valid}")
        return self.group_names.index(name)

    def supported_tasks(self) -> list[tuple[str, str]]:
        """Every ordered pair of distinct cgan6 groups (30); `translate` also accepts "pair" names."""
        return [(s, t) for s in self.group_names for t in self.group_names if s != t]

    def modules(self) -> dict[str, nn.Module]:
        return {"generator": self.generator, "discriminator": self.discriminator, "encoder": self.encoder}

    # ---- schedule --------------------------------------------------------------------------------
    def stage_lengths(self, data: TrainData) -> tuple[int, int]:
        """(cGAN steps, encoder steps) for `data`, after the `max_steps` cap."""
        labelled = int((data.groups[self.scheme] >= 0).sum())
        cgan = self.config.cgan_epochs * (labelled // self.config.batch_size) if labelled else 0
        enc = self.config.encoder_steps
        cap = self.config.max_steps
        if cap and cgan + enc > cap:
            enc = min(enc, cap // 2)
            cgan = min(cgan, cap - enc)
        return cgan, enc

    def num_steps(self, data: TrainData) -> int:
        return sum(self.stage_lengths(data))

    def sample_batch(self, data: TrainData, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Stage 1 (step < cGAN steps): real faces + labels, noise for D's fakes and for G's step, random
        labels for G's step. Stage 2: z and labels only.

        Returns (on the data's device) stage 1: images (B, 3, 64, 64) float in [-1, 1], labels (B,) int64,
        z_fake (B, 100), z_gen (B, 100), labels_gen (B,) int64; stage 2: z (B, 100), labels (B,) int64.
        """
        cgan_steps, _ = self.stage_lengths(data)
        g_dev = generator.device
        if step >= cgan_steps:
            b = self.config.encoder_batch_size
            z = torch.randn(b, Z_DIM, generator=generator, device=g_dev)
            labels = torch.randint(0, NUM_GROUPS, (b,), generator=generator, device=g_dev)
            dev = data.groups[self.scheme].device
            return {"z": z.to(dev), "labels": labels.to(dev)}
        if RESOLUTION not in data.images:
            raise ValueError(f"age_cgan trains at {RESOLUTION}x{RESOLUTION}: add {RESOLUTION} to data.resolutions")
        groups = data.groups[self.scheme]
        labelled = torch.nonzero(groups >= 0, as_tuple=False).flatten()  # faces in no cgan6 group are skipped
        b = self.config.batch_size
        pick = torch.randperm(labelled.numel(), generator=generator, device=g_dev)[:b].to(labelled.device)
        idx = labelled[pick]
        z_fake = torch.randn(b, Z_DIM, generator=generator, device=g_dev)
        z_gen = torch.randn(b, Z_DIM, generator=generator, device=g_dev)
        labels_gen = torch.randint(0, NUM_GROUPS, (b,), generator=generator, device=g_dev)
        dev = groups.device
        return {
            "images": uint8_to_float(data.images[RESOLUTION][idx]),
            "labels": groups[idx],
            "z_fake": z_fake.to(dev),
            "z_gen": z_gen.to(dev),
            "labels_gen": labels_gen.to(dev),
        }

    # ---- training --------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self._amp:
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """One step of stage 1 (batch has "images") or stage 2. Loss names -> paper symbols:
        loss_D = (loss_D_real + loss_D_fake) / 2, D's binary cross-entropy of eq. (1); loss_G, G's
        adversarial BCE -log D(G(z, y), y); loss_E, mean ||E(G(z, y)) - z||_2 (initial latent approximation).
        """
        if "images" in batch:
            return self._cgan_step(batch)
        return self._encoder_step(batch)

    def _cgan_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        real = batch["images"].to(self.device)
        y = labels_to_onehot(batch["labels"].to(self.device))
        y_gen = labels_to_onehot(batch["labels_gen"].to(self.device))
        self.generator.train()
        self.discriminator.train()

        # D's fakes carry the real faces' labels, drawn without gradient like Keras's predict_on_batch.
        with torch.no_grad(), self._autocast():
            if self.config.fakes_in_eval_mode:
                self.generator.eval()
            fake = self._g_train(batch["z_fake"].to(self.device), y).float()
            self.generator.train()

        # Two separate D updates (real, then fake), as the walk-through's two `train_on_batch` calls:
        # each batch gets its own BN statistics and its own Adam step.
        losses = {}
        for name, images, target in (("real", real, self.config.real_label), ("fake", fake, 0.0)):
            with self._autocast():
                logits = self._d_train(images, y).float()
            loss = F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))
            self.opt_d.zero_grad(set_to_none=True)
            loss.backward()
            self.opt_d.step()
            losses[name] = loss.detach()

        # G through the frozen D with target 1 (the walk-through's adversarial model). D's BN uses batch
        # statistics as Keras does in training; its running statistics are never used (D is only trained).
        self.discriminator.requires_grad_(False)
        try:
            with self._autocast():
                logits = self._d_train(self._g_train(batch["z_gen"].to(self.device), y_gen), y_gen).float()
            loss_g = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            self.opt_g.zero_grad(set_to_none=True)
            loss_g.backward()
            self.opt_g.step()
        finally:
            self.discriminator.requires_grad_(True)
        self.cgan_steps_done += 1
        return {
            "loss_D": float(0.5 * (losses["real"] + losses["fake"])),
            "loss_D_real": float(losses["real"]),
            "loss_D_fake": float(losses["fake"]),
            "loss_G": float(loss_g.detach()),
        }

    def _encoder_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        z = batch["z"].to(self.device)
        y = labels_to_onehot(batch["labels"].to(self.device))
        # The walk-through generates with `predict_on_batch`: G in inference mode, not updated.
        self.generator.eval()
        self.encoder.train()
        with torch.no_grad(), self._autocast():
            images = self._g_train(z, y).float()
        with self._autocast():
            z_hat = self._e_train(images).float()
        # Keras `euclidean_distance_loss`: per-sample L2 norm, averaged over the batch.
        loss = (z_hat - z).pow(2).sum(dim=1).sqrt().mean()
        self.opt_e.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_e.step()
        self.encoder_steps_done += 1
        return {"loss_E": float(loss.detach())}

    def samples(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Stage 1: real faces and G(z_fake, y); stage 2: G(z, y) and its re-generation G(E(G(z, y)), y)."""
        self.generator.eval()
        self.encoder.eval()
        with torch.no_grad():
            if "images" in batch:
                y = labels_to_onehot(batch["labels"].to(self.device))
                return {"real": batch["images"], "fake": self.generator(batch["z_fake"].to(self.device), y)}
            y = labels_to_onehot(batch["labels"].to(self.device))
            generated = self.generator(batch["z"].to(self.device), y)
            return {"generated": generated, "reencoded": self.generator(self.encoder(generated), y)}

    # ---- inference -------------------------------------------------------------------------------
    def _onehot(self, group: str, n: int) -> torch.Tensor:
        labels = torch.full((n,), self.group_index(group), dtype=torch.int64, device=self.device)
        return labels_to_onehot(labels)

    def _face_descriptor(self) -> nn.Module:
        fr = self.aux.get("face_descriptor")
        if fr is None:
            raise ValueError(
                "age_cgan latent mode 'ip' needs aux['face_descriptor'] (metrics.identity.FaceDescriptor); "
                "pass it in, or set age_cgan.latent_mode to 'pixel' or 'initial'"
            )
        # Eval mode keeps FR per-sample (no batch statistics), so faces do not interact.
        return fr.eval()

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """z0 = E(x): (N, 3, 64, 64) float in [-1, 1] -> (N, 100) float32."""
        self.encoder.eval()
        with torch.no_grad():
            return self.encoder(images.to(self.device)).float()

    def generate(self, z: torch.Tensor, group: str) -> torch.Tensor:
        """G(z, y_group): (N, 100) float -> (N, 3, 64, 64) float32 in [-1, 1]."""
        self.generator.eval()
        with torch.no_grad():
            return self.generator(z.to(self.device), self._onehot(group, z.shape[0])).float()

    def _objective(self, images: torch.Tensor, group: str, mode: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """Per-face objective z (N, 100) -> (N,) for `mode` ("pixel" or "ip"); FR targets computed once."""
        self.generator.eval()
        y = self._onehot(group, images.shape[0])
        if mode == "pixel":
            target = images.flatten(1)
            return lambda z: (self.generator(z, y).flatten(1) - target).norm(dim=1)
        if mode == "ip":
            fr = self._face_descriptor()
            with torch.no_grad():
                # Alignment from the REAL face, reused for G(z, y_x): both are 64x64 and aligned the same.
                theta = fr.theta_for(images)
                target = fr(images, theta).float()
            return lambda z: (fr(self.generator(z, y), theta).float() - target).norm(dim=1)
        raise ValueError(f"age_cgan: latent mode {mode!r} has no objective; valid modes: pixel, ip")

    def latent_objective(self, images: torch.Tensor, z: torch.Tensor, group: str, mode: str) -> torch.Tensor:
        """Per-face objective of the latent optimisation at `z` (no gradient).

        Args:
            images: (N, 3, 64, 64) float in [-1, 1], the real faces x of `group`.
            z: (N, 100) float latents.
            mode: "pixel" (||x - G(z, y)||_2 over all pixels) or "ip" (||FR(x) - FR(G(z, y))||_2).
        Returns:
            (N,) float32.
        """
        images = images.to(self.device)
        f = self._objective(images, group, mode)
        with torch.no_grad():
            return f(z.to(self.device))

    def optimise_latent(self, images: torch.Tensor, group: str, mode: str | None = None) -> torch.Tensor:
        """z* for each face: z0 = E(x), then minimise the `mode` objective with y = y_group.

        Faces are independent: the batch objective is the sum of per-face objectives, Adam is element-wise,
        and G/E/FR run in eval mode; the best iterate of each face is returned (Adam is not monotone), so
        its objective never exceeds the initial one. Deterministic (no randomness).

        Args:
            images: (N, 3, 64, 64) float in [-1, 1], faces of `group` (cgan6 or "pair" name).
            mode: "initial" | "pixel" | "ip" (None: `config.latent_mode`).
        Returns:
            (N, 100) float32.
        """
        mode = mode or self.config.latent_mode
        if mode not in LATENT_MODES:
            raise ValueError(f"age_cgan: unknown latent mode {mode!r}; valid modes: {', '.join(LATENT_MODES)}")
        # The stages may call this under no_grad or inference_mode; the optimisation needs autograd, and
        # tensors made in inference mode cannot take part in it, hence the clone.
        with torch.inference_mode(False), torch.enable_grad():
            images = images.to(self.device).float().clone()
            z0 = self.encode(images).clone()
            if mode == "initial" or self.config.latent_steps == 0 or images.shape[0] == 0:
                return z0
            if self.config.latent_optimizer == "lbfgs":
                return torch.cat(
                    [
                        self._lbfgs(self._objective(images[i : i + 1], group, mode), z0[i : i + 1])
                        for i in range(len(z0))
                    ]
                )
            return self._adam(self._objective(images, group, mode), z0)

    def _adam(self, f: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor) -> torch.Tensor:
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.config.latent_lr)
        best_z, best = z0.clone(), torch.full((z0.shape[0],), float("inf"), device=z0.device)
        for it in range(self.config.latent_steps + 1):
            with torch.enable_grad():
                loss = f(z)
            with torch.no_grad():
                better = loss.detach() < best
                best = torch.where(better, loss.detach(), best)
                best_z[better] = z.detach()[better]
            if it == self.config.latent_steps:
                break
            # Only dz: the networks' parameters are not differentiated.
            (z.grad,) = torch.autograd.grad(loss.sum(), z)
            opt.step()
        return best_z

    def _lbfgs(self, f: Callable[[torch.Tensor], torch.Tensor], z0: torch.Tensor) -> torch.Tensor:
        z = z0.clone().requires_grad_(True)
        opt = torch.optim.LBFGS([z], lr=1.0, max_iter=self.config.latent_steps, line_search_fn="strong_wolfe")

        def closure() -> torch.Tensor:
            with torch.enable_grad():
                loss = f(z).sum()
                (z.grad,) = torch.autograd.grad(loss, z)
            return loss.detach()

        with torch.no_grad():
            start = f(z0).sum()
            opt.step(closure)
            end = f(z.detach()).sum()
        return z.detach() if end <= start else z0.clone()

    def reconstruct(self, images: torch.Tensor, group: str, mode: str | None = None) -> torch.Tensor:
        """G(z_mode, y_group): (N, 3, 64, 64) float in [-1, 1] -> (N, 3, 64, 64) float32 in [-1, 1].

        The paper's reconstruction table: "initial" (z0 = E(x)), "pixel", "ip".
        """
        return self.generate(self.optimise_latent(images, group, mode), group)

    def translate(self, images: torch.Tensor, source: str, target: str) -> torch.Tensor:
        """G(z*, y_target) with z* optimised for y_source (`config.latent_mode`); cgan6 or "pair" names."""
        self.group_index(target)  # fail before the optimisation on a bad name
        z = self.optimise_latent(images, source)
        self._last_latent = (images, source, z)
        return self.generate(z, target)

    def round_trip(self, images: torch.Tensor, fake: torch.Tensor, source: str, target: str) -> torch.Tensor:
        """G(z*, y_source): back through the latent found for the INPUT (PROTOCOL.md s.4), not a second
        inversion of the output. z* is the one the last `translate` of these same `images` found (the
        optimisation is deterministic, so recomputing it gives the same latent)."""
        cached, self._last_latent = self._last_latent, None
        if cached is not None and cached[0] is images and cached[1] == source:
            z = cached[2]
        else:
            z = self.optimise_latent(images, source)
        return self.generate(z, source)

    def extra_images(self, table: str, images: torch.Tensor, source: str) -> dict[str, torch.Tensor]:
        """ "reconstruction": the paper's table, G(z_mode, y_source) for each latent mode."""
        if table != "reconstruction":
            return super().extra_images(table, images, source)
        return {mode: self.reconstruct(images, source, mode) for mode in LATENT_MODES}

    # ---- state -----------------------------------------------------------------------------------
    _STATE_KEYS = (
        "generator",
        "discriminator",
        "encoder",
        "opt_g",
        "opt_d",
        "opt_e",
        "cgan_steps_done",
        "encoder_steps_done",
    )

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers and stage progress (deep copies). Dropout draws from torch's global RNG,
        which the train stage's checkpoint carries."""
        return copy.deepcopy(
            {
                "generator": self.generator.state_dict(),
                "discriminator": self.discriminator.state_dict(),
                "encoder": self.encoder.state_dict(),
                "opt_g": self.opt_g.state_dict(),
                "opt_d": self.opt_d.state_dict(),
                "opt_e": self.opt_e.state_dict(),
                "cgan_steps_done": self.cgan_steps_done,
                "encoder_steps_done": self.encoder_steps_done,
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self._STATE_KEYS):
            raise ValueError(f"age_cgan state has keys {sorted(state)}, expected {sorted(self._STATE_KEYS)}")
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.encoder.load_state_dict(state["encoder"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        self.opt_e.load_state_dict(state["opt_e"])
        self.cgan_steps_done = int(state["cgan_steps_done"])
        self.encoder_steps_done = int(state["encoder_steps_done"])
