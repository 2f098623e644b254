"""dlib's face-recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) in PyTorch.

The weights are read from dlib's own serialisation in pure Python (no dlib needed), so the network
runs batched and is differentiable. It matches `dlib.face_recognition_model_v1.compute_face_descriptor`
on a 150x150 chip to float32 rounding (see tests/test_identity.py).

What the file holds (dlib `serialize.h`, `dnn/core.h`, `dnn/layers.h`, `dnn/loss.h`):
- integers: a control byte (low 4 bits = byte count, 0x80 = negative), then little-endian bytes;
  bools: ASCII '0'/'1'; strings: length then bytes; single floats: integer mantissa then integer
  exponent (value = m * 2**e); tensors (version 2): num_samples, k, nr, nc, then raw float32 LE.
- the loss layer writes its settings, then the network beneath it. Every layer wrapper writes a
  version (2 = layer, 1 = tag or skip, 3 = the bottom layer holding the input layer), then the
  network beneath it, then its own settings. So the wrapper versions come out top-down and the
  layer settings bottom-up.
- the residual wiring (tags and skips) is not stored: it comes from the network template of dlib's
  `examples/dnn_face_recognition_ex.cpp`, rebuilt in `_template()` and checked entry by entry.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

CHIP_SIZE = 150

# Wrapper versions in the file.
_V_LAYER, _V_TAG_OR_SKIP, _V_INPUT = 2, 1, 3
# dlib::layer_mode of affine_: CONV_MODE (one gamma/beta per channel) = 0, FC_MODE = 1.
_CONV_MODE = 0


class DlibFormatError(ValueError):
    """The file is not the dlib face-recognition network this module knows how to read."""


class _Reader:
    """Sequential reader of dlib's serialisation primitives."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos} (wanted {n} more)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self) -> int:
        control = self._take(1)[0]
        if control & 0x70:
            raise DlibFormatError(f"bad integer control byte {control:#x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(control & 0x0F), "little")
        return -value if control & 0x80 else value

    def str(self) -> str:
        return self._take(self.int()).decode("latin-1")

    def float(self) -> float:
        mantissa = self.int()
        exponent = self.int()
        return float(mantissa) * 2.0**exponent

    def bool(self) -> bool:
        c = self._take(1)
        if c not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {c!r} at byte {self.pos - 1}")
        return c == b"1"

    def tensor(self) -> np.ndarray:
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} at byte {self.pos}, expected 2")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self._take(4 * count), dtype="<f4").reshape(shape)
        return values.astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        """The shape of an alias_tensor; its offset is implicit (the parts follow each other)."""
        version = self.int()
        if version != 1:
            raise DlibFormatError(f"alias_tensor version {version} at byte {self.pos}, expected 1")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]

    def expect(self, text: str) -> None:
        got = self.str()
        if got != text:
            raise DlibFormatError(f"expected {text!r} at byte {self.pos}, found {got!r}")


@dataclasses.dataclass
class ParsedLayer:
    """One stored layer: its kind (`con`, `affine`, `relu`, `max_pool`, `avg_pool`, `add_prev`,
    `fc`, `tag`) and its settings / numpy parameters."""

    kind: str
    settings: dict[str, object]
    params: dict[str, np.ndarray]


@dataclasses.dataclass
class ParsedNet:
    """A parsed network file: layers bottom-up (input first), input settings, loss settings."""

    layers: list[ParsedLayer]
    input_means: tuple[float, float, float]
    input_size: tuple[int, int]
    loss: dict[str, float]
    n_bytes: int


def _split(params: np.ndarray, *shapes: tuple[int, int, int, int]) -> list[np.ndarray]:
    """Cut a layer's flat parameter tensor into consecutive parts of the given shapes."""
    flat = params.reshape(-1)
    sizes = [int(np.prod(shape)) for shape in shapes]
    if sum(sizes) != flat.size:
        raise DlibFormatError(f"layer parameters hold {flat.size} values, its parts {sum(sizes)}")
    ends = np.cumsum(sizes)
    return [flat[end - size : end].reshape(shape) for end, size, shape in zip(ends, sizes, shapes)]


def _read_layer(r: _Reader) -> ParsedLayer:
    """The settings of one ordinary layer (after its wrapper's subnetwork)."""
    name = r.str()
    if name == "con_4":
        params = r.tensor()
        s = {k: r.int() for k in ("num_filters", "nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x")}
        w, b = _split(params, r.alias(), r.alias())
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.float()
        return ParsedLayer("con", s, {"weight": w, "bias": b.reshape(-1)})
    if name == "affine_":
        params = r.tensor()
        gamma, beta = _split(params, r.alias(), r.alias())
        mode = r.int()
        return ParsedLayer("affine", {"mode": mode}, {"gamma": gamma.reshape(-1), "beta": beta.reshape(-1)})
    if name == "relu_":
        return ParsedLayer("relu", {}, {})
    if name in ("max_pool_2", "avg_pool_2"):
        s = {k: r.int() for k in ("nr", "nc", "stride_y", "stride_x", "pad_y", "pad_x")}
        return ParsedLayer(name[:-2], s, {})
    if name == "add_prev_":
        return ParsedLayer("add_prev", {}, {})
    if name == "fc_2":
        num_outputs, num_inputs = r.int(), r.int()
        params = r.tensor()
        (weight, _bias) = _split(params, r.alias(), r.alias())  # no bias: an empty alias (FC_NO_BIAS)
        bias_mode = r.int()
        for _ in range(4):
            r.float()
        s = {"num_outputs": num_outputs, "num_inputs": num_inputs, "bias_mode": bias_mode}
        return ParsedLayer("fc", s, {"weight": weight.reshape(num_inputs, num_outputs)})
    raise DlibFormatError(f"unknown layer {name!r} at byte {r.pos}")


def _read_wrapper_tail(r: _Reader, input_wrapper: bool) -> None:
    """Flags and empty work tensors an add_layer writes after its layer's settings."""
    for _ in range(3):
        r.bool()
    for _ in range(3):
        if r.tensor().size:
            raise DlibFormatError("a work tensor of a layer wrapper is not empty")
    if input_wrapper:
        r.int()  # sample expansion factor


def parse_dlib_net(data: bytes) -> ParsedNet:
    """Parse the bytes of `dlib_face_recognition_resnet_model_v1.dat`; raises DlibFormatError.

    The whole file must be consumed and the layer sequence must match `_template()`.
    """
    r = _Reader(data)
    if r.int() != 1:
        raise DlibFormatError("unexpected loss-wrapper version")
    r.expect("loss_metric_2")
    loss = {"margin": r.float(), "distance_threshold": r.float()}
    versions = []
    while True:
        v = r.int()
        versions.append(v)
        if v == _V_INPUT:
            break
        if v not in (_V_LAYER, _V_TAG_OR_SKIP) or len(versions) > 10_000:
            raise DlibFormatError(f"unexpected layer-wrapper version {v} at byte {r.pos}")
    r.expect("input_rgb_image_sized")
    means = (r.float(), r.float(), r.float())
    size = (r.int(), r.int())
    layers: list[ParsedLayer] = []
    for i, v in enumerate(reversed(versions)):
        if v == _V_TAG_OR_SKIP:
            layers.append(ParsedLayer("tag", {}, {}))
            continue
        layers.append(_read_layer(r))
        _read_wrapper_tail(r, input_wrapper=(i == 0))
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} bytes left after the network")
    expected = _template()
    got = [layer.kind for layer in layers]
    if got != expected:
        raise DlibFormatError(f"layer sequence differs from the template ({len(got)} vs {len(expected)} entries)")
    return ParsedNet(layers, means, size, loss, len(data))


# The example's template, bottom-up. dlib names (dnn_face_recognition_ex.cpp):
#   block<N,stride>   = affine<con<N,3,3,1,1,relu<affine<con<N,3,3,stride,stride,X>>>>>
#   ares<N>           = relu<add_prev1<block<N,1,tag1<X>>>>
#   ares_down<N>      = relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,2,tag1<X>>>>>>>
#   net = fc_no_bias<128, avg_pool_everything<level0..level4<max_pool<3,3,2,2,relu<affine<
#         con<32,7,7,2,2,input_rgb_image_sized<150>>>>>>>
_BLOCK = ["con", "affine", "relu", "con", "affine"]
_ARES = ["tag", *_BLOCK, "add_prev", "relu"]
_ARES_DOWN = ["tag", *_BLOCK, "tag", "tag", "avg_pool", "add_prev", "relu"]
# (channels, downsampling first block, number of plain blocks), bottom-up.
_LEVELS = ((32, False, 3), (64, True, 3), (128, True, 2), (256, True, 2), (256, True, 0))


def _template() -> list[str]:
    kinds = ["con", "affine", "relu", "max_pool"]
    for _channels, down, plain in _LEVELS:
        kinds += (_ARES_DOWN if down else []) + _ARES * plain
    return [*kinds, "avg_pool", "fc"]


def _add_zero_fill(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: a sum of the larger shape, the smaller tensor in the top-left corner."""
    if a.shape == b.shape:
        return a + b
    shape = [max(x, y) for x, y in zip(a.shape[1:], b.shape[1:])]

    def grow(t: torch.Tensor) -> torch.Tensor:
        c, h, w = t.shape[1:]
        return F.pad(t, (0, shape[2] - w, 0, shape[1] - h, 0, shape[0] - c))

    return grow(a) + grow(b)


def _conv_affine(con: ParsedLayer, aff: ParsedLayer) -> nn.Conv2d:
    """A conv followed by dlib's per-channel affine, folded into one Conv2d (same maths)."""
    s = con.settings
    if s["stride_y"] != s["stride_x"] or s["pad_y"] != s["pad_x"] or aff.settings["mode"] != _CONV_MODE:
        raise DlibFormatError(f"unsupported convolution settings {s} / affine mode {aff.settings['mode']}")
    weight = torch.from_numpy(con.params["weight"].astype(np.float64))
    gamma = torch.from_numpy(aff.params["gamma"].astype(np.float64))
    beta = torch.from_numpy(aff.params["beta"].astype(np.float64))
    bias = torch.from_numpy(con.params["bias"].astype(np.float64))
    conv = nn.Conv2d(
        weight.shape[1], weight.shape[0], (s["nr"], s["nc"]), stride=s["stride_y"], padding=s["pad_y"], bias=True
    )
    with torch.no_grad():
        conv.weight.copy_(weight * gamma[:, None, None, None])
        conv.bias.copy_(bias * gamma + beta)
    return conv


class _Block(nn.Module):
    """relu(shortcut(x) + affine(conv(relu(affine(conv(x)))))), dlib's ares / ares_down."""

    def __init__(self, conv1: nn.Conv2d, conv2: nn.Conv2d, pool: ParsedLayer | None) -> None:
        super().__init__()
        self.conv1, self.conv2 = conv1, conv2
        # (kernel, stride, padding) of the shortcut's average pool; None for an identity shortcut.
        self.pool = None if pool is None else (pool.settings["nr"], pool.settings["stride_y"], pool.settings["pad_y"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        shortcut = x if self.pool is None else F.avg_pool2d(x, *self.pool)
        return F.relu(_add_zero_fill(y, shortcut))


class DlibFaceResNet(nn.Module):
    """dlib's 29-layer face-recognition ResNet.

    `forward(chips)`: chips `(N, 3, 150, 150)` float RGB in [0, 255] (dlib-aligned face chips, see
    `metrics.identity`) -> descriptors `(N, 128)` float32; two faces are the same person when the
    Euclidean distance of their descriptors is below `distance_threshold` (0.6).
    """

    def __init__(self, parsed: ParsedNet) -> None:
        super().__init__()
        layers = [layer for layer in parsed.layers if layer.kind != "tag"]
        self.register_buffer("means", torch.tensor(parsed.input_means, dtype=torch.float32).view(1, 3, 1, 1))
        self.distance_threshold = parsed.loss["distance_threshold"]
        self.stem = _conv_affine(layers[0], layers[1])
        max_pool = layers[3].settings
        self.pool = (max_pool["nr"], max_pool["stride_y"], max_pool["pad_y"])
        blocks = []
        i = 4
        for channels, down, plain in _LEVELS:
            for is_down in ([True] if down else []) + [False] * plain:
                if layers[i].settings["num_filters"] != channels:
                    raise DlibFormatError(f"block {len(blocks)} has {layers[i].settings['num_filters']} filters")
                # down: con affine relu con affine avg_pool add_prev relu; plain: no avg_pool.
                pool = layers[i + 5] if is_down else None
                blocks.append(
                    _Block(_conv_affine(layers[i], layers[i + 1]), _conv_affine(layers[i + 3], layers[i + 4]), pool)
                )
                i += 8 if is_down else 7
        self.blocks = nn.Sequential(*blocks)
        fc = layers[i + 1].params["weight"]
        self.fc = nn.Linear(fc.shape[0], fc.shape[1], bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(fc.T.copy()))
        self.n_bytes = parsed.n_bytes
        self.n_entries = len(parsed.layers)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        """`(N, 3, 150, 150)` float RGB in [0, 255] -> `(N, 128)` descriptors (same dtype)."""
        if chips.ndim != 4 or chips.shape[1:] != (3, CHIP_SIZE, CHIP_SIZE):
            raise ValueError(f"expected chips of shape (N, 3, {CHIP_SIZE}, {CHIP_SIZE}), got {tuple(chips.shape)}")
        # channels_last: about 1.4x faster on CPU for these small 3x3 convolutions.
        x = ((chips - self.means.to(chips.dtype)) / 256.0).contiguous(memory_format=torch.channels_last)
        x = F.relu(self.stem(x))
        k, stride, pad = self.pool
        x = F.max_pool2d(x, k, stride, pad)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def load_dlib_resnet(path: str | Path) -> DlibFaceResNet:
    """Read dlib's `.dat` file into a `DlibFaceResNet` (eval mode, float32, CPU, no grad on weights)."""
    net = DlibFaceResNet(parse_dlib_net(Path(path).read_bytes()))
    net.eval()
    net.requires_grad_(False)
    return net.to(memory_format=torch.channels_last)
