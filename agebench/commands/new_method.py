"""`agebench new-method NAME`: add a method in one step (a file copied from methods/template.py, its params
section, its registration).

After it, `dvc repro` trains, translates, scores and ranks NAME like every other method.
"""

from __future__ import annotations

import argparse
import keyword
import re
from pathlib import Path

from agebench.commands._help_format import command_parser
from agebench.infra.errors import UserError


def render_template(name: str) -> str:
    """The text of methods/NAME.py: methods/template.py (a real, importable method) with its names replaced."""
    import methods.template

    text = Path(methods.template.__file__).read_text(encoding="utf-8")
    return text.replace("Template", class_name(name)).replace("`template", f"`{name}")


_NAME = re.compile(r"[a-z][a-z0-9_]*")


class NewMethodError(UserError, ValueError):
    """NAME is not usable or the repository is not laid out as expected."""


def class_name(name: str) -> str:
    """`my_method` -> `MyMethod`."""
    return "".join(part.capitalize() for part in name.split("_"))


def add_method(repo: Path, name: str) -> list[Path]:
    """Write methods/NAME.py, register it in methods/registry.yaml, add its params.yaml section,
    smoke override and `methods:` entry. Returns the files changed. Nothing is written on error."""
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise NewMethodError(f"{name!r} is not a valid method name (lowercase letters, digits, _; e.g. my_method)")
    method_file = repo / "methods" / f"{name}.py"
    init, params = repo / "methods" / "registry.yaml", repo / "params.yaml"
    for p in (init, params):
        if not p.is_file():
            raise NewMethodError(f"{p} not found: run this in the agebench repository (or pass --repo)")
    if method_file.exists():
        raise NewMethodError(f"{method_file} already exists")
    init_text, params_text = init.read_text(), params.read_text()
    if re.search(rf"(?m)^{re.escape(name)}:", params_text):
        raise NewMethodError(f"params.yaml already has a section {name!r}")

    # methods/registry.yaml: one line, name -> module:Class (no Python edited).
    new_init = init_text.rstrip("\n") + f"\n{name}: methods.{name}:{class_name(name)}\n"

    # params.yaml: list entry, section before the smoke profile, smoke override at the end.
    lm = re.search(r"(?m)^methods:\n((?:( *)- .+\n)+)", params_text)
    if lm is None:
        raise NewMethodError(f"{params}: cannot find the `methods:` list (one `- name` per line)")
    new_params = params_text[: lm.end(1)] + f"{lm.group(2)}- {name}\n" + params_text[lm.end(1) :]
    section = (
        f"# {name}: written by `agebench new-method`; see methods/{name}.py.\n{name}:\n"
        "  resolution: 128\n  batch_size: 16\n  steps: 200\n  lr: 0.01\n  lambda_keep: 1.0\n\n"
    )
    marker = "# ---- the smoke profile"
    if marker in new_params:
        new_params = new_params.replace(marker, section + marker, 1)
    else:
        new_params = new_params.rstrip("\n") + "\n\n" + section
    # Every profile section names every method (dvc.yaml's params list `<profile>.<method>`): the smoke
    # profile trains the starter for 20 steps, the cpu profile at the cpu track's 64 px.
    for profile, override in (("smoke", "{steps: 20}"), ("cpu", "{resolution: 64}")):
        sm = re.search(rf"(?m)^{profile}:\n", new_params)
        if sm is not None:
            new_params = new_params[: sm.end()] + f"  {name}: {override}\n" + new_params[sm.end() :]

    method_file.write_text(render_template(name))
    init.write_text(new_init)
    params.write_text(new_params)
    return [method_file, init, params]


EXAMPLE = "agebench new-method my_method && dvc repro"


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the command on the `agebench` subparsers."""
    p = command_parser(
        sub, "new-method", "add a method: methods/NAME.py, its params section and registration", [EXAMPLE]
    )
    p.add_argument("name", help="the method's name: lowercase letters, digits and _ (e.g. my_method)")
    p.add_argument("--repo", default=".", help="the agebench repository")
    return p


def run(args: argparse.Namespace) -> int:
    """Write the method's files; one line naming them and the next step."""
    changed = add_method(Path(args.repo), args.name)
    print(
        f"agebench new-method: wrote {', '.join(str(p) for p in changed)}; run `dvc repro` to train, "
        f"score and rank {args.name}"
    )
    return 0
