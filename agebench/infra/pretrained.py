"""Pretrained files the project downloads the way the ecosystem does (no method or metric imported here).

VGG-16 `features` with ImageNet weights, for `cyclegan_perceptual`'s style loss: from the method's
`weights_path` (a state dict of `features.*`) when set, else torchvision's own file
(`VGG16_Weights.IMAGENET1K_V1`) through the torch hub cache: downloaded there on first use, its sha256
checked against the prefix in the file name as torchvision does. Missing weights (no file, no network)
are one clear error naming the fix, never a random net. Kept apart from `agebench.infra.aux_networks` so
the pre-flight (`agebench.infra.preflight`) can locate the file without importing the methods.
"""

from __future__ import annotations

import hashlib
import re
import socket
import urllib.error
from pathlib import Path

import torch

from agebench.infra.errors import UserError

#: torchvision's `VGG16_Weights.IMAGENET1K_V1.url` (kept here so the pre-flight needs no torchvision import).
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
VGG16_FILE = "vgg16-397923af.pth"
#: Approximate size of VGG16_URL in MiB (the classifier comes with it; only `features.*` are used).
VGG16_MIB = 528
#: Seconds a stalled download waits for data before it fails (urllib has no timeout by default).
DOWNLOAD_TIMEOUT_S = 60.0


class MissingWeightsError(UserError, FileNotFoundError):
    """Pretrained weights a method needs are not on this machine (or are not usable); says what to do."""


class WeightsFileError(MissingWeightsError):
    """A weights file that is there but is not VGG-16 `features` weights (garbage, a pickle that would run
    code, other tensors): one line naming the setting, never torch's traceback."""


def vgg16_features_shapes() -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of torchvision `vgg16().features.state_dict()` ("0.weight": (64, 3, 3, 3), ...),
    built on the meta device (nothing allocated)."""
    import torchvision

    with torch.device("meta"):
        features = torchvision.models.vgg16(weights=None).features
    return {k: tuple(v.shape) for k, v in features.state_dict().items()}


def _features_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(str(k).startswith("features.") for k in state):
        return {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    return state


def load_vgg16_file(
    path: str | Path, setting: str = "cyclegan_perceptual.weights_path", check_hash: bool = True
) -> dict[str, torch.Tensor]:
    """VGG-16 `features` tensors from `path` (a state dict of `vgg16().features`, or torchvision's whole
    `vgg16-*.pth`), loaded with `torch.load(weights_only=True)` and checked: tensor names and shapes equal
    `vgg16_features_shapes()`, and the sha256 prefix where the file name carries one (torchvision's
    `vgg16-397923af.pth`). Raises WeightsFileError, one line naming `setting`, for anything else.
    """
    path = Path(path)
    fix = (
        f"point {setting} at a state dict of torchvision vgg16().features "
        f"(torch.save(vgg16(weights='IMAGENET1K_V1').features.state_dict(), path) writes one), or leave it "
        f"empty to use {VGG16_FILE} from the torch hub cache"
    )
    prefix = _hash_prefix(path.name) if check_hash else ""
    if prefix:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if not digest.startswith(prefix):
            raise WeightsFileError(f"{setting}: {path}: sha256 {digest[:16]}... does not start with {prefix}; {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # garbage, truncation, or a pickle that would run code: all refused alike
        raise WeightsFileError(
            f"{setting}: {path} is not a safely loadable tensor file ({type(exc).__name__}); {fix}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsFileError(f"{setting}: {path} holds {type(state).__name__}, not a dict of tensors; {fix}")
    state = _features_only(state)
    want = vgg16_features_shapes()
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {want[k]})"
        for k in want
        if k in state and tuple(state[k].shape) != want[k]
    ]
    if missing or extra or wrong:
        what = "; ".join(
            f"{label}: {', '.join(map(str, items[:3]))}{' ...' if len(items) > 3 else ''}"
            for label, items in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
            if items
        )
        raise WeightsFileError(f"{setting}: {path} is not VGG-16 features weights ({what}); {fix}")
    return state


def check_hub_file(cached: Path, url: str = VGG16_URL) -> None:
    """Raise MissingWeightsError (one line) when a torch hub file's sha256 does not start with the prefix
    in its name (torchvision's convention: `vgg16-397923af.pth`); a name without a prefix is not checked."""
    prefix = _hash_prefix(cached.name)
    if not prefix:
        return
    digest = hashlib.sha256()
    with open(cached, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    if not digest.hexdigest().startswith(prefix):
        raise MissingWeightsError(
            f"{cached}: sha256 {digest.hexdigest()[:16]}... does not start with {prefix} (a broken download): "
            f"delete it and run again to download {url}"
        )


def hub_file(url: str = VGG16_URL, hub_dir: str | Path | None = None) -> Path:
    """Where torch hub caches `url`: `<hub dir>/checkpoints/<file name of url>` ($TORCH_HOME honoured)."""
    return Path(hub_dir or torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def _hash_prefix(name: str) -> str:
    """The sha256 prefix torchvision puts in its file names (`vgg16-397923af.pth` -> `397923af`)."""
    match = torch.hub.HASH_REGEX.search(name)
    return match.group(1) if match else ""


def _fix(url: str, cached: Path) -> str:
    return (
        f"download {url} to {cached} on a machine with internet "
        f"(python -c \"import torchvision; torchvision.models.vgg16(weights='IMAGENET1K_V1')\" does it), or set "
        f"cyclegan_perceptual.weights_path in params.yaml to a state dict of vgg16().features "
        f"(torch.save(vgg16(weights='IMAGENET1K_V1').features.state_dict(), path) writes one)"
    )


def vgg16_state_dict(
    weights_path: str, hub_dir: str | None = None, url: str = VGG16_URL, download: bool = True
) -> dict[str, torch.Tensor]:
    """State dict of VGG-16 `features.*` (keys without the `features.` prefix), float32 CPU tensors.

    `weights_path` set: that file. Empty: torchvision's ImageNet file from the torch hub cache, fetched
    from `url` with `torch.hub.load_state_dict_from_url(check_hash=True)` when absent and `download`.
    Raises MissingWeightsError (one line with the fix) when the file is missing and cannot be
    downloaded, or its sha256 does not match.
    """
    if weights_path:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise MissingWeightsError(
                f"cyclegan_perceptual.weights_path: {path} does not exist; point it at a state dict of "
                f"torchvision vgg16().features (or leave it empty to use {VGG16_FILE} from the torch hub cache)"
            )
        return load_vgg16_file(path)
    else:
        cached = hub_file(url, hub_dir)
        prefix = _hash_prefix(cached.name)
        if cached.is_file():
            check_hub_file(cached, url)
            return load_vgg16_file(cached, str(cached), check_hash=False)  # checked just above
        elif not download:
            raise MissingWeightsError(f"VGG-16 ImageNet weights not found: {cached} is missing; {_fix(url, cached)}")
        else:
            print(f"aux_networks: downloading VGG-16 ImageNet weights from {url} to {cached}", flush=True)
            before = socket.getdefaulttimeout()
            socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
            try:
                # torch hub downloads to a temporary file, checks the sha256 prefix in the file name,
                # then moves it into place: a failed or corrupt download leaves nothing behind.
                state = torch.hub.load_state_dict_from_url(
                    url,
                    model_dir=str(cached.parent),
                    map_location="cpu",
                    progress=False,
                    check_hash=bool(prefix),
                    file_name=cached.name,
                    weights_only=True,
                )
            except (urllib.error.URLError, OSError, RuntimeError) as exc:
                reason = re.sub(r"\s+", " ", str(getattr(exc, "reason", exc)))
                raise MissingWeightsError(
                    f"VGG-16 ImageNet weights could not be downloaded from {url} ({reason}); {_fix(url, cached)}"
                ) from None
            finally:
                socket.setdefaulttimeout(before)
    return _features_only(state)
