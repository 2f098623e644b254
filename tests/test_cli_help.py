"""`agebench CMD --help`: every argument explained with its default, an example each, and fast (no heavy imports);
every command module keeps the contract the dispatcher relies on."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agebench.cli import COMMANDS as COMMAND_MODULES
from tests.conftest import REPO

#: Packages that take a noticeable time to import; `--help` must import none of them. A count of modules or
#: of seconds would depend on the machine and the installed versions; the names do not.
HEAVY = ("torch", "torchvision", "numpy", "pandas", "PIL", "scipy", "matplotlib", "cv2", "onnxruntime", "openvino")

#: Run in a fresh interpreter: what `--help` printed and which HEAVY packages it imported.
PROBE = """
import contextlib, io, json, sys
names = set(json.loads(sys.argv.pop(1)))
from agebench.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
heavy = sorted({m.split(".")[0] for m in sys.modules} & names)
print(json.dumps({"code": code, "text": out.getvalue(), "heavy": heavy}))
"""

COMMANDS = [c.split() for c in COMMAND_MODULES if c != "baseline"] + [["baseline", "update"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_help_is_fast_documents_every_argument_and_shows_an_example(command: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(HEAVY), *command, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["code"] == 0
    assert got["heavy"] == [], f"`--help` imported {got['heavy']}: move the import into the function that needs it"
    text = got["text"]
    assert "example" in text
    # Every option and positional has a help text: beside its name, or on the next (deeper indented) line.
    lines = text.split("\n\nexample")[0].splitlines()
    for i, line in enumerate(lines):
        if not re.match(r"^  \S", line) or line.strip().startswith("{"):
            continue
        beside = re.search(r"\S {2,}\S", line.strip())
        below = i + 1 < len(lines) and re.match(r"^ {8,}\S", lines[i + 1])
        assert beside or below, f"agebench {' '.join(command)} --help: {line.strip()!r} has no help"


def test_a_summary_line_is_printed_also_when_the_table_goes_to_a_file(tmp_path, capsys) -> None:
    import numpy as np
    from PIL import Image

    from agebench.cli import main

    faces = tmp_path / "faces"
    faces.mkdir()
    for i in range(3):
        Image.fromarray(np.full((64, 64, 3), 40 * i, np.uint8)).save(faces / f"{i}.png")
    out = tmp_path / "ages.csv"
    assert main(["age", str(faces), "--csv", str(out)]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout carries data only
    rows = [line.split(",") for line in out.read_text().splitlines()[1:]]
    ages = [float(a) for _, a in rows if a]
    expected = f"agebench age: 3 images, {3 - len(ages)} without an age"
    expected += f", mean age {sum(ages) / len(ages):.1f}" if ages else ""
    assert len(rows) == 3 and f"{expected}; wrote {out}" in captured.err, captured.err


def command_contract_problems(package_dir: Path, table: dict[str, str]) -> list[str]:
    """What breaks the dispatcher's contract: a module in the table without `add_parser`, `run` or `EXAMPLE`, or
    whose `add_parser` registers another name; a module of `package_dir` (not `_private`) missing from the table.
    Read with `ast` (nothing is imported), so a planted copy can be checked."""
    problems = []
    listed = {module.rsplit(".", 1)[1]: name for name, module in table.items()}
    for path in sorted(package_dir.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        if path.stem not in listed:
            problems.append(f"{path.name}: not in agebench.cli.COMMANDS")
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        problems += [f"{path.name}: no {need}" for need in ("add_parser", "run", "EXAMPLE") if need not in defined]
        # A command registers through `command_parser(sub, NAME, ...)` (or argparse's own `sub.add_parser(NAME)`).
        calls = [c for c in ast.walk(tree) if isinstance(c, ast.Call)]
        names = [
            c.args[i].value
            for c in calls
            for i in [{"add_parser": 0, "command_parser": 1}.get(getattr(c.func, "attr", getattr(c.func, "id", "")))]
            if i is not None and len(c.args) > i and isinstance(c.args[i], ast.Constant)
        ]
        if listed[path.stem] not in names:
            problems.append(f"{path.name}: add_parser does not register {listed[path.stem]!r}")
    missing = set(listed) - {p.stem for p in package_dir.glob("*.py")}
    problems += [f"{m}.py: in agebench.cli.COMMANDS but absent" for m in sorted(missing)]
    return problems


def test_every_command_module_has_add_parser_run_and_an_example() -> None:
    assert command_contract_problems(REPO / "agebench" / "commands", COMMAND_MODULES) == []


def test_command_contract_check_fails_on_planted_faults(tmp_path: Path) -> None:
    shutil.copytree(REPO / "agebench" / "commands", tmp_path / "commands")
    (tmp_path / "commands" / "stray.py").write_text("def run(args):\n    return 0\n")
    age = tmp_path / "commands" / "age.py"
    age.write_text(age.read_text().replace("def run(", "def execute("))
    (tmp_path / "commands" / "verify.py").unlink()
    assert command_contract_problems(tmp_path / "commands", COMMAND_MODULES) == [
        "age.py: no run",
        "stray.py: not in agebench.cli.COMMANDS",
        "verify.py: in agebench.cli.COMMANDS but absent",
    ]
