"""The `download` stage against a real HTTP server on 127.0.0.1 that honours Range requests.

Archives are built in tmp_path from tiny PIL-generated JPEGs with UTKFace-style names (one with a
space, as in the real data); nothing here touches the network beyond the loopback interface.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import socket
import stat
import tarfile
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from PIL import Image

from agebench.data import download as dl
from agebench.data.download import (
    ChecksumError,
    DataSourceError,
    DownloadError,
    SourceNotFoundError,
    UnsafeArchiveError,
    folder_digest,
    materialise,
)
from agebench.params.sections import DataConfig
from stages import download as dl_stage

NAMES = [
    "25_0_1_20170116174525125.jpg.chip.jpg",
    "56_1_0_20170109142408075.jpg.chip.jpg",
    "24_0_1_20170116220224657 .jpg.chip.jpg",  # the real data has one name with a space
    "39_1_20170116174525125.jpg.chip.jpg",  # and names without a race field
]
REAL_UTKFACE_DIGEST = "35d55fd1e2f2771c5a9567466ba82517eed87ca479d1e41e374f6e377ff74abe"
TINY = 1e-3  # backoff seconds: retries stay instant


# --------------------------------------------------------------------------------------------
# A Range-capable HTTP server (http.server's SimpleHTTPRequestHandler ignores Range)
# --------------------------------------------------------------------------------------------


@dataclass
class _State:
    payload: bytes
    cut_first: int | None = None  # first response: send only this many body bytes, then close
    ignore_range: bool = False  # answer 200 with the whole body even when a Range is asked
    status: int | None = None  # answer every request with this error status
    requests: list[dict[str, str]] = field(default_factory=list)


class _RangeHandler(BaseHTTPRequestHandler):
    # HTTP/1.0: one request per connection, so closing after a short body is a cut connection.
    def do_GET(self) -> None:
        state: _State = self.server.state  # type: ignore[attr-defined]
        state.requests.append(dict(self.headers))
        if state.status is not None:
            self.send_error(state.status)
            return
        total, start, code = len(state.payload), 0, 200
        wanted = self.headers.get("Range")
        if wanted and not state.ignore_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted).group(1))
            if start >= total:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{total}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            code = 206
        body = state.payload[start:]
        self.send_response(code)
        self.send_header("Content-Type", "application/gzip")
        self.send_header("Content-Length", str(len(body)))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.end_headers()
        if state.cut_first is not None and len(state.requests) == 1:
            body = body[: state.cut_first]
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def serve():
    """start(payload, **state options) -> (url, state); every server is shut down afterwards."""
    running = []

    def start(payload: bytes, **options: object) -> tuple[str, _State]:
        server = ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
        server.daemon_threads = True
        server.state = _State(payload, **options)  # type: ignore[attr-defined]
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        running.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/UTKFace.tar.gz", server.state  # type: ignore[attr-defined]

    yield start
    for server, thread in running:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# --------------------------------------------------------------------------------------------
# Test data
# --------------------------------------------------------------------------------------------


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (40 * i, 100, 200 - 30 * i)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def images() -> dict[str, bytes]:
    return {name: _jpeg(i) for i, name in enumerate(NAMES)}


def _tar_bytes(files: dict[str, bytes], prefix: str = "UTKFace/", extra: tuple = (), mode: str = "w:gz") -> bytes:
    """A tar archive of `files` under `prefix`, then the raw (TarInfo, bytes | None) `extra` members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tf:
        if prefix:
            info = tarfile.TarInfo(prefix.rstrip("/"))
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(prefix + name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for info, data in extra:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _zip_bytes(files: dict[str, bytes], prefix: str = "UTKFace/", extra: tuple = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
        for info, data in extra:
            zf.writestr(info, data)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _reference_digest(files: dict[str, bytes]) -> str:
    """The documented content digest, written out independently of the stage's code."""
    h = hashlib.sha256()
    for name in sorted(n.encode() for n in files):
        data = files[name.decode()]
        h.update(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def _assert_nothing_left(out: Path) -> None:
    """No output folder and no temporary folder beside it."""
    assert not out.exists()
    assert not [p.name for p in out.parent.iterdir() if ".tmp-" in p.name]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------
# URL sources
# --------------------------------------------------------------------------------------------


def test_url_happy_path(tmp_path, serve, images):
    payload = _tar_bytes(images)
    url, state = serve(payload)
    out, cache = tmp_path / "data" / "raw", tmp_path / "data" / "downloads"
    record = materialise(url, out, cache, _sha(payload), retries=2, backoff=TINY)

    assert json.loads((out / "source.json").read_text()) == record
    assert record == {
        "kind": "url",
        "source": url,
        "images_dir": str((out / "UTKFace").absolute()),
        "files": len(images),
        "digest": _reference_digest(images),
        "archive_sha256": _sha(payload),
        "sha256_checked": True,
    }
    assert sorted(os.listdir(out)) == ["UTKFace", "source.json"]
    assert {p.name: p.read_bytes() for p in (out / "UTKFace").iterdir()} == images  # names byte for byte
    assert sorted(os.listdir(cache)) == ["UTKFace.tar.gz"]  # the archive lives in the cache, no .part
    assert (cache / "UTKFace.tar.gz").read_bytes() == payload
    assert "Range" not in state.requests[0] and state.requests[0]["Accept-Encoding"] == "identity"
    _assert_nothing_left(tmp_path / "data" / "nope")

    # A second run reuses the verified cached archive (no request) and replaces the output whole.
    (out / "UTKFace" / NAMES[0]).write_bytes(b"tampered")
    assert materialise(url, out, cache, _sha(payload), retries=0, backoff=TINY) == record
    assert len(state.requests) == 1
    assert (out / "UTKFace" / NAMES[0]).read_bytes() == images[NAMES[0]]


def test_resume_after_cut_connection(tmp_path, serve, images):
    payload = _tar_bytes(images)
    cut = len(payload) // 2
    url, state = serve(payload, cut_first=cut)
    record = materialise(url, tmp_path / "raw", tmp_path / "dl", _sha(payload), retries=2, backoff=TINY)

    assert len(state.requests) == 2
    assert "Range" not in state.requests[0]
    assert state.requests[1]["Range"] == f"bytes={cut}-"
    assert (tmp_path / "dl" / "UTKFace.tar.gz").read_bytes() == payload
    assert record["files"] == len(images) and record["digest"] == _reference_digest(images)


def test_restart_from_zero_when_server_ignores_range(tmp_path, serve, images):
    payload = _tar_bytes(images)
    url, state = serve(payload, cut_first=len(payload) // 3, ignore_range=True)
    record = materialise(url, tmp_path / "raw", tmp_path / "dl", _sha(payload), retries=2, backoff=TINY)

    assert state.requests[1]["Range"] == f"bytes={len(payload) // 3}-"  # asked, answered with 200
    assert (tmp_path / "dl" / "UTKFace.tar.gz").read_bytes() == payload
    assert record["digest"] == _reference_digest(images)


def test_resume_part_file_left_by_an_earlier_run(tmp_path, serve, images):
    payload = _tar_bytes(images)
    url, state = serve(payload)
    (tmp_path / "dl").mkdir()
    (tmp_path / "dl" / "UTKFace.tar.gz.part").write_bytes(payload[:100])
    materialise(url, tmp_path / "raw", tmp_path / "dl", _sha(payload), retries=0, backoff=TINY)
    assert [r.get("Range") for r in state.requests] == ["bytes=100-"]
    assert (tmp_path / "dl" / "UTKFace.tar.gz").read_bytes() == payload

    # A complete .part (server answers 416) is accepted as it is.
    (tmp_path / "dl" / "UTKFace.tar.gz").rename(tmp_path / "dl" / "UTKFace.tar.gz.part")
    dl.fetch(url, tmp_path / "dl" / "UTKFace.tar.gz", _sha(payload), retries=0, backoff=TINY)
    assert state.requests[-1]["Range"] == f"bytes={len(payload)}-"
    assert (tmp_path / "dl" / "UTKFace.tar.gz").read_bytes() == payload


def test_wrong_checksum_from_url_unpacks_nothing(tmp_path, serve, images):
    payload = _tar_bytes(images)
    url, _ = serve(payload)
    wrong = "ab" * 32
    out = tmp_path / "raw"
    with pytest.raises(ChecksumError) as err:
        materialise(url, out, tmp_path / "dl", wrong, retries=0, backoff=TINY)
    message = str(err.value)
    assert wrong in message and _sha(payload) in message and "UTKFace.tar.gz" in message
    assert "data.sha256" in message
    _assert_nothing_left(out)
    # Never under the final name, so a later run downloads it again rather than trusting it.
    assert sorted(os.listdir(tmp_path / "dl")) == ["UTKFace.tar.gz.bad-checksum"]


def test_wrong_checksum_of_local_archive(tmp_path, images):
    archive = tmp_path / "UTKFace.tar.gz"
    archive.write_bytes(_tar_bytes(images))
    with pytest.raises(ChecksumError, match=str(archive)) as err:
        materialise(str(archive), tmp_path / "raw", tmp_path / "dl", "0" * 64, retries=0)
    assert "0" * 64 in str(err.value) and _sha(archive.read_bytes()) in str(err.value)
    _assert_nothing_left(tmp_path / "raw")


def test_server_down_is_one_clear_error_after_retries(tmp_path):
    url = f"http://127.0.0.1:{_free_port()}/UTKFace.tar.gz"
    start = time.monotonic()
    with pytest.raises(DownloadError) as err:
        materialise(url, tmp_path / "raw", tmp_path / "dl", "", retries=2, backoff=TINY)
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "3 attempt" in message and url in message and "UTKFace.tar.gz" in message
    assert "data.source" in message and str((tmp_path / "dl" / "UTKFace.tar.gz").resolve()) in message
    assert isinstance(err.value, DataSourceError)
    _assert_nothing_left(tmp_path / "raw")


def test_http_404_fails_at_once_and_503_is_retried(tmp_path, serve, images):
    url, state = serve(b"", status=404)
    with pytest.raises(DownloadError, match="HTTP 404"):
        materialise(url, tmp_path / "raw", tmp_path / "dl", "", retries=3, backoff=TINY)
    assert len(state.requests) == 1  # retrying a missing file cannot help

    url, state = serve(b"", status=503)
    with pytest.raises(DownloadError, match="503"):
        materialise(url, tmp_path / "raw", tmp_path / "dl", "", retries=2, backoff=TINY)
    assert len(state.requests) == 3
    _assert_nothing_left(tmp_path / "raw")


# --------------------------------------------------------------------------------------------
# Safe extraction
# --------------------------------------------------------------------------------------------


def _tar_member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tuple:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    data = b"evil" if kind == tarfile.REGTYPE else None
    info.size = len(data) if data else 0
    return info, data


def _zip_member(name: str, mode: int = stat.S_IFREG | 0o644) -> tuple:
    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    return info, b"/etc/passwd" if stat.S_ISLNK(mode) else b"evil"


def _unsafe_archive(tmp_path: Path, images: dict[str, bytes], kind: str) -> bytes:
    """Good files first, so the refusal comes after something was already unpacked."""
    absolute = str(tmp_path / "abs_evil")
    members = {
        "tar traversal": _tar_member("UTKFace/../../evil"),
        "tar absolute": _tar_member(absolute),
        "tar symlink": _tar_member("UTKFace/link", tarfile.SYMTYPE, "/etc/passwd"),
        "tar hardlink": _tar_member("UTKFace/hard", tarfile.LNKTYPE, "/etc/passwd"),
        "tar device": _tar_member("UTKFace/dev", tarfile.CHRTYPE),
        "zip traversal": _zip_member("../evil"),
        "zip absolute": _zip_member(absolute),
        "zip symlink": _zip_member("UTKFace/link", stat.S_IFLNK | 0o777),
    }
    build = _zip_bytes if kind.startswith("zip") else _tar_bytes
    return build(images, extra=[members[kind]])


KINDS = ["tar traversal", "tar absolute", "tar symlink", "tar hardlink", "tar device"]
KINDS += ["zip traversal", "zip absolute", "zip symlink"]


@pytest.mark.parametrize("kind", KINDS)
def test_unsafe_member_is_refused(tmp_path, images, kind):
    work = tmp_path / "work"
    work.mkdir()
    archive = tmp_path / ("bad.zip" if kind.startswith("zip") else "bad.tar.gz")
    archive.write_bytes(_unsafe_archive(tmp_path, images, kind))
    out = work / "raw"
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        materialise(str(archive), out, work / "dl", "", retries=0)
    _assert_nothing_left(out)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "abs_evil").exists()


def test_unsafe_member_from_url_is_refused(tmp_path, serve, images):
    payload = _tar_bytes(images, extra=[_tar_member("../evil")])
    url, _ = serve(payload)
    with pytest.raises(UnsafeArchiveError, match=r"'\.\.' component"):
        materialise(url, tmp_path / "raw", tmp_path / "dl", _sha(payload), retries=0, backoff=TINY)
    _assert_nothing_left(tmp_path / "raw")
    assert not (tmp_path / "evil").exists()


def test_failure_midway_keeps_previous_output_and_leaves_no_half_written_one(tmp_path, images, monkeypatch):
    good = tmp_path / "good.tar.gz"
    good.write_bytes(_tar_bytes(images))
    out = tmp_path / "raw"
    before = materialise(str(good), out, tmp_path / "dl", "", retries=0)
    snapshot = {p.name: p.read_bytes() for p in (out / "UTKFace").iterdir()}

    # Incompressible members, cut in the middle: some files unpack, then the stream ends.
    big = {f"{20 + i}_0_0_2017011617452512{i}.jpg.chip.jpg": os.urandom(50_000) for i in range(6)}
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(_tar_bytes(big)[:150_000])
    with pytest.raises(UnsafeArchiveError, match="corrupt or truncated"):
        materialise(str(truncated), out, tmp_path / "dl", "", retries=0)

    # An interrupt (Ctrl-C) after unpacking, while digesting.
    def interrupted(path):
        raise KeyboardInterrupt

    monkeypatch.setattr(dl, "folder_digest", interrupted)
    with pytest.raises(KeyboardInterrupt):
        materialise(str(good), out, tmp_path / "dl", "", retries=0)

    assert json.loads((out / "source.json").read_text()) == before
    assert {p.name: p.read_bytes() for p in (out / "UTKFace").iterdir()} == snapshot
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]


# --------------------------------------------------------------------------------------------
# Local archives and folders
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "prefix"),
    [("tar.gz", "UTKFace/"), ("tar.gz", ""), ("tar", "./"), ("zip", "UTKFace/"), ("zip", "")],
)
def test_local_archive_source(tmp_path, images, fmt, prefix):
    data = _zip_bytes(images, prefix) if fmt == "zip" else _tar_bytes(images, prefix, mode=f"w:{fmt[4:]}")
    archive = tmp_path / f"faces.{fmt}"
    archive.write_bytes(data)
    out = tmp_path / "raw"
    record = materialise(str(archive), out, tmp_path / "dl", _sha(data), retries=0)
    assert record["kind"] == "archive" and record["source"] == str(archive)
    assert record["archive_sha256"] == _sha(data) and record["sha256_checked"] is True
    assert record["files"] == len(images) and record["digest"] == _reference_digest(images)
    assert {p.name: p.read_bytes() for p in (out / "UTKFace").iterdir()} == images
    assert sorted(os.listdir(out)) == ["UTKFace", "source.json"]
    assert not (tmp_path / "dl").exists()  # nothing downloaded, nothing cached

    # An empty sha256 skips the check, and says so.
    record = materialise(str(archive), out, tmp_path / "dl", "", retries=0)
    assert record["sha256_checked"] is False and record["archive_sha256"] == _sha(data)


def test_images_folder_is_found_next_to_macos_resource_forks(tmp_path, images):
    # One fork more than there are images, so a plain "most files" rule would pick __MACOSX.
    mac = {f"._{name}": b"fork" for name in [*images, ".DS_Store"]}
    zipped = io.BytesIO(_zip_bytes(mac, "__MACOSX/UTKFace/"))
    with zipfile.ZipFile(zipped, "a") as zf:
        for name, content in images.items():
            zf.writestr("UTKFace/" + name, content)
        zf.writestr("README.txt", b"readme")
    archive = tmp_path / "mac.zip"
    archive.write_bytes(zipped.getvalue())
    record = materialise(str(archive), tmp_path / "raw", tmp_path / "dl", "", retries=0)
    assert record["digest"] == _reference_digest(images)


def _write_folder(folder: Path, files: dict[str, bytes], order: list[str]) -> Path:
    folder.mkdir()
    for name in order:
        (folder / name).write_bytes(files[name])
    return folder


def test_folder_source_count_and_digest(tmp_path, images):
    folder = _write_folder(tmp_path / "faces", images, NAMES)
    (folder / "sub").mkdir()  # subfolders are not images
    out = tmp_path / "raw"
    # The default data.sha256 is the archive's: it does not apply to a folder.
    record = materialise(str(folder), out, tmp_path / "dl", DataConfig().sha256, retries=0)
    assert record == {
        "kind": "folder",
        "source": str(folder),
        "images_dir": str(folder.resolve()),
        "files": len(images),
        "digest": _reference_digest(images),
        "archive_sha256": None,
        "sha256_checked": False,
    }
    assert os.listdir(out) == ["source.json"]  # taken in place, not copied

    other = _write_folder(tmp_path / "reversed", images, NAMES[::-1])
    assert folder_digest(other) == folder_digest(folder)  # creation order and location do not matter

    changed = bytearray(images[NAMES[2]])
    changed[-3] ^= 1
    (other / NAMES[2]).write_bytes(bytes(changed))
    assert folder_digest(other)[1] != folder_digest(folder)[1]
    (other / NAMES[2]).rename(other / NAMES[2].replace(" ", ""))  # a renamed file changes it too
    (other / NAMES[2].replace(" ", "")).write_bytes(images[NAMES[2]])
    assert folder_digest(other)[1] != folder_digest(folder)[1]


def test_empty_folder_and_missing_path_are_clear_errors(tmp_path):
    (tmp_path / "empty" / "UTKFace").mkdir(parents=True)
    with pytest.raises(SourceNotFoundError, match=r"holds no files.*UTKFace"):
        materialise(str(tmp_path / "empty"), tmp_path / "raw", tmp_path / "dl", "", retries=0)
    with pytest.raises(SourceNotFoundError, match=r"nowhere/UTKFace.tar.gz does not exist.*data.source"):
        materialise("nowhere/UTKFace.tar.gz", tmp_path / "raw", tmp_path / "dl", "", 0, base_dir=tmp_path)
    (tmp_path / "notes.txt").write_text("not an archive")
    with pytest.raises(SourceNotFoundError, match="not a tar"):
        materialise(str(tmp_path / "notes.txt"), tmp_path / "raw", tmp_path / "dl", "", retries=0)
    with pytest.raises(DataSourceError, match="not a sha256"):
        materialise("https://example.invalid/x.tar.gz", tmp_path / "raw", tmp_path / "dl", "xyz", 0)
    _assert_nothing_left(tmp_path / "raw")


def test_cli_resolves_relative_source_against_params_file(tmp_path, images, capsys):
    project = tmp_path / "project"
    _write_folder(project.parent / "faces", images, NAMES)
    project.mkdir()
    params = project / "params.yaml"
    params.write_text("data:\n  source: ../faces\n  sha256: ''\n")
    out = tmp_path / "run" / "raw"
    assert dl_stage.main(["--params", str(params), "--out", str(out), "--cache", str(tmp_path / "dl")]) == 0
    record = json.loads((out / "source.json").read_text())
    assert record["source"] == "../faces" and record["images_dir"] == str((tmp_path / "faces").resolve())

    params.write_text("data:\n  source: missing_folder\n")
    assert dl_stage.main(["--params", str(params), "--out", str(out), "--cache", str(tmp_path / "dl")]) == 2
    err = capsys.readouterr().err
    assert "missing_folder does not exist" in err and "Traceback" not in err
    assert json.loads((out / "source.json").read_text()) == record  # failed run kept the old output


@pytest.mark.real_data
def test_real_utkface_folder(utkface_dir):
    # Golden value: the same digest came out of a .tar.gz of this folder fetched through the URL path.
    assert folder_digest(utkface_dir) == (23_708, REAL_UTKFACE_DIGEST)
    assert (utkface_dir / "24_0_1_20170116220224657 .jpg.chip.jpg").is_file()


# --------------------------------------------------------------------------------------------
# Resource caps and links
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["tar", "zip"])
def test_member_and_total_size_caps(tmp_path, images, kind):
    """A small archive that unpacks big is refused by the cap's name; nothing is left behind."""
    bomb = {**images, "99_0_0_bomb.jpg.chip.jpg": b"\0" * 300_000}  # compresses to ~300 bytes
    archive = tmp_path / f"a.{'tar.gz' if kind == 'tar' else 'zip'}"
    if kind == "tar":
        archive.write_bytes(_tar_bytes(bomb))
    else:
        with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in bomb.items():
                zf.writestr("UTKFace/" + name, data)
    assert archive.stat().st_size < 20_000
    out = tmp_path / "raw"
    with pytest.raises(dl.ArchiveTooLargeError, match=r"bomb.jpg.chip.jpg.*data.max_member_bytes"):
        materialise(str(archive), out, tmp_path / "dl", "", 0, max_member_bytes=100_000)
    _assert_nothing_left(out)
    total = sum(len(v) for v in bomb.values())
    with pytest.raises(dl.ArchiveTooLargeError, match=r"data\.max_unpacked_bytes"):
        materialise(str(archive), out, tmp_path / "dl", "", 0, max_unpacked_bytes=total - 1)
    _assert_nothing_left(out)
    # At the caps exactly, it unpacks.
    record = materialise(str(archive), out, tmp_path / "dl", "", 0, max_member_bytes=300_000, max_unpacked_bytes=total)
    assert record["files"] == len(bomb)


def test_size_cap_counts_bytes_not_the_declared_size(tmp_path, images):
    """A member whose header understates its size is stopped by the bytes actually read."""

    def members():  # (path, is_dir, stream, declared size): 10 bytes declared, 5,000 in the stream
        yield dl.PurePosixPath("UTKFace"), True, None, 0
        yield dl.PurePosixPath("UTKFace/x.jpg"), False, io.BytesIO(b"\1" * 5000), 10

    archive = tmp_path / "a.tar"
    archive.write_bytes(_tar_bytes(images, mode="w"))
    original = dl._tar_members
    try:
        dl._tar_members = lambda _archive: members()
        with pytest.raises(dl.ArchiveTooLargeError, match="max_member_bytes"):
            dl.safe_extract(archive, tmp_path / "dest", max_member_bytes=4096)
    finally:
        dl._tar_members = original


def test_stage_reads_caps_from_params(tmp_path, images, capsys):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(_tar_bytes(images))
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: {archive}\n  sha256: ''\n  max_unpacked_bytes: 1000\n")
    out = tmp_path / "raw"
    assert dl_stage.main(["--params", str(params), "--out", str(out), "--cache", str(tmp_path / "dl")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.max_unpacked_bytes" in err[0]
    _assert_nothing_left(out)


def test_folder_digest_does_not_follow_links(tmp_path, images):
    """A link in the image folder (here to a file outside it) is not read into the digest or the count."""
    folder = _write_folder(tmp_path / "faces", images, NAMES)
    secret = tmp_path / "secret.txt"
    secret.write_text("not part of the data set")
    (folder / "20_0_0_link.jpg.chip.jpg").symlink_to(secret)
    (folder / "linked_dir").symlink_to(tmp_path, target_is_directory=True)
    assert folder_digest(folder) == (len(images), _reference_digest(images))
    record = materialise(str(folder), tmp_path / "raw", tmp_path / "dl", "", retries=0)
    assert record["files"] == len(images)


@pytest.mark.parametrize(
    ("yaml_text", "expect"),
    [
        ("methods: [nope]\n", "methods: unknown method 'nope'"),
        ("methods: []\n", "methods: the list is empty"),
        ("methods: identity\n", "methods: expected a list"),
    ],
)
def test_bad_methods_list_is_one_line_in_download(tmp_path, images, capsys, yaml_text, expect):
    """A bad `methods` list is one line in the download stage, not a traceback."""
    folder = _write_folder(tmp_path / "faces", images, NAMES)
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  source: {folder}\n{yaml_text}")
    code = dl_stage.main(["--params", str(params), "--out", str(tmp_path / "raw"), "--cache", str(tmp_path / "dl")])
    err = capsys.readouterr().err
    assert code == 2 and expect in err and str(params) in err and "Traceback" not in err
    assert not (tmp_path / "raw").exists()
