"""prepare stage: PROTOCOL.md s.1-2 label rules, split, groups, bad inputs, real-data counts."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agebench.config import DataConfig, GroupsConfig
from agebench.prepare import Label, group_of, list_files, parse_label, prepare, split_of
from stages.prepare import main


def jpeg_bytes(seed: int, size: int = 200) -> bytes:
    rng = np.random.default_rng(seed)
    arr = (rng.random((size, size, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("25_0_1_20170116174525125.jpg.chip.jpg", Label(25, 0, "1")),
        ("39_1_20170116174525125.jpg.chip.jpg", Label(39, 1, "unknown")),  # real name without race
        ("24_0_1_20170116220224657 .jpg.chip.jpg", Label(24, 0, "1")),  # real name with a space
        ("30_1_7_20170116174525125.jpg.chip.jpg", Label(30, 1, "unknown")),  # race out of range
        ("116_0_0_x.jpg", Label(116, 0, "0")),
        ("0_0_0_x.jpg", "bad age"),
        ("117_0_0_x.jpg", "bad age"),
        ("abc_0_0_x.jpg", "bad age"),
        ("-5_0_0_x.jpg", "bad age"),
        ("README.txt", "bad age"),
        ("25_2_0_x.jpg", "bad gender"),
        ("25_x_0_x.jpg", "bad gender"),
        ("25_.jpg", "bad gender"),
    ],
)
def test_parse_label(name: str, expected: Label | str) -> None:
    assert parse_label(name) == expected


def test_split_rule_is_sha1_mod_10() -> None:
    for i in range(200):
        name = f"{i % 90 + 1}_0_1_2017011{i:06d}.jpg.chip.jpg"
        expect = "test" if int(hashlib.sha1(name.encode("utf-8")).hexdigest(), 16) % 10 == 0 else "train"
        assert split_of(name) == expect


def test_group_bounds_are_inclusive() -> None:
    g = GroupsConfig()
    assert [group_of(a, g.pair) for a in (19, 20, 29, 30, 49, 50, 59, 60)] == [
        "",
        "young",
        "young",
        "",
        "",
        "old",
        "old",
        "",
    ]
    assert group_of(18, g.cgan6) == "0-18" and group_of(19, g.cgan6) == "19-29" and group_of(116, g.cgan6) == "60+"
    assert group_of(9, g.decades) == "" and group_of(69, g.decades) == "60s" and group_of(70, g.decades) == ""


def make_bad_folder(folder: Path) -> dict[str, bytes]:
    good = {
        "25_0_1_20170116174525125.jpg.chip.jpg": jpeg_bytes(1),
        "55_1_0_20170116174525126.jpg.chip.jpg": jpeg_bytes(2),
        "24_0_1_20170116220224657 .jpg.chip.jpg": jpeg_bytes(3),  # a space in the name
        "39_1_20170116174525125.jpg.chip.jpg": jpeg_bytes(4),  # no race field
    }
    bad = {
        "26_0_1_20170116174525127.jpg.chip.jpg": jpeg_bytes(5)[:600],  # corrupt (truncated) JPEG
        "27_0_1_20170116174525128.jpg.chip.jpg": b"",  # zero bytes
        "28_1_2_20170116174525129.jpg.chip.jpg": b"this is not an image\n" * 20,  # not an image
        "notes_0_1_x.jpg.chip.jpg": jpeg_bytes(6),  # malformed name
        "30_9_1_20170116174525130.jpg.chip.jpg": jpeg_bytes(7),  # bad gender
    }
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in {**good, **bad}.items():
        (folder / name).write_bytes(data)
    return good


def test_bad_inputs_are_counted_never_fatal(tmp_path: Path) -> None:
    good = make_bad_folder(tmp_path / "faces")
    out = tmp_path / "prepared"
    report = prepare(
        tmp_path / "faces", out, DataConfig(resolutions=(64, 128)), GroupsConfig(), workers=1, progress=False
    )
    assert report["files_total"] == 9
    assert report["images_kept"] == 4
    assert report["excluded"] == {"bad age": 1, "bad gender": 1, "not an image": 2, "undecodable image": 1}
    import pandas as pd

    index = pd.read_csv(out / "index.csv", keep_default_na=False, dtype={"race": str})
    assert sorted(index["file"]) == sorted(good)  # names kept byte for byte, the space included
    assert index.set_index("file").loc["39_1_20170116174525125.jpg.chip.jpg", "race"] == "unknown"
    arr = np.load(out / "faces_64.npy", mmap_mode="r")
    assert isinstance(arr, np.memmap) and arr.shape == (4, 64, 64, 3) and arr.dtype == np.uint8
    # Each row is the PIL antialiased bicubic resize of that row's file.
    for row, name in zip(index["row"], index["file"]):
        with Image.open(tmp_path / "faces" / name) as img:
            ref = np.asarray(img.convert("RGB").resize((64, 64), Image.Resampling.BICUBIC))
        np.testing.assert_array_equal(arr[row], ref)
    assert report["split"]["train"] + report["split"]["test"] == 4
    assert report["groups"]["pair"]["young"]["train"] + report["groups"]["pair"]["young"]["test"] == 2


def test_parallel_equals_serial(tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    for i in range(70):
        (folder / f"{20 + i % 40}_{i % 2}_{i % 5}_2017{i:09d}.jpg.chip.jpg").write_bytes(jpeg_bytes(i, 48))
    cfg = DataConfig(resolutions=(32,))
    r1 = prepare(folder, tmp_path / "a", cfg, GroupsConfig(), workers=1, progress=False)
    r2 = prepare(folder, tmp_path / "b", cfg, GroupsConfig(), workers=2, progress=False)
    assert r1 == r2
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "faces_32.npy"), np.load(tmp_path / "b" / "faces_32.npy"))
    assert (tmp_path / "a" / "index.csv").read_text() == (tmp_path / "b" / "index.csv").read_text()


def test_empty_and_missing_folders_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="holds no files"):
        list_files(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list_files(tmp_path / "missing")


def test_stage_main_writes_report_and_figure(tmp_path: Path) -> None:
    make_bad_folder(tmp_path / "faces")
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "source.json").write_text(json.dumps({"images_dir": str(tmp_path / "faces"), "digest": "d"}))
    (tmp_path / "params.yaml").write_text("data:\n  resolutions: [32]\n  workers: 1\n")
    assert (
        main(
            [
                "--params",
                str(tmp_path / "params.yaml"),
                "--source",
                str(tmp_path / "raw"),
                "--out",
                str(tmp_path / "prepared"),
                "--report",
                str(tmp_path / "data.json"),
                "--figure",
                str(tmp_path / "hist.png"),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "data.json").read_text())
    for key in ("files_total", "images_kept", "excluded", "split", "groups"):
        assert key in report
    assert set(report["groups"]) == {"pair", "cgan6", "decades"}
    with Image.open(tmp_path / "hist.png") as img:
        assert img.size[0] > 300
    assert not list(tmp_path.glob(".prepared.*"))  # no temporary left behind


@pytest.mark.real_data
@pytest.mark.slow
def test_real_utkface_counts(utkface_dir: Path, tmp_path: Path) -> None:
    """Counts on all 23,708 real files equal an independent application of PROTOCOL.md's rules."""
    report = prepare(utkface_dir, tmp_path / "p", DataConfig(resolutions=(16,)), GroupsConfig(), progress=False)
    names = [p.name for p in utkface_dir.iterdir()]
    # Independent re-statement of the rules.
    test = {n for n in names if int(hashlib.sha1(n.encode()).hexdigest(), 16) % 10 == 0}
    ages = {n: int(n.split("_")[0]) for n in names}
    assert report["files_total"] == len(names) == 23708
    assert report["images_kept"] == 23708 and sum(report["excluded"].values()) == 0
    assert report["split"] == {"train": 23708 - len(test), "test": len(test)} == {"train": 21352, "test": 2356}
    bounds = {"pair": GroupsConfig().pair, "cgan6": GroupsConfig().cgan6, "decades": GroupsConfig().decades}
    for scheme, groups in bounds.items():
        for g, (lo, hi) in groups.items():
            members = [n for n in names if lo <= ages[n] <= hi]
            expect = {"train": sum(n not in test for n in members), "test": sum(n in test for n in members)}
            assert report["groups"][scheme][g] == expect, (scheme, g)
    assert report["groups"]["pair"] == {"young": {"train": 6642, "test": 702}, "old": {"train": 2085, "test": 214}}
