"""Load the pretrained helper networks some methods need (`Method.aux_networks`).

- "vgg16": torchvision VGG-16 `features` with ImageNet weights, for `cyclegan_perceptual`'s style
  loss. From the method's `weights_path` (a state dict of `features.*`) when set, else from
  torchvision's own file in the torch hub cache. Missing weights are an error, never a random net.
- "face_descriptor": the differentiable dlib face-recognition ResNet (metrics.identity), for
  Age-cGAN's identity-preserving latent optimisation.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILE = "vgg16-397923af.pth"


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights a method needs are not on this machine; says where to put them."""


def vgg16_state_dict(weights_path: str, hub_dir: str | None = None) -> dict[str, torch.Tensor]:
    """State dict of VGG-16 `features.*` (keys without the `features.` prefix)."""
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise MissingWeightsError(
                f"cyclegan_perceptual.weights_path: {path} does not exist; point it at a state dict of "
                f"torchvision vgg16().features (or leave it empty to use {VGG16_FILE} from the torch hub cache)"
            )
        state = torch.load(path, map_location="cpu", weights_only=True)
    else:
        hub = Path(hub_dir or torch.hub.get_dir()) / "checkpoints" / VGG16_FILE
        if not hub.is_file():
            raise MissingWeightsError(
                f"VGG-16 ImageNet weights not found: {hub} is missing. Download {VGG16_URL} to that path "
                f'(any machine with internet: python -c "import torchvision; torchvision.models.vgg16('
                f"weights='IMAGENET1K_V1')\"), or set cyclegan_perceptual.weights_path in params.yaml to a "
                f"state dict of vgg16().features (e.g. ../shared/weights/vgg16_features_imagenet.pth)."
            )
        digest = hashlib.sha256(hub.read_bytes()).hexdigest()
        if not digest.startswith("397923af"):
            raise MissingWeightsError(f"{hub}: sha256 {digest} does not start with 397923af; re-download {VGG16_URL}")
        state = torch.load(hub, map_location="cpu", weights_only=True)
    if any(k.startswith("features.") for k in state):
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    return state


def load_aux(names: tuple[str, ...], config: Any, device: torch.device) -> dict[str, nn.Module]:
    """Build the aux networks `names` for a method with `config`, frozen, on `device`."""
    out: dict[str, nn.Module] = {}
    for name in names:
        if name == "vgg16":
            from methods.cyclegan_perceptual import vgg16_features_from_state_dict

            net = vgg16_features_from_state_dict(vgg16_state_dict(getattr(config, "weights_path", "")))
        elif name == "face_descriptor":
            from metrics.identity import FaceDescriptor, load_identity_networks

            net = FaceDescriptor(*load_identity_networks())  # (net, predictor)
        else:
            raise ValueError(f"unknown aux network {name!r} (known: vgg16, face_descriptor)")
        net.eval().requires_grad_(False)
        out[name] = net.to(device)
    return out
