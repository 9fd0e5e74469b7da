"""Safe extraction of zip and tar (.tar, .tar.gz, .tgz, .tar.bz2, .tar.xz) archives: check
everything first, extract into a temporary folder, then move.

Rejected (ExtractError naming the archive and the entry, nothing written):
- absolute names (/x, C:\\x), names with a `..` component, names that resolve outside the
  target (zip-slip); symbolic and hard links, devices, fifos and other special members;
  encrypted zip entries; an archive failing its CRC test (zip: testzip; compressed tar: the
  gzip / bz2 / xz check at the end of the stream) or unreadable as tar;
- two members that extract to the same path, or a file where another member needs a folder
  (the message names both members); with `replace=False`, a member whose target already
  exists in the destination (another archive put it there: ExtractClash);
- archives whose declared uncompressed total exceeds the free disk or `max_bytes`, or whose
  compression ratio (declared / compressed, per zip entry and for the whole archive) exceeds
  `max_ratio` (a decompression bomb). These checks use the declared sizes only, before
  anything is decompressed (a tar's headers are read as the stream is scanned, and the scan
  stops at the first header that breaks a limit). While extracting, a member that yields
  more bytes than declared stops the extraction;
- archives of more than `max_members` members, zip or tar: a zip's central directory is
  counted record by record before zipfile reads it into memory (its declared count is not
  trusted), a tar's headers as they are scanned.
Files are streamed in 1 MiB blocks (memory does not grow with archive size) and hashed while
they are written, so the caller gets (path, size, sha256) for a manifest without a second read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from lipsim.atomic import no_space
from lipsim.configcheck import FromSchema, with_schema_defaults
from lipsim.errors import LipSimError

__all__ = [
    "MAX_MEMBERS",
    "MAX_RATIO",
    "ExtractClash",
    "ExtractError",
    "ExtractedFile",
    "check_archive",
    "removed_if_refused",
    "safe_extract",
]

_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")
# Deflate tops out near 1000:1; images and CSV tables compress far less. Entries smaller than
# _RATIO_FLOOR are not judged (a small file of zeros is no bomb).
MAX_RATIO = FromSchema("night.download.max_ratio")
_RATIO_FLOOR = 1 << 20
# Members of one archive, zip or tar (NIGHT's zip holds ~60k, BAPPS val ~145k); the schema's.
MAX_MEMBERS = FromSchema("night.download.max_members")


class ExtractError(LipSimError, RuntimeError):
    """An archive is corrupt or unsafe; the message names the archive and the entry."""


class ExtractClash(ExtractError):
    """A member's target already exists in the destination (replace=False)."""

    def __init__(self, message: str, *, entry: str, path: str):
        super().__init__(message)
        self.entry, self.path = entry, path  # the member's name, its path relative to dest


@dataclasses.dataclass(frozen=True)
class ExtractedFile:
    path: str  # relative to the extraction target, "/"-separated
    size: int
    sha256: str


@dataclasses.dataclass(frozen=True)
class _Member:
    name: str  # the entry's name in the archive (for messages)
    rel: str  # safe relative path
    size: int  # declared uncompressed size
    info: zipfile.ZipInfo | tarfile.TarInfo


def _safe_rel(archive: Path, raw: str) -> str | None:
    """The safe relative path of an entry name, None for entries to skip (macOS forks, the
    root itself); raises ExtractError for absolute and `..` names."""
    name = raw.replace("\\", "/")  # archives made on Windows may use backslashes
    if name.startswith("/") or _DRIVE.match(name):
        raise ExtractError(f"{archive}: entry {raw!r} has an absolute path; refusing to extract")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ExtractError(
            f"{archive}: entry {raw!r} contains '..' (path traversal); refusing to extract"
        )
    if not parts or parts[0] == "__MACOSX":  # macOS resource forks: not data
        return None
    return "/".join(parts)


def _zip_kind(archive: Path, info: zipfile.ZipInfo) -> str:
    """ "file" or "dir"; raises ExtractError for links, special files, encryption."""
    raw = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise ExtractError(f"{archive}: entry {raw!r} is a symbolic link; refusing to extract")
    if mode and stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise ExtractError(
            f"{archive}: entry {raw!r} is a special file (mode {oct(mode)}); refusing to extract"
        )
    if info.flag_bits & 0x1:
        raise ExtractError(f"{archive}: entry {raw!r} is encrypted; cannot extract")
    return "dir" if info.is_dir() else "file"


def _tar_kind(archive: Path, info: tarfile.TarInfo) -> str:
    raw = info.name
    if info.issym():
        raise ExtractError(f"{archive}: entry {raw!r} is a symbolic link; refusing to extract")
    if info.islnk():
        raise ExtractError(f"{archive}: entry {raw!r} is a hard link; refusing to extract")
    if info.isdir():
        return "dir"
    if info.isreg():
        return "file"
    what = (
        "a device"
        if info.isdev() and not info.isfifo()
        else "a fifo"
        if info.isfifo()
        else f"of unsupported type {info.type!r}"
    )
    raise ExtractError(f"{archive}: entry {raw!r} is {what}; refusing to extract")


class _Plan:
    """Members collected while scanning: duplicates, file/folder clashes and the size limits
    are checked as each header is seen, so a bomb is refused before its data is read."""

    def __init__(
        self,
        archive: Path,
        *,
        compressed: int,
        max_bytes: int | None,
        max_ratio: float | None,
        max_members: int | None,
        free: int | None,
        free_at: Path | None,
    ):
        self.archive, self.compressed = archive, compressed
        self.max_bytes, self.max_ratio, self.max_members = max_bytes, max_ratio, max_members
        self.free, self.free_at = free, free_at
        self.files: dict[str, str] = {}  # rel -> entry name
        self.dirs: dict[str, str] = {}  # rel of a folder (explicit or implied) -> entry name
        self.members: list[_Member] = []
        self.total = 0
        self.count = 0  # every entry, folders and skipped ones included

    def check_count(self, count: int, how: str = "holds at least") -> None:
        if self.max_members is not None and count > self.max_members:
            raise ExtractError(
                f"{self.archive}: {how} {count} members, over the limit of "
                f"{self.max_members}; refusing to extract (raise the member limit, "
                "night.download.max_members, if the archive is trusted)"
            )

    def add(self, raw: str, kind: str, size: int, info, compress_size: int | None = None) -> None:
        self.count += 1
        self.check_count(self.count)
        rel = _safe_rel(self.archive, raw)
        if rel is None:
            return
        a = self.archive
        if rel in self.files:
            raise ExtractError(
                f"{a}: entries {self.files[rel]!r} and {raw!r} both extract to "
                f"{rel!r}; refusing to extract"
            )
        parts = rel.split("/")
        for i in range(1, len(parts)):
            folder = "/".join(parts[:i])
            if folder in self.files:
                raise ExtractError(
                    f"{a}: entry {self.files[folder]!r} is a file but entry "
                    f"{raw!r} needs {folder!r} to be a folder; refusing to extract"
                )
            self.dirs.setdefault(folder, raw)
        if kind == "dir":
            self.dirs.setdefault(rel, raw)
            return
        if rel in self.dirs:
            raise ExtractError(
                f"{a}: entry {raw!r} is a file but entry {self.dirs[rel]!r} needs "
                f"{rel!r} to be a folder; refusing to extract"
            )
        self.files[rel] = raw
        self.total += size
        if (
            self.max_ratio
            and compress_size is not None
            and size >= _RATIO_FLOOR
            and size > self.max_ratio * max(compress_size, 1)
        ):
            raise ExtractError(
                f"{a}: entry {raw!r} declares {size} bytes from {compress_size} "
                f"compressed (ratio {size / max(compress_size, 1):.0f} > "
                f"{self.max_ratio:g}): a decompression bomb? refusing to extract "
                "(raise the ratio limit if the archive is trusted)"
            )
        self._check_total(raw)
        self.members.append(_Member(raw, rel, size, info))

    def _check_total(self, raw: str) -> None:
        a, total = self.archive, self.total
        where = f"{a}: entry {raw!r} brings the declared uncompressed total to {_fmt(total)}"
        if self.max_bytes is not None and total > self.max_bytes:
            raise ExtractError(
                f"{where}, over the extraction limit of {_fmt(self.max_bytes)}; refusing to extract"
            )
        if self.free is not None and total > self.free:
            raise ExtractError(
                f"{where}, more than the {_fmt(self.free)} free in "
                f"{self.free_at}; refusing to extract"
            )
        if (
            self.max_ratio
            and total >= _RATIO_FLOOR
            and total > self.max_ratio * max(self.compressed, 1)
        ):
            raise ExtractError(
                f"{where} from a {_fmt(self.compressed)} archive (ratio > "
                f"{self.max_ratio:g}): a decompression bomb? refusing to extract "
                "(raise the ratio limit if the archive is trusted)"
            )


def _fmt(n: int) -> str:
    if n < 10_000:
        return f"{n} bytes"
    return f"{n / 1e6:.1f} MB" if n < 10**10 else f"{n / 1e9:.1f} GB"


def _free_space(dest: Path) -> tuple[int, Path]:
    probe = dest
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free, probe


@with_schema_defaults
def check_archive(
    archive: str | os.PathLike,
    *,
    test_crc: bool = True,
    max_bytes: int | None = None,
    max_ratio: float | None = MAX_RATIO,
    max_members: int | None = MAX_MEMBERS,
    dest: str | os.PathLike | None = None,
) -> list[_Member]:
    """Validate a zip or tar archive without writing anything; return its file members.

    With `dest`, the declared total must also fit in the free space there. Raises
    ExtractError naming the archive and the entry for anything unsafe or corrupt.
    """
    archive = Path(archive)
    try:
        compressed = archive.stat().st_size
    except OSError as exc:
        raise ExtractError(f"{archive}: cannot read: {exc}") from exc
    free, free_at = _free_space(Path(dest)) if dest is not None else (None, None)
    plan = _Plan(
        archive,
        compressed=compressed,
        max_bytes=max_bytes,
        max_ratio=max_ratio,
        max_members=max_members,
        free=free,
        free_at=free_at,
    )
    if _is_zip(archive):
        _scan_zip(archive, plan, test_crc)
    else:
        _scan_tar(archive, plan, test_crc)
    return plan.members


def _is_zip(archive: Path) -> bool:
    """By the signature at the start (zipfile.is_zipfile looks at the end, where a tar whose
    last member is a zip would pass for that zip)."""
    with open(archive, "rb") as fh:
        return fh.read(4) in (b"PK\x03\x04", b"PK\x05\x06")


def _scan_zip(archive: Path, plan: _Plan, test_crc: bool) -> None:
    if plan.max_members is not None:
        _count_zip_members(archive, plan)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ExtractError(f"{archive}: not a readable zip archive: {exc}") from exc
    with zf:
        for info in zf.infolist():
            plan.add(
                info.filename, _zip_kind(archive, info), info.file_size, info, info.compress_size
            )
        if test_crc:  # after the size checks: a bomb is never decompressed, even to test it
            try:
                bad = zf.testzip()  # reads every entry and checks its CRC-32
            except (zipfile.BadZipFile, zlib.error, OSError, EOFError, NotImplementedError) as exc:
                raise ExtractError(f"{archive}: integrity test failed: {exc}") from exc
            if bad is not None:
                raise ExtractError(f"{archive}: integrity test failed: bad CRC in entry {bad!r}")


_EOCD = struct.Struct("<4s4H2LH")  # end of central directory record
_EOCD64_LOCATOR = struct.Struct("<4sLQL")  # (only its size is needed: 20 bytes)
_EOCD64 = struct.Struct("<4sQ2H2L4Q")
_CENTRAL = struct.Struct("<4s24x3H12x")  # a central directory header: name/extra/comment lengths


def _count_zip_members(archive: Path, plan: _Plan) -> None:
    """Count the central directory's records one by one (memory does not grow with them),
    stopping past the member limit: zipfile would read the whole directory into memory first.
    An archive whose directory cannot be found is left to zipfile to refuse."""
    with open(archive, "rb") as fh:
        size = fh.seek(0, os.SEEK_END)
        tail = min(size, _EOCD.size + 0xFFFF)  # the record, then a comment of up to 64 KiB
        fh.seek(size - tail)
        buf = fh.read(tail)
        pos = buf.rfind(b"PK\x05\x06")
        if pos < 0 or len(buf) - pos < _EOCD.size:
            return
        _, _, _, _, declared, cd_size, _, _ = _EOCD.unpack_from(buf, pos)
        end = size - tail + pos  # where the directory ends (zip64: its own end record)
        zip64 = end - _EOCD64_LOCATOR.size - _EOCD64.size  # as zipfile: right before
        if zip64 >= 0 and (declared == 0xFFFF or cd_size == 0xFFFFFFFF):
            fh.seek(zip64)
            rec = _EOCD64.unpack(fh.read(_EOCD64.size))
            if rec[0] == b"PK\x06\x06":
                declared, cd_size, end = rec[7], rec[8], zip64
        plan.check_count(declared, "declares")
        fh.seek(max(0, end - cd_size))
        count = 0
        while count <= (plan.max_members or 0):
            head = fh.read(_CENTRAL.size)
            if len(head) < _CENTRAL.size or head[:4] != b"PK\x01\x02":
                return
            _, n, m, k = _CENTRAL.unpack(head)
            fh.seek(n + m + k, os.SEEK_CUR)
            count += 1
        plan.check_count(count)


def _open_tar(archive: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise ExtractError(f"{archive}: neither a zip nor a readable tar archive: {exc}") from exc


def _scan_tar(archive: Path, plan: _Plan, test_crc: bool) -> None:
    with _open_tar(archive) as tf:
        try:
            # Headers one by one: a header that breaks a limit stops the scan before the
            # stream is decompressed past it.
            while (info := tf.next()) is not None:
                plan.add(info.name, _tar_kind(archive, info), info.size, info)
            if test_crc:
                # To the end of the compressed stream, where gzip / bz2 / xz check their CRC:
                # a flipped byte inside a stored block decodes without any other error.
                while tf.fileobj.read(_CHUNK):
                    pass
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise ExtractError(f"{archive}: corrupt tar archive: {exc}") from exc


def _common_strip(rels: list[str], strip: str) -> str:
    if strip and rels and all(r.startswith(strip.rstrip("/") + "/") for r in rels):
        return strip.rstrip("/") + "/"
    return ""


def _copy(src, target: Path, archive: Path, member: _Member) -> tuple[int, str]:
    """Stream one member into `target`; (size, sha256). Stops past the declared size."""
    h, size = hashlib.sha256(), 0
    with open(target, "xb") as dst:
        while block := src.read(_CHUNK):
            size += len(block)
            if size > member.size:
                raise ExtractError(
                    f"{archive}: entry {member.name!r} yields more than its "
                    f"declared {member.size} bytes; extraction stopped"
                )
            dst.write(block)
            h.update(block)
    if size != member.size:
        raise ExtractError(
            f"{archive}: entry {member.name!r}: {size} bytes, header says {member.size}"
        )
    return size, h.hexdigest()


def _check_target(archive: Path, dest: Path, member: _Member, rel: str, replace: bool) -> None:
    """Refuse a member whose target clashes with what is already in `dest`."""
    parts = rel.split("/")
    for i in range(1, len(parts)):
        p = dest.joinpath(*parts[:i])
        if p.exists() and not p.is_dir():
            raise ExtractClash(
                f"{archive}: entry {member.name!r} needs {p} to be a folder, but "
                "it is a file already there; refusing to extract",
                entry=member.name,
                path="/".join(parts[:i]),
            )
        if p.is_symlink():
            raise ExtractError(
                f"{archive}: entry {member.name!r} would be written through the "
                f"symbolic link {p}; refusing to extract"
            )
    target = dest.joinpath(*parts)
    if target.is_symlink() or target.is_dir() or (not replace and target.exists()):
        what = (
            "a symbolic link"
            if target.is_symlink()
            else "a folder"
            if target.is_dir()
            else "a file"
        )
        raise ExtractClash(
            f"{archive}: entry {member.name!r} would overwrite {target}, "
            f"{what} already there; refusing to extract",
            entry=member.name,
            path=rel,
        )


@with_schema_defaults
def safe_extract(
    archive: str | os.PathLike,
    dest: str | os.PathLike,
    *,
    into: str = "",
    strip: str = "",
    test_crc: bool = True,
    max_bytes: int | None = None,
    max_ratio: float | None = MAX_RATIO,
    max_members: int | None = MAX_MEMBERS,
    replace: bool = True,
    accept: Callable[[list[str]], None] | None = None,
) -> list[ExtractedFile]:
    """Extract a zip or tar `archive` into `dest`/`into`, returning the files written (paths
    relative to `dest`). `strip` removes a leading folder (e.g. "nights" or "ref") when every
    entry has it.

    Everything is validated before anything is written (names, member types, duplicates,
    declared sizes against `max_bytes` bytes, the free disk and `max_ratio`, the member count
    against `max_members`; the zip CRC test with `test_crc`); files are extracted into a
    temporary folder beside `dest` and moved into place only when all succeeded, so a failure
    leaves `dest` as it was. Files already in `dest` are replaced, unless `replace` is False
    (then ExtractClash names the member). `accept`, when given, sees the list of files
    (paths inside the archive) before anything is written, and may refuse it by raising.
    """
    archive, dest = Path(archive), Path(dest)
    into_parts = [p for p in into.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in into_parts:
        raise ValueError(f"safe_extract: into={into!r} must not contain '..'")
    members = check_archive(
        archive,
        test_crc=test_crc,
        max_bytes=max_bytes,
        max_ratio=max_ratio,
        max_members=max_members,
        dest=dest,
    )
    if accept is not None:
        accept([m.rel for m in members])
    prefix = _common_strip([m.rel for m in members], strip)
    final = ["/".join([*into_parts, m.rel[len(prefix) :]]) for m in members]
    for m, rel in zip(members, final, strict=True):
        _check_target(archive, dest, m, rel, replace)
    tmp = _staging_folder(archive, dest)
    try:
        out = _extract_members(archive, dest, tmp, list(zip(members, final, strict=True)))
        _move_into_place(archive, dest, tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _staging_folder(archive: Path, dest: Path) -> Path:
    """A new temporary folder beside `dest` (same filesystem, so moving out of it is atomic)."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    except OSError as exc:
        if (full := no_space(exc, dest)) is not None:
            raise full from exc
        raise ExtractError(f"{archive}: cannot extract into {dest}: {exc}") from exc


def _extract_members(
    archive: Path, dest: Path, tmp: Path, placed: list[tuple[_Member, str]]
) -> list[ExtractedFile]:
    """Write each (member, path relative to dest) into `tmp`, hashing as it goes."""
    tmp_root = tmp.resolve()
    out: list[ExtractedFile] = []
    with _Reader(archive) as read:
        for m, rel in placed:
            target = tmp / PurePosixPath(rel)
            # Belt and braces against zip-slip: the resolved path must stay inside tmp.
            if not target.resolve().is_relative_to(tmp_root):
                raise ExtractError(f"{archive}: entry {m.name!r} escapes the target")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with read(m) as src:
                    size, digest = _copy(src, target, archive, m)
            except (
                zipfile.BadZipFile,
                tarfile.TarError,
                zlib.error,
                EOFError,
                NotImplementedError,
            ) as exc:
                raise ExtractError(f"{archive}: entry {m.name!r}: {exc}") from exc
            except OSError as exc:  # a name the filesystem refuses, no space left, ...
                if (full := no_space(exc, dest / PurePosixPath(rel))) is not None:
                    raise full from exc
                raise ExtractError(f"{archive}: entry {m.name!r}: cannot write it: {exc}") from exc
            out.append(ExtractedFile(rel, size, digest))
    return out


def _move_into_place(archive: Path, dest: Path, tmp: Path, out: list[ExtractedFile]) -> None:
    """All extracted: move each file from `tmp` into `dest` (os.replace per file is atomic;
    dest keeps its other files)."""
    for f in out:
        target = dest / PurePosixPath(f.path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / PurePosixPath(f.path), target)
        except OSError as exc:
            if (full := no_space(exc, target)) is not None:
                raise full from exc
            raise ExtractError(f"{archive}: cannot move {f.path} into {dest}: {exc}") from exc


@contextlib.contextmanager
def removed_if_refused(archive: Path, *refusals: type[Exception]) -> Iterator[None]:
    """Delete a downloaded `archive` that the block refuses (ExtractError, or one of
    `refusals`): a complete-looking file with wrong bytes must not stay under its final name.
    The error says so; a rerun downloads the archive again. A full disk keeps it."""
    try:
        yield
    except (ExtractError, *refusals) as exc:
        archive.unlink(missing_ok=True)
        # On the first line (a layout error lists its problems on the next ones).
        first, sep, rest = str(exc).partition("\n")
        colon = ":" if first.endswith(":") else ""
        note = f"{first.removesuffix(':')} (removed {archive}: a rerun downloads it again)"
        exc.args = (note + colon + sep + rest, *exc.args[1:])
        raise


class _Reader:
    """Context manager yielding read(member) -> file object, for zip or tar."""

    def __init__(self, archive: Path):
        self.archive = archive

    def __enter__(self):
        if _is_zip(self.archive):
            self._zf = zipfile.ZipFile(self.archive)
            return lambda m: self._zf.open(m.info)
        self._zf = _open_tar(self.archive)
        # Members are read in archive order, so a compressed tar is decompressed once more.
        return lambda m: _TarMember(self._zf, m)

    def __exit__(self, *exc) -> None:
        self._zf.close()


class _TarMember:
    def __init__(self, tf: tarfile.TarFile, m: _Member):
        self.fh = tf.extractfile(m.info)

    def __enter__(self):
        return self.fh

    def __exit__(self, *exc) -> None:
        self.fh.close()
