"""`prepare` stage: parse UTKFace labels, split, group, resize and store memory-mappable arrays.

Implements PROTOCOL.md sections 1-2 exactly:
- labels from `age_gender_race_datetime.jpg.chip.jpg`; age must be an integer 1-116 and gender 0/1,
  else the file is excluded ("bad age" / "bad gender"); a missing or unparsable race keeps the face
  with race "unknown"; names are kept byte for byte;
- a file that is not an image ("not an image": PIL cannot identify it, zero-byte files included)
  or does not decode ("undecodable image": identified but truncated or corrupt) is excluded and
  counted, never fatal;
- split: test when int(sha1(name_utf8).hexdigest(), 16) % 10 == 0, else train;
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

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from agebench.common import atomic_path
from agebench.config import DataConfig, GroupsConfig

EXCLUSION_REASONS = ("bad age", "bad gender", "not an image", "undecodable image")
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


def load_face(path: Path, resolutions: Sequence[int]) -> list[np.ndarray] | str:
    """Decode one image and resize it to every resolution (PIL antialiased bicubic).

    Returns a list of (R, R, 3) uint8 arrays, or the exclusion reason when it cannot be decoded.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img.load()
                rgb = img.convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return "not an image"
    except (OSError, SyntaxError, ValueError):
        return "undecodable image"
    return [np.asarray(rgb.resize((r, r), Image.Resampling.BICUBIC, reducing_gap=None)) for r in resolutions]


# Worker state: the output arrays opened once per process, written in place by row.
_ARRAYS: dict[int, np.ndarray] = {}


def _init_worker(paths: dict[int, str]) -> None:
    _ARRAYS.clear()
    for res, p in paths.items():
        _ARRAYS[res] = np.load(p, mmap_mode="r+")


def _process_chunk(args: tuple[str, list[tuple[int, str]], tuple[int, ...]]) -> list[tuple[int, str | None]]:
    folder, items, resolutions = args
    out: list[tuple[int, str | None]] = []
    for row, name in items:
        result = load_face(Path(folder) / name, resolutions)
        if isinstance(result, str):
            out.append((row, result))
            continue
        for res, arr in zip(resolutions, result):
            _ARRAYS[res][row] = arr
        out.append((row, None))
    for arr in _ARRAYS.values():
        arr.flush()
    return out


def list_files(folder: Path) -> list[str]:
    """Regular files in `folder` (names as on disk), sorted; clear errors for a bad folder."""
    if not folder.exists():
        raise FileNotFoundError(f"image folder {folder} does not exist (check data.source in params.yaml)")
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder of images")
    names = sorted(e.name for e in os.scandir(folder) if e.is_file())
    if not names:
        raise FileNotFoundError(f"image folder {folder} holds no files (check data.source in params.yaml)")
    return names


def prepare(
    folder: Path, out: Path, data: DataConfig, groups: GroupsConfig, workers: int = 0, progress: bool = True
) -> dict:
    """Run the whole prepare step from an image folder into `out`; returns the data report dict."""
    names = list_files(folder)
    excluded: Counter[str] = Counter({r: 0 for r in EXCLUSION_REASONS})
    candidates: list[tuple[str, Label]] = []
    subsampled_out = 0
    for name in names:
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
        (str(folder), [(i, candidates[i][0]) for i in range(s, min(s + chunk, n))], resolutions)
        for s in range(0, n, chunk)
    ]
    failed: dict[int, str] = {}
    bar = tqdm(total=n, desc="prepare: decode+resize", unit="img", disable=not progress)
    if workers == 1:
        _init_worker({r: str(p) for r, p in tmp_paths.items()})
        results = map(_process_chunk, jobs)
        for res in results:
            failed.update({row: reason for row, reason in res if reason})
            bar.update(len(res))
    else:
        with ProcessPoolExecutor(
            workers, initializer=_init_worker, initargs=({r: str(p) for r, p in tmp_paths.items()},)
        ) as pool:
            for res in pool.map(_process_chunk, jobs):
                failed.update({row: reason for row, reason in res if reason})
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
                "split": split_of(name),
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
        "files_total": len(names),
        "images_kept": len(rows),
        "excluded": dict(excluded),
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
