"""Project-local modules a stage's command imports, transitively (for dvc.yaml deps and their test).

Static: reads `import` / `from ... import` statements with `ast`, including imports inside functions,
so a lazily imported module still counts. Only files inside the project root are returned.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGES = ("agebench", "methods", "metrics", "stages")


def _module_file(root: Path, dotted: str) -> Path | None:
    parts = dotted.split(".")
    if parts[0] not in PACKAGES:
        return None
    base = root.joinpath(*parts)
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            # `from pkg import mod` imports pkg.mod when it is a module
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def closure(root: str | Path, module: str, skip: tuple[str, ...] = ()) -> set[str]:
    """Relative paths (POSIX) of every project file `module` imports, itself included.

    `skip`: module prefixes not followed (e.g. `methods.` for per-method deps handled by DVC's foreach).
    """
    root = Path(root)
    todo, seen = [module], set()
    files: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        # importing a.b.c runs a/__init__.py and a/b/__init__.py too
        parts = name.split(".")
        for i in range(1, len(parts) + 1):
            f = _module_file(root, ".".join(parts[:i]))
            if f is None:
                continue
            rel = f.relative_to(root).as_posix()
            if rel in files:
                continue
            if any(".".join(parts[:i]).startswith(s) for s in skip):
                continue
            files.add(rel)
            todo.extend(_imports(f))
    return files


def rewrite_dvc_deps(dvc_yaml: str | Path, root: str | Path = ".") -> str:
    """dvc.yaml's text with each stage's code deps (`*.py` entries) replaced by the stage command's import
    closure; data deps and comments are kept. For `foreach: ${methods}` stages the method's own module is
    `methods/${item}.py` plus what every method module imports from the shared method files."""
    import re

    root = Path(root)
    lines = Path(dvc_yaml).read_text(encoding="utf-8").splitlines()
    out: list[str] = []
    module = None
    foreach = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if re.match(r"^  \w+:\s*$", line):
            foreach, module = False, None
        if "foreach: ${methods}" in line:
            foreach = True
        m = re.search(r"python -m (stages\.\w+)", line)
        if m:
            module = m.group(1)
        dm = re.match(r"^(\s*)deps:\s*$", line)
        if dm and module:
            out.append(line)
            i += 1
            items: list[str] = []
            indent = None
            while i < len(lines) and re.match(r"^\s*(- |#)", lines[i]):
                entry = lines[i]
                indent = indent or entry[: len(entry) - len(entry.lstrip())]
                value = entry.strip()[2:] if entry.strip().startswith("- ") else None
                if value is None or not value.endswith(".py"):
                    items.append(entry)
                i += 1
            code = sorted(closure(root, module, skip=("methods.",) if foreach else ()))
            if foreach:
                shared = set()
                for f in sorted((root / "methods").glob("*.py")):
                    if f.name not in ("__init__.py",):
                        shared |= {p for p in closure(root, f"methods.{f.stem}") if p != f"methods/{f.name}"}
                code = [*sorted(set(code) | shared), "methods/${item}.py"]
                code = [
                    c
                    for c in code
                    if not (
                        c.startswith("methods/")
                        and c != "methods/${item}.py"
                        and c not in shared
                        and c != "methods/__init__.py"
                    )
                ]
            out.extend(items)
            out.extend(f"{indent}- {c}" for c in code)
            continue
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # python -m agebench.infra.deps: print dvc.yaml with regenerated code deps
    print(rewrite_dvc_deps("dvc.yaml"), end="")
