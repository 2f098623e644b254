"""`prepare` stage: parse UTKFace labels, split, group, resize and store memory-mappable arrays.

Implements PROTOCOL.md sections 1-2 exactly:
- labels from `age_gender_race_datetime.jpg.chip.jpg`; age must be an integer 1-116 and gender 0/1,
  else the file is excluded ("bad age" / "bad gender"); a missing or unparsable race keeps the face
  with race "unknown"; names are kept byte for byte;
- a file that is not an image ("not an image": PIL cannot identify it, zero-byte files included)
  or does not decode ("undecodable image": identified but truncated or corrupt) is excluded and
  counted, never fatal; so are a name that is not valid UTF-8 ("name not UTF-8": it has no UTF-8
  bytes for the split rule), an image over `data.max_image_pixels` ("too many pixels", judged from
  its header before decoding) and one PIL refuses as a decompression bomb ("decompression bomb");
- entries of the folder that are not regular files are skipped and counted in `skipped`: symbolic
  links are never followed (a link may point anywhere on the machine), subfolders are not entered;
- split: test when int(sha1(name_utf8).hexdigest(), 16) % 10 == 0, else train; v2 duplicates:
  byte-identical files (same sha256, hashed in the decoding workers) all take the side the rule
  gives the group's first name in UTF-8 byte order, so no test face has a copy in train;
- groups of the `pair`, `cgan6` and `decades` schemes (inclusive bounds from params.yaml).

Outputs in `--out`: `index.csv` (one row per kept face, the row number is the array index),
`faces_<R>.npy` (N, R, R, 3) uint8 RGB for every R in `data.resolutions` (PIL antialiased bicubic
from the original), `data.json` (the counts, also written to `--report`), and the age histogram.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

import agebench
from agebench.infra.common import atomic_path
from agebench.params.sections import DataConfig, GroupsConfig

EXCLUSION_REASONS = (
    "name not UTF-8",
    "bad age",
    "bad gender",
    "not an image",
    "undecodable image",
    "too many pixels",
    "decompression bomb",
)
#: Folder entries that are not regular files: skipped, never read, counted in data.json's `skipped`.
SKIP_REASONS = ("symlink", "directory", "special file")
SCHEMES = ("pair", "cgan6", "decades")
INDEX_COLUMNS = ("row", "file", "age", "gender", "race", "split", *SCHEMES)
_INT = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class Label:
    """Labels parsed from a UTKFace file name."""

    age: int
    gender: int
    race: str  # "0".."4" or "unknown"


def parse_label(name: str) -> Label | str:
    """Parse `age_gender_race_datetime.jpg.chip.jpg`; returns a Label or an exclusion reason."""
    parts = name.split("_")
    age_s = parts[0]
    if not _INT.fullmatch(age_s) or not 1 <= int(age_s) <= 116:
        return "bad age"
    if len(parts) < 3 or parts[1] not in ("0", "1"):
        return "bad gender"
    # Three real names lack the race field (age_gender_datetime...): the third field is then the date.
    race = parts[2] if len(parts) >= 4 and parts[2] in ("0", "1", "2", "3", "4") else "unknown"
    return Label(int(age_s), int(parts[1]), race)


def split_of(name: str) -> str:
    """PROTOCOL.md s.1: "test" when int(sha1(name_utf8), 16) % 10 == 0, else "train"."""
    return "test" if int(hashlib.sha1(os.fsencode(name)).hexdigest(), 16) % 10 == 0 else "train"


def in_subsample(name: str, fraction: float) -> bool:
    """Stable, order-independent subsample (smoke profile), independent of the split hash."""
    if fraction >= 1.0:
        return True
    h = int(hashlib.sha1(b"agebench-subsample:" + os.fsencode(name)).hexdigest(), 16)
    return (h % 1_000_000) < fraction * 1_000_000


def group_of(age: int, groups: Mapping[str, tuple[int, int]]) -> str:
    """Name of the group whose inclusive bounds contain `age`, or "" when none does."""
    for name, (low, high) in groups.items():
        if low <= age <= high:
            return name
    return ""


def is_utf8(name: str) -> bool:
    """True when a file name (as os.scandir gives it: undecodable bytes as surrogates) is valid UTF-8."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def load_face(
    path: Path | IO[bytes], resolutions: Sequence[int], max_pixels: int = DataConfig.max_image_pixels
) -> list[np.ndarray] | str:
    """Decode one image and resize it to every resolution (PIL antialiased bicubic).

    Returns a list of (R, R, 3) uint8 arrays, or the exclusion reason when it cannot be used: over
    `max_pixels` ("too many pixels", from the header: nothing is decoded), refused by PIL's own
    decompression-bomb guard ("decompression bomb"), not an image, or not decodable.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                if img.width * img.height > max_pixels:
                    return "too many pixels"
                img.load()
                rgb = img.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "decompression bomb"
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError):
        return "undecodable image"
    return [np.asarray(rgb.resize((r, r), Image.Resampling.BICUBIC, reducing_gap=None)) for r in resolutions]


def read_face(
    path: Path, resolutions: Sequence[int], max_pixels: int = DataConfig.max_image_pixels
) -> tuple[list[np.ndarray] | str, str]:
    """(`load_face`'s result, hex sha256 of the file's bytes) with one open of the file.

    The file is opened without following a symbolic link (one swapped in after the folder was
    listed is "not an image"), hashed in a streaming pass, then decoded from the same handle.
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return "not an image", ""
    with os.fdopen(fd, "rb") as fh:
        digest = hashlib.sha256()
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
        fh.seek(0)
        return load_face(fh, resolutions, max_pixels), digest.hexdigest()


# Worker state: the output arrays opened once per process, written in place by row.
_ARRAYS: dict[int, np.ndarray] = {}


def _init_worker(paths: dict[int, str]) -> None:
    _ARRAYS.clear()
    for res, p in paths.items():
        _ARRAYS[res] = np.load(p, mmap_mode="r+")


def _process_chunk(
    args: tuple[str, list[tuple[int, str]], tuple[int, ...], int],
) -> list[tuple[int, str | None, str]]:
    folder, items, resolutions, max_pixels = args
    out: list[tuple[int, str | None, str]] = []
    for row, name in items:
        result, sha = read_face(Path(folder) / name, resolutions, max_pixels)
        if isinstance(result, str):
            out.append((row, result, sha))
            continue
        for res, arr in zip(resolutions, result):
            _ARRAYS[res][row] = arr
        out.append((row, None, sha))
    for arr in _ARRAYS.values():
        arr.flush()
    return out


def scan_folder(folder: Path) -> tuple[list[str], Counter[str]]:
    """(regular files in `folder`, sorted; {skip reason: count} of the other entries).

    Symbolic links (to files or folders, inside or outside `folder`) are not followed, subfolders
    not entered. Clear errors for a missing folder or one without regular files.
    """
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} does not exist (check data.source in params.yaml)")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    names: list[str] = []
    skipped: Counter[str] = Counter({r: 0 for r in SKIP_REASONS})
    with os.scandir(folder) as entries:
        for e in entries:
            if e.is_symlink():
                skipped["symlink"] += 1
            elif e.is_dir(follow_symlinks=False):
                skipped["directory"] += 1
            elif e.is_file(follow_symlinks=False):
                names.append(e.name)
            else:
                skipped["special file"] += 1
    if not names:
        raise FileNotFoundError(f"image folder {folder} holds no files (check data.source in params.yaml)")
    return sorted(names), skipped


def list_files(folder: Path) -> list[str]:
    """Regular files in `folder` (names as on disk), sorted; see `scan_folder`."""
    return scan_folder(folder)[0]


def dedupe_split(names: Sequence[str], digests: Sequence[str]) -> tuple[dict[str, str], int, int]:
    """PROTOCOL.md s.1 v2: ({name: "train"|"test"}, duplicate groups, files moved from their v1 side).

    Files with the same sha256 form a group; every member takes `split_of` of the group's first
    name in UTF-8 byte order. A group is counted when it has two or more members.
    """
    by_digest: dict[str, list[str]] = {}
    for name, digest in zip(names, digests):
        by_digest.setdefault(digest, []).append(name)
    side: dict[str, str] = {}
    groups = 0
    for members in by_digest.values():
        groups += len(members) > 1
        rule = split_of(min(members, key=lambda n: n.encode("utf-8")))
        side.update((m, rule) for m in members)
    moved = sum(side[n] != split_of(n) for n in names)
    return side, groups, moved


def prepare(
    folder: Path, out: Path, data: DataConfig, groups: GroupsConfig, workers: int = 0, progress: bool = True
) -> dict:
    """Run the whole prepare step from an image folder into `out`; returns the data report dict."""
    names, skipped = scan_folder(folder)
    excluded: Counter[str] = Counter({r: 0 for r in EXCLUSION_REASONS})
    candidates: list[tuple[str, Label]] = []
    subsampled_out = 0
    for name in names:
        if not is_utf8(name):
            excluded["name not UTF-8"] += 1
            continue
        if not in_subsample(name, data.subsample):
            subsampled_out += 1
            continue
        label = parse_label(name)
        if isinstance(label, str):
            excluded[label] += 1
        else:
            candidates.append((name, label))

    resolutions = tuple(sorted(set(data.resolutions)))
    n = len(candidates)
    tmp_paths = {r: out / f".faces_{r}.partial.npy" for r in resolutions}
    out.mkdir(parents=True, exist_ok=True)
    for r, p in tmp_paths.items():
        np.lib.format.open_memmap(p, mode="w+", dtype=np.uint8, shape=(n, r, r, 3)).flush()

    workers = workers or os.cpu_count() or 1
    chunk = 64
    jobs = [
        (str(folder), [(i, candidates[i][0]) for i in range(s, min(s + chunk, n))], resolutions, data.max_image_pixels)
        for s in range(0, n, chunk)
    ]
    failed: dict[int, str] = {}
    digests: dict[int, str] = {}
    bar = tqdm(total=n, desc="prepare: decode+resize", unit="img", disable=not progress)
    if workers == 1:
        _init_worker({r: str(p) for r, p in tmp_paths.items()})
        results = map(_process_chunk, jobs)
        for res in results:
            failed.update({row: reason for row, reason, _ in res if reason})
            digests.update({row: sha for row, _, sha in res})
            bar.update(len(res))
    else:
        with ProcessPoolExecutor(
            workers, initializer=_init_worker, initargs=({r: str(p) for r, p in tmp_paths.items()},)
        ) as pool:
            for res in pool.map(_process_chunk, jobs):
                failed.update({row: reason for row, reason, _ in res if reason})
                digests.update({row: sha for row, _, sha in res})
                bar.update(len(res))
    bar.close()
    _ARRAYS.clear()
    excluded.update(failed.values())

    keep = [i for i in range(n) if i not in failed]
    for r, p in tmp_paths.items():
        final = out / f"faces_{r}.npy"
        if failed:  # rare: compact the rows that decoded
            src = np.load(p, mmap_mode="r")
            with atomic_path(final) as tmp:
                dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(keep), r, r, 3))
                for s in range(0, len(keep), 4096):
                    dst[s : s + 4096] = src[keep[s : s + 4096]]
                dst.flush()
                del dst
            del src
            p.unlink()
        else:
            os.replace(p, final)

    side, duplicate_groups, moved = dedupe_split([candidates[i][0] for i in keep], [digests[i] for i in keep])
    rows = []
    schemes = groups.schemes()
    for row, i in enumerate(keep):
        name, label = candidates[i]
        rows.append(
            {
                "row": row,
                "file": name,
                "age": label.age,
                "gender": label.gender,
                "race": label.race,
                "split": side[name],
                **{s: group_of(label.age, schemes[s]) for s in SCHEMES},
            }
        )
    with (
        atomic_path(out / "index.csv") as tmp,
        open(tmp, "w", newline="", encoding="utf-8", errors="surrogateescape") as fh,
    ):
        writer = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)

    split_counts = Counter(r["split"] for r in rows)
    report = {
        "protocol_version": agebench.PROTOCOL_VERSION,
        "files_total": len(names),
        "images_kept": len(rows),
        "excluded": dict(excluded),
        "skipped": dict(skipped),
        "duplicate_groups": duplicate_groups,
        "moved_files": moved,
        "subsample": {"fraction": data.subsample, "files_left_out": subsampled_out},
        "split": {"train": split_counts["train"], "test": split_counts["test"]},
        "groups": {
            s: {
                g: {
                    "train": sum(1 for r in rows if r[s] == g and r["split"] == "train"),
                    "test": sum(1 for r in rows if r[s] == g and r["split"] == "test"),
                }
                for g in schemes[s]
            }
            for s in SCHEMES
        },
        "resolutions": list(resolutions),
    }
    return report


def age_histogram(index_csv: Path, path: Path) -> None:
    """Seaborn figure: age histograms of train vs test, by gender."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    df = pd.read_csv(index_csv, keep_default_na=False)
    df["gender"] = df["gender"].map({0: "male", 1: "female"})
    grid = sns.displot(
        df,
        x="age",
        hue="gender",
        col="split",
        col_order=["train", "test"],
        binwidth=2,
        stat="count",
        common_norm=False,
        facet_kws={"sharey": False},
        height=3.2,
        aspect=1.4,
    )
    grid.set_titles("{col_name} (n={col_var})")
    for ax, split in zip(grid.axes.flat, ["train", "test"]):
        ax.set_title(f"{split} (n={int((df['split'] == split).sum())})")
    grid.figure.suptitle("UTKFace ages by split and gender", y=1.03)
    with atomic_path(path, suffix=".png") as tmp:
        grid.figure.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(grid.figure)
