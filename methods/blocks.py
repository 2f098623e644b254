"""Building blocks shared by the CycleGAN-family methods (docs/METHODS.md sections 1, 2 and 4).

Networks follow junyanz/pytorch-CycleGAN-and-pix2pix (`models/networks.py`), which follows Johnson
et al. 2016 for the generator and pix2pix for the 70x70 PatchGAN; the Keras-GAN discriminator
(eriklindernoren/Keras-GAN, `cyclegan/cyclegan.py`) is the 4-layer variant of docs/METHODS.md s.1.
Also here: the history pool of generated images, the least-squares GAN loss, weight
initialisation, the linear learning-rate decay and the batch/engineering helpers the three
methods share. No file IO, no printing, no global state.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from methods.base import TrainData, uint8_to_float

Padding = Literal["reflect", "zero"]


# --------------------------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------------------------


def _pad(padding: Padding, size: int) -> nn.Module:
    # junyanz pads with ReflectionPad2d; Keras Conv2D(padding="same") pads with zeros.
    return nn.ReflectionPad2d(size) if padding == "reflect" else nn.ZeroPad2d(size)


#: "instance": junyanz's InstanceNorm2d(affine=False); "instance_affine": per-channel scale and shift;
#: "keras": keras_contrib's InstanceNormalization() (axis=None, `KerasInstanceNorm`).
Norm = Literal["instance", "instance_affine", "keras"]
#: How stride-2 convolutions pad: "torch" symmetric (junyanz), "tf_same" TensorFlow's "same".
StridedPadding = Literal["torch", "tf_same"]


class KerasInstanceNorm(nn.Module):
    """keras_contrib `InstanceNormalization()` with its default `axis=None` (what Keras-GAN builds).

    One mean and one standard deviation per SAMPLE over channels, height and width together, and one
    scalar gamma and beta for the whole layer (keras_contrib's formula, epsilon added to the std):
    y = (x - mean_{C,H,W}(x)) / (std_{C,H,W}(x) + epsilon) * gamma + beta, std the population std.
    """

    def __init__(self, epsilon: float = 1e-3) -> None:
        super().__init__()
        self.epsilon = epsilon
        self.gamma = nn.Parameter(torch.ones(1))
        self.beta = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float -> (N, C, H, W) float of the same dtype (statistics in float32)."""
        xf = x.float()
        std, mean = torch.std_mean(xf, dim=(1, 2, 3), keepdim=True, correction=0)
        # (x - mean) / (std + eps) * gamma + beta as one scale and shift per sample: two passes, not four.
        scale = self.gamma / (std + self.epsilon)
        return torch.addcmul(self.beta - mean * scale, xf, scale).to(x.dtype)


def _norm(channels: int, kind: Norm) -> nn.Module:
    # junyanz: InstanceNorm2d(affine=False, track_running_stats=False); keras_contrib: see KerasInstanceNorm.
    if kind == "keras":
        return KerasInstanceNorm()
    return nn.InstanceNorm2d(channels, affine=kind == "instance_affine", track_running_stats=False)


class TFSameConvTranspose2d(nn.Module):
    """Keras `Conv2DTranspose(kernel 3, strides 2, padding="same")`: the full transposed convolution
    cropped to twice the input size from the top-left (TF drops the extra row/column at the end; torch's
    padding=1, output_padding=1 would drop it at the start)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(c_in, c_out, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C_in, H, W) -> (N, C_out, 2H, 2W)."""
        h, w = x.shape[-2:]
        return self.conv(x)[..., : 2 * h, : 2 * w]


def _down(c_in: int, c_out: int, strided: StridedPadding) -> nn.Module:
    # TF "same" for kernel 3, stride 2 on an even size pads 0 before and 1 after; torch pads 1 and 1.
    if strided == "tf_same":
        return nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(c_in, c_out, 3, stride=2))
    return nn.Conv2d(c_in, c_out, 3, stride=2, padding=1)


def _up(c_in: int, c_out: int, strided: StridedPadding) -> nn.Module:
    if strided == "tf_same":
        return TFSameConvTranspose2d(c_in, c_out)
    return nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1)


class ResnetBlock(nn.Module):
    """Johnson residual block: pad, conv3, norm, ReLU, pad, conv3, norm; output = x + block(x)."""

    def __init__(self, channels: int, padding: Padding = "reflect", norm: Norm = "instance") -> None:
        super().__init__()
        self.block = nn.Sequential(
            _pad(padding, 1),
            nn.Conv2d(channels, channels, 3, bias=True),
            _norm(channels, norm),
            nn.ReLU(True),
            _pad(padding, 1),
            nn.Conv2d(channels, channels, 3, bias=True),
            _norm(channels, norm),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float -> (N, C, H, W) float."""
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """The CycleGAN/Johnson ResNet generator (junyanz `ResnetGenerator`), optionally conditioned.

    c7s1-ngf, d-2ngf, d-4ngf (two stride-2 convs: image / 4), `n_blocks` residual blocks at 4ngf,
    u-2ngf, u-ngf (two stride-2 transposed convs), c7s1-3, tanh; InstanceNorm and ReLU.
    Conv biases are on, as in junyanz with instance norm.

    Args:
        ngf: filters of the first layer (64 in both sources).
        n_blocks: residual blocks (junyanz: 6 at 128x128, 9 at 256x256; the Keras tutorial: 9).
        padding: "reflect" (junyanz) or "zero" (Keras `padding="same"`) for the 7x7 and residual
            convs (stride 1: TF's "same" is symmetric there).
        norm: "instance" (junyanz), "instance_affine" or "keras" (keras_contrib, `KerasInstanceNorm`).
        strided: padding of the stride-2 convs and transposed convs: "torch" (junyanz: pad 1 and 1,
            output_padding 1) or "tf_same" (Keras "same": pad (0, 1); transposed output cropped at the end).
        cond_dim: length of a condition vector (0: unconditioned). When > 0 the vector is tiled
            to the bottleneck's size and concatenated with the encoder's features.
        fuse: with a condition, a pad-conv3-norm-ReLU layer (`fuse`) maps the 4ngf + cond_dim channels
            back to 4ngf before the residual blocks (decoder unchanged). Without it the residual blocks
            and the decoder's first layer take the 4ngf + cond_dim channels directly (Liu's description:
            the vector is concatenated with the features and fed to the generator, nothing more).
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 3,
        ngf: int = 64,
        n_blocks: int = 9,
        padding: Padding = "reflect",
        norm: Norm = "instance",
        cond_dim: int = 0,
        fuse: bool = True,
        strided: StridedPadding = "torch",
    ) -> None:
        super().__init__()
        self.cond_dim = cond_dim
        self.encoder = nn.Sequential(
            OrderedDict(
                c7s1=nn.Sequential(_pad(padding, 3), nn.Conv2d(in_channels, ngf, 7), _norm(ngf, norm), nn.ReLU(True)),
                down1=nn.Sequential(_down(ngf, 2 * ngf, strided), _norm(2 * ngf, norm), nn.ReLU(True)),
                down2=nn.Sequential(_down(2 * ngf, 4 * ngf, strided), _norm(4 * ngf, norm), nn.ReLU(True)),
            )
        )
        self.fuse: nn.Module | None = None
        width = 4 * ngf
        if cond_dim > 0 and fuse:
            self.fuse = nn.Sequential(
                _pad(padding, 1), nn.Conv2d(4 * ngf + cond_dim, 4 * ngf, 3), _norm(4 * ngf, norm), nn.ReLU(True)
            )
        elif cond_dim > 0:
            width = 4 * ngf + cond_dim
        self.blocks = nn.Sequential(
            OrderedDict((f"res{i + 1}", ResnetBlock(width, padding, norm)) for i in range(n_blocks))
        )
        self.decoder = nn.Sequential(
            OrderedDict(
                up1=nn.Sequential(_up(width, 2 * ngf, strided), _norm(2 * ngf, norm), nn.ReLU(True)),
                up2=nn.Sequential(_up(2 * ngf, ngf, strided), _norm(ngf, norm), nn.ReLU(True)),
                out=nn.Sequential(_pad(padding, 3), nn.Conv2d(ngf, out_channels, 7), nn.Tanh()),
            )
        )

    def stages(self) -> dict[str, nn.Module]:
        """Named stages in forward order (targets for forward hooks): encoder, fuse, blocks, decoder."""
        named: dict[str, nn.Module] = dict(self.encoder.named_children())
        if self.fuse is not None:
            named["fuse"] = self.fuse
        named.update(self.blocks.named_children())
        named.update(self.decoder.named_children())
        return named

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """(N, 3, H, W) float in [-1, 1] (H, W multiples of 4), cond (N, cond_dim) float or None
        -> (N, 3, H, W) float in [-1, 1]."""
        h = self.encoder(x)
        if self.cond_dim > 0:
            if cond is None or cond.shape != (x.shape[0], self.cond_dim):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"generator needs a condition of shape ({x.shape[0]}, {self.cond_dim}), got {got}")
            h = torch.cat([h, tile(cond.to(h.dtype), h.shape[-2:])], dim=1)
            if self.fuse is not None:
                h = self.fuse(h)
        elif cond is not None:
            raise ValueError("this generator is unconditioned; pass cond=None")
        return self.decoder(self.blocks(h))


def tile(vector: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """(N, K) -> (N, K, H, W): each vector repeated over every spatial position."""
    return vector[:, :, None, None].expand(-1, -1, int(size[0]), int(size[1]))


# --------------------------------------------------------------------------------------------
# Discriminators
# --------------------------------------------------------------------------------------------


class NLayerDiscriminator(nn.Module):
    """junyanz/pix2pix PatchGAN (`NLayerDiscriminator`): 70x70 receptive field with n_layers=3.

    C64 (no norm) - C128 - C256 (stride 2) - C512 (stride 1) - conv to 1 channel (stride 1), kernel
    4, padding 1, LeakyReLU 0.2, InstanceNorm (no affine). Map side: 30 at 256, 14 at 128 input.
    No sigmoid: the LSGAN loss is applied to the raw map.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1),
                _norm(ndf * mult, "instance"),
                nn.LeakyReLU(0.2, True),
            ]
        prev, mult = mult, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1),
            _norm(ndf * mult, "instance"),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float -> (N, 1, h, w) float patch scores."""
        return self.model(x)


class KerasPatchDiscriminator(nn.Module):
    """Keras-GAN CycleGAN discriminator (docs/METHODS.md s.1): a 16x16 patch map at 256 input.

    Four `d_layer`s: Conv2D(kernel 4, stride 2, padding "same") with df, 2df, 4df, 8df filters, then
    LeakyReLU 0.2, then keras_contrib's InstanceNormalization() (axis=None: per-sample statistics over
    C, H, W and a scalar gamma and beta, `KerasInstanceNorm`) on all but the first - Keras-GAN's order
    is conv, activation, norm. Then Conv2D(1, kernel 4, stride 1, "same"). TensorFlow's "same" padding
    is (1, 1) for the kernel-4 stride-2 layers on even sizes and (1, 2) (before, after) for the final
    stride-1 layer; both are reproduced exactly. 2,764,743 parameters at df = 64.
    """

    def __init__(self, in_channels: int = 3, ndf: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_channels
        for i, mult in enumerate((1, 2, 4, 8)):
            layers += [nn.Conv2d(prev, ndf * mult, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
            if i > 0:
                layers.append(KerasInstanceNorm())
            prev = ndf * mult
        layers += [nn.ZeroPad2d((1, 2, 1, 2)), nn.Conv2d(prev, 1, 4, stride=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float, H and W even multiples of 16 -> (N, 1, H/16, W/16) float patch scores."""
        return self.model(x)


# --------------------------------------------------------------------------------------------
# Pretrained feature network (cyclegan_perceptual's style loss; built by agebench.infra.aux_networks)
# --------------------------------------------------------------------------------------------


def vgg16_features_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """torchvision `vgg16(weights=None).features` with `state_dict` loaded strictly, frozen, in eval mode.

    `state_dict` has the keys of `vgg16().features.state_dict()` ("0.weight", ..., "28.bias"), e.g.
    the conv layers of torchvision's ImageNet `vgg16-397923af.pth`. Mismatched keys or shapes raise.
    """
    import torchvision  # here, not at the top: only the VGG loader needs it

    # Built on the meta device so the 120M-parameter classifier is never allocated or initialised;
    # the strict load then fills every tensor of the features.
    with torch.device("meta"):
        features = torchvision.models.vgg16(weights=None).features
    features = features.to_empty(device="cpu")
    features.load_state_dict(state_dict, strict=True)
    return features.eval().requires_grad_(False)


# --------------------------------------------------------------------------------------------
# Initialisation, losses, schedules
# --------------------------------------------------------------------------------------------


def init_weights(module: nn.Module, kind: Literal["normal", "glorot"] = "normal", gain: float = 0.02) -> None:
    """Initialise conv/linear weights in place; biases to zero.

    "normal": N(0, gain) as junyanz `init_weights(init_type="normal", init_gain=0.02)` (which also sets
    BatchNorm weights N(1, gain); affine InstanceNorm is left at scale 1, shift 0).
    "glorot": Keras's default `glorot_uniform` kernels with zero biases (Keras-GAN sets no initializer).
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            if kind == "normal":
                nn.init.normal_(m.weight, 0.0, gain)
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)


def lsgan_loss(prediction: torch.Tensor, target_is_real: bool) -> torch.Tensor:
    """Least-squares GAN loss (junyanz `GANLoss("lsgan")`): mean of (D(x) - 1)^2 or D(x)^2, float32."""
    prediction = prediction.float()
    target = torch.ones_like(prediction) if target_is_real else torch.zeros_like(prediction)
    return F.mse_loss(prediction, target)


def pixel_loss(kind: Literal["mse", "mae"], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared ("mse") or mean absolute ("mae") difference, float32 scalar."""
    x, y = x.float(), y.float()
    return F.mse_loss(x, y) if kind == "mse" else F.l1_loss(x, y)


class LinearDecay:
    """junyanz's `lr_policy="linear"` multiplier: 1 for `n_epochs` epochs, then linear to ~0.

    `factor(epoch) = 1 - max(0, epoch + epoch_count - n_epochs) / (n_epochs_decay + 1)` with the
    0-based epoch count a `LambdaLR` keeps (stepped once at each epoch's end). A callable object,
    not a closure, so `LambdaLR.state_dict()` stores its settings.
    """

    def __init__(self, n_epochs: int, n_epochs_decay: int, epoch_count: int = 1) -> None:
        self.n_epochs = n_epochs
        self.n_epochs_decay = n_epochs_decay
        self.epoch_count = epoch_count

    def __call__(self, epoch: int) -> float:
        return 1.0 - max(0, epoch + self.epoch_count - self.n_epochs) / float(self.n_epochs_decay + 1)


# --------------------------------------------------------------------------------------------
# Image pool
# --------------------------------------------------------------------------------------------


class ImagePool:
    """History of generated images fed to a discriminator (Shrivastava et al.; junyanz `ImagePool`).

    While fewer than `pool_size` images are stored, each incoming image is stored and returned.
    Afterwards each incoming image is, with probability 1/2, swapped for a uniformly chosen stored
    image (which is returned and replaced), else returned as is. Randomness comes from the pool's
    own seeded CPU `torch.Generator`, whose state is part of `state_dict`, so training resumes exactly.
    `pool_size` 0 returns the input unchanged.
    """

    def __init__(self, pool_size: int = 50, seed: int = 0) -> None:
        self.pool_size = pool_size
        self.generator = torch.Generator().manual_seed(seed)
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float -> (N, C, H, W) float, detached, a mix of the input and stored images."""
        images = images.detach()
        if self.pool_size == 0:
            return images
        out = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self.images) < self.pool_size:
                self.images.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self.generator).item() > 0.5:
                slot = int(torch.randint(0, self.pool_size, (), generator=self.generator))
                out.append(self.images[slot].to(image.device, image.dtype))
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.cat(out, dim=0)

    def state_dict(self) -> dict[str, Any]:
        """Pool size, stored images (list of (1, C, H, W) tensors) and the generator state."""
        return {
            "pool_size": self.pool_size,
            "images": [t.clone() for t in self.images],
            "rng": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned (the pool size must match)."""
        if state["pool_size"] != self.pool_size:
            raise ValueError(f"image pool size {state['pool_size']} in the state, {self.pool_size} configured")
        self.images = [t.clone() for t in state["images"]]
        self.generator.set_state(state["rng"])


def new_seed() -> int:
    """A seed drawn from torch's global generator (which the train stage seeds)."""
    return int(torch.randint(0, 2**62, ()).item())


# --------------------------------------------------------------------------------------------
# Batches and engineering switches
# --------------------------------------------------------------------------------------------


def steps_per_epoch(domain_sizes: Iterable[int], batch_size: int) -> int:
    """Steps in one epoch: ceil(max(domain sizes) / batch), as junyanz's `UnalignedDataset`, whose
    length is max(|A|, |B|) and whose loader keeps the last partial batch."""
    return math.ceil(max(domain_sizes) / batch_size)


def group_indices(data: TrainData, scheme: str, group: str) -> torch.Tensor:
    """(K,) int64 indices of `group`'s faces; raises ValueError naming the group when K = 0."""
    idx = data.indices(scheme, group)
    if idx.numel() == 0:
        raise ValueError(f"no training faces in group {group!r} of scheme {scheme!r}")
    return idx


def random_faces(
    data: TrainData, resolution: int, indices: torch.Tensor, count: int, generator: torch.Generator
) -> torch.Tensor:
    """`count` faces drawn uniformly with replacement from `indices`, each flipped left-right with
    probability 1/2 (junyanz's default augmentation).

    Returns (count, 3, R, R) float32 in [-1, 1] on the data's device; only `generator` is advanced.
    """
    if resolution not in data.images:
        raise ValueError(f"training data has no {resolution}x{resolution} images (has {sorted(data.images)})")
    pick = torch.randint(0, indices.numel(), (count,), generator=generator, device=generator.device)
    flip = torch.rand(count, generator=generator, device=generator.device) < 0.5
    images = data.images[resolution]
    faces = uint8_to_float(images[indices[pick.to(indices.device)].to(images.device)])
    return torch.where(flip.to(faces.device)[:, None, None, None], faces.flip(-1), faces)


def random_choice(n: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """(count,) int64 uniform in [0, n) on the CPU, drawn from `generator`."""
    return torch.randint(0, n, (count,), generator=generator, device=generator.device).cpu()


def set_requires_grad(modules: Iterable[nn.Module], flag: bool) -> None:
    """Switch gradients of every parameter of `modules` (junyanz freezes D while updating G)."""
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


class Engine:
    """The engineering switches every CycleGAN config carries; none changes the method.

    amp_bf16: autocast forward passes to bfloat16; channels_last: NHWC memory layout for networks and
    inputs; compile: `torch.compile` the forward calls (CUDA devices only; the modules themselves and
    their state-dict keys are unchanged).
    """

    def __init__(self, device: torch.device, amp_bf16: bool, channels_last: bool, compile: bool) -> None:
        self.device = device
        self.amp_bf16 = amp_bf16
        self.channels_last = channels_last
        self.compile = compile and device.type == "cuda"

    def prepare(self, module: nn.Module) -> Callable[..., torch.Tensor]:
        """Move `module` to the device (and layout); return the callable to run it with."""
        module.to(self.device)
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        return torch.compile(module) if self.compile else module

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Images moved to the device in the chosen layout."""
        x = x.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """bfloat16 autocast when `amp_bf16`, else a no-op context."""
        if not self.amp_bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)


@contextlib.contextmanager
def eval_mode(modules: Iterable[nn.Module]) -> Iterator[None]:
    """Put `modules` in eval mode under no_grad, restoring each one's previous mode afterwards."""
    modules = list(modules)
    was = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        with torch.no_grad():
            yield
    finally:
        for m, t in zip(modules, was):
            m.train(t)
