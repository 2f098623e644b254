"""One smoke test per registered method, parametrised over the registry (a new method is covered too).

Each method is built from params.yaml with the smoke profile (the profile CI runs), trained for one
step on synthetic faces, then translated and round-tripped through state_dict.
"""

from __future__ import annotations

import dataclasses
import io

import pytest
import torch

from agebench.infra.registry import METHODS
from agebench.params.load import load_params
from agebench.params.reading import section
from methods.base import TrainData, uint8_to_float
from tests.conftest import REPO


def synthetic_data(scheme: str, groups: tuple[str, ...], resolutions: tuple[int, ...]) -> TrainData:
    g = torch.Generator().manual_seed(0)
    n = 4 * len(groups)
    images = {r: torch.randint(0, 256, (n, 3, r, r), generator=g, dtype=torch.uint8) for r in resolutions}
    ids = torch.arange(n) % len(groups)
    return TrainData(images=images, groups={scheme: ids}, group_names={scheme: groups})


def build(name: str, tmp_path):
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "smoke"
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    params = load_params(p)
    cls = METHODS.get(name)
    config = section(params.raw, name, cls.config_cls)
    if hasattr(config, "weights_path"):  # mechanics only: a random VGG is never used for results
        config = dataclasses.replace(config, weights_path="")
    groups = tuple(params.groups.schemes()[cls.scheme])
    aux = {}
    if "vgg16" in cls.aux_networks:
        import torchvision

        aux["vgg16"] = torchvision.models.vgg16(weights=None).features.eval().requires_grad_(False)
    if "face_descriptor" in cls.aux_networks:
        from metrics.identity import FaceDescriptor, load_identity_networks

        aux["face_descriptor"] = FaceDescriptor(*load_identity_networks())
    return cls(config, groups, torch.device("cpu"), aux), groups


@pytest.mark.parametrize("name", METHODS.names())
def test_registered_method_contract(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    method, groups = build(name, tmp_path)
    data = synthetic_data(method.scheme, groups, method.train_resolutions())
    steps = method.num_steps(data)
    assert steps >= 0
    src, tgt = method.supported_tasks()[0]
    x = uint8_to_float(data.images[method.resolution][:3])
    if steps:
        before = {k: v.detach().clone() for k, v in next(iter(method.modules().values())).state_dict().items()}
        losses = method.train_step(method.sample_batch(data, 0, torch.Generator().manual_seed(1)), 0)
        assert losses and all(k.startswith("loss_") and isinstance(v, float) for k, v in losses.items())
        after = next(iter(method.modules().values())).state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before), "one step changed no weight"
    y = method.translate(x, src, tgt)
    assert y.shape == x.shape and y.dtype == torch.float32 and y.min() >= -1 and y.max() <= 1
    back = method.round_trip(x, y, src, tgt)
    assert back.shape == x.shape and back.dtype == torch.float32
    assert isinstance(method.uses_scoring_networks, tuple) and all(
        isinstance(n, str) for n in method.uses_scoring_networks
    )
    # The resume state holds only what the weights-only loader accepts (checkpoints are read that way).
    buffer = io.BytesIO()
    torch.save(method.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    clone, _ = build(name, tmp_path)
    clone.load_state_dict(state)
    torch.manual_seed(5)
    a = method.translate(x, src, tgt)
    torch.manual_seed(5)
    b = clone.translate(x, src, tgt)
    assert torch.equal(a, b)
