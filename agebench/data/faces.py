"""Read the prepared data (index table and memory-mapped face arrays) for the later stages."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from agebench.params.sections import GroupsConfig
from methods.base import TrainData


def load_index(prepared: str | Path) -> pd.DataFrame:
    """The index table: one row per kept face; `row` is the index into every faces_<R>.npy."""
    path = Path(prepared) / "index.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the prepare stage first (dvc repro prepare)")
    return pd.read_csv(
        path, keep_default_na=False, dtype={"file": str, "race": str, "pair": str, "cgan6": str, "decades": str}
    )


def load_faces(prepared: str | Path, resolution: int) -> np.ndarray:
    """(N, R, R, 3) uint8 memory map of the prepared faces at `resolution`."""
    path = Path(prepared) / f"faces_{resolution}.npy"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: resolution {resolution} is not prepared; add it to data.resolutions in params.yaml"
        )
    return np.load(path, mmap_mode="r")


def to_eval_size(rgb: np.ndarray, size: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (size, size, 3) uint8: the one resize of a face to the evaluation size (PIL
    antialiased bicubic, `reducing_gap=None`; returned as is when already that size). Built-in methods'
    outputs (`generate`) and external rows' outputs (`external.score`) both go through it."""
    if rgb.shape[:2] == (size, size):
        return np.ascontiguousarray(rgb)
    return np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None))


def test_faces(index: pd.DataFrame, scheme: str, group: str) -> pd.DataFrame:
    """The index rows of the test faces in `group` of `scheme`, in index order: a task's inputs when `group` is
    its source, the real faces it is compared with when `group` is its target (PROTOCOL.md s.3)."""
    return index.loc[(index[scheme] == group) & (index["split"] == "test")]


def in_validation(name: str, fraction: float) -> bool:
    """Whether train face `name` belongs to the validation split: a stable hash of the file name with its
    own salt, so independent of the test split's rule (PROTOCOL.md s.1) and of the smoke subsample.
    Only train faces are ever asked: the test split is never part of validation."""
    if fraction <= 0.0:
        return False
    h = int(hashlib.sha1(b"agebench-validation:" + os.fsencode(name)).hexdigest(), 16)
    return (h % 1_000_000) < fraction * 1_000_000


def validation_mask(index: pd.DataFrame, fraction: float) -> np.ndarray:
    """(N,) bool over `index`: the train faces held out for validation (`in_validation`); all False at 0."""
    if fraction <= 0.0:
        return np.zeros(len(index), bool)
    train = (index["split"] == "train").to_numpy()
    names = index["file"].astype(str).tolist()
    return train & np.fromiter((in_validation(n, fraction) for n in names), bool, len(names))


def faces_nchw(faces: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Gather `rows` of an (N, R, R, 3) uint8 array into a (K, 3, R, R) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(faces[rows])).permute(0, 3, 1, 2).contiguous()


def build_train_data(
    prepared: str | Path,
    scheme: str,
    groups: GroupsConfig,
    resolutions: tuple[int, ...],
    device: torch.device,
    validation: float = 0.0,
) -> TrainData:
    """Train-split faces that fall in a group of `scheme`, at each resolution, on `device`; the validation
    share (`validation_mask(index, validation)`) is left out."""
    index = load_index(prepared)
    names = tuple(groups.schemes()[scheme])
    keep = (index["split"] == "train").to_numpy() & ~validation_mask(index, validation)
    sel = index[keep & (index[scheme] != "").to_numpy()]
    rows = sel["row"].to_numpy()
    images = {r: faces_nchw(load_faces(prepared, r), rows).to(device) for r in sorted(set(resolutions))}
    group_ids = torch.tensor([names.index(g) for g in sel[scheme]], dtype=torch.int64, device=device)
    all_groups = {scheme: group_ids}
    return TrainData(images=images, groups=all_groups, group_names={scheme: names})
