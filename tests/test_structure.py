"""The layout stays readable: few top-level modules in `agebench/`, no file too long to hold one job, and every
document a comment or docstring cites is in the repository.

Each check is a function run on the real tree and, to show it can fail, on a copy with a planted fault (as
tests/test_layers.py does).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from tests.conftest import REPO

#: At most this many modules (files and sub-packages, `__init__.py` included) at `agebench/`'s top level: more,
#: and a reader can no longer tell the rooms (params, data, pipeline, report, ...) apart.
MAX_TOP_LEVEL = 10
#: Line limits per folder: a file past them has more than one job (methods hold a whole paper each).
MAX_LINES = {"agebench": 600, "metrics": 600, "methods": 700}
#: A cited document: a Markdown file named in a comment or docstring (e.g. `docs/METHODS.md s.1`).
CITED = re.compile(r"(?<![\w/.-])((?:[\w.-]+/)*[A-Z][A-Za-z0-9_-]*\.md)\b")


def top_level_modules(package: Path) -> list[str]:
    """The modules at the top of `package`: `*.py` files and folders holding an `__init__.py`."""
    files = [p.name for p in package.glob("*.py")]
    packages = [p.name + "/" for p in package.iterdir() if (p / "__init__.py").is_file()]
    return sorted(files + packages)


def long_files(root: Path) -> list[str]:
    """`path: N lines` for every Python file over its folder's MAX_LINES."""
    out = []
    for folder, limit in MAX_LINES.items():
        for path in sorted((root / folder).rglob("*.py")):
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > limit:
                out.append(f"{path.relative_to(root)}: {n} lines (limit {limit})")
    return out


def missing_citations(root: Path) -> list[str]:
    """`file: cites X` for every Markdown document named in the code or params.yaml that the repository lacks
    (looked up from the repository root, then beside the citing file)."""
    out = []
    paths = [p for d in ("agebench", "methods", "metrics", "stages", "tests") for p in (root / d).rglob("*.py")]
    paths += [root / "params.yaml", root / "pyproject.toml"]
    for path in paths:
        if not path.is_file() or path.name == Path(__file__).name:  # this file plants citations on purpose
            continue
        for doc in sorted(set(CITED.findall(path.read_text(encoding="utf-8")))):
            if not ((root / doc).is_file() or (path.parent / doc).is_file()):
                out.append(f"{path.relative_to(root)}: cites {doc}")
    return out


def test_agebench_has_at_most_ten_top_level_modules() -> None:
    modules = top_level_modules(REPO / "agebench")
    assert len(modules) <= MAX_TOP_LEVEL, modules


def test_top_level_check_counts_a_planted_module(tmp_path: Path) -> None:
    shutil.copytree(REPO / "agebench", tmp_path / "agebench")
    before = top_level_modules(tmp_path / "agebench")
    (tmp_path / "agebench" / "stray.py").write_text("X = 1\n")
    (tmp_path / "agebench" / "room").mkdir()
    (tmp_path / "agebench" / "room" / "__init__.py").write_text("")
    (tmp_path / "agebench" / "not_a_package").mkdir()  # no __init__.py: not a module
    assert top_level_modules(tmp_path / "agebench") == sorted([*before, "room/", "stray.py"])


def test_no_file_is_over_its_line_limit() -> None:
    assert long_files(REPO) == []


def test_line_limit_check_fails_on_a_planted_long_file(tmp_path: Path) -> None:
    for folder in MAX_LINES:
        (tmp_path / folder / "sub").mkdir(parents=True)
    (tmp_path / "agebench" / "sub" / "long.py").write_text("x = 1\n" * 601)
    (tmp_path / "methods" / "ok.py").write_text("x = 1\n" * 700)
    (tmp_path / "metrics" / "edge.py").write_text("x = 1\n" * 600)
    assert long_files(tmp_path) == ["agebench/sub/long.py: 601 lines (limit 600)"]


def test_every_cited_document_is_in_the_repository() -> None:
    assert missing_citations(REPO) == []


def test_citation_check_fails_on_a_planted_citation(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "METHODS.md").write_text("# methods\n")
    (tmp_path / "methods").mkdir()
    (tmp_path / "methods" / "m.py").write_text('"""See docs/METHODS.md s.1 and BACKBONES.md."""\n')
    assert missing_citations(tmp_path) == ["methods/m.py: cites BACKBONES.md"]
