"""`agebench feature-maps`: dump a conditioned generator's intermediate feature maps for one face.

For methods that expose `feature_maps(images, target)` (forward hooks; `cyclegan_agevec`), the face
image (a face crop such as a UTKFace chip, resized to the method's resolution) is translated to
`--to` and every hooked stage's output is written to `<out>/feature_maps.npz` ({stage: (C, h, w)
float32}) together with `<out>/feature_maps.png` (per stage, the mean absolute activation).

    agebench feature-maps face.jpg --method cyclegan_agevec --to 60s --out maps/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agebench.commands._help_format import command_parser

# numpy, PIL, torch and the methods are imported where they are used: `feature-maps --help` stays fast.
if TYPE_CHECKING:
    import numpy as np


def maps_png(maps: dict[str, np.ndarray], face: np.ndarray, title: str) -> bytes:
    """The face, then each stage's mean |activation| map (own colour scale), in forward order."""
    import numpy as np

    from agebench.report.html import figure_png, pyplot

    plt = pyplot()
    n = len(maps) + 1
    fig, axes = plt.subplots(1, n, figsize=(1.6 * n, 2.0), squeeze=False)
    axes[0][0].imshow(face)
    axes[0][0].set_title("input", fontsize=8)
    for ax, (name, m) in zip(axes[0][1:], maps.items()):
        ax.imshow(np.abs(m).mean(0), cmap="magma")
        ax.set_title(f"{name}\n{m.shape[0]}x{m.shape[1]}x{m.shape[2]}", fontsize=7)
    for ax in axes[0]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    return figure_png(fig)


def hooked_methods() -> list[str]:
    """Registered methods whose class has `feature_maps` hooks (imports each method's module)."""
    from agebench.infra.registry import METHODS

    return [name for name in METHODS.names() if hasattr(METHODS.get(name), "feature_maps")]


def check_request(method: str, params: Any, models: Path, to: str, face: Path) -> str | None:
    """What is wrong with the request before any network loads (None: nothing): an unknown method or one
    without hooks (both name the methods that have them), a missing model or face file, a `--to` that is not
    one of the method's groups (its scheme's groups in params)."""
    from agebench.infra.registry import METHODS

    hooked = hooked_methods()
    if method not in METHODS:
        return f"unknown method {method!r}; methods with feature_maps hooks: {', '.join(hooked) or 'none'}"
    if method not in hooked:
        return f"{method} has no feature_maps hooks; methods with hooks: {', '.join(hooked) or 'none'}"
    model = models / method / "model.pt"
    if not model.is_file():
        return f"{model} not found: train {method} first (dvc repro train@{method}), or give --models"
    if not face.is_file():
        return f"{face}: not found"
    groups = list(params.groups.schemes()[METHODS.get(method).scheme])
    if to not in groups:
        return f"--to {to!r}: not one of {method}'s groups ({', '.join(groups)})"
    return None


EXAMPLE = "agebench feature-maps face.png --method cyclegan_agevec --to 60s --out maps/"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    parser = command_parser(
        sub,
        "feature-maps",
        "dump cyclegan_agevec's intermediate feature maps for a face",
        [EXAMPLE],
        __doc__.split("\n\n")[0],
    )
    parser.add_argument("face", type=Path, help="a face crop (any size; resized to the method's resolution)")
    parser.add_argument(
        "--method", default="cyclegan_agevec", help="a trained method with feature_maps hooks (today: cyclegan_agevec)"
    )
    parser.add_argument("--to", required=True, help="target group of the method (e.g. 60s)")
    parser.add_argument("--out", type=Path, required=True, help="folder for feature_maps.npz and .png")
    parser.add_argument("--params", default="params.yaml", help="the params.yaml the model was trained with")
    parser.add_argument("--models", type=Path, default=Path("models"), help="folder of <method>/model.pt")
    parser.add_argument("--device", default="auto", help="torch device: auto (cuda when available), cpu, cuda")
    return parser


def run(args: argparse.Namespace) -> int:
    """Translate the face with hooks on and write the maps (npz) and their picture (png)."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    from agebench.data import photo as ph
    from agebench.infra.common import atomic_path, write_npz
    from agebench.infra.devices import select_device
    from agebench.params.load import load_params
    from agebench.pipeline.generate import load_trained
    from methods.base import uint8_to_float

    params = load_params(args.params)
    problem = check_request(args.method, params, args.models, args.to, args.face)
    if problem:
        print(f"agebench feature-maps: error: {problem}", file=sys.stderr)
        return 2
    device = select_device(args.device)
    method = load_trained(args.method, params, args.models / args.method, device)
    with Image.open(args.face) as img:
        face = ph.resize(np.asarray(ImageOps.exif_transpose(img).convert("RGB")), method.resolution)
    x = uint8_to_float(torch.from_numpy(np.array(face)).permute(2, 0, 1)[None].to(device))
    try:
        maps = {k: v[0].cpu().numpy().astype(np.float32) for k, v in method.feature_maps(x, args.to).items()}
    except ValueError as exc:
        print(f"agebench feature-maps: error: {exc}", file=sys.stderr)
        return 2
    write_npz(args.out / "feature_maps.npz", maps)
    with atomic_path(args.out / "feature_maps.png") as tmp:
        tmp.write_bytes(maps_png(maps, face, f"{args.method}: {args.face.name} -> {args.to}"))
    print(f"feature-maps: {len(maps)} stages ({', '.join(maps)}) -> {args.out}")
    return 0
