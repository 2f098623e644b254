"""Small file helpers shared by the stages: atomic writes, JSON, provenance, CLI error handling."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

import agebench
from agebench.infra.errors import UserError


class OutputPathError(UserError, OSError):
    """An output path that would destroy something the user did not ask to replace (exit 2, one line)."""


# `.<name>.<pid>.<random>.tmp` (this version) or `.<name>.<random>.tmp` (earlier ones, no pid), with
# tempfile.mkdtemp's 8 random characters: nothing else beside an output is ever matched.
_TMP_RE = r"\.{name}\.(?:(?P<pid>[0-9]+)\.)?[a-z0-9_]{{8}}\.tmp"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_stale_temporaries(path: str | Path) -> list[Path]:
    """Remove `.<name>.*.tmp` temporaries of `path` left by a killed earlier run; returns what was removed.

    A temporary named with the pid of a process that is still alive is kept (a concurrent writer);
    one without a pid (older agebench) or of a dead process is removed.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(_TMP_RE.format(name=re.escape(path.name)))
    removed = []
    for entry in path.parent.iterdir():
        m = pattern.fullmatch(entry.name)
        if m is None or (m.group("pid") is not None and _pid_alive(int(m.group("pid")))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            _rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def check_output_path(
    path: str | Path, kind: Literal["file", "dir"] = "file", inputs: Iterable[str | Path] = ()
) -> Path:
    """Refuse (OutputPathError, one line) an output `path` that would replace what it must not.

    A file output never replaces a directory (or a link to one); a directory output never replaces a
    file; no output is one of `inputs` (same path or the same file through another name). Returns `path`.
    """
    path = Path(path)
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputPathError(f"{path}: {parent} is a file, not a folder: give another output path")
            break
    if kind == "file" and path.is_dir():
        raise OutputPathError(f"{path} is a folder: give a file name for this output (nothing was written)")
    if kind == "dir" and (path.exists() or path.is_symlink()) and not path.is_dir():
        raise OutputPathError(f"{path} exists and is not a folder: give a folder for this output")
    for src in inputs:
        src = Path(src)
        same = os.path.abspath(src) == os.path.abspath(path)
        if not same and src.exists() and path.exists():
            same = os.path.samefile(src, path)
        if same:
            raise OutputPathError(f"{path} is the input {src}: give a different output path (the input is kept)")
    return path


@contextlib.contextmanager
def atomic_path(
    path: str | Path, suffix: str = "", kind: Literal["file", "dir"] = "file", inputs: Iterable[str | Path] = ()
) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`.

    `kind="file"` (default) refuses, before anything is written, a `path` that is a folder: a file
    output never eats a directory. Stages whose output is a folder (prepare, generate) say
    `kind="dir"`: the old folder is then moved aside and replaced as a whole. `inputs` are paths the
    output must not be (see `check_output_path`). On any exception the temporary is removed and `path`
    is left as it was; temporaries a killed earlier run left (`.<name>.<pid>.*.tmp`) are removed first.
    """
    path = check_output_path(path, kind, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    workdir = Path(tempfile.mkdtemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent))
    tmp = workdir / (path.name + suffix)
    try:
        yield tmp
        check_output_path(path, kind, inputs)  # it may have changed while the output was being made
        if kind == "dir" and path.is_dir() and not path.is_symlink():
            # Move the old output aside first: at every instant either it or the new one is in place.
            os.replace(path, workdir / (path.name + ".old"))
        os.replace(tmp, path)
    finally:
        _rmtree(workdir)


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
        "git_revision": git_revision(Path(__file__).resolve().parents[2]),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


class NonFiniteLossError(UserError, RuntimeError):
    """A training loss became NaN or infinite (raised by the training loop; one line, exit 2)."""


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> None:
    """Run a stage `main`, turning user-caused errors into one clear line and exit status 2.

    Exit status: `main`'s return value (0 when None); 2 with one `error: ...` line for a user-caused
    error; 130 with one line on Ctrl-C (SIGINT), without a traceback.
    """
    from agebench.infra.errors import user_errors

    try:
        code = main(argv)
    except user_errors() as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        # Outputs are written through atomic_path: an interrupted run leaves the previous ones whole.
        print("interrupted (Ctrl-C): stopped; outputs already in place are unchanged", file=sys.stderr)
        sys.exit(130)
    sys.exit(code or 0)
