"""Data: demo generators (synthetic), the NIGHT loader/verifier (night), the downloads (transfer:
one file, resumable and verified; content: what a file must be; download: NIGHT; gdrive:
Google Drive; extract: safe archives) and image-folder checks (folders).

`atomic_dir` is the folder-level counterpart of `lipsim.atomic`: a generator or an extractor
fills a temporary folder beside the target and the finished folder is renamed into place, so
a crash never leaves a half-written dataset at the final path.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; on success it replaces `path`.

    An existing folder at `path` is renamed aside first and deleted only after the new one is
    in place (a rename is atomic on one filesystem; replacing a non-empty folder is not).
    On error the temporary folder is removed and `path` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Rename the finished folder `src` onto `dst` (same filesystem).

    An existing `dst` is renamed aside first and deleted only after `src` is in place: a
    rename is atomic, replacing a non-empty folder is not.
    """
    src, dst = Path(src), Path(dst)
    old = None
    if dst.exists() or dst.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
        os.rmdir(old)
        os.replace(dst, old)
    os.replace(src, dst)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
