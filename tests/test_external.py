"""External rows (PROTOCOL.md s.6): export the test inputs, score a folder of outputs made elsewhere.

A tiny synthetic UTKFace (noise faces, real file-name format) is prepared once; networks are stand-ins
(deterministic functions of the pixels, as in tests/test_suite.py), so the tests check the protocol's
bookkeeping: ids, manifest, failures for missing outputs, problems listed, and parity with the
built-in `evaluate` path (same numbers, not approximately).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import agebench
from agebench.cli import main as cli
from agebench.data.prepare import prepare, split_of
from agebench.external import score as external
from agebench.external import tasks
from agebench.params.load import load_params
from agebench.params.reading import ParamsError
from agebench.params.sections import DataConfig, GroupsConfig
from metrics.fid import KidSettings
from metrics.stats import BootstrapSettings
from tests.conftest import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------------------
# Fixtures: a tiny prepared UTKFace, stand-in networks
# ----------------------------------------------------------------------------------------------


class StandInInception(torch.nn.Module):
    """torch-fidelity's extractor interface (uint8 batch -> (features,)); features are colour statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor]:
        x = images.double().mean(dim=(2, 3))
        return (torch.cat([x, x**2 / 255, torch.sin(x)], dim=1) * self.scale.double(),)


def stub_scorer():
    """Deterministic stand-ins: age = mean red / 3, a face everywhere, descriptor = centred mean green, blue."""
    from metrics.scorer import Judge, Scorer

    def ages(x: torch.Tensor) -> np.ndarray:
        return x[:, 0].double().mean(dim=(1, 2)).numpy() / 3.0

    def detect(x: torch.Tensor) -> np.ndarray:
        out = np.zeros((len(x), 16))
        out[:, 0] = 1.0
        return out

    def features(x: torch.Tensor, det: np.ndarray) -> np.ndarray:
        # Green and blue only: a method may change red (the "age") and keep the person.
        return (x[:, 1:].double().mean(dim=(2, 3)) - 127.5).numpy()

    judges = {
        "sface": Judge(features, "cosine", 0.363, "stub-sface"),
        "dlib": Judge(features, "distance", 20.0, "stub-dlib"),
    }
    return Scorer(
        ages=ages,
        detect=detect,
        judges=judges,
        inception=StandInInception(),
        bootstrap=BootstrapSettings(50, 0),
        kid=KidSettings(10, 1000, 0),
    )


def _names(n_test: int = 5) -> list[tuple[str, int]]:
    """UTKFace-style names: n_test test faces per pair group (one name with a space), some train faces."""
    out: list[tuple[str, int]] = []
    want = {("young", "test"): n_test, ("old", "test"): n_test, ("young", "train"): 4, ("old", "train"): 4}
    i = 0
    while any(want.values()):
        age = (22, 27, 53, 58)[i % 4]
        group = "young" if age < 40 else "old"
        sep = " " if i % 3 == 1 else ""  # names with a space (one real UTKFace name has one)
        name = f"{age}_{i % 2}_{i % 5}_2017{sep}{i:011d}.jpg.chip.jpg"
        key = (group, split_of(name))
        if want.get(key, 0) > 0:
            want[key] -= 1
            out.append((name, age))
        i += 1
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """UTKFace originals (200x200), the prepared data (64 and 128) and a params file."""
    root = tmp_path_factory.mktemp("external")
    utk = root / "UTKFace"
    utk.mkdir()
    rng = np.random.default_rng(0)
    for name, age in _names():
        # Smooth-ish faces whose red channel tracks age (the stand-in estimator reads it).
        base = np.full((200, 200, 3), (age * 3, 90, 160), np.uint8)
        noise = rng.integers(-20, 21, (200, 200, 3))
        Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)).save(utk / name, quality=95)
    prepared = root / "prepared"
    prepare(utk, prepared, DataConfig(resolutions=(64, 128)), GroupsConfig(), workers=1, progress=False)
    (prepared / "data.json").write_text("{}")
    params = root / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "methods": ["identity"],
                "data": {"resolutions": [64, 128]},
                "train": {"device": "cpu", "threads": 1},
                "evaluate": {"device": "cpu", "fgnet_dir": ""},
                "identity": {"resolution": 64},
            }
        )
    )
    return {"root": root, "utk": utk, "prepared": prepared, "params": params}


@pytest.fixture()
def stub(monkeypatch: pytest.MonkeyPatch):
    """Every scorer the CLI or a stage builds is the stand-in."""
    from agebench.pipeline import scoring

    monkeypatch.setattr(scoring, "build_scorer", lambda *a, **k: stub_scorer())


@pytest.fixture(scope="module")
def exported(world: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "inputs"
    code = cli(
        [
            "export-inputs",
            "--out",
            str(out),
            "--params",
            str(world["params"]),
            "--data",
            str(world["prepared"]),
            "--source",
            str(world["utk"]),
        ]
    )
    assert code == 0
    return out


def toy_method(exported: Path, out: Path, size: int = 64, cycle: bool = True, transform=None) -> Path:
    """An external "method": resize each exported original to `size` (optionally transform it) and save it
    as `out/<task>/<id>.png`, with the round trips (the same image) in `out/<task>_cycle/`."""
    for task_dir in sorted((exported / "200").iterdir()):
        dirs = [out / task_dir.name] + ([out / f"{task_dir.name}_cycle"] if cycle else [])
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        for png in sorted(task_dir.iterdir()):
            with Image.open(png) as img:
                small = img.convert("RGB").resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
            if transform is not None:
                small = transform(small)
            for d in dirs:
                small.save(d / png.name)
    return out


def run_cli(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = cli(argv)
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def score_cli(world: dict, folder: Path, capsys, *extra: str, name: str = "toy") -> tuple[int, str, str]:
    return run_cli(
        [
            "score-outputs",
            str(folder),
            "--name",
            name,
            "--params",
            str(world["params"]),
            "--data",
            str(world["prepared"]),
            "--cache",
            "",
            *extra,
        ],
        capsys,
    )


def assert_one_error_line(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in lines[0], lines[0]


# ----------------------------------------------------------------------------------------------
# Ids and export
# ----------------------------------------------------------------------------------------------


def test_face_ids_are_stable_safe_and_unique() -> None:
    assert tasks.face_id("26_0_2_20170104023102422.jpg.chip.jpg") == "26_0_2_20170104023102422"
    spaced = tasks.face_id("39_1_20170116174525125 .jpg.chip.jpg")
    assert " " not in spaced and spaced.startswith("39_1_20170116174525125_-")
    # Lossy stripping never lets two names share an id.
    a, b = tasks.face_id("x.jpg.chip.jpg"), tasks.face_id("x.jpg")
    assert a == "x" and b != a and b.startswith("x-")
    assert tasks.face_id("../etc/passwd") not in ("passwd", "../etc/passwd") and "/" not in tasks.face_id("a/b")


def test_export_writes_lossless_pngs_manifest_and_readme(world: dict, exported: Path) -> None:
    from agebench.data.faces import load_faces, load_index

    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["protocol_version"] == agebench.PROTOCOL_VERSION
    assert set(manifest["tasks"]) == {"aging", "rejuvenation"}
    rows = list(__import__("csv").DictReader((exported / "manifest.csv").open(encoding="utf-8")))
    assert set(rows[0]) == set(tasks.MANIFEST_COLUMNS)
    index = load_index(world["prepared"]).set_index("file")
    faces128 = load_faces(world["prepared"], 128)
    by_id = {tasks.face_id(f): f for f in index.index}
    for r in rows:
        data = (exported / r["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == r["sha256"]
        arr = np.asarray(Image.open(exported / r["file"]))
        file = by_id[r["id"]]
        if r["size"] == "200x200":  # the original's pixels, losslessly
            assert np.array_equal(arr, np.asarray(Image.open(world["utk"] / file).convert("RGB")))
        else:  # the evaluation-size input, exactly the prepared array
            assert np.array_equal(arr, faces128[index.loc[file, "row"]])
        assert int(r["age"]) == index.loc[file, "age"]
    aging = [r for r in rows if r["task"] == "aging" and r["size"] == "128x128"]
    assert len(aging) == manifest["tasks"]["aging"]["n"] == 5
    assert all(r["source_group"] == "young" and r["target_group"] == "old" for r in aging)
    spaced = [f for f in by_id.values() if " " in f]
    assert spaced and all(" " not in r["id"] and "/" not in r["id"] for r in rows)
    assert any(r["id"] == tasks.face_id(f) and r["id"].startswith(f.split(" ")[0] + "_") for r in rows for f in spaced)
    readme = (exported / "README.txt").read_text()
    assert "OUT/<task>/<id>.png" in readme and manifest["data_digest"] in readme


def test_export_refuses_a_folder_of_other_files(world: dict, tmp_path: Path, capsys) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    code, _, err = run_cli(
        ["export-inputs", "--out", str(tmp_path), "--params", str(world["params"]), "--data", str(world["prepared"]),
         "--source", str(world["utk"])],
        capsys,
    )  # fmt: skip
    assert_one_error_line(code, err, "not an earlier export")
    assert (tmp_path / "mine.txt").read_text() == "keep me"


# ----------------------------------------------------------------------------------------------
# Parity with the built-in path and the toy method end to end
# ----------------------------------------------------------------------------------------------


def builtin_identity(world: dict, tmp: Path) -> dict:
    """The pipeline's own identity row (resolution 64: its outputs are resized to 128 by `generate`)."""
    from agebench.pipeline import train as train_stage
    from agebench.pipeline.evaluate import evaluate_method
    from agebench.pipeline.tasks import read_outputs
    from stages import generate as generate_stage

    params = load_params(world["params"])
    model = tmp / "models" / "identity"
    train_stage.train("identity", params, world["prepared"], model, None, progress=False)
    outputs = tmp / "outputs" / "identity"
    assert (
        generate_stage.main(
            ["--params", str(world["params"]), "--method", "identity", "--data", str(world["prepared"]),
             "--model", str(model), "--out", str(outputs)]
        )
        == 0
    )  # fmt: skip
    return evaluate_method("identity", params, world["prepared"], read_outputs(outputs), stub_scorer())


def strip(doc: dict) -> dict:
    """The task results without what only an external row has."""
    tasks = json.loads(json.dumps(doc["tasks"]))
    for t in tasks.values():
        for key in ("missing", "fid_n", "cycle_missing"):
            t.pop(key, None)
    return tasks


def test_parity_builtin_outputs_exported_as_png_score_identically(world: dict, exported: Path, tmp_path: Path) -> None:
    from agebench.data.faces import load_index

    builtin = builtin_identity(world, tmp_path)
    folder = toy_method(exported, tmp_path / "toy", size=64)
    params = load_params(world["params"])
    doc = external.score_folder(folder, "identity_ext", "toy", params, world["prepared"], stub_scorer())
    assert strip(doc) == json.loads(json.dumps(builtin["tasks"]))
    assert doc["kind"] == "external" and doc["source"] == "toy" and builtin["kind"] == "reference"
    assert all(t["missing"] == 0 and t["fid_n"] == t["n"] for t in doc["tasks"].values())
    assert doc["external"]["problems"] == []
    assert doc["resolution"] == 64
    # The built-in outputs themselves (generate's 128x128 arrays) written as PNGs score identically too.
    inputs = tasks.task_inputs(params.tasks, load_index(world["prepared"]))
    ids = {t: sub.set_index("row")["id"] for t, sub in inputs.items()}
    pngs = tmp_path / "pngs"
    for task in ("aging", "rejuvenation"):
        data = np.load(tmp_path / "outputs" / "identity" / f"{task}.npz")
        for sub_dir, arrays in ((task, data["fake"]), (f"{task}_cycle", data["cycle"])):
            (pngs / sub_dir).mkdir(parents=True)
            for row, arr in zip(data["rows"], arrays):
                Image.fromarray(arr).save(pngs / sub_dir / f"{ids[task][row]}.png")
    again = external.score_folder(pngs, "identity_png", "", params, world["prepared"], stub_scorer())
    assert strip(again) == json.loads(json.dumps(builtin["tasks"])) and again["resolution"] == 128


def test_toy_method_through_score_outputs(world: dict, exported: Path, tmp_path: Path, stub, capsys) -> None:
    from PIL import ImageOps

    folder = toy_method(exported, tmp_path / "toy", size=256, transform=ImageOps.mirror)
    shutil.rmtree(folder / "rejuvenation_cycle")  # round trips for one task only
    out_json = tmp_path / "m" / "toy.json"
    code, out, err = score_cli(world, folder, capsys, "--json", str(out_json), "--source", "Toy et al. 2026")
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    assert doc["kind"] == "external" and doc["source"] == "Toy et al. 2026" and doc["method"] == "toy"
    assert "cycle_l1" in doc["tasks"]["aging"] and "cycle_l1" not in doc["tasks"]["rejuvenation"]
    assert "cycle_l1" not in doc["tasks"]["rejuvenation"]["ci95"]
    assert "| rejuvenation |" in out and "–" in out.split("| rejuvenation |")[1].splitlines()[0]
    # The same arrays (and masks), written as an outputs folder and read back, through the built-in evaluate path
    # give the same numbers, nothing patched after.
    from agebench.pipeline.evaluate import evaluate_method
    from agebench.pipeline.tasks import read_outputs, write_outputs

    params = load_params(world["params"])
    layout = tmp_path / "layout"
    read, _ = external.read_folder(folder, params, world["prepared"])
    write_outputs(layout, read.outputs, params.evaluate.resolution)
    assert "cycle" not in np.load(layout / "rejuvenation.npz").files  # no placeholder round trips
    ref = evaluate_method("toy", params, world["prepared"], read_outputs(layout), stub_scorer())
    assert doc["tasks"] == json.loads(json.dumps(ref["tasks"]))
    assert all(t["missing"] == 0 and t["fid_n"] == t["n"] for t in doc["tasks"].values())


# ----------------------------------------------------------------------------------------------
# Missing outputs are failures; every problem is listed
# ----------------------------------------------------------------------------------------------


def old_red(img: Image.Image) -> Image.Image:
    """A toy aging: red set to 165 (the stand-in estimator reads 55, in the old group); green, blue kept."""
    arr = np.asarray(img).copy()
    arr[..., 0] = 165
    return Image.fromarray(arr)


def test_missing_outputs_count_as_failures_for_every_metric(world: dict, exported: Path, tmp_path: Path) -> None:
    from agebench.data.faces import faces_nchw, load_faces, load_index
    from metrics import stats

    params = load_params(world["params"])
    full = external.score_folder(
        toy_method(exported, tmp_path / "full", size=128, transform=old_red), "a", "", params, world["prepared"],
        stub_scorer(),
    )  # fmt: skip
    f = full["tasks"]["aging"]
    assert f["age_acc"] == f["id_rate"] == f["joint_decade"] == 1.0 and f["face_fail"] == 0
    folder = toy_method(exported, tmp_path / "part", size=128, transform=old_red)
    gone = sorted((folder / "aging").iterdir())[:2]
    for p in gone:
        p.unlink()
    cycle_gone = sorted((folder / "rejuvenation_cycle").iterdir())[0]
    cycle_gone.unlink()
    per_face: dict[str, np.ndarray] = {}
    doc = external.score_folder(folder, "b", "", params, world["prepared"], stub_scorer(), per_face)
    a = doc["tasks"]["aging"]
    n = a["n"]
    assert a["missing"] == 2 and a["fid_n"] == n - 2 and a["face_fail"] == 2
    # Failures for every per-face metric, over all n faces; left out of the means.
    assert a["age_acc"] == a["id_rate"] == a["joint_decade"] == (n - 2) / n
    assert a["age_mean"] == 55.0
    index = load_index(world["prepared"])
    ids = tasks.task_inputs(params.tasks, index)["aging"]["id"].tolist()
    gone_pos = sorted(ids.index(p.stem) for p in gone)
    assert np.flatnonzero(np.isnan(per_face["aging/age_out"])).tolist() == gone_pos
    assert np.flatnonzero(per_face["aging/joint_decade"] == 0).tolist() == gone_pos  # row-aligned, paired
    assert all(per_face["aging/joint"][gone_pos] == 0) and a["joint"] == np.mean(a["per_face"]["joint"])
    # FID/KID on the outputs that exist, never on placeholders.
    read, _ = external.read_folder(folder, params, world["prepared"])
    t = read.outputs.tasks["aging"]
    faces = load_faces(world["prepared"], 128)
    real = faces_nchw(faces, index.loc[index["pair"] == "old", "row"].to_numpy())
    fake = torch.from_numpy(t.fake[t.present]).permute(0, 3, 1, 2).contiguous()
    assert a["fid"] == stub_scorer().fid_kid(real, fake)["fid"]
    # A missing round trip is left out of cycle_l1 and counted.
    r, tr = doc["tasks"]["rejuvenation"], read.outputs.tasks["rejuvenation"]
    assert r["missing"] == 0 and r["cycle_missing"] == 1 and a["cycle_missing"] == 0
    l1 = stats.cycle_l1(faces[tr.rows], tr.cycle)
    assert r["cycle_l1"] == pytest.approx(l1[tr.cycle_present].mean(), rel=1e-12)
    problems = _problems(doc)
    assert problems[("aging", "missing")] == [p.stem for p in gone]
    assert problems[("rejuvenation_cycle", "cycle_missing")] == [cycle_gone.stem]


def test_evaluate_records_per_face_joint_and_scoring_networks(world: dict, exported: Path, tmp_path: Path) -> None:
    """`joint_decade` is version 2's SFace joint per face (found, in the target group, verified), row-aligned with
    `rows`; the task's `per_face.joint` record averages to its `joint`; `uses_scoring_networks` comes from
    tasks.json (top level, else the training summary), [] by default."""
    from agebench.infra.common import read_json, write_json
    from agebench.pipeline.evaluate import evaluate_method
    from agebench.pipeline.tasks import read_outputs, write_outputs
    from metrics.stats import in_range, pack_outcomes

    params = load_params(world["params"])
    folder = toy_method(exported, tmp_path / "toy", size=128, transform=old_red)
    for p in sorted((folder / "aging").iterdir())[1:3]:
        p.unlink()
    read, _ = external.read_folder(folder, params, world["prepared"])
    layout = tmp_path / "layout"
    write_outputs(layout, read.outputs, params.evaluate.resolution)
    per_face: dict[str, np.ndarray] = {}
    doc = evaluate_method("toy", params, world["prepared"], read_outputs(layout), stub_scorer(), per_face)
    schemes = params.groups.schemes()
    for task, res in doc["tasks"].items():
        bounds = schemes[res["scheme"]][res["target"]]
        ok = (
            (per_face[f"{task}/face_found"] > 0.5)
            & in_range(per_face[f"{task}/age_out"], bounds)
            & (np.nan_to_num(per_face[f"{task}/id_sim"], nan=-1.0) >= 0.363)
        )
        assert len(res["per_face"]["joint"]) == len(per_face[f"{task}/rows"]) == res["n"]
        assert pack_outcomes(ok) == pack_outcomes(per_face[f"{task}/joint_decade"]), task
        assert np.mean(res["per_face"]["joint"]) == pytest.approx(res["joint"], abs=1e-12)
    decade = pack_outcomes(per_face["aging/joint_decade"])
    assert decade == "1" + "00" + "1" * (doc["tasks"]["aging"]["n"] - 3)
    assert doc["uses_scoring_networks"] == []
    meta = read_json(layout / "tasks.json")
    del meta["uses_scoring_networks"]
    meta["train"] = {"uses_scoring_networks": ["dlib"]}
    write_json(layout / "tasks.json", meta)
    assert read_outputs(layout).uses_scoring_networks == ("dlib",)
    meta["uses_scoring_networks"] = ["facenet"]
    write_json(layout / "tasks.json", meta)
    assert read_outputs(layout).uses_scoring_networks == ("facenet",)
    doc = evaluate_method("toy", params, world["prepared"], read_outputs(layout), stub_scorer())
    assert doc["uses_scoring_networks"] == ["facenet"]


def test_partial_and_wrong_names_are_listed(world: dict, exported: Path, tmp_path: Path, stub, capsys) -> None:
    folder = toy_method(exported, tmp_path / "toy", size=128, cycle=False)
    victim = sorted((folder / "aging").iterdir())[0]
    victim.rename(victim.with_name("renamed_" + victim.name))
    (folder / "notes.txt").write_text("hello")
    code, out, err = score_cli(world, folder, capsys, "--json", str(tmp_path / "m.json"))
    assert code == 0, err
    doc = json.loads((tmp_path / "m.json").read_text())
    kinds = {(p["task"], p["problem"]): p["items"] for p in doc["external"]["problems"]}
    assert kinds[("aging", "missing")] == [victim.stem]
    assert kinds[("aging", "extra")] == ["renamed_" + victim.name]
    assert kinds[("-", "extra")] == ["notes.txt"]
    assert "aging: 1 outputs missing" in out and "notes.txt" in out
    assert all("cycle_l1" not in t for t in doc["tasks"].values())


@pytest.mark.parametrize("kind", ["missing", "empty", "wrong_names"])
def test_unusable_folder_is_one_line_and_no_metrics_file(
    kind: str, world: dict, exported: Path, tmp_path: Path, stub, capsys
) -> None:
    folder = tmp_path / "out"
    if kind == "empty":
        folder.mkdir()
    elif kind == "wrong_names":
        for task in ("aging", "rejuvenation"):
            (folder / task).mkdir(parents=True)
            Image.new("RGB", (64, 64)).save(folder / task / "face_0001.png")
    out_json = tmp_path / "m.json"
    code, _, err = score_cli(world, folder, capsys, "--json", str(out_json))
    assert_one_error_line(code, err, str(folder))
    assert not out_json.exists()
    if kind == "wrong_names":
        assert "no output matches an input id" in err and ".png" in err


def test_an_error_leaves_an_earlier_metrics_file_untouched(world: dict, tmp_path: Path, stub, capsys) -> None:
    out_json = tmp_path / "m.json"
    out_json.write_text('{"earlier": true}\n')
    code, _, _ = score_cli(world, tmp_path / "nowhere", capsys, "--json", str(out_json))
    assert code == 2 and out_json.read_text() == '{"earlier": true}\n'


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def raw_png(width: int, height: int, bit_depth: int, colour_type: int, rows: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )  # fmt: skip


def bad_folder(exported: Path, tmp_path: Path, make) -> tuple[Path, str]:
    """A complete toy folder in which the first aging output is replaced by `make(path)`."""
    folder = toy_method(exported, tmp_path / "toy", size=128, cycle=False)
    first = sorted((folder / "aging").iterdir())[0]
    first.unlink()
    make(first)
    return folder, first.stem


def _problems(doc: dict) -> dict:
    return {(p["task"], p["problem"]): p["items"] for p in doc["external"]["problems"]}


def _score(world: dict, folder: Path) -> dict:
    return external.score_folder(folder, "x", "", load_params(world["params"]), world["prepared"], stub_scorer())


def test_non_image_file_counts_as_missing(world: dict, exported: Path, tmp_path: Path) -> None:
    folder, face = bad_folder(exported, tmp_path, lambda p: p.write_text("not a picture"))
    doc = _score(world, folder)
    assert _problems(doc)[("aging", "not_image")] == [f"{face}.png"]
    assert doc["tasks"]["aging"]["missing"] == 1


def test_truncated_png_counts_as_missing(world: dict, exported: Path, tmp_path: Path) -> None:
    def make(p: Path) -> None:
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(p)
        p.write_bytes(p.read_bytes()[:3000])

    folder, face = bad_folder(exported, tmp_path, make)
    doc = _score(world, folder)
    assert _problems(doc)[("aging", "unreadable")] == [f"{face}.png"]
    assert doc["tasks"]["aging"]["missing"] == 1


def test_16bit_and_palette_pngs_are_converted_and_said_so(tmp_path: Path) -> None:
    grey16 = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    rgb16 = np.full((32, 32, 3), 0x1234, ">u2")
    (tmp_path / "rgb16.png").write_bytes(raw_png(32, 32, 16, 2, b"".join(b"\0" + r.tobytes() for r in rgb16)))
    pal = Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).quantize(16)
    pal.save(tmp_path / "pal.png")
    rgba = Image.new("RGBA", (40, 40), (10, 20, 30, 0))
    rgba.save(tmp_path / "rgba.png")
    arr, failure, notes = external.read_output(tmp_path / "g16.png")
    assert failure is None and arr.dtype == np.uint8 and arr.shape == (64, 64, 3)
    assert np.array_equal(arr[..., 0], (grey16 >> 8).astype(np.uint8)) and notes[0][0] == "converted"
    arr, failure, notes = external.read_output(tmp_path / "rgb16.png")
    assert failure is None and (arr == 0x12).all() and ("converted", "16 bits per channel -> 8 (high byte)") in notes
    arr, failure, notes = external.read_output(tmp_path / "pal.png")
    assert failure is None and np.array_equal(arr, np.asarray(pal.convert("RGB"))) and "P -> RGB" in notes[0][1]
    arr, failure, notes = external.read_output(tmp_path / "rgba.png")
    assert failure is None and (arr == (10, 20, 30)).all() and "alpha dropped" in notes[0][1]


def test_converted_and_lossy_outputs_are_scored_and_flagged(world: dict, exported: Path, tmp_path: Path) -> None:
    def make(p: Path) -> None:
        Image.new("L", (128, 128), 100).save(p.with_suffix(".jpg"), quality=90)

    folder, face = bad_folder(exported, tmp_path, make)
    doc = _score(world, folder)
    problems = _problems(doc)
    assert problems[("aging", "lossy")] == [f"{face}.jpg (JPEG)"]
    assert problems[("aging", "converted")] == [f"{face}.jpg (L -> RGB (converted))"]
    assert doc["tasks"]["aging"]["missing"] == 0


def test_one_pixel_image_counts_as_missing(world: dict, exported: Path, tmp_path: Path) -> None:
    folder, face = bad_folder(exported, tmp_path, lambda p: Image.new("RGB", (1, 1), (200, 10, 10)).save(p))
    doc = _score(world, folder)
    assert _problems(doc)[("aging", "too_small")] == [f"{face}.png"]
    assert doc["tasks"]["aging"]["missing"] == 1


def test_decompression_bomb_is_refused(world: dict, exported: Path, tmp_path: Path) -> None:
    # A real PNG header claiming 30000 x 30000 pixels (2.5x PIL's limit); PIL stops at the header.
    bomb = raw_png(30000, 30000, 1, 0, b"\0" * 10)
    folder, face = bad_folder(exported, tmp_path, lambda p: p.write_bytes(bomb))
    assert Image.MAX_IMAGE_PIXELS < 30000 * 30000
    doc = _score(world, folder)
    assert _problems(doc)[("aging", "too_large")] == [f"{face}.png"]
    assert doc["tasks"]["aging"]["missing"] == 1


def test_symlink_outside_the_folder_is_refused(world: dict, exported: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.png"
    Image.new("RGB", (128, 128), (50, 60, 70)).save(outside)
    folder, face = bad_folder(exported, tmp_path, lambda p: os.symlink(outside, p))
    inside_target = sorted((folder / "rejuvenation").iterdir())[0]
    inside_link = folder / "rejuvenation" / "link.png"
    os.symlink(inside_target, inside_link)  # a link inside the folder is fine (an extra file here)
    doc = _score(world, folder)
    problems = _problems(doc)
    assert problems[("aging", "symlink_outside")] == [f"{face}.png"]
    assert doc["tasks"]["aging"]["missing"] == 1
    assert ("rejuvenation", "symlink_outside") not in problems
    assert problems[("rejuvenation", "extra")] == ["link.png"]


@pytest.mark.parametrize("change", ["protocol", "digest"])
def test_manifest_of_other_inputs_is_refused(
    change: str, world: dict, exported: Path, tmp_path: Path, stub, capsys
) -> None:
    folder = toy_method(exported, tmp_path / "toy", size=128, cycle=False)
    manifest = json.loads((exported / "manifest.json").read_text())
    shutil.copy(exported / "manifest.json", folder / "manifest.json")
    code, _, err = score_cli(world, folder, capsys)  # the right manifest passes
    assert code == 0, err
    if change == "protocol":
        manifest["protocol_version"] = agebench.PROTOCOL_VERSION - 1
    else:
        manifest["tasks"]["aging"]["digest"] = "0" * 64
    (folder / "manifest.json").write_text(json.dumps(manifest))
    out_json = tmp_path / "m.json"
    code, _, err = score_cli(world, folder, capsys, "--json", str(out_json))
    assert_one_error_line(code, err, "manifest.json", "protocol version" if change == "protocol" else "digest")
    assert not out_json.exists()


def test_builtin_names_are_refused(world: dict, exported: Path, tmp_path: Path, stub, capsys) -> None:
    folder = toy_method(exported, tmp_path / "toy", size=128, cycle=False)
    code, _, err = score_cli(world, folder, capsys, name="identity")
    assert_one_error_line(code, err, "built-in")
    code, _, err = score_cli(world, folder, capsys, name="../evil")
    assert_one_error_line(code, err, "letters, digits")


# ----------------------------------------------------------------------------------------------
# params.yaml `external:` and the DVC stage
# ----------------------------------------------------------------------------------------------


def _params_with(world: dict, tmp_path: Path, entries: list) -> Path:
    raw = yaml.safe_load(world["params"].read_text())
    raw["external"] = entries
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(raw))
    return p


def test_external_entries_are_validated(world: dict, tmp_path: Path) -> None:
    ok = load_params(_params_with(world, tmp_path, [{"name": "sam", "folder": "ext/sam", "source": "SAM 2021"}]))
    assert ok.external[0].name == "sam" and ok.external[0].source == "SAM 2021"
    assert load_params(world["params"]).external == ()
    bad = [
        ([{"name": "a", "folder": "x"}, {"name": "a", "folder": "y"}], "listed twice"),
        ([{"name": "identity", "folder": "x"}], "built-in"),
        ([{"name": "real", "folder": "x"}], "built-in"),
        ([{"name": "a b", "folder": "x"}], "letters"),
        ([{"name": "a", "folder": "x", "typo": 1}], "unknown key"),
        ([{"name": "a"}], "folder"),
    ]
    for entries, fragment in bad:
        with pytest.raises(ParamsError, match=fragment):
            load_params(_params_with(world, tmp_path, entries))


def test_score_external_stage_writes_the_same_row(world: dict, exported: Path, tmp_path: Path, stub, capsys) -> None:
    from stages import score_external

    folder = toy_method(exported, tmp_path / "toy", size=96)
    params = _params_with(world, tmp_path, [{"name": "toy", "folder": str(folder), "source": "a toy"}])
    metrics = tmp_path / "reports" / "metrics" / "toy.json"
    code = score_external.main(
        ["--params", str(params), "--name", "toy", "--data", str(world["prepared"]), "--out", str(metrics),
         "--outputs", str(tmp_path / "outputs" / "toy"), "--scores", str(tmp_path / "scores" / "toy.npz")]
    )  # fmt: skip
    assert code == 0
    staged = json.loads(metrics.read_text())
    assert staged["kind"] == "external" and staged["source"] == "a toy"
    assert (tmp_path / "outputs" / "toy" / "aging.npz").is_file()
    cli_json = tmp_path / "cli.json"
    rc, _, err = score_cli(world, folder, capsys, "--json", str(cli_json), "--source", "a toy")
    assert rc == 0, err
    assert json.loads(cli_json.read_text())["tasks"] == staged["tasks"]


@pytest.mark.slow
def test_dvc_repro_scores_an_external_entry(world: dict, exported: Path, tmp_path: Path) -> None:
    """`dvc repro score_external@0` in a copy of the project gives the metrics `score-outputs` gives (real networks)."""
    if shutil.which("dvc") is None and not (Path(sys.executable).parent / "dvc").exists():
        pytest.skip("dvc is not installed")
    dvc = shutil.which("dvc") or str(Path(sys.executable).parent / "dvc")
    proj = tmp_path / "proj"
    for d in ("agebench", "methods", "metrics", "stages"):
        shutil.copytree(REPO / d, proj / d, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "dvc.yaml", proj / "dvc.yaml")
    toy_method(exported, proj / "external" / "toy", size=128)
    raw = yaml.safe_load((REPO / "params.yaml").read_text())  # DVC needs every params key the stage names
    for key, value in yaml.safe_load(world["params"].read_text()).items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) else value
    raw["external"] = [{"name": "toy", "folder": "external/toy", "source": "a toy"}]
    (proj / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    shutil.copytree(world["prepared"], proj / "data" / "prepared")
    # The stage's `python` is this interpreter (a venv that is not activated is not on PATH).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "OMP_NUM_THREADS": "1", "AGEBENCH_CACHE": str(tmp_path / "cache")}
    for cmd in (["git", "init", "-q"], [dvc, "init", "-q"], [dvc, "repro", "-s", "score_external@0"]):
        done = subprocess.run(cmd, cwd=proj, env=env, capture_output=True, text=True)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    staged = json.loads((proj / "reports" / "metrics" / "toy.json").read_text())
    out = tmp_path / "cli.json"
    subprocess.run(
        [sys.executable, "-m", "agebench.cli", "score-outputs", "external/toy", "--name", "toy", "--source", "a toy",
         "--json", str(out)],
        cwd=proj, env=env, check=True, capture_output=True,
    )  # fmt: skip
    assert json.loads(out.read_text())["tasks"] == staged["tasks"]
    assert staged["kind"] == "external"


def test_differing_and_non_square_sizes_are_flagged(world: dict, exported: Path, tmp_path: Path) -> None:
    def make(p: Path) -> None:
        Image.new("RGB", (300, 200), (120, 90, 160)).save(p)

    folder, face = bad_folder(exported, tmp_path, make)
    doc = _score(world, folder)
    problems = _problems(doc)
    assert problems[("aging", "not_square")] == [f"{face}.png (300x200)"]
    assert problems[("aging", "sizes_differ")] == [f"128x128 ({doc['tasks']['aging']['n'] - 1}), 300x200 (1)"]
    assert doc["tasks"]["aging"]["missing"] == 0 and doc["external"]["outputs"]["aging"]["sizes"]["300x200"] == 1


def test_export_of_an_unknown_task_or_source_is_one_line(world: dict, tmp_path: Path, capsys) -> None:
    base = ["export-inputs", "--out", str(tmp_path / "x"), "--params", str(world["params"]), "--data",
            str(world["prepared"])]  # fmt: skip
    code, _, err = run_cli([*base, "--source", str(world["utk"]), "--task", "aging_typo"], capsys)
    assert_one_error_line(code, err, "unknown task 'aging_typo'", "aging, rejuvenation")
    code, _, err = run_cli([*base, "--source", str(tmp_path / "no_such_dir")], capsys)
    assert_one_error_line(code, err, "no_such_dir")
    assert not (tmp_path / "x").exists()
    code, _, err = run_cli([*base, "--source", str(world["utk"]), "--task", "aging"], capsys)
    assert code == 0, err
    assert set(json.loads((tmp_path / "x" / "manifest.json").read_text())["tasks"]) == {"aging"}
