"""Shared fixtures: where the real data lives, and skips with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`$AGEBENCH_SHARED_DATA`, else `../shared/data` beside the repository."""
    env = os.environ.get("AGEBENCH_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def utkface_dir() -> Path:
    """The real UTKFace folder (23,708 JPEGs); skips when absent."""
    path = shared_data_dir() / "utkface" / "UTKFace"
    if not path.is_dir():
        pytest.skip(f"real UTKFace not found at {path} (set AGEBENCH_SHARED_DATA to the folder holding utkface/)")
    return path


@pytest.fixture(scope="session")
def fgnet_dir() -> Path:
    """The real FG-NET subset (55 images); skips when absent."""
    path = shared_data_dir() / "fgnet" / "images"
    if not path.is_dir():
        pytest.skip(f"FG-NET not found at {path} (set AGEBENCH_SHARED_DATA to the folder holding fgnet/)")
    return path


@pytest.fixture(scope="session")
def utkface_sample(utkface_dir: Path) -> list[Path]:
    """60 real UTKFace files, a fixed spread over ages (sorted names, every k-th)."""
    files = sorted(utkface_dir.iterdir())
    step = max(1, len(files) // 60)
    return files[::step][:60]


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module: CI's 2 cores are shared, and oversubscription is 2-3x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
