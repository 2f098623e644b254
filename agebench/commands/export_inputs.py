"""`agebench export-inputs`: write the protocol's test inputs as PNG + manifest for a method run elsewhere."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agebench.commands._help_format import add_run_options, command_parser

EXAMPLE = "agebench export-inputs --out external/inputs"
#: Where `export-inputs` writes by default: a folder the repository's .gitignore lists (`/external/`), since
#: the inputs are UTKFace faces, which must never be committed; outputs made from them belong beside it.
DEFAULT_EXPORT = "external/inputs"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(
        sub, "export-inputs", "write the protocol's test inputs as PNG + manifest for a method run elsewhere", [EXAMPLE]
    )
    p.add_argument(
        "--out",
        default=DEFAULT_EXPORT,
        help="folder to write (replaced if it is an earlier export); the default is git-ignored: it holds faces",
    )
    p.add_argument("--task", action="append", default=None, help="a task to export (repeatable; default all)")
    add_run_options(p, "the params file (data, groups, tasks, evaluate)", cache=False)
    p.add_argument("--source", default="data/raw", help="UTKFace originals: data/raw or a folder of images")
    return p


def git_would_commit(path: Path) -> bool:
    """True when `path` lies in a git working tree and is not ignored there (False outside git or without git)."""
    import subprocess

    try:
        inside = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True, timeout=10
        )
        if inside.returncode != 0 or inside.stdout.strip() != "true":
            return False
        ignored = subprocess.run(["git", "-C", str(path), "check-ignore", "-q", "."], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return ignored.returncode == 1  # 0: ignored, 1: not ignored, 128: an error


def run(args: argparse.Namespace) -> int:
    """Write the inputs; one line with the tasks, and a warning when git would commit the faces."""
    from agebench.external.export import export_inputs
    from agebench.params.load import load_params

    params = load_params(args.params)
    manifest = export_inputs(params, Path(args.data), Path(args.source), Path(args.out), args.task)
    counts = ", ".join(f"{k} ({v['n']})" for k, v in manifest["tasks"].items())
    where = Path(args.out).resolve()
    print(f"agebench export-inputs: {counts} -> {where} (data digest {manifest['data_digest'][:12]})")
    if git_would_commit(where):
        print(
            f"agebench export-inputs: warning: {where} is inside a git repository and not ignored; these are "
            "UTKFace faces (non-commercial research only): never commit them (add the folder to .gitignore)",
            file=sys.stderr,
        )
    return 0
