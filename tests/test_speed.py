"""agebench.infra.speed: the training speed switches change how a step runs, never what it computes.

Each switch is checked on a real method's train_step (cyclegan_keras, ngf 8, 32 px) against the
float32 NCHW step from the same seed on the same batch: channels_last within 1e-5 (the same
arithmetic in another memory order), bfloat16 autocast within 3% on every named loss (bf16 keeps 8
mantissa bits, ~0.4% per rounding) while its convolutions are shown to really run in bfloat16.
The `cpu` profile of params.yaml is checked for what the cpu track promises: all data, the full
benchmark's scoring, 64 px methods, float32 everywhere and a declared training budget per method.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from agebench.infra.preflight_speed import stand_in_aux
from agebench.infra.registry import METHODS
from agebench.infra.speed import configure_threads, networks, num_threads, prepare_for_speed, step_context
from agebench.params.reading import build, read_params, section
from agebench.params.sections import EvaluateConfig, GroupsConfig, TrainConfig
from methods.base import TrainData

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_keras(seed: int = 0):
    """cyclegan_keras with ngf 8, 1 residual block, 32 px, batch 2, and its tiny random data."""
    cls = METHODS.get("cyclegan_keras")
    config = build(
        cls.config_cls,
        {"ngf": 8, "n_blocks": 1, "ndf": 8, "sizes": [32], "epochs_per_size": [1], "batch_per_size": [2]},
        "test",
    )
    torch.manual_seed(seed)
    method = cls(config, ("young", "old"), torch.device("cpu"))
    gen = torch.Generator().manual_seed(1)
    faces = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8, generator=gen)
    data = TrainData(images={32: faces}, groups={"pair": torch.arange(8) % 2}, group_names={"pair": ("young", "old")})
    method.num_steps(data)
    return method, data


def losses_after(method, data, steps: int) -> list[dict[str, float]]:
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(3)  # the same global RNG stream for every run compared
    return [method.train_step(method.sample_batch(data, s, gen), s) for s in range(steps)]


def max_rel(a: dict[str, float], b: dict[str, float]) -> float:
    assert a.keys() == b.keys()
    return max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-3) for k in a)


def test_channels_last_step_matches_nchw() -> None:
    ref, data = tiny_keras()
    fast, _ = tiny_keras()
    prepare_for_speed(fast, channels_last=True)
    weights = [p for net in networks(fast) for p in net.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    assert not all(p.is_contiguous() for p in weights)  # the layout really changed
    (a,), (b,) = losses_after(ref, data, 1), losses_after(fast, data, 1)
    assert max_rel(a, b) < 1e-5
    # The updated weights agree too (Adam's first step is ~lr * sign(grad): allow one step's worth).
    params = [(p, q) for n, m in ref.modules().items() for p, q in zip(m.parameters(), fast.modules()[n].parameters())]
    assert params and all(torch.allclose(p, q, rtol=0, atol=2 * ref.config.lr) for p, q in params)


def test_bf16_step_close_to_fp32_and_really_bf16() -> None:
    ref, data = tiny_keras()
    fast, _ = tiny_keras()
    prepare_for_speed(fast, bf16=True)
    dtypes: list[torch.dtype] = []
    conv = next(m for net in fast.modules().values() for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    hook = conv.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    (a,), (b,) = losses_after(ref, data, 1), losses_after(fast, data, 1)
    hook.remove()
    assert dtypes and all(d == torch.bfloat16 for d in dtypes), dtypes
    assert 0 < max_rel(a, b) < 3e-2  # > 0: the bf16 step is not secretly the fp32 one
    # Weights, their gradients' optimiser states and translate stay float32.
    assert all(p.dtype == torch.float32 for net in networks(fast) for p in net.parameters())
    out = fast.translate(torch.zeros(1, 3, 32, 32), "young", "old")
    assert out.dtype == torch.float32


def test_prepare_for_speed_keeps_parameters_and_state_keys() -> None:
    method, data = tiny_keras()
    before_ids = [id(p) for g in method.opt_G.param_groups for p in g["params"]]
    keys = {k: sorted(m.state_dict()) for k, m in method.modules().items()}
    prepare_for_speed(method, channels_last=True, bf16=True)
    assert [id(p) for g in method.opt_G.param_groups for p in g["params"]] == before_ids
    assert {k: sorted(m.state_dict()) for k, m in method.modules().items()} == keys
    assert all(torch.isfinite(torch.tensor(v)) for v in losses_after(method, data, 1)[0].values())


def test_threads_and_context() -> None:
    with pytest.raises(ValueError, match="threads"):
        configure_threads(-1)
    before = torch.get_num_threads()
    with num_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with step_context("cpu", bf16=True):
        assert torch.is_autocast_enabled("cpu")
    with step_context("cpu", bf16=False):
        assert not torch.is_autocast_enabled("cpu")


def profile_params(tmp_path: Path, profile: str) -> dict:
    """The repository's params.yaml read with `profile` selected, whatever its own `profile:` line says."""
    text = (REPO / "params.yaml").read_text(encoding="utf-8")
    path = tmp_path / profile / "params.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(re.sub(r"(?m)^profile: .*$", f"profile: {profile}", text), encoding="utf-8")
    return read_params(path)


def test_cpu_profile_all_data_same_scoring_64px(tmp_path: Path) -> None:
    """The cpu track scores like the full benchmark (same evaluate settings, tasks and groups) on all the
    data, and every method it trains works at 64 px (asked of the built method, not read from a key)."""
    full, raw = profile_params(tmp_path, "full"), profile_params(tmp_path, "cpu")
    assert raw["profile"] == "cpu" and full["profile"] == "full"
    assert raw["data"]["subsample"] == 1.0
    assert section(raw, "evaluate", EvaluateConfig) == section(full, "evaluate", EvaluateConfig)
    assert raw["tasks"] == full["tasks"] and raw["groups"] == full["groups"]
    names = GroupsConfig().schemes()
    for name in raw["methods"]:
        cls = METHODS.get(name)
        config = section(raw, name, cls.config_cls)  # every overlay key is a valid method key
        method = cls(config, tuple(names[cls.scheme]), torch.device("cpu"), stand_in_aux(cls.aux_networks))
        assert method.resolution == 64 and max(method.train_resolutions()) == 64, (name, method.train_resolutions())


def test_cpu_profile_declares_fp32_and_a_budget(tmp_path: Path) -> None:
    """Numerical precision is part of each method's declared configuration and the same on every machine:
    float32 on the cpu track (bf16 autocast was 15-40x slower than fp32 on one AMD EPYC kind), and each
    method's training budget is declared, at most 30 core-minutes per method and seed."""
    raw = profile_params(tmp_path, "cpu")
    train = section(raw, "train", TrainConfig)
    assert train.bf16 is False
    assert 0 < train.budget_core_minutes <= 30
    for name in raw["methods"]:
        cls = METHODS.get(name)
        config = section(raw, name, cls.config_cls)
        assert getattr(config, "amp_bf16", False) is False, name
