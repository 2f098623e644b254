"""Small file helpers shared by the stages: atomic writes, JSON, provenance, CLI error handling."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

import agebench


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to `path`; on success it replaces `path` (file or directory).

    On any exception the temporary is removed and `path` is left as it was, so an interrupted
    stage never leaves a half-written output.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)) / (path.name + suffix)
    try:
        yield tmp
        if path.is_dir() and not path.is_symlink():
            # Move the old output aside first: at every instant either it or the new one is in place.
            aside = tmp.parent / (path.name + ".old")
            os.replace(path, aside)
        os.replace(tmp, path)
    finally:
        _rmtree(tmp.parent)


def _rmtree(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON atomically (NaN written as null)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=False, allow_nan=False) + "\n")


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write `arrays` as an uncompressed .npz atomically (keys may contain "/")."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def git_revision(cwd: str | Path = ".") -> str:
    """`git describe --always --dirty` of the working tree, or "unknown" outside git."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def hardware() -> str:
    """A one-line description of the device torch uses and the CPU count."""
    import torch

    cpu = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} + {cpu}"
    return cpu


def provenance() -> dict[str, Any]:
    """Protocol version, git revision, python/torch versions for a result file."""
    import torch

    return {
        "protocol_version": agebench.PROTOCOL_VERSION,
        "agebench_version": agebench.__version__,
        "git_revision": git_revision(Path(__file__).resolve().parents[1]),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a stage `main`, turning user-caused errors into one clear line and exit status 2."""
    from agebench.config import ParamsError
    from agebench.registry import UnknownNameError

    user_errors: tuple[type[BaseException], ...] = (ParamsError, UnknownNameError, FileNotFoundError)
    with contextlib.suppress(ImportError):
        from agebench.download import DataSourceError

        user_errors += (DataSourceError,)
    with contextlib.suppress(ImportError):
        from metrics.backbones import BackboneError

        user_errors += (BackboneError,)
    try:
        code = main(argv)
    except user_errors as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    sys.exit(code or 0)
