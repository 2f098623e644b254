"""Reliability, case by case: never lose a user's file, one clear line and the right exit status.

Each test reproduces one case of the probe and asserts the message, the exit status and that nothing
was lost. Cases covered elsewhere: 2 (crafted checkpoints) in the train/generate tests; 5, 10 in
tests/test_prepare.py (`test_unusual_entries_are_counted_by_reason`) and tests/test_download.py
(`test_folder_digest_does_not_follow_links`); 6 in tests/test_check.py; 8's archive caps in
tests/test_download.py (`test_member_and_total_size_caps`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from agebench.cli import main as cli_main
from agebench.data import photo as ph
from agebench.infra import common
from agebench.infra.common import OutputPathError, atomic_path, remove_stale_temporaries, write_json
from tests.conftest import REPO
from tests.test_prepare import png_header_only


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    return lines[0]


def _folder_with_a_file(path: Path) -> Path:
    path.mkdir()
    (path / "f").write_text("x\n")
    return path


# ----------------------------------------------------------------------------------------------
# Case 1: a file output never replaces a folder


def test_atomic_file_output_refuses_a_folder_and_keeps_it(tmp_path: Path) -> None:
    d = _folder_with_a_file(tmp_path / "d")
    with pytest.raises(OutputPathError, match=r"d is a folder: give a file name"), atomic_path(d) as tmp:
        tmp.write_text("{}")
    assert (d / "f").read_text() == "x\n"
    with pytest.raises(OutputPathError, match="is a folder"):
        write_json(d, {"a": 1})
    assert (d / "f").read_text() == "x\n" and [p.name for p in tmp_path.iterdir()] == ["d"]  # no temporaries


def test_atomic_dir_output_replaces_its_own_folder_and_never_a_file(tmp_path: Path) -> None:
    out = _folder_with_a_file(tmp_path / "out")
    with atomic_path(out, kind="dir") as tmp:
        tmp.mkdir()
        (tmp / "g").write_text("new\n")
    assert sorted(p.name for p in out.iterdir()) == ["g"]
    (tmp_path / "file").write_text("keep\n")
    with pytest.raises(OutputPathError, match="not a folder"), atomic_path(tmp_path / "file", kind="dir") as tmp:
        tmp.mkdir()
    assert (tmp_path / "file").read_text() == "keep\n"
    # A failure while the new folder is being made leaves the old one whole and nothing else.
    with pytest.raises(RuntimeError), atomic_path(out, kind="dir") as tmp:
        tmp.mkdir()
        raise RuntimeError("midway")
    assert (out / "g").read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "out"]


def test_baseline_update_into_a_folder_is_refused(tmp_path: Path, capsys) -> None:
    """The probe's `mkdir d; echo x > d/f; agebench baseline update --baseline d` exited 0 and ate d."""
    d = _folder_with_a_file(tmp_path / "d")
    metrics = tmp_path / "m"
    metrics.mkdir()
    import agebench

    doc = {"method": "a", "protocol_version": agebench.PROTOCOL_VERSION, "profile": "smoke"}
    (metrics / "a.json").write_text(json.dumps({**doc, "tasks": {"aging": {"joint": 0.3}}}))
    code = cli_main(["baseline", "update", "--baseline", str(d), "--metrics", str(metrics)])
    assert code == 2 and "is a folder" in _one_error_line(capsys.readouterr().err)
    assert (d / "f").read_text() == "x\n"


@pytest.mark.parametrize("extra", [["--all-methods"], ["--method", "cyclegan_agevec", "--progression"]])
def test_age_photo_out_folder_is_refused_before_any_work(tmp_path: Path, capsys, extra: list[str]) -> None:
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (10, 20, 30)).save(photo)
    album = _folder_with_a_file(tmp_path / "album")
    code = cli_main(["age-photo", str(photo), *extra, "--out", str(album), "--params", str(REPO / "params.yaml")])
    assert code == 2 and "album is a folder" in _one_error_line(capsys.readouterr().err)
    assert (album / "f").read_text() == "x\n"


# ----------------------------------------------------------------------------------------------
# Case 3: age-photo --out equal to the input photo


@pytest.mark.parametrize("how", ["same path", "other spelling", "hard link"])
def test_age_photo_out_equal_to_the_photo_is_refused(tmp_path: Path, capsys, how: str) -> None:
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (200, 100, 50)).save(photo, quality=90)
    before = photo.read_bytes()
    out = {"same path": photo, "other spelling": tmp_path / "." / "photo.jpg", "hard link": tmp_path / "link.jpg"}[how]
    if how == "hard link":
        os.link(photo, out)
    code = cli_main(["age-photo", str(photo), "--method", "identity", "--out", str(out)])
    assert code == 2 and "is the input" in _one_error_line(capsys.readouterr().err)
    assert photo.read_bytes() == before


# ----------------------------------------------------------------------------------------------
# Case 4: bad params are one line, exit 2, before any data is read


def _prepare_inputs(tmp_path: Path, params: dict) -> list[str]:
    (tmp_path / "raw").mkdir()
    # The images folder does not exist: reading data first would fail with a different message.
    (tmp_path / "raw" / "source.json").write_text(json.dumps({"images_dir": str(tmp_path / "nowhere")}))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return [
        "--params",
        str(tmp_path / "params.yaml"),
        "--source",
        str(tmp_path / "raw"),
        "--out",
        str(tmp_path / "data" / "prepared"),
        "--report",
        str(tmp_path / "data.json"),
        "--figure",
        str(tmp_path / "hist.png"),
    ]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"cyclegan_agevec": {"batch_size": -1}}, "cyclegan_agevec.batch_size: must be >= 1, got -1"),
        ({"generate": {"batch_size": -4}}, "generate.batch_size: must be >= 1, got -4"),
        ({"cyclegan_keras": {"lr": 0}}, "cyclegan_keras.lr: must be > 0"),
        ({"train": {"log_every": 0}}, "train.log_every: must be >= 1"),
        ({"train": {"checkpoint_every": 0}}, "train.checkpoint_every: must be >= 1"),
        ({"methods": []}, "methods: the list is empty"),
        ({"methods": "identity"}, "methods: expected a list of method names"),
        ({"methods": ["nope"]}, "methods: unknown method 'nope'"),
    ],
)
def test_bad_params_stop_a_stage_before_data(tmp_path: Path, capsys, params: dict, message: str) -> None:
    from stages.prepare import main as prepare_main

    argv = _prepare_inputs(tmp_path, params)
    with pytest.raises(SystemExit) as exit_:
        common.run_main(prepare_main, argv)
    line = _one_error_line(capsys.readouterr().err)
    assert exit_.value.code == 2 and message in line and str(tmp_path / "params.yaml") in line
    assert not (tmp_path / "data").exists() and not (tmp_path / "data.json").exists()


# ----------------------------------------------------------------------------------------------
# Case 7: one line instead of a traceback (pixel limits, SIGINT)


@pytest.mark.parametrize(
    ("size", "message"), [((8000, 6000), "over age-photo's limit"), ((20000, 20000), "too many pixels")]
)
def test_age_photo_refuses_huge_photos_by_name(tmp_path: Path, capsys, size: tuple[int, int], message: str) -> None:
    photo = tmp_path / "huge.png"
    photo.write_bytes(png_header_only(*size))  # a few bytes on disk, 48-400 Mpx declared
    out = tmp_path / "out.png"
    code = cli_main(
        ["age-photo", str(photo), "--method", "identity", "--out", str(out), "--params", str(REPO / "params.yaml")]
    )
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2 and message in line and "huge.png" in line and not out.exists()


_SLEEPER = textwrap.dedent(
    """
    import signal, sys, time
    sys.path.insert(0, {repo!r})
    from agebench.infra.common import atomic_path, run_main

    # A child of a background job (CI started with `&`) inherits SIGINT as ignored; a terminal's Ctrl-C
    # reaches a process with Python's default handler, which is what this test is about.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def main(argv):
        with atomic_path({out!r}) as tmp:
            tmp.write_text("partial")
            print("ready", flush=True)
            time.sleep(60)

    run_main(main)
    """
)


def _start_and_wait_ready(code: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def test_sigint_is_one_line_and_exit_130_and_the_old_output_is_kept(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    out.write_text("old\n")
    proc = _start_and_wait_ready(_SLEEPER.format(repo=str(REPO), out=str(out)))
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err.strip().splitlines() == ["interrupted (Ctrl-C): stopped; outputs already in place are unchanged"]
    assert out.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]


def test_cli_sigint_is_exit_130(monkeypatch, capsys) -> None:
    import agebench.cli
    import agebench.commands.check

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(agebench.commands.check, "run", interrupted)
    assert agebench.cli.main(["check", "--baseline", "x"]) == 130
    assert "interrupted" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# Case 8: age-photo's memory: detection on a downscaled copy, boxes back at full size


class _RecordingDetector:
    """Finds one face at fixed fractions of whatever image it is given; records the sizes it saw."""

    def __init__(self) -> None:
        self.sizes: list[tuple[int, int]] = []

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """YuNet rows (box x, y, w, h, five landmarks, score), as `age_photo.load_detector()` returns."""
        h, w = image.shape[:2]
        self.sizes.append((w, h))
        eyes = [0.55 * w, 0.4 * h, 0.45 * w, 0.4 * h]  # YuNet: the subject's right eye (image right) first
        rest = [0.5 * w, 0.5 * h, 0.55 * w, 0.55 * h, 0.45 * w, 0.55 * h]
        return np.array([[0.4 * w, 0.3 * h, 0.2 * w, 0.3 * h, *eyes, *rest, 0.99]], np.float32)


def test_detection_sees_a_downscaled_copy_and_boxes_come_back_full_size() -> None:
    image = np.zeros((2000, 3000, 3), np.uint8)
    detector = _RecordingDetector()
    (found,) = ph.detect_faces(image, detector)
    assert detector.sizes == [(1024, 683)]
    np.testing.assert_allclose(found.box, (1200, 600, 1800, 1200), rtol=2e-3)
    np.testing.assert_allclose(found.left_eye, (1350, 800), rtol=2e-3)
    small = np.zeros((300, 400, 3), np.uint8)
    ph.detect_faces(small, detector)
    assert detector.sizes[-1] == (400, 300)  # small photos are not resampled


def test_paste_in_place_equals_paste_on_a_copy() -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (80, 90, 3), dtype=np.uint8)
    face = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    plan = ph.FacePlan(ph.Detection((0, 0, 1, 1), (0, 0), (1, 0), 1.0), x0=10, y0=20, side=40)
    mask = ph.feather_mask(40)
    expected = ph.paste(photo, face, plan, mask)
    target = photo.copy()
    assert ph.paste(target, face, plan, mask, inplace=True) is target
    np.testing.assert_array_equal(target, expected)


# ----------------------------------------------------------------------------------------------
# Case 9: temporaries of a killed run are removed by the next run


def test_leftovers_of_a_sigkilled_writer_are_removed_next_time(tmp_path: Path) -> None:
    out = tmp_path / "prepared"
    proc = _start_and_wait_ready(_SLEEPER.format(repo=str(REPO), out=str(out)))
    proc.kill()  # SIGKILL: no cleanup runs
    proc.wait(timeout=30)
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".prepared.{proc.pid}.") and left[0].endswith(".tmp")
    # An earlier agebench's leftover (mkdtemp without a pid), and a live writer's temporary (kept).
    legacy = _folder_with_a_file(tmp_path / ".prepared.k2j4_x9q.tmp")
    live = _folder_with_a_file(tmp_path / f".prepared.{os.getpid()}.abcdefgh.tmp")
    unrelated = _folder_with_a_file(tmp_path / ".prepared_other.abcdefgh.tmp")
    users = tmp_path / ".prepared.backup.tmp"  # not a name atomic_path makes: never touched
    users.write_text("mine\n")
    with atomic_path(out, kind="dir") as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["prepared", live.name, unrelated.name, users.name])
    assert not legacy.exists()
    assert remove_stale_temporaries(out) == []  # the live one stays while its process runs


def test_prepare_stage_removes_a_killed_runs_temporary_folder(tmp_path: Path) -> None:
    """The probe's 5.7 GB `data/.prepared.*.tmp/` left by SIGKILL is gone after the next prepare."""
    from stages.prepare import main as prepare_main

    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(faces / f"2{i}_0_0_x{i}.jpg.chip.jpg")
    argv = _prepare_inputs(tmp_path, {"data": {"resolutions": [16], "workers": 1}})
    (tmp_path / "raw" / "source.json").write_text(json.dumps({"images_dir": str(faces), "digest": "d"}))
    data = tmp_path / "data"
    data.mkdir()
    stale = _folder_with_a_file(data / ".prepared.q1w2e3r4.tmp")
    (stale / "faces_256.npy").write_bytes(b"\0" * 1000)
    assert prepare_main(argv) == 0
    assert sorted(p.name for p in data.iterdir()) == ["prepared"]
    report = json.loads((tmp_path / "data.json").read_text())
    assert report["images_kept"] == 3 and report["protocol_version"] == 3
