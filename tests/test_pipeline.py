"""`dvc repro` of the whole pipeline in a temporary copy of the repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

from tests.conftest import REPO, shared_data_dir

#: Folders of code: a module added there but not yet committed is part of the code under test.
CODE_DIRS = ("agebench", "methods", "metrics", "stages", "tests", "benchmarks")


def repo_files(repo: Path = REPO) -> list[str]:
    """The files a fresh clone of `repo` would have, as they are in the working tree now.

    Git-tracked files (their uncommitted edits included; deleted ones left out), plus untracked,
    not-ignored `.py`/`.yaml` files inside the code folders (a module not yet committed). Nothing else
    that is untracked: a checkout where the pipeline has run holds `dvc.lock`, `reports/metrics/*.json`
    and other results of the user's run, and those must never leak into a test's repository.
    """

    def git(*args: str) -> list[str]:
        out = subprocess.run(["git", "ls-files", "-z", *args], cwd=repo, capture_output=True, check=True).stdout
        return [f for f in out.decode("utf-8", "surrogateescape").split("\0") if f]

    new_code = [
        f
        for f in git("--others", "--exclude-standard", "--", *CODE_DIRS)
        if Path(f).suffix in (".py", ".yaml") and not any(part.startswith(".venv") for part in Path(f).parts)
    ]
    return sorted(f for f in {*git("--cached"), *new_code} if (repo / f).is_file())


def copy_repo(dest: Path, repo: Path = REPO) -> Path:
    """A hermetic copy of `repo` (see `repo_files`) in `dest`, DVC set up without git."""
    for f in repo_files(repo):
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / f, dest / f)
    subprocess.run(["dvc", "config", "core.no_scm", "true"], cwd=dest, check=True, env=dvc_env(), capture_output=True)
    return dest


def dvc_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["DVC_NO_ANALYTICS"] = "1"
    return env


def dvc(repo: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    result = subprocess.run(["dvc", *args], cwd=repo, capture_output=True, text=True, env=dvc_env(), timeout=timeout)
    assert result.returncode == 0, f"dvc {' '.join(args)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def synthetic_faces(folder: Path, n: int = 72) -> None:
    """Face-like drawings with UTKFace names, ages spread so every pair group has train and test faces."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ages = [22, 25, 27, 52, 55, 58, 35, 12, 64]
    for i in range(n):
        img = Image.new("RGB", (200, 200), tuple(int(c) for c in rng.integers(60, 200, 3)))
        d = ImageDraw.Draw(img)
        skin = tuple(int(c) for c in rng.integers(120, 240, 3))
        d.ellipse((45, 30, 155, 175), fill=skin)
        for x in (75, 125):
            d.ellipse((x - 9, 80, x + 9, 92), fill=(30, 30, 30))
        d.line((100, 95, 100, 125), fill=(90, 60, 50), width=3)
        d.arc((75, 125, 125, 150), 10, 170, fill=(120, 30, 30), width=4)
        img.save(folder / f"{ages[i % len(ages)]}_{i % 2}_{i % 5}_2017{i:013d}.jpg.chip.jpg", quality=95)


def test_copy_holds_tracked_files_and_never_a_previous_runs_results(tmp_path: Path) -> None:
    """A checkout where the pipeline has run (untracked dvc.lock, metrics, data): only the code is copied."""
    src = tmp_path / "checkout"
    src.mkdir()

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=src, check=True, capture_output=True)

    git("init", "-q")
    (src / ".gitignore").write_text("/data/\n")
    (src / ".dvc").mkdir()
    (src / ".dvc" / "config").write_text("")
    (src / "params.yaml").write_text("profile: full\n")
    (src / "agebench").mkdir()
    (src / "agebench" / "core.py").write_text("x = 1\n")
    (src / "agebench" / "gone.py").write_text("y = 1\n")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    (src / "params.yaml").write_text("profile: smoke\n")  # an uncommitted edit of a tracked file
    (src / "agebench" / "gone.py").unlink()  # deleted, not yet committed
    (src / "agebench" / "new_module.py").write_text("z = 1\n")  # new code, not yet committed
    # What `dvc repro` leaves behind in the user's checkout:
    (src / "dvc.lock").write_text("schema: '2.0'\n")
    (src / "reports" / "metrics").mkdir(parents=True)
    (src / "reports" / "metrics" / "identity.json").write_text("{}")
    (src / "data").mkdir()
    (src / "data" / "faces.npz").write_bytes(b"0")
    (src / "agebench" / "scratch.txt").write_text("notes")

    expected = [".dvc/config", ".gitignore", "agebench/core.py", "agebench/new_module.py", "params.yaml"]
    assert repo_files(src) == expected
    dest = tmp_path / "copy"
    dest.mkdir()
    copy_repo(dest, src)
    copied = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert copied == expected
    assert (dest / "params.yaml").read_text() == "profile: smoke\n"


@pytest.mark.slow
def test_dvc_repro_end_to_end_and_noop_rerun(tmp_path: Path) -> None:
    repo = copy_repo(tmp_path / "agebench")
    synthetic_faces(tmp_path / "faces")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["methods"] = ["identity", "cyclegan_keras"]
    params["data"]["source"] = str(tmp_path / "faces")
    params["data"]["resolutions"] = [64, 128]
    params["evaluate"]["fgnet_dir"] = ""
    params["smoke"]["data"]["subsample"] = 1.0
    params["smoke"]["cyclegan_keras"].update({"ngf": 4, "ndf": 4, "n_blocks": 1, "max_steps": 3})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    out = dvc(repo, "repro").stdout
    for stage in (
        "download",
        "prepare",
        "fgnet",
        "train@identity",
        "train@cyclegan_keras",
        "generate@cyclegan_keras",
        "evaluate@identity",
        "evaluate@cyclegan_keras",
        "reference",
        "report",
    ):
        assert f"'{stage}'" in out, stage

    data = json.loads((repo / "reports/data.json").read_text())
    assert data["files_total"] == data["images_kept"] == 72
    board = (repo / "reports/leaderboard.md").read_text()
    assert "| cyclegan_keras |" in board and "| identity |" in board and "| real |" in board
    csv_rows = (repo / "reports/leaderboard.csv").read_text().splitlines()
    assert len(csv_rows) == 4  # header + 2 methods + real
    m = json.loads((repo / "reports/metrics/cyclegan_keras.json").read_text())
    assert m["protocol_version"] == 3 and m["profile"] == "smoke" and "git_revision" in m
    assert m["params"]["method"]["max_steps"] == 3  # the resolved (profile-merged) values
    aging = m["tasks"]["aging"]
    n_young_test = data["groups"]["pair"]["young"]["test"]
    assert aging["n"] == n_young_test > 0 and 0.0 <= aging["cycle_l1"] <= 1.0 and "ci95" in aging
    for key in ("age_acc", "id_rate", "joint", "age_score", "gap_closure", "gap", "realism", "joint_decade", "fid",
                "kid_mean", "face_fail", "id_rate_dlib", "per_face", "seed_spread"):  # fmt: skip
        assert key in aging
    assert len(aging["per_face"]["joint"]) == aging["n"] and m["uses_scoring_networks"] == []
    assert aging["joint"] == np.mean(aging["per_face"]["joint"]) and [s["seed"] for s in m["seeds"]] == [0]
    ident = json.loads((repo / "reports/metrics/identity.json").read_text())["tasks"]["aging"]
    assert ident["cycle_l1"] == 0.0 and ident["id_rate"] == 1.0 - ident["id_fail"] / ident["n"]
    assert (repo / "outputs/cyclegan_keras/aging.npz").is_file()
    with np.load(repo / "outputs/cyclegan_keras/aging.npz") as z:
        assert z["fake"].shape == (n_young_test, 128, 128, 3) and z["fake"].dtype == np.uint8
        assert z["cycle"].shape == z["fake"].shape and len(z["rows"]) == n_young_test

    page = (repo / "reports/index.html").read_text(encoding="utf-8")
    n_old_test = data["groups"]["pair"]["old"]["test"]
    # Per task a row of inputs and one per method, up to 6 faces each.
    assert page.count('<img class="face"') == (1 + 2) * (min(6, n_young_test) + min(6, n_old_test))
    assert "http" not in page.split("</style>")[1]  # self-contained

    # Nothing changed: only the always-run `fgnet` record runs, and its byte-identical output reruns nothing.
    again = dvc(repo, "repro").stdout
    assert re.findall(r"Running stage '([^']+)'", again) == ["fgnet"]

    # Bit-reproducible: everything again from a clean state gives byte-identical results.
    first = {p.name: p.read_bytes() for p in (repo / "reports/metrics").glob("*.json")}
    first["index.html"] = (repo / "reports/index.html").read_bytes()
    for folder in ("data", "models", "outputs", "dvclive", "reports/metrics", "reports/runtime"):
        shutil.rmtree(repo / folder)
    dvc(repo, "repro", "--force")
    second = {p.name: p.read_bytes() for p in (repo / "reports/metrics").glob("*.json")}
    second["index.html"] = (repo / "reports/index.html").read_bytes()
    assert sorted(second) == sorted(first)
    for name in first:
        assert second[name] == first[name], f"{name} differs between two runs from a clean state"

    # Changing one method's parameter reruns only what depends on it.
    params["smoke"]["cyclegan_keras"]["lr"] = 0.0001
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = dvc(repo, "status").stdout
    assert "train@cyclegan_keras" in status and "train@identity" not in status and "prepare" not in status

    # A new method in one command, then `dvc repro` trains, scores and ranks it.
    new = subprocess.run(
        [sys.executable, "-m", "agebench.cli", "new-method", "my_method"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=dvc_env(),
    )
    assert new.returncode == 0, new.stderr
    out = dvc(repo, "repro").stdout
    assert "Running stage 'train@my_method'" in out and "Running stage 'evaluate@my_method'" in out
    assert "Running stage 'train@identity'" not in out  # adding a method retrains no other method
    board = (repo / "reports/leaderboard.md").read_text()
    assert "| my_method |" in board
    assert json.loads((repo / "reports/metrics/my_method.json").read_text())["train"]["steps"] == 20


@pytest.mark.slow
@pytest.mark.real_data
def test_smoke_profile_on_real_utkface_trains_and_ranks_every_method(tmp_path: Path, utkface_dir: Path) -> None:
    """The smoke profile as shipped: all four methods plus identity, real faces, on CPU.

    With AGEBENCH_SMOKE_KEEP set, the run is made in that folder and kept: `.ci/run` then holds its
    metrics against the committed smoke baseline with `agebench check`.
    """
    vgg = os.environ.get("AGEBENCH_VGG16_WEIGHTS") or str(
        shared_data_dir().parent / "weights" / "vgg16_features_imagenet.pth"
    )
    if not Path(vgg).is_file():
        pytest.skip(f"VGG-16 weights for cyclegan_perceptual not found at {vgg}")
    keep = os.environ.get("AGEBENCH_SMOKE_KEEP")
    if keep:
        shutil.rmtree(keep, ignore_errors=True)
    repo = copy_repo(Path(keep) if keep else tmp_path / "agebench")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["profile"] = "smoke"
    params["data"]["source"] = str(utkface_dir)
    params["cyclegan_perceptual"]["weights_path"] = vgg
    fgnet = shared_data_dir() / "fgnet" / "images"
    params["evaluate"]["fgnet_dir"] = str(fgnet) if fgnet.is_dir() else ""
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(repo, "repro", timeout=1500)
    board = (repo / "reports/leaderboard.md").read_text()
    for name in ("identity", "cyclegan_keras", "cyclegan_perceptual", "age_cgan", "cyclegan_agevec", "real"):
        assert f"| {name} |" in board, name
    cgan = json.loads((repo / "reports/metrics/age_cgan.json").read_text())
    assert set(cgan["reconstruction"]) >= {"initial", "pixel", "ip", "n"}
    page = (repo / "reports/index.html").read_text(encoding="utf-8")
    assert "Missing inputs" not in page  # every part of the report had what it needs
    assert (repo / "reports/figures/progression/cyclegan_agevec.png").is_file()

    # The gate's probes (agebench.pipeline.probes): fixed transforms of the real test faces, scored by the same code.
    # Each drives a path of the scorer that must behave as stated, and `.ci/run` compares them exactly.
    probes = subprocess.run(
        [sys.executable, "-m", "agebench.cli", "probes", "--out", "reports/probes"],
        cwd=repo,
        capture_output=True,
        text=True,
        env=dvc_env(),
    )
    assert probes.returncode == 0, probes.stderr
    for task_id in ("aging", "rejuvenation"):
        got = {p.stem: json.loads(p.read_text())["tasks"][task_id] for p in (repo / "reports/probes").glob("*.json")}
        assert got["probe_blank"]["face_fail"] == got["probe_blank"]["n"] > 0  # the face check rejects a flat image
        assert got["probe_other_person"]["id_rate"] <= 0.1  # the judge rejects another person's real face
        assert got["probe_other_person"]["face_fail"] == 0
        assert got["probe_blur"]["id_rate"] >= 0.5 and got["probe_blur"]["fid"] > got["probe_other_person"]["fid"]
