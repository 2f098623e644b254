"""The CycleGAN-family methods (docs/METHODS.md s.1, 2, 4) and their shared blocks, on tiny synthetic data.

Architectures are checked against the reference implementations' own numbers (junyanz prints
11.378 M / 7.838 M parameters for its 9/6-block generator and 2.765 M for the 70x70 PatchGAN; the
Keras-GAN discriminator with keras_contrib's axis=None norm has 2,764,743) and patch-map sizes; the
Keras norm and TF "same" padding against direct computations of their formulas; the training contract
(finite named losses, weights move, exact resume, pure batch sampling) runs with ngf=8 networks.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torchvision

from agebench.infra.registry import METHODS
from agebench.params.reading import build
from methods.base import TrainData
from methods.blocks import (
    ImagePool,
    KerasInstanceNorm,
    KerasPatchDiscriminator,
    LinearDecay,
    NLayerDiscriminator,
    ResnetGenerator,
    TFSameConvTranspose2d,
    random_faces,
)
from methods.cyclegan_agevec import CycleGANAgeVec, CycleGANAgeVecConfig
from methods.cyclegan_keras import CycleGANKeras, CycleGANKerasConfig
from methods.cyclegan_perceptual import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CycleGANPerceptual,
    CycleGANPerceptualConfig,
    gram_loss,
    gram_matrix,
    imagenet_normalize,
    vgg16_features_from_state_dict,
    vgg_style_features,
)

NAMES = ("cyclegan_keras", "cyclegan_perceptual", "cyclegan_agevec")
DECADES = ("10s", "20s", "30s", "40s", "50s", "60s")
CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def data() -> TrainData:
    """60 random faces at 32 and 64; ten per decade; decade 20s = young, 50s = old."""
    g = torch.Generator().manual_seed(0)
    images = {r: torch.randint(0, 256, (60, 3, r, r), dtype=torch.uint8, generator=g) for r in (32, 64)}
    decade = torch.arange(60) % 6
    pair = torch.full((60,), -1, dtype=torch.int64)
    pair[decade == 1], pair[decade == 4] = 0, 1
    return TrainData(images, {"pair": pair, "decades": decade}, {"pair": ("young", "old"), "decades": DECADES})


@pytest.fixture(scope="module")
def vgg() -> torch.nn.Module:
    """Randomly initialised torchvision VGG-16 features (He-scaled): mechanics only, never for results."""
    g = torch.Generator().manual_seed(0)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vgg16(weights=None).features.state_dict().items()}
    state = {
        k: torch.randn(s, generator=g) * (2 / math.prod(s[1:])) ** 0.5 if len(s) == 4 else torch.zeros(s)
        for k, s in shapes.items()
    }
    return vgg16_features_from_state_dict(state)


def make(name: str, vgg: torch.nn.Module, seed: int = 0, **overrides):
    """A tiny instance of method `name` (ngf=8, one residual block, 32x32), networks seeded by `seed`."""
    torch.manual_seed(seed)
    tiny = dict(ngf=8, n_blocks=1, ndf=8)
    if name == "cyclegan_keras":
        cfg = CycleGANKerasConfig(**{**tiny, "sizes": (32, 64), "epochs_per_size": (1, 1),
                                     "batch_per_size": (2, 1), **overrides})  # fmt: skip
        return CycleGANKeras(cfg, ("young", "old"), CPU)
    if name == "cyclegan_perceptual":
        cfg = CycleGANPerceptualConfig(**{**tiny, "resolution": 32, "batch_size": 2, "pool_size": 3, **overrides})
        return CycleGANPerceptual(cfg, ("young", "old"), CPU, {"vgg16": vgg})
    cfg = CycleGANAgeVecConfig(**{**tiny, "resolution": 32, "batch_size": 2, "pool_size": 3, **overrides})
    return CycleGANAgeVec(cfg, DECADES, CPU)


def first_input(name: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["x"] if name == "cyclegan_agevec" else batch["A"]


# ---- the contract, for every method -------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_registered_with_buildable_default_config(name):
    cls = METHODS.get(name)
    cfg = build(cls.config_cls, {}, f"params.yaml: {name}")
    assert cfg.max_steps == 0 and cfg.amp_bf16 is False and cfg.channels_last is False and cfg.compile is False


@pytest.mark.parametrize("name", NAMES)
def test_train_step_moves_every_network_and_returns_finite_named_losses(name, data, vgg):
    m = make(name, vgg)
    assert m.num_steps(data) > 0
    before = {k: copy.deepcopy(net.state_dict()) for k, net in m.modules().items()}
    losses = m.train_step(m.sample_batch(data, 0, torch.Generator().manual_seed(1)), 0)
    assert losses and all(k.startswith("loss_") for k in losses)
    assert all(isinstance(v, float) and math.isfinite(v) for v in losses.values()), losses
    for k, net in m.modules().items():
        moved = [not torch.equal(before[k][p], t) for p, t in net.state_dict().items()]
        assert any(moved), f"{name}: {k} did not change"
        assert all(p.requires_grad for p in net.parameters()), f"{k} left frozen"


@pytest.mark.parametrize("name", NAMES)
def test_sample_batch_is_pure_and_in_range(name, data, vgg):
    m = make(name, vgg)
    a = m.sample_batch(data, 0, torch.Generator().manual_seed(5))
    b = m.sample_batch(data, 0, torch.Generator().manual_seed(5))
    c = m.sample_batch(data, 0, torch.Generator().manual_seed(6))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    for t in a.values():
        if t.is_floating_point():
            assert t.dtype == torch.float32 and t.shape[1:] == (3, 32, 32) and t.min() >= -1 and t.max() <= 1


@pytest.mark.parametrize("name", NAMES)
def test_translate_shape_range_dtype_and_determinism(name, data, vgg):
    m = make(name, vgg)
    m.train_step(m.sample_batch(data, 0, torch.Generator().manual_seed(1)), 0)
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    (s, t), *_ = m.supported_tasks()
    y = m.translate(x, s, t)
    assert y.shape == x.shape and y.dtype == torch.float32 and y.min() >= -1 and y.max() <= 1
    assert torch.equal(y, m.translate(x, s, t))
    assert not torch.equal(y, m.translate(x, t, s))
    with pytest.raises(ValueError):
        m.translate(x, s, "nobody")
    grids = m.samples(m.sample_batch(data, 0, torch.Generator().manual_seed(2)))
    assert grids and all(v.shape[1:] == (3, 32, 32) for v in grids.values())


@pytest.mark.parametrize("name", NAMES)
def test_state_dict_round_trip_resumes_exactly(name, data, vgg):
    gen = torch.Generator().manual_seed(3)
    m1 = make(name, vgg, seed=0)
    for step in range(2):  # fill part of the image pools
        m1.train_step(m1.sample_batch(data, step, gen), step)
    state = copy.deepcopy(m1.state_dict())
    m2 = make(name, vgg, seed=1)
    m2.load_state_dict(state)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    (s, t), *_ = m1.supported_tasks()
    assert torch.equal(m1.translate(x, s, t), m2.translate(x, s, t))
    for step in (2, 3):
        batch = m1.sample_batch(data, step, gen)
        assert m1.train_step(batch, step) == m2.train_step(batch, step)
    assert torch.equal(m1.translate(x, s, t), m2.translate(x, s, t))


@pytest.mark.parametrize("name", NAMES)
def test_max_steps_caps_the_schedule(name, data, vgg):
    assert make(name, vgg, max_steps=3).num_steps(data) == 3
    assert make(name, vgg, max_steps=10**9).num_steps(data) == make(name, vgg).num_steps(data)


def first_step_losses(m, data, conv_dtypes: list | None = None) -> dict[str, float]:
    """Losses of step 0 on the batch of generator seed 1, global RNG seeded 3 (pools, dropout); with
    `conv_dtypes`, the output dtype of every Conv2d call of the method's networks is appended to it."""
    convs = [c for net in m.modules().values() for c in net.modules() if isinstance(c, torch.nn.Conv2d)]
    hooks = (
        []
        if conv_dtypes is None
        else [c.register_forward_hook(lambda _c, _i, o: conv_dtypes.append(o.dtype)) for c in convs]
    )
    torch.manual_seed(3)
    try:
        return m.train_step(m.sample_batch(data, 0, torch.Generator().manual_seed(1)), 0)
    finally:
        for h in hooks:
            h.remove()


def max_rel_diff(a: dict[str, float], b: dict[str, float]) -> float:
    assert a.keys() == b.keys()
    return max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-3) for k in a)


@pytest.mark.parametrize("name", NAMES)
def test_amp_bf16_computes_in_bf16_close_to_fp32(name, data, vgg):
    """A method's own `amp_bf16` (Engine.autocast): every convolution of a training step computes in
    bfloat16, and the first step's named losses from the same seed on the same batch stay within 3% of
    float32's (bf16 keeps 8 mantissa bits, ~0.4% per rounding) but are not equal to them (the switch
    is not a no-op); weights and `translate` stay float32."""
    fp32 = first_step_losses(make(name, vgg), data)
    m = make(name, vgg, amp_bf16=True)
    dtypes: list[torch.dtype] = []
    bf16 = first_step_losses(m, data, dtypes)
    assert dtypes and set(dtypes) == {torch.bfloat16}, set(dtypes)
    assert 0 < max_rel_diff(fp32, bf16) < 3e-2, (fp32, bf16)
    assert all(p.dtype == torch.float32 for net in m.modules().values() for p in net.parameters())
    (s, t), *_ = m.supported_tasks()
    assert m.translate(torch.zeros(1, 3, 32, 32), s, t).dtype == torch.float32


def test_channels_last_keeps_the_arithmetic(data, vgg):
    """`channels_last` stores the networks NHWC and computes the same step (same arithmetic, other memory order)."""
    m = make("cyclegan_keras", vgg, channels_last=True)
    weights = [p for net in m.modules().values() for p in net.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert max_rel_diff(first_step_losses(make("cyclegan_keras", vgg), data), first_step_losses(m, data)) < 1e-4


# ---- architectures against the sources -------------------------------------------------------------


def test_junyanz_networks_match_reference_sizes():
    assert n_params(ResnetGenerator(ngf=64, n_blocks=9)) == 11_378_179  # junyanz: 11.378 M
    assert n_params(ResnetGenerator(ngf=64, n_blocks=6)) == 7_837_699  # junyanz: 7.838 M
    d = NLayerDiscriminator(ndf=64, n_layers=3)
    assert n_params(d) == 2_764_737  # junyanz: 2.765 M
    with torch.no_grad():
        assert d(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)
        assert d(torch.zeros(1, 3, 128, 128)).shape == (1, 1, 14, 14)


def test_keras_discriminator_gives_16x16_map_at_256():
    d = KerasPatchDiscriminator(ndf=64)
    # Keras-GAN convolutions 3136 + 131200 + 524544 + 2097664 + 8193 = 2,764,737, plus keras_contrib's
    # InstanceNormalization() (axis=None): one scalar gamma and beta in each of the three norms.
    assert n_params(d) == 2_764_743
    assert [n_params(m) for m in d.modules() if isinstance(m, KerasInstanceNorm)] == [2, 2, 2]
    with torch.no_grad():
        assert d(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 16, 16)
        assert d(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 4, 4)


def test_keras_instance_norm_matches_keras_contrib_formula():
    """keras_contrib InstanceNormalization.call with axis=None, written out in numpy: reduction axes are
    every axis but the batch; normed = (x - mean) / (std + epsilon); then * gamma + beta (broadcast shape
    [1, 1, 1, 1]: scalars)."""
    x = np.random.default_rng(0).normal(2.0, 3.0, (3, 5, 4, 6)).astype(np.float64)
    gamma, beta, eps = 1.7, -0.4, 1e-3
    axes = (1, 2, 3)
    mean = x.mean(axis=axes, keepdims=True)
    std = np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True))  # K.std: population std
    want = (x - mean) / (std + eps) * gamma + beta
    norm = KerasInstanceNorm()
    with torch.no_grad():
        norm.gamma.fill_(gamma)
        norm.beta.fill_(beta)
        got = norm(torch.from_numpy(x).float()).double().numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    # Not per-channel: a per-channel (torch InstanceNorm2d) result differs on the same input.
    per_channel = torch.nn.functional.instance_norm(torch.from_numpy(x).float(), eps=eps).numpy() * gamma + beta
    assert np.abs(per_channel - want).max() > 0.1


def test_tf_same_padding_of_strided_convs():
    """TF "same", kernel 3, stride 2, even size: pad 0 before and 1 after, so output (0, 0) sees input
    rows/cols 0..2 with kernel tap (0, 0) on input (0, 0) (torch's padding=1 puts tap (1, 1) there).
    The transposed conv is the exact adjoint of that conv (what TF's conv2d_transpose computes)."""
    g = ResnetGenerator(ngf=2, n_blocks=1, norm="keras", strided="tf_same", padding="zero")
    down = g.encoder.down1[0]
    conv = down[1]
    impulse = torch.zeros(1, conv.in_channels, 8, 8)
    impulse[0, :, 0, 0] = 1.0
    with torch.no_grad():
        out = down(impulse) - conv.bias[None, :, None, None]
    assert out.shape[-2:] == (4, 4)
    torch.testing.assert_close(out[0, :, 0, 0], conv.weight[:, :, 0, 0].sum(1))
    # Adjoint: <conv(x), y> == <x, conv_transpose(y)> with the same weights and no bias.
    torch.manual_seed(0)
    fwd = torch.nn.Sequential(torch.nn.ZeroPad2d((0, 1, 0, 1)), torch.nn.Conv2d(3, 5, 3, stride=2, bias=False))
    up = TFSameConvTranspose2d(5, 3)
    with torch.no_grad():
        up.conv.weight.copy_(fwd[1].weight)
        up.conv.bias.zero_()
        x, y = torch.randn(2, 3, 8, 8), torch.randn(2, 5, 4, 4)
        torch.testing.assert_close((fwd(x) * y).sum(), (x * up(y)).sum(), rtol=1e-5, atol=1e-5)
        assert up(y).shape == (2, 3, 8, 8)


def test_generator_shapes_keras_settings_and_conditioning():
    g = ResnetGenerator(ngf=8, n_blocks=2, padding="zero", norm="keras", strided="tf_same")
    with torch.no_grad():
        y = g(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert y.shape == (2, 3, 64, 64) and y.abs().max() <= 1
    assert sum(isinstance(m, KerasInstanceNorm) for m in g.modules()) == 2 * 2 + 3 + 2
    cond = ResnetGenerator(ngf=8, n_blocks=1, cond_dim=6)
    with pytest.raises(ValueError):
        cond(torch.zeros(1, 3, 32, 32))
    with torch.no_grad():
        assert cond(torch.zeros(1, 3, 32, 32), torch.eye(6)[:1]).shape == (1, 3, 32, 32)


def test_keras_progressive_schedule(data, vgg):
    cfg = CycleGANKerasConfig(ngf=8, n_blocks=1, ndf=8, epochs_per_size=(2, 1, 3), batch_per_size=(4, 2, 1))
    m = CycleGANKeras(cfg, ("young", "old"), CPU)
    # Readable straight away (no num_steps call first). |young| = |old| = 10: Keras-GAN epochs of
    # int(10/4) = 2, int(10/2) = 5, 10 steps.
    assert [(p.start, p.end, p.size, p.batch) for p in m.schedule(data)] == [
        (0, 4, 64, 4), (4, 9, 128, 2), (9, 39, 256, 1)
    ]  # fmt: skip
    assert m.phase(data, 40).size == 256
    assert m.num_steps(data) == 2 * 2 + 5 + 3 * 10 == sum(m.epoch_lengths(data))
    assert [m.phase(data, s).size for s in range(39)] == [64] * 4 + [128] * 5 + [256] * 30
    assert m.resolution == 256
    # The batch follows the phase: a tiny two-size run samples 32x32 pairs, then 64x64 singles.
    small = make("cyclegan_keras", vgg)  # epochs of int(10/2) = 5 steps at 32, then 10 at 64
    g = torch.Generator().manual_seed(0)
    assert small.sample_batch(data, 4, g)["A"].shape == (2, 3, 32, 32)
    assert small.sample_batch(data, 5, g)["B"].shape == (1, 3, 64, 64)
    losses = small.train_step(small.sample_batch(data, 5, g), 5)  # same weights at the next size
    assert all(math.isfinite(v) for v in losses.values())


def test_keras_epoch_is_the_smaller_domain_over_the_batch(data):
    # Keras-GAN's DataLoader: n_batches = int(min(|A|, |B|) / batch); junyanz would use ceil(max / batch).
    pair = data.groups["pair"].clone()
    pair[torch.nonzero(pair == 1).flatten()[:3]] = -1  # old: 7 faces, young: 10
    uneven = TrainData(data.images, {**data.groups, "pair": pair}, data.group_names)
    cfg = CycleGANKerasConfig(ngf=8, n_blocks=1, ndf=8, sizes=(32,), epochs_per_size=(3,), batch_per_size=(2,))
    m = CycleGANKeras(cfg, ("young", "old"), CPU)
    assert m.epoch_lengths(uneven) == [3, 3, 3] and m.num_steps(uneven) == 9


def test_keras_default_pixel_loss_is_mae_as_compiled_by_the_source():
    assert CycleGANKerasConfig().pixel_loss == "mae"


# ---- perceptual identity loss -------------------------------------------------------------------


def test_gram_matrix_and_loss_by_hand():
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [-1.0, 2.0]]]])  # (1, 2, 2, 2)
    a, b = [1.0, 2.0, 3.0, 4.0], [0.0, 1.0, -1.0, 2.0]
    dot = lambda u, v: sum(x * y for x, y in zip(u, v))  # noqa: E731
    want = torch.tensor([[dot(a, a), dot(a, b)], [dot(b, a), dot(b, b)]]) / (2 * 2 * 2)
    torch.testing.assert_close(gram_matrix(f)[0], want)
    g2 = torch.zeros(1, 2, 2, 2)
    # ||G(f) - 0||_F^2 = (30^2 + 7^2 + 7^2 + 6^2) / 8^2 per layer; two layers add.
    expected = 2 * (30**2 + 2 * 7**2 + 6**2) / 64
    torch.testing.assert_close(gram_loss([f, f], [g2, g2]), torch.tensor(expected))
    assert gram_loss([f], [f.clone()]).item() == 0.0


def test_vgg_style_loss_zero_for_identical_images_and_imagenet_scaling(vgg):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    feats = vgg_style_features(vgg, x, ("relu1_2", "relu2_2", "relu3_3", "relu4_3"))
    assert [f.shape[1:] for f in feats] == [(64, 32, 32), (128, 16, 16), (256, 8, 8), (512, 4, 4)]
    assert gram_loss(feats, vgg_style_features(vgg, x.clone(), ("relu1_2", "relu2_2", "relu3_3", "relu4_3"))) == 0
    ends = imagenet_normalize(torch.tensor([-1.0, 1.0]).view(2, 1, 1, 1).expand(2, 3, 1, 1))
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(ends[0, :, 0, 0], -mean / std)
    torch.testing.assert_close(ends[1, :, 0, 0], (1 - mean) / std)


def test_vgg_loader_is_strict_and_vgg_is_required(vgg):
    loaded = vgg16_features_from_state_dict(vgg.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), vgg.state_dict().values()))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    broken = dict(vgg.state_dict())
    broken.pop("28.bias")
    with pytest.raises(RuntimeError):
        vgg16_features_from_state_dict(broken)
    with pytest.raises(ValueError, match="vgg16"):
        CycleGANPerceptual(CycleGANPerceptualConfig(ngf=8, n_blocks=1, ndf=8), ("young", "old"), CPU)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before")
def test_perceptual_lr_decays_linearly_per_epoch(vgg):
    m = make("cyclegan_perceptual", vgg, n_epochs=2, n_epochs_decay=2)
    lrs = []
    for epoch in range(4):
        lrs.append(m.opt_G.param_groups[0]["lr"])
        m.end_of_epoch(epoch)
    torch.testing.assert_close(torch.tensor(lrs), 2e-4 * torch.tensor([1.0, 1.0, 2 / 3, 1 / 3]))
    assert [LinearDecay(100, 100)(e) for e in (0, 99, 100, 199)] == [1.0, 1.0, 1 - 1 / 101, 1 - 100 / 101]


# ---- age-vector CycleGAN ---------------------------------------------------------------------------


def test_agevec_condition_changes_output_and_tasks_cover_all_pairs(data, vgg):
    m = make("cyclegan_agevec", vgg)
    assert len(m.supported_tasks()) == 30 and ("20s", "50s") in m.supported_tasks()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    outs = [m.translate(x, "20s", d) for d in DECADES if d != "20s"]
    assert all(not torch.equal(outs[0], o) for o in outs[1:])
    batch = m.sample_batch(data, 0, torch.Generator().manual_seed(0))
    assert (batch["source"] != batch["target"]).all()
    decade = data.groups["decades"]
    # every face in the batch is a (possibly flipped) face of its sampled decade
    for key, groups in (("x", batch["source"]), ("y", batch["target"])):
        for img, grp in zip(batch[key], groups):
            pool = data.images[32][decade == grp].float() / 127.5 - 1
            assert any(torch.equal(img, p) or torch.equal(img, p.flip(-1)) for p in pool)


def test_agevec_feature_maps_and_no_hooks_left(vgg):
    m = make("cyclegan_agevec", vgg)
    maps = m.feature_maps(torch.zeros(2, 3, 32, 32), "60s")
    assert list(maps) == ["c7s1", "down1", "down2", "fuse", "res1", "up1", "up2", "out"]
    assert maps["down2"].shape == (2, 32, 8, 8) and maps["fuse"].shape == (2, 32, 8, 8)
    torch.testing.assert_close(maps["out"], m.translate(torch.zeros(2, 3, 32, 32), "10s", "60s"))
    assert all(not mod._forward_hooks for mod in m.G.modules())


def test_agevec_switches_for_what_goes_beyond_liu(data, vgg):
    plain = make("cyclegan_agevec", vgg, fuse=False, conditioned_discriminator=False)
    assert plain.G.fuse is None and "fuse" not in plain.G.stages()
    assert plain.G.blocks.res1.block[1].in_channels == 32 + 6 and plain.G.decoder.up1[0].in_channels == 32 + 6
    assert plain.D.model[0].in_channels == 3
    default = make("cyclegan_agevec", vgg)
    assert default.G.fuse is not None and default.D.model[0].in_channels == 3 + 6
    losses = plain.train_step(plain.sample_batch(data, 0, torch.Generator().manual_seed(0)), 0)
    assert all(math.isfinite(v) for v in losses.values())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert not torch.equal(plain.translate(x, "20s", "30s"), plain.translate(x, "20s", "60s"))


@pytest.mark.parametrize("name", NAMES)
def test_state_keys_are_checked(name, vgg):
    m = make(name, vgg)
    state = m.state_dict()
    assert "nets" in state and "opt_G" in state and set(state["nets"]) == set(m.modules())
    with pytest.raises(ValueError, match="keys"):
        m.load_state_dict({**state, "schedule": None})


# ---- shared blocks --------------------------------------------------------------------------------


def test_image_pool_semantics_and_determinism():
    def run(pool: ImagePool, start: int, n: int) -> list[float]:
        return [pool.query(torch.full((1, 1, 1, 1), float(i))).item() for i in range(start, start + n)]

    pool = ImagePool(pool_size=3, seed=7)
    out = run(pool, 0, 200)
    assert out[:3] == [0.0, 1.0, 2.0]  # filling: stored and returned
    swapped = [o != i for i, o in enumerate(out)]
    assert 70 < sum(swapped) < 130  # about half of the later queries return a stored image
    assert all(o <= i for i, o in enumerate(out))  # only earlier images come back
    # conservation: every image is returned once or still stored (the first 3 were both)
    stored = sorted(t.item() for t in pool.images)
    assert sorted(out + stored) == sorted([float(i) for i in range(200)] + [0.0, 1.0, 2.0])
    # same seed, same history; state round trip continues identically
    assert run(ImagePool(3, seed=7), 0, 200) == out
    twin = ImagePool(3, seed=99)
    twin.load_state_dict(copy.deepcopy(pool.state_dict()))
    assert run(twin, 200, 50) == run(pool, 200, 50)
    assert torch.equal(ImagePool(0).query(torch.ones(2, 3, 4, 4)), torch.ones(2, 3, 4, 4))


def test_random_faces_flips_and_draws_only_from_indices(data):
    idx = data.indices("pair", "old")
    faces = random_faces(data, 32, idx, 64, torch.Generator().manual_seed(0))
    pool = data.images[32][idx].float() / 127.5 - 1
    plain = sum(any(torch.equal(f, p) for p in pool) for f in faces)
    flipped = sum(any(torch.equal(f, p.flip(-1)) for p in pool) for f in faces)
    assert plain + flipped == 64 and 16 < flipped < 48
    with pytest.raises(ValueError):
        random_faces(data, 128, idx, 1, torch.Generator())
