"""Load the pretrained helper networks some methods need (`Method.aux_networks`).

- "vgg16": torchvision VGG-16 `features` with ImageNet weights, for `cyclegan_perceptual`'s style
  loss; located (and downloaded, checksum-verified) by `agebench.infra.pretrained.vgg16_state_dict`.
- "face_descriptor": the differentiable dlib face-recognition ResNet (metrics.identity), for
  Age-cGAN's identity-preserving latent optimisation.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from agebench.infra.pretrained import MissingWeightsError, vgg16_state_dict

__all__ = ["MissingWeightsError", "load_aux", "vgg16_state_dict"]


def load_aux(names: tuple[str, ...], config: Any, device: torch.device) -> dict[str, nn.Module]:
    """Build the aux networks `names` for a method with `config`, frozen, on `device`."""
    out: dict[str, nn.Module] = {}
    for name in names:
        if name == "vgg16":
            from methods.blocks import vgg16_features_from_state_dict

            net = vgg16_features_from_state_dict(vgg16_state_dict(getattr(config, "weights_path", "")))
        elif name == "face_descriptor":
            from metrics.identity import FaceDescriptor, load_identity_networks

            net = FaceDescriptor(*load_identity_networks())  # (net, predictor)
        else:
            raise ValueError(f"unknown aux network {name!r} (known: vgg16, face_descriptor)")
        net.eval().requires_grad_(False)
        out[name] = net.to(device)
    return out
