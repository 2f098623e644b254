"""The CycleGAN-family methods (METHODS.md s.1, 2, 4) and their shared blocks, on tiny synthetic data.

Architectures are checked against the reference implementations' own numbers (junyanz prints
11.378 M / 7.838 M parameters for its 9/6-block generator and 2.765 M for the 70x70 PatchGAN; the
Keras-GAN discriminator's layer list gives 2,766,529) and patch-map sizes; the training contract
(finite named losses, weights move, exact resume, pure batch sampling) runs with ngf=8 networks.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torchvision

from agebench.config import build
from agebench.registry import METHODS
from methods.base import TrainData
from methods.blocks import (
    ImagePool,
    KerasPatchDiscriminator,
    LinearDecay,
    NLayerDiscriminator,
    ResnetGenerator,
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


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
    m.num_steps(data)
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
    m.num_steps(data)
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
    m1.num_steps(data)
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


def test_bf16_and_channels_last_switches_run(data, vgg):
    m = make("cyclegan_keras", vgg, amp_bf16=True, channels_last=True)
    m.num_steps(data)
    losses = m.train_step(m.sample_batch(data, 0, torch.Generator().manual_seed(1)), 0)
    assert all(math.isfinite(v) for v in losses.values())
    assert m.translate(torch.zeros(1, 3, 32, 32), "young", "old").dtype == torch.float32


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
    # Keras-GAN layer list: 3136 + 131200 + 256 + 524544 + 512 + 2097664 + 1024 + 8193.
    assert n_params(d) == 2_766_529
    with torch.no_grad():
        assert d(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 16, 16)
        assert d(torch.zeros(1, 3, 64, 64)).shape == (1, 1, 4, 4)


def test_generator_shapes_keras_settings_and_conditioning():
    g = ResnetGenerator(ngf=8, n_blocks=2, padding="zero", norm_affine=True)
    with torch.no_grad():
        y = g(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert y.shape == (2, 3, 64, 64) and y.abs().max() <= 1
    cond = ResnetGenerator(ngf=8, n_blocks=1, cond_dim=6)
    with pytest.raises(ValueError):
        cond(torch.zeros(1, 3, 32, 32))
    with torch.no_grad():
        assert cond(torch.zeros(1, 3, 32, 32), torch.eye(6)[:1]).shape == (1, 3, 32, 32)


def test_keras_progressive_schedule(data, vgg):
    cfg = CycleGANKerasConfig(ngf=8, n_blocks=1, ndf=8, epochs_per_size=(2, 1, 3), batch_per_size=(4, 2, 1))
    m = CycleGANKeras(cfg, ("young", "old"), CPU)
    with pytest.raises(RuntimeError):
        m.train_resolution(0)
    # |young| = |old| = 10: epochs of ceil(10/4) = 3, ceil(10/2) = 5, 10 steps.
    assert m.num_steps(data) == 2 * 3 + 5 + 3 * 10 == sum(m.epoch_lengths(data))
    sizes = [m.train_resolution(s) for s in range(41)]
    assert sizes == [64] * 6 + [128] * 5 + [256] * 30
    assert m.resolution == 256
    # The batch follows the phase: a tiny two-size run samples 32x32 pairs, then 64x64 singles.
    small = make("cyclegan_keras", vgg)
    small.num_steps(data)  # epochs of ceil(10/2) = 5 steps at 32, then 10 at 64
    g = torch.Generator().manual_seed(0)
    assert small.sample_batch(data, 4, g)["A"].shape == (2, 3, 32, 32)
    assert small.sample_batch(data, 5, g)["B"].shape == (1, 3, 64, 64)
    losses = small.train_step(small.sample_batch(data, 5, g), 5)  # same weights at the next size
    assert all(math.isfinite(v) for v in losses.values())


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
