"""Resumable, verified HTTP downloads, and the NIGHT download (one zip or chunked zips).

`fetch(url, dest)` streams into `dest.part` and renames to `dest` only when the file is complete
(its byte count equals the size announced by Content-Length / Content-Range, its content is
what `expect` says it must be, its sha256 matches when given):
- a `.part` left by an interrupted run or a dropped connection is resumed with an HTTP Range
  request (with If-Range, so a file that changed on the server is fetched again from 0); the
  announced size and validator are kept beside it (`dest.part.json`), so a rerun never takes
  a server's "416: the file is as long as your .part" for completion of a truncated body;
- a server that ignores Range (200 instead of 206) restarts the file cleanly from byte 0; one
  that contradicts itself about the size twice (a 416 / Content-Range loop) fails at once;
- connection errors, timeouts and 5xx / 408 / 429 answers are retried with exponential
  backoff; the retry budget counts consecutive attempts that made no progress, so a long
  download over a flaky link keeps going as long as bytes arrive, and a server that never
  delivers stops; an attempt slower than `min_rate` over `stall_time` seconds is abandoned
  and a trickle does not count as progress;
- other 4xx answers, redirect loops, bad URLs and an HTML page where data was expected are
  permanent: one DownloadError naming the URL, at once;
- everything is streamed in fixed-size chunks: memory does not grow with the file size.

`download_night(...)` fetches NIGHT (see `NIGHT_ZIP_URL` / `NIGHT_CHUNKED_URL`), extracts each
archive safely (lipsim.data.extract) into a staging folder beside `out`, and renames the
staging folder onto `out` when everything is there, with a manifest `.night-complete.json`
(every file: size, sha256, source archive) written last. A rerun over a complete folder
verifies the files against the manifest instead of downloading, and re-fetches only the
archives whose files fail (missing, wrong size, wrong sha256).

Chunked layout (assumption, documented in the README): `{url}/ref/000.zip .. {url}/ref/NNN.zip`,
the same under `distort/`, each zip holding the files under ref/ (resp. distort/), either with
or without the leading `ref/` (`distort/`) folder; and data.csv at `{url}/data.csv` (override with
`csv_url`), which DreamSim's chunked script does not fetch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import requests
import urllib3

from lipsim.atomic import write_json
from lipsim.checksum import sha256_file
from lipsim.configcheck import schema_default
from lipsim.data import replace_dir
from lipsim.data.extract import MAX_RATIO, ExtractClash, ExtractError, safe_extract
from lipsim.errors import LipSimError

__all__ = [
    "MANIFEST_NAME",
    "NIGHT_CHUNKED_URL",
    "NIGHT_ZIP_URL",
    "DownloadError",
    "FetchResult",
    "download_night",
    "fetch",
    "sha256_file",
    "verify_manifest",
]

# The pipeline's defaults (workflow/schemas/config.schema.yaml, night.download) are the library's.
NIGHT_ZIP_URL = schema_default("night.download.url")
NIGHT_CHUNKED_URL = schema_default("night.download.chunked_url")
RETRIES = schema_default("night.download.retries")
TIMEOUT = float(schema_default("night.download.timeout"))
CHUNKS = schema_default("night.download.chunks")
MANIFEST_NAME = ".night-complete.json"
CHUNK = 1 << 20  # 1 MiB: streaming buffer for network, hashing and extraction
# Transient answers (retried with backoff); any other 4xx is permanent and fails at once.
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}
# Default stall rule: an attempt averaging under MIN_RATE bytes/s over STALL_TIME s is dropped.
MIN_RATE = float(schema_default("night.download.min_rate"))
STALL_TIME = float(schema_default("night.download.stall_time"))
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


class DownloadError(LipSimError, RuntimeError):
    """A download failed for good; the message names the URL, what happened and the .part."""


@dataclasses.dataclass
class FetchResult:
    path: Path
    size: int
    sha256: str
    attempts: int  # HTTP requests made
    received: int  # body bytes received over the network (restarts and resumes included)
    resumed_from: int  # size of the .part found at the start (0 = fresh download)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _progress(total: int | None, initial: int, desc: str, enabled: bool):
    from tqdm import tqdm

    # bytes with a binary unit scale: tqdm then shows e.g. "1.20G/58.0G [03:10, 12.3MB/s]".
    # In a log file (snakemake, SLURM) one line every 30 s instead of a redraw per block.
    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        initial=initial,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc,
        disable=not enabled,
        file=sys.stderr,
        leave=not tty,
        mininterval=0.5 if tty else 30.0,
        dynamic_ncols=tty,
    )


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    retries: int = RETRIES,
    timeout: float = TIMEOUT,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    min_rate: float = MIN_RATE,
    stall_time: float = STALL_TIME,
    expect: str | None = None,
    session: requests.Session | None = None,
    progress: bool = True,
    chunk_size: int = CHUNK,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Download `url` to `dest` (resumable via `dest.part`), verified; return what happened.

    A body is complete only when its byte count equals the size the server announced
    (Content-Length / Content-Range total, remembered across runs in `dest.part.json`) and,
    with `expect` ("zip", "tar", "night-csv", "torch"), its content is what it must be (an HTML page
    never is). An attempt whose average rate stays below `min_rate` bytes/s for `stall_time`
    seconds is abandoned (curl's --speed-limit / --speed-time; min_rate 0 disables it).

    Raises DownloadError after `retries` consecutive attempts without progress, at once on a
    4xx answer (other than 408/429), a redirect loop, a bad URL, content that is not what
    `expect` says, a server that contradicts itself twice about the file's size, or a sha256
    mismatch of a complete file that a second full download confirms. On error nothing is at
    `dest`; the `.part` is kept for a later resume unless its content is known to be wrong.
    """
    if expect is not None and expect not in _EXPECT:
        raise ValueError(f"fetch: expect must be one of {sorted(_EXPECT)}, got {expect!r}")
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    sidecar = dest.with_name(dest.name + ".part.json")
    dest.parent.mkdir(parents=True, exist_ok=True)
    sha256 = sha256.lower() if sha256 else None
    own_session = session is None
    session = session or requests.Session()
    resumed_from = _size(part)
    attempts = received = 0
    # Progress = the .part grew past its largest size so far. Re-fetching bytes we already
    # had (after a restart from 0) is not progress, so a server that keeps contradicting
    # itself exhausts the retry budget instead of looping forever.
    failures = 0  # consecutive attempts without progress
    best = resumed_from
    sha_restarts = 0
    contradictions = 0  # restarts from 0 because the server contradicted itself about the size
    # What an earlier run was told about the bytes in .part (size, ETag): without it a 416
    # "the file has exactly the .part's size" cannot be told from a truncated .part.
    known = _read_sidecar(sidecar, url) if resumed_from else {}
    total: int | None = known.get("total")  # full size of the remote file, once known
    validator: str | None = known.get("validator")  # ETag / Last-Modified (If-Range)
    last_error = "no attempt made"
    # A read that waits longer than the stall window has stalled anyway.
    read_timeout = min(timeout, stall_time) if min_rate > 0 else timeout
    bar = None

    def restart(why: str) -> None:
        nonlocal contradictions, total, validator
        if contradictions >= 1:
            raise DownloadError(
                f"download failed: {url}: {why}, again after a restart from 0; "
                "the server contradicts itself about the file"
            )
        contradictions += 1
        part.unlink(missing_ok=True)
        sidecar.unlink(missing_ok=True)
        total = validator = None

    try:
        while True:
            if failures > retries:
                have = _size(part)
                size_txt = f"{have} of {total} bytes" if total is not None else f"{have} bytes"
                raise DownloadError(
                    f"download failed: {url}: {last_error} ({size_txt} in {part}, "
                    f"{failures} attempt(s) in a row without progress; rerun to resume)"
                )
            if failures:
                delay = min(max_backoff, backoff * 2 ** (failures - 1))
                sleep(delay * (0.75 + 0.5 * random.random()))  # jitter: no thundering herd
            offset = _size(part)
            headers = {"Accept-Encoding": "identity"}  # sizes must be those of the raw bytes
            if offset:
                headers["Range"] = f"bytes={offset}-"
                if validator:
                    headers["If-Range"] = validator
            attempts += 1
            try:
                with session.get(
                    url, headers=headers, stream=True, timeout=(timeout, read_timeout)
                ) as resp:
                    status = resp.status_code
                    if status in _RETRY_STATUS:
                        last_error = f"HTTP {status} {resp.reason}"
                        failures += 1
                        continue
                    if status == 416 and offset:
                        # Range not satisfiable: the .part is as long as (or longer than) the
                        # file. Complete only if that is the size announced for these bytes.
                        m = re.match(r"bytes\s+\*/(\d+)", resp.headers.get("Content-Range", ""))
                        remote = int(m.group(1)) if m else None
                        if remote != offset or total != offset:
                            restart(
                                f"HTTP 416 for bytes={offset}-: the server says the file "
                                f"has {remote} bytes"
                                + (f" but announced {total}" if total is not None else "")
                            )
                            last_error = f"HTTP 416 for bytes={offset}-; restarted from 0"
                            failures += 1
                            continue
                    elif status not in (200, 206):
                        # 4xx, and anything that is not a body (204, a 3xx without Location):
                        # permanent; writing it as the file would make a wrong "complete" file.
                        raise DownloadError(f"download failed: {url}: HTTP {status} {resp.reason}")
                    elif status == 206 and offset:
                        m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                        start = int(m.group(1)) if m else -1
                        new_total = int(m.group(3)) if m and m.group(3) != "*" else None
                        if start != offset or (
                            total is not None and new_total not in (None, total)
                        ):
                            # Not the bytes we asked for, or the file changed size: start over.
                            restart(
                                f"the server answered Content-Range "
                                f"{resp.headers.get('Content-Range')!r} to bytes={offset}-"
                                + (f" after announcing {total} bytes" if total else "")
                            )
                            last_error = "unexpected Content-Range; restarted from 0"
                            failures += 1
                            continue
                        total = new_total if new_total is not None else total
                        mode = "ab"
                    else:  # 200 (or 206 for a request without Range): the whole file from 0
                        if offset:
                            # The server ignored Range (or If-Range said the file changed):
                            # appending would corrupt the file, so rewrite it from byte 0.
                            offset = 0
                        length = resp.headers.get("Content-Length")
                        new_total = int(length) if length and length.isdigit() else None
                        if status == 206:
                            m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                            new_total = int(m.group(3)) if m and m.group(3) != "*" else new_total
                        total = new_total
                        mode = "wb"
                    if status != 416:
                        _refuse_html_type(url, resp, expect)
                        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
                        write_json(sidecar, {"url": url, "total": total, "validator": validator})
                        if bar is None:
                            bar = _progress(total, offset, dest.name, progress)
                        else:
                            bar.reset(total)
                            bar.update(offset)
                        encoding = resp.headers.get("Content-Encoding", "identity").lower()
                        if encoding not in ("", "identity"):
                            raise DownloadError(
                                f"download failed: {url}: the server sent "
                                f"Content-Encoding {encoding!r} despite "
                                "Accept-Encoding: identity; cannot resume it"
                            )
                        with open(part, mode, buffering=chunk_size) as fh:
                            rate = _RateWatch(min_rate, stall_time)
                            # read1 hands over whatever arrived (up to chunk_size): bytes received
                            # before a dropped connection are kept, so a resume re-fetches only
                            # what never arrived (iter_content would drop a partial block).
                            while block := resp.raw.read1(chunk_size):
                                fh.write(block)
                                received += len(block)
                                bar.update(len(block))
                                rate.add(len(block))
            except _Stalled as exc:
                last_error = str(exc)
                have = _size(part)
                # A trickle must not pass for progress: only a window's worth at the minimum
                # rate resets the retry budget.
                if have - best >= min_rate * stall_time:
                    failures, best = 0, have
                else:
                    failures, best = failures + 1, max(best, have)
                continue
            except requests.TooManyRedirects as exc:
                raise DownloadError(f"download failed: {url}: redirect loop ({exc})") from exc
            except (
                requests.exceptions.InvalidURL,
                requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema,
            ) as exc:
                raise DownloadError(f"download failed: {url}: bad URL ({exc})") from exc
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
                urllib3.exceptions.HTTPError,
                OSError,
            ) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                failures, best = _tally(failures, best, _size(part))
                continue
            have = _size(part)
            if total is None:
                # No size announced: the body ending cleanly is all we can go by.
                total = have
            if have < total:
                last_error = f"connection closed early: {have} of {total} bytes"
                failures, best = _tally(failures, best, have)
                continue
            if have > total:
                restart(f"received {have} bytes, more than the announced {total}")
                last_error = f"received {have} bytes, more than announced; restarted from 0"
                failures += 1
                continue
            if expect is not None:
                why = _EXPECT[expect](part)
                if why is not None:
                    part.unlink(missing_ok=True)
                    sidecar.unlink(missing_ok=True)
                    raise DownloadError(f"download failed: {url}: {why}; not kept")
            digest = sha256_file(part)
            if sha256 and digest != sha256:
                part.unlink(missing_ok=True)
                sidecar.unlink(missing_ok=True)
                if sha_restarts >= 1:
                    raise DownloadError(
                        f"download failed: {url}: sha256 {digest} != expected {sha256} on two "
                        "complete downloads (wrong --sha256, or the file changed on the server)"
                    )
                sha_restarts += 1
                total = validator = None
                last_error = f"sha256 mismatch ({digest}); downloading again from 0"
                continue
            with open(part, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(part, dest)
            sidecar.unlink(missing_ok=True)
            return FetchResult(dest, have, digest, attempts, received, resumed_from)
    finally:
        if bar is not None:
            bar.close()
        if own_session:
            session.close()


class _Stalled(Exception):
    """An attempt fell below the minimum transfer rate (not an error of its own: retried)."""


class _RateWatch:
    """Abandon an attempt whose average rate over `window` seconds is below `min_rate` B/s."""

    def __init__(self, min_rate: float, window: float):
        self.min_rate, self.window = min_rate, window
        self.start, self.bytes = time.monotonic(), 0

    def add(self, n: int) -> None:
        if self.min_rate <= 0:
            return
        self.bytes += n
        now = time.monotonic()
        if now - self.start >= self.window:
            if self.bytes < self.min_rate * (now - self.start):
                raise _Stalled(
                    f"transfer too slow: {self.bytes} bytes in "
                    f"{now - self.start:.1f} s, "
                    f"below the minimum of {self.min_rate:g} bytes/s "
                    f"(--min-rate / --stall-time)"
                )
            self.start, self.bytes = now, 0


def _read_sidecar(sidecar: Path, url: str) -> dict:
    try:
        known = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) and known.get("url") == url else {}


_HTML = re.compile(rb"^\s*(<!doctype\s+html|<html|<head|<body)", re.IGNORECASE)
_WHAT = {
    "zip": "a zip archive",
    "tar": "a tar archive",
    "night-csv": "NIGHT's data.csv",
    "torch": "a torch checkpoint",
}


def _refuse_html_type(url: str, resp, expect: str | None) -> None:
    """An answer announced as an HTML page is refused before its body is read."""
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if expect is not None and ctype in ("text/html", "application/xhtml+xml"):
        raise DownloadError(
            f"download failed: {url}: HTTP {resp.status_code} answered with an "
            f"HTML page (Content-Type {ctype}), not {_WHAT[expect]}"
        )


def _head(path: Path, n: int = 4096) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _not_html(path: Path, what: str) -> str | None:
    return f"the server sent an HTML page, not {what}" if _HTML.match(_head(path)) else None


def _check_zip_file(path: Path) -> str | None:
    import zipfile

    if html := _not_html(path, _WHAT["zip"]):
        return html
    if _head(path, 4) not in (b"PK\x03\x04", b"PK\x05\x06"):
        return f"not a zip archive (starts with {_head(path, 8)!r})"
    try:
        zipfile.ZipFile(path).close()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        return f"does not open as a zip archive: {exc}"
    return None


def _check_tar_file(path: Path) -> str | None:
    import tarfile

    if html := _not_html(path, _WHAT["tar"]):
        return html
    try:
        with tarfile.open(path, "r:*") as tf:
            tf.next()
    except (tarfile.TarError, OSError, EOFError) as exc:
        return f"does not open as a tar archive: {exc}"
    return None


def _check_night_csv(path: Path) -> str | None:
    from lipsim.data.night import COLUMNS

    if html := _not_html(path, _WHAT["night-csv"]):
        return html
    first = _head(path, 65536).split(b"\n", 1)[0].decode("utf-8", "replace").lstrip("\ufeff")
    header = {c.strip() for c in first.strip().split(",")}
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        return (
            f"not NIGHT's data.csv: its header {first.strip()[:200]!r} lacks {', '.join(missing)}"
        )
    return None


def _check_torch_file(path: Path) -> str | None:
    if html := _not_html(path, _WHAT["torch"]):
        return html
    if _head(path, 1) == b"\x80":  # torch's legacy format: a pickle (protocol >= 2)
        return None
    if why := _check_zip_file(path):
        return f"not a torch checkpoint (torch.save writes a zip): {why}"
    return None


_EXPECT: dict[str, Callable[[Path], str | None]] = {
    "zip": _check_zip_file,
    "tar": _check_tar_file,
    "night-csv": _check_night_csv,
    "torch": _check_torch_file,
}


def _tally(failures: int, best: int, have: int) -> tuple[int, int]:
    """(consecutive failures, best size) after an attempt that ended with `have` bytes."""
    return (0, have) if have > best else (failures + 1, best)


# --------------------------------------------------------------------------- NIGHT
@dataclasses.dataclass(frozen=True)
class _Source:
    """One archive (or data.csv) of the NIGHT download."""

    name: str  # key in the manifest, e.g. "nights.zip", "ref/000.zip", "data.csv"
    url: str
    kind: str  # "zip" (extract at root), "ref" / "distort" (extract under that folder), "file"
    sha256: str | None = None


def _expect(kind: str) -> str:
    """What a source's bytes must be before they are accepted (fetch's `expect`)."""
    return "night-csv" if kind == "file" else "zip"


def _sources(
    mode: str, url: str, chunks: int, sha256: str | None, csv_url: str | None
) -> list[_Source]:
    # ConfigError: a bad option is reported as one error line naming it.
    from lipsim.configcheck import ConfigError

    if sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ConfigError(f"download_night: --sha256 {sha256!r} is not 64 hexadecimal digits")
    if mode == "zip":
        return [_Source("nights.zip", url, "zip", sha256)]
    if mode != "chunked":
        raise ConfigError(f"download_night: --mode must be 'zip' or 'chunked', got {mode!r}")
    if sha256:
        raise ConfigError(
            "download_night: --sha256 applies to --mode zip (one archive); "
            "chunked archives are checked by size and zip CRC"
        )
    if chunks < 1:
        raise ConfigError(f"download_night: --chunks must be >= 1, got {chunks}")
    base = url.rstrip("/")
    out = [_Source("data.csv", csv_url or f"{base}/data.csv", "file")]
    for kind in ("ref", "distort"):
        out += [
            _Source(f"{kind}/{i:03d}.zip", f"{base}/{kind}/{i:03d}.zip", kind)
            for i in range(chunks)
        ]
    return out


def _log(msg: str) -> None:
    print(f"download-night: {msg}", file=sys.stderr, flush=True)


def _install(
    src: _Source, archive: Path, staging: Path, limits: dict, owners: dict[str, str] | None = None
) -> list[dict]:
    """Put one fetched source into `staging`; return its manifest entries.

    `owners` (path -> source name) are the files other archives already put there: a member
    that would overwrite one is refused, naming both archives; a file no record owns is a
    leftover of an interrupted run and is replaced.
    """
    if src.kind == "file":
        target = staging / Path(src.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, target)
        return [
            {
                "path": src.name,
                "size": _size(target),
                "sha256": sha256_file(target),
                "source": src.name,
            }
        ]
    # nights.zip holds nights/...; chunks hold XXX/... or ref/XXX/...: strip the wrapper so the
    # files land at staging/data.csv, staging/ref/..., staging/distort/...
    if src.kind == "zip":
        where = dict(strip=_zip_wrapper(archive))
    else:
        where = dict(into=src.kind, strip=src.kind)
    try:
        entries = safe_extract(archive, staging, replace=owners is None, **where, **limits)
    except ExtractClash as exc:
        owner = (owners or {}).get(exc.path)
        if owner is not None:
            raise ExtractError(
                f"{src.name} ({archive}) entry {exc.entry!r} and {owner} both hold "
                f"{exc.path}; refusing to let one archive overwrite another's "
                "file"
            ) from exc
        entries = safe_extract(archive, staging, **where, **limits)
    return [
        {"path": e.path, "size": e.size, "sha256": e.sha256, "source": src.name} for e in entries
    ]


def _zip_wrapper(archive: Path) -> str:
    """The folder holding data.csv inside the one-zip release ("nights"), "" if at the root."""
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n.replace("\\", "/") for n in zf.namelist()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise ExtractError(f"{archive}: not a readable zip archive: {exc}") from exc
    if "data.csv" in names:
        return ""
    tops = {n.split("/")[0] for n in names if "/" in n and not n.startswith("__MACOSX")}
    for top in sorted(tops):
        if f"{top}/data.csv" in names:
            return top
    return ""


def verify_manifest(
    root: str | os.PathLike, *, check_sha256: bool = True
) -> tuple[dict, list[tuple[str, str]]]:
    """(manifest, problems) for `root`/.night-complete.json; a problem is (relative path, what)."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
        entries = list(manifest.get("files", []))
    except (OSError, ValueError, AttributeError) as exc:
        raise DownloadError(
            f"{root / MANIFEST_NAME}: unreadable download manifest ({exc}); "
            "remove the folder to download again"
        ) from exc
    problems = []
    for entry in entries:
        path = root / entry["path"]
        size = _size(path) if path.is_file() else None
        if size is None:
            problems.append((entry["path"], "missing"))
        elif size != entry["size"]:
            problems.append((entry["path"], f"{size} bytes, manifest says {entry['size']}"))
        elif check_sha256 and sha256_file(path) != entry["sha256"]:
            problems.append((entry["path"], "sha256 differs from the manifest"))
    return manifest, problems


def download_night(
    out: str | os.PathLike,
    *,
    mode: str = "zip",
    url: str | None = None,
    sha256: str | None = None,
    chunks: int = CHUNKS,
    retries: int = RETRIES,
    timeout: float = TIMEOUT,
    workdir: str | os.PathLike | None = None,
    csv_url: str | None = None,
    keep_archives: bool = False,
    check_sha256: bool = True,
    backoff: float = 1.0,
    progress: bool = True,
    min_rate: float = MIN_RATE,
    stall_time: float = STALL_TIME,
    max_bytes: int | None = None,
    max_ratio: float | None = MAX_RATIO,
) -> Path:
    """Download NIGHT into `out` (the folder that will hold data.csv, ref/, distort/).

    Archives go to `workdir` (default: `.{out name}.download` beside `out`) as `.part` files
    (resumable across runs) and are deleted after extraction unless `keep_archives`.
    `min_rate` / `stall_time`: fetch's stall rule; `max_bytes` / `max_ratio`: safe_extract's
    limits per archive. Returns `out`. Raises DownloadError / ExtractError with the URL or
    file at fault.
    """
    out = Path(out).expanduser().resolve()
    url = url or (NIGHT_ZIP_URL if mode == "zip" else NIGHT_CHUNKED_URL)
    sources = _sources(mode, url, chunks, sha256, csv_url)
    own_workdir = workdir is None  # only a folder we chose may be removed at the end
    workdir = Path(workdir).resolve() if workdir else out.parent / f".{out.name}.download"
    net = dict(
        retries=retries,
        timeout=timeout,
        backoff=backoff,
        progress=progress,
        min_rate=min_rate,
        stall_time=stall_time,
    )
    limits = dict(max_bytes=max_bytes, max_ratio=max_ratio)
    session = requests.Session()
    try:
        return _download_night(
            out,
            url,
            mode,
            sources,
            workdir,
            own_workdir,
            session,
            net=net,
            limits=limits,
            keep_archives=keep_archives,
            check_sha256=check_sha256,
        )
    except OSError as exc:  # the disk, not the network: permissions, no space, a bad --out
        raise DownloadError(f"download-night: {exc}") from exc
    finally:
        session.close()


def _download_night(
    out: Path,
    url: str,
    mode: str,
    sources: list[_Source],
    workdir: Path,
    own_workdir: bool,
    session,
    *,
    net: dict,
    limits: dict,
    keep_archives: bool,
    check_sha256: bool,
) -> Path:
    if (out / MANIFEST_NAME).is_file():
        return _repair(
            out,
            sources,
            workdir,
            session,
            net=net,
            limits=limits,
            keep_archives=keep_archives,
            check_sha256=check_sha256,
            own_workdir=own_workdir,
        )
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        # Never replace a folder this downloader did not complete (it may be user data).
        raise DownloadError(
            f"download-night: {out} exists and is not a completed download "
            f"(no {MANIFEST_NAME}); remove it or choose another --out"
        )
    # Staging beside `out` (same filesystem, so the final rename is atomic); it survives an
    # interrupted run together with a progress file, so a rerun skips finished archives.
    staging = out.parent / f".{out.name}.staging"
    done_path = workdir / "progress.json"
    done = _read_progress(done_path) if staging.is_dir() else {}
    staging.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(sources):
        if src.name in done and src.url == done[src.name]["url"]:
            continue
        _log(f"[{i + 1}/{len(sources)}] {src.url}")
        archive = workdir / src.name
        res = fetch(
            src.url, archive, sha256=src.sha256, session=session, expect=_expect(src.kind), **net
        )
        owners = {
            e["path"]: name for name, rec in done.items() for e in rec["files"] if name != src.name
        }
        entries = _install(src, archive, staging, limits, owners)
        done[src.name] = {"url": src.url, "size": res.size, "sha256": res.sha256, "files": entries}
        write_json(done_path, done)  # after the files are in place: a record means done
        if not keep_archives:
            archive.unlink(missing_ok=True)
    if not (staging / "data.csv").is_file():
        raise DownloadError(
            f"download-night: no data.csv after extracting {url}; staging folder kept at {staging}"
        )
    files = sorted((e for rec in done.values() for e in rec["files"]), key=lambda e: e["path"])
    manifest = {
        "format": "lipsim-night-download/1",
        "mode": mode,
        "url": url,
        "archives": {k: {kk: v[kk] for kk in ("url", "size", "sha256")} for k, v in done.items()},
        "files": files,
        "n_files": len(files),
        "bytes": sum(e["size"] for e in files),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(staging / MANIFEST_NAME, manifest)  # written last: marks completeness
    replace_dir(staging, out)
    done_path.unlink(missing_ok=True)
    _cleanup_workdir(workdir, keep_archives or not own_workdir)
    _log(f"complete: {len(files)} files, {manifest['bytes'] / 1e6:.1f} MB in {out}")
    return out


def _read_progress(path: Path) -> dict:
    """Archives a previous run finished ({} when none, or when the record is unreadable)."""
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return done if isinstance(done, dict) else {}


def _cleanup_workdir(workdir: Path, keep: bool) -> None:
    """Remove the default workdir once it is empty (only empty folders: never rmtree)."""
    if keep or not workdir.is_dir():
        return
    for d in sorted((p for p in workdir.rglob("*") if p.is_dir()), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    if not any(workdir.iterdir()):
        workdir.rmdir()


def _repair(
    out: Path,
    sources: list[_Source],
    workdir: Path,
    session,
    *,
    net,
    limits,
    keep_archives,
    check_sha256,
    own_workdir,
) -> Path:
    """A rerun over a complete folder: verify; re-fetch only the archives of failing files."""
    manifest, problems = verify_manifest(out, check_sha256=check_sha256)
    if not problems:
        _log(
            f"{out} is complete ({manifest['n_files']} files verified against {MANIFEST_NAME}); "
            "nothing to download"
        )
        return out
    by_name = {s.name: s for s in sources}
    bad_paths = {rel for rel, _ in problems}
    bad_sources = sorted({e["source"] for e in manifest["files"] if e["path"] in bad_paths})
    _log(f"{len(problems)} file(s) fail verification; re-fetching {', '.join(bad_sources)}")
    for rel, what in problems[:10]:
        _log(f"  {out / rel}: {what}")
    files = {e["path"]: e for e in manifest["files"]}
    for name in bad_sources:
        # The manifest's own record wins over today's options (the folder may have been made
        # with another mode or URL).
        rec = manifest["archives"][name]
        kind = (
            "file" if name == "data.csv" else "zip" if name == "nights.zip" else name.split("/")[0]
        )
        src = by_name.get(name)
        src = _Source(name, rec["url"], kind, src.sha256 if src else None)
        archive = workdir / src.name
        res = fetch(
            src.url, archive, sha256=src.sha256, session=session, expect=_expect(kind), **net
        )
        # Extract next to `out` and move the files in one by one (each move is atomic).
        tmp = out.parent / f".{out.name}.repair"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            entries = _install(src, archive, tmp, limits)
            for e in entries:
                owner = files.get(e["path"], {}).get("source", name)
                if owner != name:
                    raise ExtractError(
                        f"{name} ({archive}) now holds {e['path']}, which "
                        f"{owner} provides; refusing to overwrite it"
                    )
            for e in entries:
                target = out / e["path"]
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp / e["path"], target)
                files[e["path"]] = e
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        manifest["archives"][name] = {"url": src.url, "size": res.size, "sha256": res.sha256}
        if not keep_archives:
            archive.unlink(missing_ok=True)
    manifest["files"] = sorted(files.values(), key=lambda e: e["path"])
    manifest["n_files"] = len(files)
    manifest["bytes"] = sum(e["size"] for e in files.values())
    write_json(out / MANIFEST_NAME, manifest)
    _, still = verify_manifest(out, check_sha256=check_sha256)
    if still:
        raise DownloadError(
            "download-night: files still fail verification after re-fetching:\n  "
            + "\n  ".join(f"{out / rel}: {what}" for rel, what in still[:20])
        )
    _cleanup_workdir(workdir, keep_archives or not own_workdir)
    _log(f"repaired {out}")
    return out
