"""Stage `download`: make UTKFace available on disk (PROTOCOL.md section 1).

`data.source` is a URL of the archive, a local archive (.tar.gz, .tgz, .tar, .zip, ...) or a local
folder of UTKFace images. The stage writes `<out>/source.json` describing where the images are and
what they hash to; for an archive it also holds the images, unpacked into `<out>/UTKFace/`.

Guarantees, in the order the work is done:
- a download is streamed into `<cache>/<name>.part` and resumed with an HTTP Range request, so an
  interrupted download continues where it stopped; the archive only gets its final name once it is
  complete;
- the archive's sha256 is checked before a single member is unpacked;
- unpacking refuses absolute paths, `..` components, links and device files (tar and zip), and stops
  when one member or the whole unpacked content passes its size cap (`data.max_member_bytes`,
  `data.max_unpacked_bytes`): a small archive cannot fill the disk;
- the output is built in a temporary folder beside `out` and moved into place with `os.replace`,
  so `out` is either the previous complete output or the new complete one, never half-written.

Usage: `python -m stages.download --params params.yaml --out data/raw --cache data/downloads`.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import stat
import tarfile
import tempfile
import time
import urllib.parse
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import IO, Any

import requests
import urllib3
from agebench.infra.errors import UserError
from tqdm import tqdm

#: First retry waits this many seconds, doubling after each failure (tests set it near zero).
BACKOFF_S = 1.0
#: Longest wait between two attempts.
MAX_BACKOFF_S = 30.0
#: (connect, read) timeouts of one HTTP request, in seconds.
TIMEOUT_S = (15.0, 60.0)
CHUNK = 1 << 20
#: The folder name images are unpacked to inside the output, as in the official archive.
IMAGES_DIRNAME = "UTKFace"
SOURCE_JSON = "source.json"
_HEX64 = re.compile(r"[0-9a-f]{64}")
# 4xx answers that may succeed later; any other 4xx is final and not retried.
_RETRYABLE_4XX = {408, 425, 429}
# What a damaged tar/zip/gz/xz stream raises while being read.
_CORRUPT = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError)


class DataSourceError(UserError, RuntimeError):
    """A problem with `data.source` the user can fix; the CLI prints it without a traceback."""


class SourceNotFoundError(DataSourceError):
    """A local path that does not exist, is empty, or is neither an archive nor a folder."""


class DownloadError(DataSourceError):
    """The URL could not be fetched, even after retrying."""


class ChecksumError(DataSourceError):
    """A file whose sha256 is not the expected one."""

    def __init__(self, path: Path, expected: str, actual: str, hint: str = "") -> None:
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}. "
            f"Nothing was unpacked.{hint} If you deliberately use a different archive, set data.sha256 "
            'in params.yaml to its sha256 (or to "" to skip the check).'
        )


class UnsafeArchiveError(DataSourceError):
    """An archive that is corrupt or holds a member that could write outside the target folder."""


class ArchiveTooLargeError(UnsafeArchiveError):
    """An archive whose member, or whose whole content, unpacks past its size cap."""


#: Default caps on unpacking (params `data.max_member_bytes` / `data.max_unpacked_bytes` override them):
#: generous for UTKFace (106 MB packed, ~10 kB per face), small against a decompression bomb.
MAX_MEMBER_BYTES = 50_000_000
MAX_UNPACKED_BYTES = 1_000_000_000


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (a progress bar for large files)."""
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh, _bar(path.stat().st_size, f"sha256 {path.name}") as bar:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()


def check_sha256_param(expected: str) -> str:
    """Normalise `data.sha256`: lowercase 64 hex digits, or "" (no check). Raises DataSourceError."""
    expected = expected.strip().lower()
    if expected and not _HEX64.fullmatch(expected):
        raise DataSourceError(f"data.sha256: {expected!r} is not a sha256 hex digest (64 hex digits) or ''")
    return expected


def verify_sha256(path: str | Path, expected: str) -> str:
    """Check a file against an expected sha256 and return its actual sha256.

    An empty `expected` skips the comparison (the digest is still computed and returned).
    Raises ChecksumError naming the file, the expected and the actual digest.
    """
    expected = check_sha256_param(expected)
    actual = sha256_file(path)
    if expected and actual != expected:
        raise ChecksumError(Path(path), expected, actual)
    return actual


def folder_digest(path: str | Path) -> tuple[int, str]:
    """(file count, hex sha256) of the regular files directly inside a folder.

    Names are taken as bytes (never decoded, so a name with a space or odd bytes counts as it is)
    and sorted bytewise; the digest covers, per file in that order, the 8-byte big-endian length of
    its name, the name, the 8-byte length of its content and the content. Independent of creation
    order and of the folder's own location. Subfolders are not entered; hidden files count; symbolic
    links are not followed (a link to a file elsewhere is not part of the folder, and `prepare` skips it).
    """
    root = os.fsencode(Path(path))
    with os.scandir(root) as entries:
        names = sorted(e.name for e in entries if e.is_file(follow_symlinks=False))
    digest = hashlib.sha256()
    for name in tqdm(names, desc=f"digest {Path(path).name}", unit="file", disable=None, leave=False):
        data = Path(os.fsdecode(os.path.join(root, name))).read_bytes()
        digest.update(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big"))
        digest.update(data)
    return len(names), digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------


class _Incomplete(Exception):
    """A response that ended before its announced length (retried, resuming)."""


def is_url(source: str) -> bool:
    """True when `source` looks like a URL (`scheme://...`) rather than a local path."""
    return re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", source) is not None


def url_filename(url: str) -> str:
    """The file name a URL's archive is cached under (last path component, or 'download')."""
    name = urllib.parse.unquote(PurePosixPath(urllib.parse.urlsplit(url).path).name)
    return name if name and name not in (".", "..") and "/" not in name else "download"


def fetch(
    url: str,
    dest: str | Path,
    sha256: str,
    retries: int,
    *,
    backoff: float | None = None,
    timeout: float | tuple[float, float] = TIMEOUT_S,
) -> Path:
    """Download `url` to `dest`, resuming `<dest>.part`, and verify its sha256; returns `dest`.

    An existing `dest` whose sha256 matches is reused without a request. Network errors, 5xx and
    truncated bodies are retried `retries` times with exponential backoff (`backoff` seconds,
    default BACKOFF_S, doubling); other 4xx answers fail at once. A body that fails the checksum is
    moved to `<dest>.bad-checksum` and ChecksumError is raised; DownloadError when every attempt
    failed.
    """
    dest = Path(dest)
    sha256 = check_sha256_param(sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if dest.is_file():
        actual = sha256_file(dest)
        if not sha256 or actual == sha256:
            return dest
        tqdm.write(f"download: cached {dest} has sha256 {actual}, expected {sha256}: downloading again")
        dest.unlink()
    delay = BACKOFF_S if backoff is None else backoff
    last: BaseException | None = None
    with requests.Session() as session:
        for attempt in range(max(0, retries) + 1):
            if attempt:
                time.sleep(min(delay * 2 ** (attempt - 1), MAX_BACKOFF_S))
            try:
                _download_once(session, url, part, timeout)
                break
            except (requests.RequestException, urllib3.exceptions.HTTPError, _Incomplete) as exc:
                last = exc
                tqdm.write(f"download: attempt {attempt + 1} of {retries + 1} failed: {exc}")
        else:
            raise _unavailable(url, dest, retries + 1, last)
    actual = sha256_file(part)
    if sha256 and actual != sha256:
        bad = dest.with_name(dest.name + ".bad-checksum")
        os.replace(part, bad)
        raise ChecksumError(bad, sha256, actual, f" The download from {url} was kept at {bad} for inspection.")
    os.replace(part, dest)
    return dest


def _download_once(session: requests.Session, url: str, part: Path, timeout: float | tuple[float, float]) -> None:
    """One request: append to `part` from its current size (206) or rewrite it (200)."""
    offset = part.stat().st_size if part.exists() else 0
    # identity: the byte ranges and the checksum are about the file, not a re-encoded stream.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
        if resp.status_code == 416 and offset:
            total = _content_range_total(resp.headers.get("Content-Range", ""))
            if total == offset:
                return  # the partial file was already complete
            part.unlink()
            raise _Incomplete(f"server refused range {offset}- (size {total}); restarting from zero")
        if 400 <= resp.status_code < 500 and resp.status_code not in _RETRYABLE_4XX:
            raise _unavailable(url, part.with_name(part.name[: -len(".part")]), 1, f"HTTP {resp.status_code}")
        resp.raise_for_status()
        if resp.status_code == 206:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Incomplete(f"asked for bytes {offset}-, got a range starting at {start}; restarting")
            mode = "ab"
        else:  # a 200: the server ignored the Range and sends the whole file
            mode, offset = "wb", 0
        length = resp.headers.get("Content-Length")
        total = offset + int(length) if length is not None and length.isdigit() else None
        with open(part, mode) as fh, _bar(total, part.name[: -len(".part")], initial=offset) as bar:
            # raw bytes: requests would otherwise undo a Content-Encoding the server added anyway
            for block in resp.raw.stream(CHUNK, decode_content=False):
                fh.write(block)
                bar.update(len(block))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Incomplete(f"got {size} of {total} bytes")


def _content_range_start(value: str) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/(\d+|\*)", value.strip())
    return int(match.group(1)) if match else None


def _content_range_total(value: str) -> int | None:
    match = re.match(r"bytes [^/]*/(\d+)", value.strip())
    return int(match.group(1)) if match else None


def _unavailable(url: str, dest: Path, attempts: int, cause: object) -> DownloadError:
    name = dest.name
    return DownloadError(
        f"could not download {name} from {url} ({attempts} attempt(s); last error: {cause}). "
        f"The UTKFace archive {name} (sha256 in data.sha256) is missing. Get it from {url} (or the "
        f"UTKFace homepage) with a browser, then either put it at {dest.resolve()} and rerun, or set "
        "data.source in params.yaml to the archive's path or to a folder of UTKFace images "
        "(relative paths are relative to params.yaml)."
    )


def _bar(total: int | None, desc: str, initial: int = 0) -> tqdm:
    return tqdm(
        total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
        disable=None, leave=False,
    )  # fmt: skip


# --------------------------------------------------------------------------------------------
# Safe extraction
# --------------------------------------------------------------------------------------------


def _safe_relpath(name: str, archive: Path) -> PurePosixPath | None:
    """The member's path below the target folder, None for the root itself; refuses escapes."""
    if not name or "\0" in name:
        raise UnsafeArchiveError(f"{archive}: refusing member with an empty or NUL-containing name")
    if name.startswith(("/", "\\")) or re.match(r"^[a-zA-Z]:", name):
        raise UnsafeArchiveError(f"{archive}: refusing member with an absolute path {name!r}")
    if ".." in re.split(r"[/\\]", name):
        raise UnsafeArchiveError(f"{archive}: refusing member with a '..' component {name!r}")
    rel = PurePosixPath(name)  # drops "." components and repeated slashes
    return rel if rel.parts else None


def _tar_members(archive: Path) -> Iterator[tuple[PurePosixPath | None, bool, IO[bytes] | None, int]]:
    with tarfile.open(archive, "r:*") as tf:
        # Iterating streams the archive once; extractfile() of the current member does not seek back.
        for member in tf:
            rel = _safe_relpath(member.name, archive)
            if member.isdir():
                yield rel, True, None, 0
            elif member.isreg():
                yield rel, False, tf.extractfile(member), member.size
            else:
                kind = "link" if member.issym() or member.islnk() else "special file"
                raise UnsafeArchiveError(f"{archive}: refusing {kind} member {member.name!r}")


def _zip_members(archive: Path) -> Iterator[tuple[PurePosixPath | None, bool, IO[bytes] | None, int]]:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            rel = _safe_relpath(info.filename, archive)
            mode = info.external_attr >> 16
            if info.is_dir():
                yield rel, True, None, 0
            elif stat.S_IFMT(mode) in (0, stat.S_IFREG):  # 0: made by a tool that records no type
                with zf.open(info) as fh:
                    yield rel, False, fh, info.file_size
            else:
                kind = "link" if stat.S_ISLNK(mode) else "special file"
                raise UnsafeArchiveError(f"{archive}: refusing {kind} member {info.filename!r}")


def archive_format(path: str | Path) -> str:
    """'tar' (plain or gz/bz2/xz compressed) or 'zip', detected from the content."""
    path = Path(path)
    if tarfile.is_tarfile(path):
        return "tar"
    if zipfile.is_zipfile(path):
        return "zip"
    raise SourceNotFoundError(
        f"{path}: not a tar (.tar, .tar.gz, .tgz) or zip archive. data.source must be a URL, an "
        "archive or a folder of UTKFace images."
    )


def safe_extract(
    archive: str | Path,
    dest: str | Path,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
) -> int:
    """Unpack regular files and folders of a tar or zip archive into the new folder `dest`.

    Refuses (UnsafeArchiveError) absolute paths, `..` components, symlinks, hardlinks, device files
    and duplicate names; a corrupt or truncated archive is an UnsafeArchiveError too. A member
    over `max_member_bytes`, or a total over `max_unpacked_bytes`, is an ArchiveTooLargeError: the
    sizes the archive declares are checked before a member is written, and the bytes actually
    written are counted too (a header can lie). Names are kept byte for byte. On error `dest` may
    hold part of the archive: callers unpack into a temporary folder and delete it. Returns the
    number of files written.
    """
    archive, dest = Path(archive), Path(dest)
    total = 0
    members = _tar_members(archive) if archive_format(archive) == "tar" else _zip_members(archive)
    dest.mkdir()
    count = 0
    try:
        bar = tqdm(desc=f"unpack {archive.name}", unit="file", disable=None, leave=False)
        with contextlib.closing(members), bar:
            for rel, is_dir, src, declared in members:
                target = dest.joinpath(*rel.parts) if rel is not None else dest
                if is_dir:
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if rel is None or src is None:
                    raise UnsafeArchiveError(f"{archive}: refusing a file member without a name")
                target.parent.mkdir(parents=True, exist_ok=True)
                _check_caps(archive, rel, declared, total, max_member_bytes, max_unpacked_bytes)
                try:
                    with open(target, "xb") as out:
                        written = 0
                        for block in iter(functools.partial(src.read, CHUNK), b""):
                            written += len(block)
                            _check_caps(archive, rel, written, total, max_member_bytes, max_unpacked_bytes)
                            out.write(block)
                        total += written
                except FileExistsError:
                    raise UnsafeArchiveError(f"{archive}: refusing duplicate member {str(rel)!r}") from None
                count += 1
                bar.update()
    except _CORRUPT as exc:
        raise UnsafeArchiveError(f"{archive}: corrupt or truncated archive, cannot unpack it: {exc}") from exc
    except (NotADirectoryError, IsADirectoryError) as exc:
        raise UnsafeArchiveError(f"{archive}: a member's path runs through another member: {exc}") from exc
    return count


def _check_caps(archive: Path, rel: PurePosixPath, size: int, before: int, max_member: int, max_total: int) -> None:
    if size > max_member:
        raise ArchiveTooLargeError(
            f"{archive}: member {str(rel)!r} unpacks to more than {max_member:,} bytes (data.max_member_bytes); "
            "refusing to unpack it. If you trust this archive, raise the cap in params.yaml"
        )
    if before + size > max_total:
        raise ArchiveTooLargeError(
            f"{archive}: unpacks to more than {max_total:,} bytes in all (data.max_unpacked_bytes); refusing "
            "to unpack it. If you trust this archive, raise the cap in params.yaml"
        )


def find_images_dir(root: str | Path) -> Path:
    """The folder below `root` (or `root` itself) holding the most files: where the images are.

    Hidden folders and macOS's `__MACOSX/` (resource-fork copies of every file) are not candidates.
    """
    best, best_count = Path(root), -1
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__MACOSX")
        if len(files) > best_count:
            best, best_count = Path(folder), len(files)
    return best


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


def resolve_source(source: str, base_dir: str | Path | None = None) -> str | Path:
    """A URL unchanged, else the local path with `~` expanded and relative paths under `base_dir`."""
    if is_url(source):
        return source
    path = Path(source).expanduser()
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path


def materialise(
    source: str,
    out: str | Path,
    cache: str | Path,
    sha256: str,
    retries: int,
    *,
    base_dir: str | Path | None = None,
    backoff: float | None = None,
    max_member_bytes: int = MAX_MEMBER_BYTES,
    max_unpacked_bytes: int = MAX_UNPACKED_BYTES,
) -> dict[str, Any]:
    """Make the images of `source` available and write `<out>/source.json`; returns its content.

    `source` is a URL, an archive path or a folder path (relative paths under `base_dir`). URL
    downloads are cached in `cache`. The output is built in a temporary folder beside `out` and
    replaces it atomically; on any error (or interrupt) the previous `out`, if any, is untouched
    and nothing half-written is left. Raises DataSourceError subclasses for user-fixable problems.
    """
    out = Path(out).absolute()
    located = resolve_source(source, base_dir)
    if isinstance(located, Path):
        _check_local(located, source)
    elif urllib.parse.urlsplit(located).scheme not in ("http", "https"):
        raise DataSourceError(f"data.source: {source!r}: only http(s) URLs, archives and folders work")
    sha256 = check_sha256_param(sha256)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.tmp-*"):  # left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        caps = (max_member_bytes, max_unpacked_bytes)
        record = _build(source, located, work, out, Path(cache), sha256, retries, backoff, caps)
        (work / SOURCE_JSON).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        _replace_dir(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return record


def _check_local(path: Path, source: str) -> None:
    if not path.exists():
        raise SourceNotFoundError(
            f"data.source: {path} does not exist (given as {source!r}). Set data.source in params.yaml to "
            "a UTKFace archive (UTKFace.tar.gz), a folder of UTKFace images, or the archive's URL "
            "(relative paths are relative to params.yaml)."
        )
    if path.is_file():
        archive_format(path)  # a README given by mistake fails here, not at the checksum
    elif not any(e.is_file(follow_symlinks=False) for e in os.scandir(path)):
        subdirs = sorted(e.name for e in os.scandir(path) if e.is_dir())
        hint = (
            f" It has subfolders ({', '.join(subdirs[:5])}): point data.source at the one holding the images."
            if subdirs
            else ""
        )
        raise SourceNotFoundError(f"data.source: folder {path} holds no files.{hint}")


def _build(
    source: str,
    located: str | Path,
    work: Path,
    out: Path,
    cache: Path,
    sha256: str,
    retries: int,
    backoff: float | None,
    caps: tuple[int, int] = (MAX_MEMBER_BYTES, MAX_UNPACKED_BYTES),
) -> dict[str, Any]:
    """Fill `work` (the future `out`) and return the record for source.json."""
    if isinstance(located, Path) and located.is_dir():
        files, digest = folder_digest(located)
        kind, images_dir, archive_sha = "folder", located.resolve(), None
    else:
        if isinstance(located, Path):
            kind, archive = "archive", located
            archive_sha = verify_sha256(archive, sha256)
        else:
            kind = "url"
            archive = fetch(located, cache / url_filename(located), sha256, retries, backoff=backoff)
            archive_sha = sha256 or sha256_file(archive)
        safe_extract(archive, work / "unpacked", *caps)
        os.rename(find_images_dir(work / "unpacked"), work / IMAGES_DIRNAME)
        shutil.rmtree(work / "unpacked", ignore_errors=True)
        files, digest = folder_digest(work / IMAGES_DIRNAME)
        if files == 0:
            raise SourceNotFoundError(f"data.source: archive {archive} holds no files")
        images_dir = out / IMAGES_DIRNAME
    return {
        "kind": kind,
        "source": source,
        "images_dir": str(images_dir),
        "files": files,
        "digest": digest,
        "archive_sha256": archive_sha,
        "sha256_checked": bool(sha256) if kind != "folder" else False,
    }


def _replace_dir(new: Path, out: Path) -> None:
    """Move the complete folder `new` to `out`, replacing an existing `out` (never half-written)."""
    if not out.exists() and not out.is_symlink():
        os.replace(new, out)
        return
    # os.replace cannot replace a non-empty folder: move the old one aside first.
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-old-", dir=out.parent))
    os.replace(out, old / out.name)
    try:
        os.replace(new, out)
    except BaseException:
        os.replace(old / out.name, out)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
