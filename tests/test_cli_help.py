"""`agebench CMD --help`: every argument explained with its default, an example each, and fast (no torch)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from agebench.cli import EXAMPLES
from tests.conftest import REPO

#: Run in a fresh interpreter: what `--help` imported, and the CPU seconds it took.
PROBE = """
import contextlib, io, json, resource, sys
from agebench.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
ru = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"code": code, "text": out.getvalue(), "torch": "torch" in sys.modules,
                  "cpu_s": ru.ru_utime + ru.ru_stime}))
"""

COMMANDS = [c.split() for c in EXAMPLES if c != "baseline"] + [["baseline", "update"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c))
def test_help_is_fast_documents_every_argument_and_shows_an_example(command: list[str]) -> None:
    run = subprocess.run(
        [sys.executable, "-c", PROBE, *command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["code"] == 0
    assert not got["torch"], "`--help` imported torch: move the import into the function that needs it"
    # CPU time, not wall time: independent of the machine's load (about 0.3 s here on an idle core).
    assert got["cpu_s"] < 1.0, got["cpu_s"]
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
