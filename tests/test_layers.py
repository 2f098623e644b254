"""The layers import one way, and dvc.yaml's deps and outs cannot go stale (README "Layout").

Both checks are functions run on the real tree and, to show they can fail, on a copy with a planted mistake.
"""

from __future__ import annotations

import ast
import re
import shutil
from pathlib import Path

import yaml

from agebench.infra.deps import closure
from agebench.infra.registry import METHODS
from tests.conftest import REPO

# The one-way rule: a module in the key folder may not import any package in the value tuple.
FORBIDDEN = {
    "methods": ("agebench", "stages"),
    "metrics": ("agebench", "stages"),
    "agebench": ("stages",),
    "benchmarks": ("stages",),
}

# Command-line options through which a stage writes a path (must be an out, a metric or a plot).
WRITE_OPTIONS = ("--out", "--scores", "--runtime", "--live", "--report", "--figure")


def layer_violations(root: Path) -> list[str]:
    """`file: imports X` for every import that goes against FORBIDDEN (function-level imports included)."""
    bad = []
    for folder, banned in FORBIDDEN.items():
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                bad += [f"{path.relative_to(root)}: imports {n}" for n in names if n.split(".")[0] in banned]
    return bad


def _stage_module(cmd: str) -> str:
    m = re.search(r"python -m (stages\.\w+)", cmd)
    assert m, f"stage command does not run a stages module: {cmd}"
    return m.group(1)


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def dvc_problems(root: Path) -> list[str]:
    """Every project file a stage's command imports (transitively) must be a declared dep; every path the
    command writes through WRITE_OPTIONS must be an out, metric or plot. foreach stages are checked per item."""
    spec = yaml.safe_load((root / "dvc.yaml").read_text())
    params = yaml.safe_load((root / "params.yaml").read_text())
    problems = []
    for name, stage in spec["stages"].items():
        items: list = [None]
        body = stage
        if "foreach" in stage:
            body = stage["do"]
            key = re.fullmatch(r"\$\{(\w+)\}", stage["foreach"])
            items = list(params[key.group(1)]) if key else list(stage["foreach"])
        for item in items:

            def sub(s: str, item=item) -> str:
                if isinstance(item, dict):  # foreach over a list of mappings: ${item.key}
                    return re.sub(r"\$\{item\.(\w+)\}", lambda m: str(item[m.group(1)]), s)
                return s.replace("${item}", item) if item else s

            cmd = sub(body["cmd"])
            deps = [sub(d) for d in body.get("deps", [])]
            needed = closure(root, _stage_module(cmd))
            if isinstance(item, str) and item in METHODS and stage.get("foreach") == "${methods}":
                module = METHODS.target(item).split(":")[0]
                needed |= closure(root, module)
            label = item["name"] if isinstance(item, dict) else item
            where = f"{name}@{label}" if label else name
            problems += [f"{where}: imports {f} but it is not a dep" for f in sorted(needed) if not _covered(f, deps)]
            declared = set()
            for kind in ("outs", "metrics", "plots"):
                for entry in body.get(kind, []):
                    declared.add(sub(next(iter(entry)) if isinstance(entry, dict) else entry))
            for opt, value in re.findall(r"(--\w+)\s+(\S+)", cmd):
                # a folder option (report's --out reports) is fine when the files it writes are declared;
                # a path the stage only reads through such an option (report's --scores) is a declared dep
                if (
                    opt in WRITE_OPTIONS
                    and not _covered(value, deps)
                    and not any(_covered(value, [d]) or d.startswith(value + "/") for d in declared)
                ):
                    problems.append(f"{where}: writes {value} ({opt}) but it is not an out, metric or plot")
    return problems


# Folders a stage reads through a param that DVC cannot track as a dep because they may be absent (FG-NET
# is optional; DVC refuses to run a stage whose dep is missing), with the stage that reads them: an
# always_changed stage must record the folder in a file, and the reader must depend on that file.
FOLDER_PARAMS = {"evaluate.fgnet_dir": "reference"}


def folder_param_problems(root: Path) -> list[str]:
    """A stage reading a FOLDER_PARAMS folder must depend on an out of an always_changed stage that has that
    param, so the reader reruns when the folder's contents change."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    problems = []
    for param, reader in FOLDER_PARAMS.items():
        if param.split(".")[-1] not in (root / "stages" / f"{reader}.py").read_text(encoding="utf-8"):
            problems.append(f"FOLDER_PARAMS is stale: stages/{reader}.py does not read {param}")
        records = {
            next(iter(o)) if isinstance(o, dict) else o
            for st in stages.values()
            if st.get("always_changed") and param in st.get("params", [])
            for o in st.get("outs", [])
        }
        if not records:
            problems.append(f"{param}: no always_changed stage with this param records the folder")
        elif not records & set(stages[reader].get("deps", [])):
            problems.append(f"{reader}: reads {param} but depends on none of {sorted(records)}")
    return problems


def test_imports_flow_one_way() -> None:
    assert layer_violations(REPO) == []


def test_layer_check_fails_on_a_planted_import(tmp_path: Path) -> None:
    for folder in FORBIDDEN:
        shutil.copytree(REPO / folder, tmp_path / folder)
    (tmp_path / "metrics" / "planted.py").write_text("def f():\n    from agebench.params.load import load_params\n")
    (tmp_path / "agebench" / "planted.py").write_text("import stages.train\n")
    assert sorted(layer_violations(tmp_path)) == [
        "agebench/planted.py: imports stages.train",
        "metrics/planted.py: imports agebench.params.load",
    ]


def test_dvc_deps_and_outs_match_the_code() -> None:
    assert dvc_problems(REPO) == []


def _copy_project(dst: Path) -> None:
    for folder in ("agebench", "methods", "metrics", "stages"):
        shutil.copytree(REPO / folder, dst / folder)
    for f in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / f, dst / f)


def test_dvc_check_fails_on_a_mutated_dvc_yaml(tmp_path: Path) -> None:
    _copy_project(tmp_path)
    spec = yaml.safe_load((tmp_path / "dvc.yaml").read_text())
    spec["stages"]["evaluate"]["do"]["deps"].remove("agebench/pipeline/scoring.py")
    spec["stages"]["evaluate"]["do"]["outs"] = []
    spec["stages"]["score_external"]["do"]["deps"].remove("agebench/external/score.py")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    params = yaml.safe_load((tmp_path / "params.yaml").read_text())
    params["external"] = [{"name": "toy", "folder": "toy_outputs", "source": "a test"}]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    problems = dvc_problems(tmp_path)
    assert "score_external@toy: imports agebench/external/score.py but it is not a dep" in problems
    assert "evaluate@identity: imports agebench/pipeline/scoring.py but it is not a dep" in problems
    assert any(p.startswith("evaluate@age_cgan: imports agebench/pipeline/scoring.py") for p in problems)
    assert (
        "evaluate@identity: writes data/scores/identity.npz (--scores) but it is not an out, metric or plot" in problems
    )


def test_dvc_check_sees_a_new_import(tmp_path: Path) -> None:
    """A library module that starts importing another project file makes every stage using it stale."""
    _copy_project(tmp_path)
    (tmp_path / "agebench" / "extra_planted.py").write_text("X = 1\n")
    lib = tmp_path / "agebench" / "data" / "download.py"
    lib.write_text(lib.read_text() + "\nfrom agebench import extra_planted  # noqa\n")
    assert "download: imports agebench/extra_planted.py but it is not a dep" in dvc_problems(tmp_path)


def test_a_shadowing_methods_package_is_refused(tmp_path: Path) -> None:
    """A user's own top-level `methods` module (earlier on sys.path) is named, not run as agebench's."""
    import types

    import pytest

    from agebench.infra.registry import ShadowedPackageError, check_not_shadowed

    fake = types.ModuleType("methods.identity")
    fake.__file__ = str(tmp_path / "methods" / "identity.py")
    with pytest.raises(ShadowedPackageError, match="shadows agebench"):
        check_not_shadowed(fake)
    import methods.identity

    check_not_shadowed(methods.identity)  # the real one passes


def test_an_optional_folder_a_stage_reads_is_recorded_and_a_dep() -> None:
    assert folder_param_problems(REPO) == []


def test_folder_check_fails_on_a_mutated_dvc_yaml(tmp_path: Path) -> None:
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    shutil.copytree(REPO / "stages", tmp_path / "stages")
    spec["stages"]["reference"]["deps"].remove("data/fgnet.json")
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    assert folder_param_problems(tmp_path) == [
        "reference: reads evaluate.fgnet_dir but depends on none of ['data/fgnet.json']"
    ]
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    del spec["stages"]["fgnet"]["always_changed"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(spec))
    assert folder_param_problems(tmp_path) == [
        "evaluate.fgnet_dir: no always_changed stage with this param records the folder"
    ]
