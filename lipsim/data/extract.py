"""Safe zip extraction: check everything first, extract into a temporary folder, then move.

Rejected (ExtractError naming the archive and the entry, nothing extracted):
- absolute names (/x, C:\\x), names with a `..` component, names that resolve outside the
  target (zip-slip); symlink entries (Unix mode S_IFLNK in external_attr) and other special
  files; duplicate names; encrypted entries; an archive failing its CRC test (testzip);
- an archive whose uncompressed size does not fit on the target filesystem.
Files are streamed in 1 MiB blocks (memory does not grow with archive size) and hashed while
they are written, so the caller gets (path, size, sha256) for a manifest without a second read.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from lipsim.errors import LipSimError

__all__ = ["ExtractError", "ExtractedFile", "check_zip", "safe_extract"]

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


class ExtractError(LipSimError, RuntimeError):
    """An archive is corrupt or unsafe; the message names the archive and the entry."""


@dataclasses.dataclass(frozen=True)
class ExtractedFile:
    path: str  # relative to the extraction target, "/"-separated
    size: int
    sha256: str


def _member_path(archive: Path, info: zipfile.ZipInfo) -> str | None:
    """The safe relative path of an entry ("" parts removed), None for entries to skip;
    raises ExtractError for unsafe entries."""
    raw = info.filename
    name = raw.replace("\\", "/")  # zips made on Windows may use backslashes
    if name.startswith("/") or _DRIVE.match(name):
        raise ExtractError(f"{archive}: entry {raw!r} has an absolute path; refusing to extract")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ExtractError(f"{archive}: entry {raw!r} contains '..' (path traversal); refusing to extract")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ExtractError(f"{archive}: entry {raw!r} is a symbolic link; refusing to extract")
    if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ExtractError(f"{archive}: entry {raw!r} is a special file (mode {oct(mode)}); "
                           "refusing to extract")
    if info.flag_bits & 0x1:
        raise ExtractError(f"{archive}: entry {raw!r} is encrypted; cannot extract")
    if not parts or parts[0] == "__MACOSX":  # macOS resource forks: not data
        return None
    return "/".join(parts)


def check_zip(archive: str | os.PathLike, *, test_crc: bool = True) -> list[tuple[zipfile.ZipInfo, str]]:
    """Validate an archive without extracting: [(info, safe relative path)] of its files.

    Raises ExtractError for any unsafe entry or a failed integrity test.
    """
    archive = Path(archive)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ExtractError(f"{archive}: not a readable zip archive: {exc}") from exc
    with zf:
        members, seen = [], set()
        for info in zf.infolist():
            rel = _member_path(archive, info)
            if rel is None or info.is_dir():
                continue
            if rel in seen:
                raise ExtractError(f"{archive}: duplicate entry {info.filename!r}; refusing to extract")
            seen.add(rel)
            members.append((info, rel))
        if test_crc:
            try:
                bad = zf.testzip()  # reads every entry and checks its CRC-32
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
                raise ExtractError(f"{archive}: integrity test failed: {exc}") from exc
            if bad is not None:
                raise ExtractError(f"{archive}: integrity test failed: bad CRC in entry {bad!r}")
    return members


def _common_strip(rels: list[str], strip: str) -> str:
    if strip and rels and all(r.startswith(strip.rstrip("/") + "/") for r in rels):
        return strip.rstrip("/") + "/"
    return ""


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike, *, into: str = "",
                 strip: str = "", test_crc: bool = True) -> list[ExtractedFile]:
    """Extract `archive` into `dest`/`into`, returning the files written (paths relative to
    `dest`). `strip` removes a leading folder (e.g. "nights" or "ref") when every entry has it.

    Everything is validated (and CRC-tested) before anything is written; files are extracted
    into a temporary folder beside `dest` and moved into place only when all succeeded, so a
    failure leaves `dest` as it was.
    """
    archive, dest = Path(archive), Path(dest)
    members = check_zip(archive, test_crc=test_crc)
    prefix = _common_strip([rel for _, rel in members], strip)
    into_parts = [p for p in into.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in into_parts:
        raise ValueError(f"safe_extract: into={into!r} must not contain '..'")
    dest.mkdir(parents=True, exist_ok=True)
    need = sum(info.file_size for info, _ in members)
    free = shutil.disk_usage(dest).free
    if need > free:
        raise ExtractError(f"{archive}: needs {need / 1e9:.2f} GB uncompressed, only "
                           f"{free / 1e9:.2f} GB free in {dest}")
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    tmp_root = tmp.resolve()
    out: list[ExtractedFile] = []
    try:
        with zipfile.ZipFile(archive) as zf:
            for info, rel in members:
                rel = "/".join([*into_parts, rel[len(prefix):]])
                target = tmp / PurePosixPath(rel)
                # Belt and braces against zip-slip: the resolved path must stay inside tmp.
                if not target.resolve().is_relative_to(tmp_root):
                    raise ExtractError(f"{archive}: entry {info.filename!r} escapes the target")
                target.parent.mkdir(parents=True, exist_ok=True)
                h, size = hashlib.sha256(), 0
                try:
                    with zf.open(info) as src, open(target, "xb") as dst:
                        while block := src.read(_CHUNK):
                            dst.write(block)
                            h.update(block)
                            size += len(block)
                except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                    raise ExtractError(f"{archive}: entry {info.filename!r}: {exc}") from exc
                if size != info.file_size:
                    raise ExtractError(f"{archive}: entry {info.filename!r}: {size} bytes, "
                                       f"header says {info.file_size}")
                out.append(ExtractedFile(rel, size, h.hexdigest()))
        # All good: move into place (os.replace per file is atomic; dest keeps other files).
        for f in out:
            target = dest / PurePosixPath(f.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / PurePosixPath(f.path), target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
