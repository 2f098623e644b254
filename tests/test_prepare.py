"""prepare stage: PROTOCOL.md s.1-2 label rules, split, groups, bad inputs, real-data counts."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agebench.data.prepare import EXCLUSION_REASONS, Label, group_of, list_files, parse_label, prepare, split_of
from agebench.params.sections import DataConfig, GroupsConfig
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
    expected = {"bad age": 1, "bad gender": 1, "not an image": 2, "undecodable image": 1}
    assert report["excluded"] == {r: expected.get(r, 0) for r in EXCLUSION_REASONS}
    assert report["skipped"] == {"symlink": 0, "directory": 0, "special file": 0}
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


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height RGB pixels but holds almost no data (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_unusual_entries_are_counted_by_reason(tmp_path: Path) -> None:
    """A non-UTF-8 name, links, a subfolder, a bomb and a huge image are each
    counted under their own reason; no link is followed and the outputs read back."""
    folder = tmp_path / "faces"
    good = make_bad_folder(folder)
    outside = tmp_path / "elsewhere" / "33_0_1_20170116174525140.jpg.chip.jpg"
    outside.parent.mkdir()
    outside.write_bytes(jpeg_bytes(8))  # a valid face with a valid name: kept if the link were followed
    (folder / "34_0_1_20170116174525141.jpg.chip.jpg").symlink_to(outside)
    (folder / "35_0_1_20170116174525142.jpg.chip.jpg").symlink_to(folder / next(iter(good)))  # inside, still skipped
    (folder / "linked_dir").symlink_to(outside.parent, target_is_directory=True)
    (folder / "36_0_1_sub").mkdir()
    (folder / "36_0_1_sub" / "37_0_1_20170116174525143.jpg.chip.jpg").write_bytes(jpeg_bytes(9))
    with open(os.path.join(os.fsencode(folder), b"38_0_1_2017\xff\xfe.jpg.chip.jpg"), "wb") as fh:
        fh.write(jpeg_bytes(10))
    (folder / "39_0_1_20170116174525144.jpg.chip.jpg").write_bytes(png_header_only(20000, 20000))  # 400 Mpx
    (folder / "40_0_1_20170116174525145.jpg.chip.jpg").write_bytes(jpeg_bytes(11, size=400))  # 160,000 px
    out = tmp_path / "prepared"
    cfg = DataConfig(resolutions=(32,), max_image_pixels=100_000)
    report = prepare(folder, out, cfg, GroupsConfig(), workers=1, progress=False)
    expected = {
        "bad age": 1,
        "bad gender": 1,
        "not an image": 2,
        "undecodable image": 1,
        "name not UTF-8": 1,
        "decompression bomb": 1,
        "too many pixels": 1,
    }
    assert report["excluded"] == {r: expected.get(r, 0) for r in EXCLUSION_REASONS}
    assert report["skipped"] == {"symlink": 3, "directory": 1, "special file": 0}
    assert report["files_total"] == 9 + 3 and report["images_kept"] == len(good) == 4
    from agebench.data.faces import load_index

    index = load_index(out)  # the index reads back (it crashed on a non-UTF-8 name before)
    assert sorted(index["file"]) == sorted(good)
    assert np.load(out / "faces_32.npy").shape == (4, 32, 32, 3)


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


def independent_v2_split(folder: Path, names: list[str]) -> tuple[dict[str, str], int, int]:
    """PROTOCOL.md s.1 v2 restated without agebench: ({name: side}, duplicate groups, moved files)."""

    def v1(name: str) -> str:
        return "test" if int(hashlib.sha1(name.encode("utf-8")).hexdigest(), 16) % 10 == 0 else "train"

    by_content: dict[bytes, list[str]] = {}
    for n in names:
        by_content.setdefault(hashlib.sha256((folder / n).read_bytes()).digest(), []).append(n)
    side = {}
    for members in by_content.values():
        first = sorted(m.encode("utf-8") for m in members)[0].decode("utf-8")
        for m in members:
            side[m] = v1(first)
    groups = sum(len(m) > 1 for m in by_content.values())
    return side, groups, sum(side[n] != v1(n) for n in names)


def test_planted_duplicates_share_a_side(tmp_path: Path) -> None:
    """Split v2 on a folder with planted byte-identical files, against `independent_v2_split`."""
    folder = tmp_path / "faces"
    folder.mkdir()
    names = [f"{20 + i % 40}_{i % 2}_{i % 5}_2017{i:09d}.jpg.chip.jpg" for i in range(200)]
    tests = [n for n in names if split_of(n) == "test"]
    trains = [n for n in names if split_of(n) == "train"]
    assert len(tests) >= 6
    content = {n: jpeg_bytes(i, 32) for i, n in enumerate(names)}
    # Planted groups: test+train pairs, a triple, and a pair on one side (that moves nothing).
    for members in ([tests[0], trains[0]], [trains[1], tests[1]], [tests[2], trains[2], trains[3]], trains[4:6]):
        for m in members[1:]:
            content[m] = content[members[0]]
    for n, data in content.items():
        (folder / n).write_bytes(data)
    report = prepare(folder, tmp_path / "p", DataConfig(resolutions=(16,)), GroupsConfig(), workers=2, progress=False)
    side, groups, moved = independent_v2_split(folder, names)
    assert report["duplicate_groups"] == groups == 4
    assert report["moved_files"] == moved and moved >= 3
    assert report["protocol_version"] == 3
    import pandas as pd

    index = pd.read_csv(tmp_path / "p" / "index.csv", keep_default_na=False)
    assert dict(zip(index["file"], index["split"])) == side
    assert report["split"] == {
        "train": sum(v == "train" for v in side.values()),
        "test": sum(v == "test" for v in side.values()),
    }
    digests = {n: hashlib.sha256(content[n]).hexdigest() for n in names}
    train_digests = {digests[n] for n, s in side.items() if s == "train"}
    assert not any(digests[n] in train_digests for n, s in side.items() if s == "test")


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
    """Counts on all 23,708 real files equal an independent application of PROTOCOL.md's rules (v2)."""
    report = prepare(utkface_dir, tmp_path / "p", DataConfig(resolutions=(16,)), GroupsConfig(), progress=False)
    names = [p.name for p in utkface_dir.iterdir()]
    # Independent re-statement of the rules.
    side, groups, moved = independent_v2_split(utkface_dir, names)
    test = {n for n in names if side[n] == "test"}
    ages = {n: int(n.split("_")[0]) for n in names}
    assert report["files_total"] == len(names) == 23708
    assert report["images_kept"] == 23708 and sum(report["excluded"].values()) == 0
    assert (report["duplicate_groups"], report["moved_files"]) == (groups, moved) == (375, 70)
    assert report["split"] == {"train": 23708 - len(test), "test": len(test)} == {"train": 21350, "test": 2358}
    bounds = {"pair": GroupsConfig().pair, "cgan6": GroupsConfig().cgan6, "decades": GroupsConfig().decades}
    for scheme, groups in bounds.items():
        for g, (lo, hi) in groups.items():
            members = [n for n in names if lo <= ages[n] <= hi]
            expect = {"train": sum(n not in test for n in members), "test": sum(n in test for n in members)}
            assert report["groups"][scheme][g] == expect, (scheme, g)
    assert report["groups"]["pair"] == {"young": {"train": 6640, "test": 704}, "old": {"train": 2082, "test": 217}}
