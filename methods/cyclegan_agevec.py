"""`cyclegan_agevec`: CycleGAN conditioned on a decade vector, "dynamic aging" (docs/METHODS.md s.4).

Source: Liu, "As Time Goes by: Dynamic Face Aging Method Using CycleGAN". Scheme "decades": 10s .. 60s
(10-19 .. 60-69); ONE generator maps a face to any decade.

Networks (junyanz/Johnson CycleGAN baseline):
- G(x, t): the ResNet generator whose bottleneck features (after the encoder, before the residual
  transformation blocks) are concatenated with the 6-d one-hot decade vector tiled to the
  bottleneck's size; a pad-conv3-InstanceNorm-ReLU layer maps the 4ngf + 6 channels back to 4ngf
  before the residual blocks; the decoder is unchanged.
- D(y, t): the 70x70 PatchGAN whose input is the image concatenated with the tiled one-hot of the
  decade it should be a face of (3 + 6 channels), so it judges "a real face of decade t".
- Both the `fuse` layer and the conditioned discriminator go beyond Liu's description (which
  conditions the generator only); `fuse: false` and `conditioned_discriminator: false` switch them
  off (defaults: on, as the benchmark's published numbers were made).

Training (designed here; the paper gives the architecture and seed hyper-parameters, not the loop):
- Each step draws, per sample i, a source decade s_i uniformly over the six decades, a target decade
  t_i uniformly over the five others, a face x_i of decade s_i and a real face y_i of decade t_i
  (uniform decade sampling balances UTKFace's very unequal decades).
- Generator (D frozen): fake = G(x, t), rec = G(fake, s), idt = G(y, t);
  L_G = LS(D(fake, t), 1) + lambda_cycle * |rec - x|_1 + lambda_cycle * lambda_identity * |idt - y|_1,
  i.e. CycleGAN's adversarial, cycle and identity terms with the two mappings G(., t) and G(., s)
  of the one conditioned generator.
- Discriminator: L_D = 0.5 * (LS(D(y, t), 1) + LS(D(pool(fake, t)), 0)). The history pool of 50
  stores the discriminator's input (the fake image with its tiled target vector), so an old fake
  is always judged against the decade it was made for.
- SGD lr 0.002 (seed; momentum 0), or Adam as the option; lr constant (the seed gives no schedule).
Steps per epoch = ceil(max decade size / batch), junyanz's max(|A|, |B|) over the six domains.
Faces are drawn uniformly with replacement within a decade and flipped left-right at random.

`feature_maps(images, target)` exposes the generator's intermediate maps through forward hooks that
exist only for that one call (the paper visualises them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import TrainData
from methods.blocks import (
    ImagePool,
    NLayerDiscriminator,
    ResnetGenerator,
    eval_mode,
    group_indices,
    lsgan_loss,
    new_seed,
    pixel_loss,
    random_choice,
    random_faces,
    set_requires_grad,
    steps_per_epoch,
    tile,
)
from methods.cyclegan_base import CycleGANFamily


@dataclasses.dataclass(frozen=True)
class CycleGANAgeVecConfig:
    """`cyclegan_agevec:` docs/METHODS.md s.4 (seed values of Liu's paper; CycleGAN defaults elsewhere)."""

    ngf: int = 64  # CycleGAN/junyanz --ngf 64
    n_blocks: int = 6  # CycleGAN paper: 6 residual blocks at 128x128
    ndf: int = 64  # junyanz --ndf 64
    n_layers_d: int = 3  # 70x70 PatchGAN
    resolution: int = 128  # Liu: 128x128
    batch_size: int = 1  # CycleGAN/junyanz batch 1
    epochs: int = 50  # Liu: 50 epochs
    optimizer: Literal["sgd", "adam"] = "sgd"  # Liu: SGD (Adam is the usual CycleGAN choice)
    lr: float = 0.002  # Liu: lr 0.002
    momentum: float = 0.0  # SGD momentum (Liu gives none)
    beta1: float = 0.5  # Adam only: junyanz --beta1 0.5
    beta2: float = 0.999  # Adam only: junyanz
    pool_size: int = 50  # CycleGAN image pool of 50
    lambda_cycle: float = 10.0  # CycleGAN lambda = 10
    lambda_identity: float = 0.5  # junyanz --lambda_identity 0.5 (x lambda_cycle)
    #: Beyond Liu's description (which conditions the generator only): the discriminator also sees the
    #: target decade (image + tiled one-hot, 3 + 6 channels). False: a plain 3-channel PatchGAN.
    conditioned_discriminator: bool = True
    #: Beyond Liu's description: a pad-conv3-norm-ReLU `fuse` layer maps the concatenated 4ngf + 6
    #: channels back to 4ngf. False: the residual blocks and the decoder's first layer take 4ngf + 6.
    fuse: bool = True
    max_steps: int = 0  # 0: no cap (the smoke profile caps training)
    amp_bf16: bool = False  # engineering: bfloat16 autocast
    channels_last: bool = False  # engineering: NHWC layout
    compile: bool = False  # engineering: torch.compile (CUDA only)

    def __post_init__(self) -> None:
        if self.resolution % 4:
            raise ValueError(f"resolution must be a multiple of 4, got {self.resolution}")


class CycleGANAgeVec(CycleGANFamily):
    """One decade-conditioned CycleGAN generator for every decade pair (docs/METHODS.md s.4).

    Code names -> paper symbols: G(x, t) is both CycleGAN mappings (G: s -> t and F: t -> s are
    G(., t) and G(., s)); D(y, t) is the decade-conditioned discriminator (D_X and D_Y in one; D(y)
    when `conditioned_discriminator` is off).
    """

    config_cls = CycleGANAgeVecConfig
    method_name = "cyclegan_agevec"
    scheme = "decades"

    config: CycleGANAgeVecConfig

    def build(self) -> None:
        super().build()
        if len(self.group_names) < 2:
            raise ValueError(f"cyclegan_agevec needs at least two decades, got {self.group_names}")
        c, k = self.config, len(self.group_names)
        self.G = ResnetGenerator(ngf=c.ngf, n_blocks=c.n_blocks, cond_dim=k, fuse=c.fuse)
        d_in = 3 + k if c.conditioned_discriminator else 3
        self.D = NLayerDiscriminator(in_channels=d_in, ndf=c.ndf, n_layers=c.n_layers_d)
        self._set_networks({"G": self.G, "D": self.D}, "normal", 0.02)
        self._g, self._d = self._run["G"], self._run["D"]
        if c.optimizer == "sgd":
            self.opt_G = torch.optim.SGD(self.G.parameters(), lr=c.lr, momentum=c.momentum)
            self.opt_D = torch.optim.SGD(self.D.parameters(), lr=c.lr, momentum=c.momentum)
        else:
            self.opt_G = torch.optim.Adam(self.G.parameters(), lr=c.lr, betas=(c.beta1, c.beta2))
            self.opt_D = torch.optim.Adam(self.D.parameters(), lr=c.lr, betas=(c.beta1, c.beta2))
        self.pool = ImagePool(c.pool_size, new_seed())

    # ---- what the stages ask -----------------------------------------------------------------
    @property
    def resolution(self) -> int:
        return self.config.resolution

    def _stateful(self) -> dict[str, object]:
        return {"opt_G": self.opt_G, "opt_D": self.opt_D, "pool": self.pool}

    def epoch_lengths(self, data: TrainData) -> list[int]:
        """Steps in each of the `epochs` epochs (uncapped): ceil(max decade size / batch)."""
        return [steps_per_epoch(self.group_sizes(data), self.config.batch_size)] * self.config.epochs

    def one_hot(self, groups: torch.Tensor) -> torch.Tensor:
        """(N,) int64 decade indices -> (N, K) float32 one-hot on the method's device."""
        return F.one_hot(groups.to(self.device), len(self.group_names)).float()

    def _index(self, group: str) -> int:
        if group not in self.group_names:
            raise ValueError(f"unknown decade {group!r}; valid: {', '.join(self.group_names)}")
        return self.group_names.index(group)

    def _d_input(self, images: torch.Tensor, vec: torch.Tensor) -> torch.Tensor:
        """D's input: (N, 3, R, R) images with their (N, K) decade vectors tiled on (N, 3 + K, R, R), or the
        images alone when the discriminator is not conditioned."""
        if not self.config.conditioned_discriminator:
            return images
        return torch.cat([images, tile(vec, images.shape[-2:]).to(images.dtype)], dim=1)

    # ---- training ----------------------------------------------------------------------------
    def sample_batch(self, data: TrainData, step: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """{"x": faces of the source decades, "y": real faces of the target decades, each (B, 3, R, R)
        float32 in [-1, 1]; "source", "target": (B,) int64 decade indices, target != source}."""
        k, b, r = len(self.group_names), self.config.batch_size, self.config.resolution
        source = random_choice(k, b, generator)
        target = (source + 1 + random_choice(k - 1, b, generator)) % k
        pools = [group_indices(data, self.scheme, g) for g in self.group_names]
        x = torch.cat([random_faces(data, r, pools[int(s)], 1, generator) for s in source])
        y = torch.cat([random_faces(data, r, pools[int(t)], 1, generator) for t in target])
        return {"x": x, "y": y, "source": source.to(x.device), "target": target.to(x.device)}

    def train_step(self, batch: dict[str, torch.Tensor], step: int) -> dict[str, float]:
        """One step: update G (D frozen), then D on real and pooled fake faces. Returns every loss term.

        Names: loss_G_adv = LS(D(G(x, t), t), 1); loss_cycle = |G(G(x, t), s) - x|_1; loss_idt =
        |G(y, t) - y|_1 (both unweighted); loss_G = the weighted generator total;
        loss_D = 0.5 * (LS(D(y, t), 1) + LS(D(pooled fake), 0)).
        """
        c, e = self.config, self.engine
        x, y = e.inputs(batch["x"]), e.inputs(batch["y"])
        vec_s, vec_t = self.one_hot(batch["source"]), self.one_hot(batch["target"])
        for net in self.modules().values():
            net.train()

        # Generator: translate to t, back to s, and keep faces already of decade t unchanged.
        set_requires_grad([self.D], False)
        with e.autocast():
            fake = self._g(x, vec_t)
            rec = self._g(fake, vec_s)
            idt = self._g(y, vec_t)
            fake_in = self._d_input(fake, vec_t)
            loss_g_adv = lsgan_loss(self._d(fake_in), True)
        loss_cycle, loss_idt = pixel_loss("mae", rec, x), pixel_loss("mae", idt, y)
        loss_g = loss_g_adv + c.lambda_cycle * loss_cycle + c.lambda_cycle * c.lambda_identity * loss_idt
        self.opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        self.opt_G.step()
        set_requires_grad([self.D], True)

        # Discriminator: real faces of t vs pooled (fake, its target vector) inputs.
        pooled = self.pool.query(e.inputs(fake_in.float()))
        real_in = e.inputs(self._d_input(y, vec_t))
        with e.autocast():
            loss_d = 0.5 * (lsgan_loss(self._d(real_in), True) + lsgan_loss(self._d(pooled), False))
        self.opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_D.step()

        losses = {"loss_D": loss_d, "loss_G_adv": loss_g_adv, "loss_cycle": loss_cycle,
                  "loss_idt": loss_idt, "loss_G": loss_g}  # fmt: skip
        return {k: float(v.detach()) for k, v in losses.items()}

    # ---- inference ---------------------------------------------------------------------------
    def generate(self, images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """G(images, one_hot(target)) in eval mode, no grad.

        images (N, 3, R, R) float32 in [-1, 1], target (N,) int64 decade indices
        -> (N, 3, R, R) float32 in [-1, 1].
        """
        with eval_mode(self.modules().values()), self.engine.autocast():
            return self._g(self.engine.inputs(images), self.one_hot(target)).float().contiguous()

    def _translator(self, source: str, target: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """G(., one_hot(target)); only `target` conditions G (`source` is checked, not used)."""
        self._index(source)
        t = self._index(target)
        return lambda x: self._g(x, self.one_hot(torch.full((x.shape[0],), t, dtype=torch.int64)))

    def _sample_images(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """real x, fake = G(x, t), rec = G(fake, s), and x translated to every decade ("to_<decade>")."""
        x = self.engine.inputs(batch["x"])
        n = x.shape[0]
        fake = self._g(x, self.one_hot(batch["target"]))
        out = {"real": x, "fake": fake, "rec": self._g(fake, self.one_hot(batch["source"]))}
        for i, name in enumerate(self.group_names):
            out[f"to_{name}"] = self._g(x, self.one_hot(torch.full((n,), i, dtype=torch.int64)))
        return out

    def feature_maps(self, images: torch.Tensor, target: str) -> dict[str, torch.Tensor]:
        """Intermediate generator maps for `images` translated to decade `target`, via forward hooks.

        images (N, 3, R, R) float32 in [-1, 1] -> {stage name: (N, C, h, w) float32} for the encoder
        stages (c7s1, down1, down2), the condition fusion (fuse), each residual block (res1..) and
        the decoder stages (up1, up2, out), in forward order. The hooks are removed before returning.
        """
        maps: dict[str, torch.Tensor] = {}
        handles = []

        def keep(name: str) -> Any:
            def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
                maps[name] = output.detach().float()

            return hook

        try:
            for name, stage in self.G.stages().items():
                handles.append(stage.register_forward_hook(keep(name)))
            t = torch.full((images.shape[0],), self._index(target), dtype=torch.int64)
            # The hooks sit on the plain module: run it, not a compiled wrapper.
            with eval_mode([self.G]), self.engine.autocast():
                self.G(self.engine.inputs(images), self.one_hot(t))
        finally:
            for h in handles:
                h.remove()
        return maps
