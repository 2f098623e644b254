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


@pytest.fixture(scope="session")
def synthetic_prepared(tmp_path_factory: pytest.TempPathFactory):
    """`make(n, ages)`: a prepared folder (the prepare stage's real code) of `n` random-noise 48 px "faces"
    named with `ages` in turn, at 32 px: training-loop tests need the layout, not faces."""
    import numpy as np
    from PIL import Image

    from agebench.data.prepare import prepare
    from agebench.params.sections import DataConfig, GroupsConfig

    def make(n: int, ages: tuple[int, ...]) -> Path:
        root = tmp_path_factory.mktemp("faces")
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(
                root / f"{ages[i % len(ages)]}_{i % 2}_0_2017{i:011d}.jpg.chip.jpg"
            )
        out = tmp_path_factory.mktemp("prepared") / "p"
        prepare(root, out, DataConfig(resolutions=(32,)), GroupsConfig(), workers=1, progress=False)
        (out / "data.json").write_text("{}")
        return out

    return make
