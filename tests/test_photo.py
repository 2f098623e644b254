"""`agebench age-photo`: crop geometry, the feathered paste, and whole photos (generated and FG-NET)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from agebench.data import photo as ph
from agebench.params.load import load_params
from tests.conftest import REPO


def det(cx: float, cy: float, eye_dist: float, prob: float = 0.99) -> ph.Detection:
    """A detection whose eyes are `eye_dist` apart around (cx, cy)."""
    le, re_ = (cx - eye_dist / 2, cy), (cx + eye_dist / 2, cy)
    return ph.Detection((cx - eye_dist, cy - eye_dist, cx + eye_dist, cy + 1.5 * eye_dist), le, re_, prob)


@pytest.mark.parametrize("side,feather", [(64, 0.2), (200, 0.2), (33, 0.4), (500, 0.1)])
def test_feather_mask_is_zero_on_the_border_one_inside_and_has_no_seam(side: int, feather: float) -> None:
    m = ph.feather_mask(side, feather)
    assert m.shape == (side, side) and m.min() >= 0 and m.max() <= 1
    for edge in (m[0], m[-1], m[:, 0], m[:, -1]):
        assert np.all(edge == 0)
    assert m[side // 2, side // 2] == 1.0
    assert np.array_equal(m, m.T) and np.array_equal(m, m[::-1, ::-1])
    # Bounded slope: smoothstep over feather*side pixels rises at most 1.5 / (feather * side) per pixel.
    bound = 1.5 / max(feather * side, 1.0) + 1e-12
    assert np.abs(np.diff(m, axis=0)).max() <= bound and np.abs(np.diff(m, axis=1)).max() <= bound


def test_paste_changes_nothing_outside_the_crop_or_where_the_mask_is_zero() -> None:
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (120, 150, 3), dtype=np.uint8)
    plan = ph.FacePlan(det(60, 50, 20), x0=30, y0=20, side=64)
    face = np.full((64, 64, 3), 7, np.uint8)
    mask = ph.feather_mask(64)
    out = ph.paste(photo, face, plan, mask)
    outside = np.ones(photo.shape[:2], bool)
    outside[20:84, 30:94] = mask == 0  # mask-0 pixels of the crop count as outside
    assert np.array_equal(out[outside], photo[outside])
    assert np.array_equal(out[52, 62], face[32, 32])  # the middle is the face itself
    assert photo is not out and not np.shares_memory(photo, out)


def test_crop_puts_the_eyes_where_the_training_chips_have_them_at_any_scale() -> None:
    f = ph.UTKFACE_FRAMING
    for dist in (20.0, 45.0, 130.0):
        x0, y0, side = ph.crop_for(det(400.0, 300.0, dist))
        assert abs(side - dist / f.eye_distance) <= 0.5
        assert abs((400.0 - x0) / side - f.eye_mid_x) < 1.0 / side
        assert abs((300.0 - y0) / side - f.eye_mid_y) < 1.0 / side


def test_plan_skips_small_faces_and_faces_at_the_border_with_reasons() -> None:
    plans = ph.plan_faces([det(200, 200, 60), det(50, 200, 60), det(300, 120, 8)], 400, 400, min_side=48)
    ok, border, small = plans
    assert ok.skipped is None and ok.side == round(60 / ph.UTKFACE_FRAMING.eye_distance)
    assert border.skipped.startswith("at the border")
    assert small.skipped.startswith("too small")


class FakeDetector:
    """Stands in for YuNet (`age_photo.load_detector()`): returns the given faces as YuNet rows (box x, y, w, h,
    five landmarks with the subject's right eye, i.e. the image-right one here, first, score)."""

    def __init__(self, detections: list[ph.Detection]) -> None:
        self.detections = detections
        self.calls: list[tuple[int, int]] = []

    def __call__(self, image: np.ndarray) -> np.ndarray:
        self.calls.append(image.shape[:2])
        rows = []
        for d in self.detections:
            x0, y0, x1, y1 = d.box
            (lx, ly), (rx, ry) = d.left_eye, d.right_eye
            rows.append(
                [x0, y0, x1 - x0, y1 - y0, rx, ry, lx, ly, (lx + rx) / 2, ly + 9, lx, ly + 20, rx, ry + 20, d.prob]
            )
        return np.asarray(rows, np.float32).reshape(-1, 15)


def test_detect_faces_reads_yunet_rows_drops_weak_and_sorts_largest_first() -> None:
    small, big, weak = det(50, 50, 10), det(200, 200, 60), det(300, 300, 80, prob=0.5)
    found = ph.detect_faces(np.zeros((400, 400, 3), np.uint8), FakeDetector([small, big, weak]), min_score=0.6)
    assert [d.left_eye for d in found] == [big.left_eye, small.left_eye]  # image-left eye first again
    assert [d.box for d in found] == [big.box, small.box]
    assert all(isinstance(v, float) for d in found for v in (*d.box, *d.left_eye, *d.right_eye, d.prob))
    assert ph.detect_faces(np.zeros((8, 8, 3), np.uint8), FakeDetector([])) == []


def test_detection_on_a_large_photo_runs_on_a_downscaled_copy_and_maps_back() -> None:
    face = det(1000, 800, 200)
    fake = FakeDetector([det(250, 200, 50)])  # what YuNet would see on the 4x smaller copy
    found = ph.detect_faces(np.zeros((2048, 4096, 3), np.uint8), fake)
    assert fake.calls == [(512, 1024)]
    assert found[0].box == face.box and found[0].left_eye == face.left_eye


@pytest.mark.real_data
def test_a_utkface_chip_in_a_photo_is_cut_out_as_utkface_framed_it(utkface_sample: list[Path]) -> None:
    """Each chip pasted into a larger grey "photo" at a known place: YuNet + UTKFACE_FRAMING find a crop
    that maps back onto the chip (position and size as fractions of the chip's side)."""
    from agebench.pipeline.photo_aging import load_detector

    detector = load_detector()
    errors = []
    for path in utkface_sample[::2]:
        chip = np.asarray(Image.open(path).convert("RGB"))
        side = chip.shape[0]
        photo = np.full((3 * side, 3 * side, 3), 90, np.uint8)
        x0, y0 = side + 13, side - 21
        photo[y0 : y0 + side, x0 : x0 + side] = chip
        found = ph.detect_faces(photo, detector)
        if not found:
            continue
        plan = ph.plan_faces(found[:1], *photo.shape[:2], 48)[0]
        errors.append(((plan.x0 - x0) / side, (plan.y0 - y0) / side, (plan.side - side) / side))
    assert len(errors) >= 0.9 * len(utkface_sample[::2])
    errors = np.asarray(errors)
    # No bias (signed medians within 3% of the side); the spread is the chips' own (UTKFace's framing
    # varies: YuNet's eye distance is 0.365-0.434 of the side from its 10th to 90th percentile).
    assert (np.abs(np.median(errors, axis=0)) < 0.03).all(), np.median(errors, axis=0)
    assert (np.median(np.abs(errors), axis=0) < 0.06).all(), np.median(np.abs(errors), axis=0)


# ---- the command on whole photos ---------------------------------------------------------------


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Untrained smoke-size checkpoints of a two-group and a multi-group method (mechanics only)."""
    from agebench.pipeline.train import build_method, checkpoint_dict, save_checkpoint

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["profile"] = "smoke"
    out = tmp_path_factory.mktemp("models")
    (out / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(out / "params.yaml")
    for name in ("cyclegan_keras", "cyclegan_agevec"):
        torch.manual_seed(0)
        method = build_method(name, params, torch.device("cpu"))
        (out / name).mkdir()
        save_checkpoint(out / name / "model.pt", checkpoint_dict(method, name, 0, ""))
    return out


def run_cli(args: list[str], models: Path) -> int:
    from agebench.cli import main

    return main(
        ["age-photo", *args, "--models", str(models), "--params", str(models / "params.yaml"), "--device", "cpu"]
    )


@pytest.fixture()
def fake_faces(monkeypatch: pytest.MonkeyPatch):
    """Replace YuNet by a detector that finds the given faces (generated photos have no real faces)."""
    found: list[ph.Detection] = []
    monkeypatch.setattr("agebench.pipeline.photo_aging.load_detector", lambda *a, **k: FakeDetector(found))
    return found


def crop_mask(shape: tuple[int, int], plans: list[ph.FacePlan]) -> np.ndarray:
    inside = np.zeros(shape, bool)
    for p in plans:
        if not p.skipped:
            inside[p.y0 : p.y0 + p.side, p.x0 : p.x0 + p.side] = True
    return inside


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_generated_photo_keeps_size_mode_and_every_pixel_outside_the_faces(
    mode: str, models_dir: Path, fake_faces: list, tmp_path: Path
) -> None:
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 256, (240, 320, 4 if mode == "RGBA" else 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGBA" if mode == "RGBA" else "RGB").convert(mode)
    src = tmp_path / "in.png"
    img.save(src)
    fake_faces += [det(100, 90, 40), det(240, 150, 30), det(310, 100, 30)]  # the last one is at the border
    out = tmp_path / "out.png"
    assert run_cli([str(src), "--method", "cyclegan_keras", "--to", "old", "--out", str(out)], models_dir) == 0
    result = Image.open(out)
    assert result.size == img.size and result.mode == img.mode
    a, b = np.asarray(img), np.asarray(result)
    plans = ph.plan_faces(ph.detect_faces(np.asarray(img.convert("RGB")), FakeDetector(fake_faces)), 240, 320, 48)
    assert [p.skipped is None for p in plans] == [True, True, False]
    inside = crop_mask((240, 320), plans)
    assert np.array_equal(a[~inside], b[~inside])  # exactly untouched outside the face crops
    assert not np.array_equal(a[inside], b[inside])  # and the faces did change
    if mode == "RGBA":
        assert np.array_equal(a[..., 3], b[..., 3])


def test_exif_orientation_is_applied_and_the_output_is_upright(
    models_dir: Path, fake_faces: list, tmp_path: Path
) -> None:
    rng = np.random.default_rng(2)
    stored = Image.fromarray(rng.integers(0, 256, (200, 300, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: viewers rotate it 90 degrees clockwise
    src = tmp_path / "in.jpg"
    stored.save(src, exif=exif.tobytes(), quality=95)
    from PIL import ImageOps

    upright = np.asarray(ImageOps.exif_transpose(Image.open(src)))
    assert upright.shape == (300, 200, 3)
    fake_faces.append(det(100, 120, 40))
    out = tmp_path / "out.png"
    assert run_cli([str(src), "--method", "cyclegan_keras", "--out", str(out)], models_dir) == 0
    result = Image.open(out)
    assert result.getexif().get(0x0112, 1) == 1
    b = np.asarray(result)
    assert b.shape == upright.shape
    inside = crop_mask((300, 200), ph.plan_faces([fake_faces[0]], 300, 200, 48))
    assert np.array_equal(b[~inside], upright[~inside])


def test_no_face_is_an_error_and_writes_nothing(
    models_dir: Path, fake_faces: list, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(src)
    out = tmp_path / "out.png"
    assert run_cli([str(src), "--method", "cyclegan_keras", "--out", str(out)], models_dir) == 2
    assert not out.exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("agebench age-photo: error: ") and "no face found" in err[0]


def test_a_faceless_photo_is_an_error_with_the_real_detector(models_dir: Path, tmp_path: Path, capsys) -> None:
    """Black, grey and noise photos through the real YuNet: exit 2, one line, nothing written."""
    rng = np.random.default_rng(0)
    for name, arr in (
        ("black", np.zeros((300, 400, 3), np.uint8)),
        ("grey", np.full((300, 400, 3), 128, np.uint8)),
        ("noise", rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)),
    ):
        src, out = tmp_path / f"{name}.png", tmp_path / f"{name}_old.png"
        Image.fromarray(arr).save(src)
        assert run_cli([str(src), "--method", "cyclegan_keras", "--out", str(out)], models_dir) == 2, name
        assert "no face found" in capsys.readouterr().err and not out.exists()


@pytest.fixture()
def nothing_loads(monkeypatch: pytest.MonkeyPatch):
    """Fail loudly if the photo is read, a face detected or a network loaded: the checks must come first."""

    def forbidden(*args, **kwargs):
        raise AssertionError("expensive work started before the arguments were checked")

    for target in ("load_photo", "load_detector"):
        monkeypatch.setattr(f"agebench.pipeline.photo_aging.{target}", forbidden)
    monkeypatch.setattr("agebench.pipeline.generate.load_trained", forbidden)
    monkeypatch.setattr("metrics.age.load_age_networks", forbidden)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--method", "doesnotexist"], "unknown method 'doesnotexist'; valid methods: age_cgan, cyclegan_agevec"),
        (["--method", "age_cgan"], "model.pt not found"),
        (["--method", "cyclegan_keras", "--to", "90s"], "--to '90s': not old, young or one of cyclegan_keras's"),
        (["--method", "cyclegan_keras", "--progression"], "--progression needs a method with more than two groups"),
        (["--method", "cyclegan_keras", "--out-suffix", ".xyz"], "unknown image format '.xyz'"),
    ],
)
def test_bad_arguments_fail_before_any_detection_or_network(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, nothing_loads, argv: list[str], message: str
) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(src)
    suffix = argv[argv.index("--out-suffix") + 1] if "--out-suffix" in argv else ".png"
    argv = [a for a in argv if a not in ("--out-suffix", suffix)]
    assert run_cli([str(src), *argv, "--out", str(tmp_path / f"o{suffix}")], models_dir) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert "train the method first" not in err[0]


def test_bad_target_and_missing_photo_are_clear_errors(
    models_dir: Path, fake_faces: list, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    src = tmp_path / "in.png"
    Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(src)
    fake_faces.append(det(100, 80, 40))
    assert (
        run_cli([str(src), "--method", "cyclegan_keras", "--to", "90s", "--out", str(tmp_path / "o.png")], models_dir)
        == 2
    )
    assert "--to '90s'" in capsys.readouterr().err
    assert (
        run_cli(
            [str(tmp_path / "nope.png"), "--method", "cyclegan_keras", "--out", str(tmp_path / "o.png")], models_dir
        )
        == 2
    )
    assert "photo not found" in capsys.readouterr().err


@pytest.mark.real_data
def test_fgnet_photos_every_face_aged_background_bit_identical(
    models_dir: Path, fgnet_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Real YuNet on FG-NET photos (faces on backgrounds): all methods, the comparison figure and a strip."""
    photos = sorted(fgnet_dir.glob("*.JPG"))[:3]
    from agebench.pipeline.photo_aging import load_detector, load_photo

    detector = load_detector()
    for photo in photos:
        rgb, _ = load_photo(photo)
        plans = ph.plan_faces(ph.detect_faces(rgb, detector), rgb.shape[0], rgb.shape[1], 48)
        assert plans, f"YuNet found no face in {photo.name}"
        out = tmp_path / f"{photo.stem}.png"
        assert run_cli([str(photo), "--method", "cyclegan_keras", "--to", "old", "--out", str(out)], models_dir) == 0
        b = np.asarray(Image.open(out).convert("RGB"))
        assert b.shape == rgb.shape
        inside = crop_mask(rgb.shape[:2], plans)
        assert np.array_equal(b[~inside], rgb[~inside])
        if inside.any():
            assert not np.array_equal(b[inside], rgb[inside])
        printed = capsys.readouterr().out
        assert f"{len(plans)} face(s) found, {sum(p.skipped is None for p in plans)} changed" in printed
    fig = tmp_path / "all.png"
    assert run_cli([str(photos[0]), "--all-methods", "--out", str(fig)], models_dir) == 0
    printed = capsys.readouterr().out
    assert "age-photo cyclegan_keras" in printed and "age-photo cyclegan_agevec" in printed
    assert "not trained, left out: cyclegan_perceptual, age_cgan" in printed
    assert Image.open(fig).size[0] > Image.open(fig).size[1]  # panels side by side
    strip = tmp_path / "strip.png"
    assert (
        run_cli([str(photos[0]), "--method", "cyclegan_agevec", "--progression", "--out", str(strip)], models_dir) == 0
    )
    assert Image.open(strip).size[0] > Image.open(strip).size[1]


def test_feature_maps_are_dumped_for_a_face(models_dir: Path, tmp_path: Path) -> None:
    """`agebench feature-maps`: every hooked generator stage of cyclegan_agevec, in forward order."""
    from agebench.cli import main

    face = tmp_path / "face.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(face)
    out = tmp_path / "maps"
    args = ["feature-maps", str(face), "--method", "cyclegan_agevec", "--to", "60s", "--out", str(out)]
    args += ["--models", str(models_dir), "--params", str(models_dir / "params.yaml"), "--device", "cpu"]
    assert main(args) == 0
    with np.load(out / "feature_maps.npz") as z:
        names = list(z.files)
        assert names[:3] == ["c7s1", "down1", "down2"] and names[3] == "fuse" and names[-1] == "out"
        assert z["out"].shape == (3, 64, 64) and z["down2"].shape[1:] == (16, 16)
    assert Image.open(out / "feature_maps.png").size[0] > 0
    assert main([*args[:5], "90s", *args[6:]]) == 2  # an unknown decade is a clear error


@pytest.mark.parametrize("method", ["cyclegan_keras", "doesnotexist"])
def test_feature_maps_names_the_methods_that_have_hooks(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture, method: str
) -> None:
    from agebench.cli import main

    face = tmp_path / "face.png"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(face)
    args = ["feature-maps", str(face), "--method", method, "--to", "60s", "--out", str(tmp_path / "maps")]
    args += ["--models", str(models_dir), "--params", str(models_dir / "params.yaml"), "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hooks: cyclegan_agevec" in err[0], err
