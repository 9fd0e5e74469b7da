"""Atomic file writes: write to a temporary file beside the target, fsync, rename.

A crash leaves either the old file or no file at the final path, never a partial one that
looks complete (readers and snakemake only ever see finished outputs). A write that fails
because the disk is full (or a quota or the file-size limit is reached) raises NoSpaceError
naming the file it was writing: one error line from the CLI, the old file kept.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lipsim.errors import LipSimError

# errno -> what the user reads: the disk, the quota or the file-size limit (ulimit -f) is full.
NO_SPACE = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file-size limit",
}


class NoSpaceError(LipSimError, OSError):
    """A write failed for lack of space; the message names the file and the free space."""


def no_space(exc: BaseException, path: str | os.PathLike) -> NoSpaceError | None:
    """`exc` as a NoSpaceError naming `path` when it is a full-disk error, else None."""
    if isinstance(exc, NoSpaceError):
        return exc
    if not isinstance(exc, OSError) or exc.errno not in NO_SPACE:
        return None
    hint = _file_limit() if exc.errno == errno.EFBIG else _free(Path(path))
    full = NoSpaceError(f"{NO_SPACE[exc.errno]} writing {path} ({hint}); rerun when there is room")
    full.errno = exc.errno  # still an OSError of its kind for callers that test errno
    return full


def _free(path: Path) -> str:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return f"in {folder}"
    return (
        f"{free} bytes free in {folder}"
        if free < 10_000
        else f"{free / 1e6:.1f} MB free in {folder}"
    )


def _file_limit() -> str:
    import resource

    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return f"files are limited to {soft} bytes (ulimit -f)"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it onto `path` on success."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp makes 0600 files; results on a shared cluster get the user's usual mode.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as exc:
        if (full := no_space(exc, path)) is not None:
            raise full from exc
        raise
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[Any]:
    """open() for writing whose result appears at `path` only when the block succeeds."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def write_parquet(path: str | os.PathLike, df) -> None:
    """Write a pandas DataFrame as parquet atomically."""
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)


def write_csv(path: str | os.PathLike, df) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)


def torch_save(path: str | os.PathLike, obj: Any) -> None:
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # torch reports a failed write as "unexpected pos" (RuntimeError): the file object
        # keeps the OSError it swallowed, so a full disk is named as such.
        out = _Recording(fh)
        try:
            torch.save(obj, out)
        except RuntimeError as exc:
            if out.error is not None:
                raise out.error from exc
            raise


class _Recording:
    """A binary file for torch.save that remembers the OSError of a failed write."""

    def __init__(self, fh) -> None:
        self.fh, self.error = fh, None

    def write(self, data) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.fh.flush()
