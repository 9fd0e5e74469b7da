"""What a downloaded file must be before it gets its final name (`fetch(..., expect=KIND)`).

`check_content(path, kind)` says why the file at `path` is not a KIND (None when it is):
an HTML page (a server's error or login page answered with 200) never is; an archive must open
as one; NIGHT's data.csv must have NIGHT's header and no row cut short (a body that ended
early without announcing its length); a torch checkpoint is a zip (or a legacy pickle).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path

__all__ = ["KINDS", "check_content", "is_html_type"]

# What each kind is called in messages ("... not a zip archive").
KINDS = {
    "zip": "a zip archive",
    "tar": "a tar archive",
    "archive": "a zip or tar archive",
    "night-csv": "NIGHT's data.csv",
    "torch": "a torch checkpoint",
}
_HTML = re.compile(rb"^(\xef\xbb\xbf)?\s*(<!doctype\s+html|<html|<head|<body)", re.IGNORECASE)
_HTML_TYPES = ("text/html", "application/xhtml+xml")


def is_html_type(content_type: str) -> bool:
    """Whether a Content-Type header announces an HTML page."""
    return content_type.split(";")[0].strip().lower() in _HTML_TYPES


def check_content(path: Path, kind: str) -> str | None:
    """Why `path` is not a `kind` (one of KINDS), or None when it is."""
    if _HTML.match(_head(path)):
        return f"the server sent an HTML page, not {KINDS[kind]}"
    return _CHECKS[kind](path)


def _head(path: Path, n: int = 4096) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _zip(path: Path) -> str | None:
    import zipfile

    if _head(path, 4) not in (b"PK\x03\x04", b"PK\x05\x06"):
        return f"not a zip archive (starts with {_head(path, 8)!r})"
    try:
        zipfile.ZipFile(path).close()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"does not open as a zip archive: {exc}"
    return None


def _tar(path: Path) -> str | None:
    import tarfile

    try:
        with tarfile.open(path, "r:*") as tf:
            tf.next()
    except (tarfile.TarError, OSError, EOFError) as exc:
        return f"does not open as a tar archive: {exc}"
    return None


def _archive(path: Path) -> str | None:
    if _head(path, 2) == b"PK":
        return _zip(path)
    return _tar(path)


def _night_csv(path: Path) -> str | None:
    from lipsim.data.night import COLUMNS

    with open(path, "rb") as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8", errors="replace", newline="")
        rows = csv.reader(text, strict=True)  # strict: a quoted field left open is an error
        header = [c.strip().lstrip("\ufeff") for c in next(rows, [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            shown = ",".join(header)[:200]
            return f"not NIGHT's data.csv: its header {shown!r} lacks {', '.join(missing)}"
        try:
            for row in rows:
                if row and len(row) != len(header):
                    return (
                        f"not a complete NIGHT data.csv: line {rows.line_num} has {len(row)} "
                        f"fields, the header {len(header)} (a body cut short?)"
                    )
        except csv.Error as exc:  # e.g. a quoted field left open at the end of the body
            return f"not a complete NIGHT data.csv: line {rows.line_num}: {exc} (a body cut short?)"
    return None


def _torch(path: Path) -> str | None:
    if _head(path, 1) == b"\x80":  # torch's legacy format: a pickle (protocol >= 2)
        return None
    if why := _zip(path):
        return f"not a torch checkpoint (torch.save writes a zip): {why}"
    return None


_CHECKS: dict[str, Callable[[Path], str | None]] = {
    "zip": _zip,
    "tar": _tar,
    "archive": _archive,
    "night-csv": _night_csv,
    "torch": _torch,
}
