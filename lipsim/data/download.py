"""Resumable, verified HTTP downloads, and the NIGHT download (one zip or chunked zips).

`fetch(url, dest)` streams into `dest.part` and renames to `dest` only when the file is complete
(size from Content-Length / Content-Range, sha256 when given):
- a `.part` left by an interrupted run or a dropped connection is resumed with an HTTP Range
  request (with If-Range, so a file that changed on the server is fetched again from 0);
- a server that ignores Range (200 instead of 206) restarts the file cleanly from byte 0;
- connection errors, timeouts and 5xx / 429 answers are retried with exponential backoff; the
  retry budget counts consecutive attempts that made no progress, so a long download over a
  flaky link keeps going as long as bytes arrive, and a server that never delivers stops;
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
from lipsim.data import replace_dir
from lipsim.data.extract import ExtractError, safe_extract  # noqa: F401 - re-exported
from lipsim.errors import LipSimError

__all__ = [
    "MANIFEST_NAME", "NIGHT_CHUNKED_URL", "NIGHT_ZIP_URL", "DownloadError", "FetchResult",
    "download_night", "fetch", "sha256_file", "verify_manifest",
]

NIGHT_ZIP_URL = "https://data.csail.mit.edu/nights/nights.zip"
NIGHT_CHUNKED_URL = "https://data.csail.mit.edu/nights/nights_chunked"
MANIFEST_NAME = ".night-complete.json"
CHUNK = 1 << 20  # 1 MiB: streaming buffer for network, hashing and extraction
_RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
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
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=desc, disable=not enabled, file=sys.stderr, leave=not tty,
                mininterval=0.5 if tty else 30.0, dynamic_ncols=tty)


def fetch(url: str, dest: str | os.PathLike, *, sha256: str | None = None, retries: int = 8,
          timeout: float = 60.0, backoff: float = 1.0, max_backoff: float = 60.0,
          session: requests.Session | None = None, progress: bool = True,
          chunk_size: int = CHUNK, sleep: Callable[[float], None] = time.sleep) -> FetchResult:
    """Download `url` to `dest` (resumable via `dest.part`), verified; return what happened.

    Raises DownloadError after `retries` consecutive attempts without progress, on a 4xx
    answer (other than 408/425/429), or on a sha256 mismatch of a complete file that a
    second full download confirms. On error nothing is at `dest`; the `.part` is kept for a
    later resume unless its content is known to be wrong.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
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
    total: int | None = None  # full size of the remote file, once known
    validator: str | None = None  # ETag / Last-Modified of the bytes in .part (If-Range)
    last_error = "no attempt made"
    bar = None
    try:
        while True:
            if failures > retries:
                have = _size(part)
                size_txt = f"{have} of {total} bytes" if total is not None else f"{have} bytes"
                raise DownloadError(
                    f"download failed: {url}: {last_error} ({size_txt} in {part}, "
                    f"{failures} attempt(s) in a row without progress; rerun to resume)")
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
                with session.get(url, headers=headers, stream=True, timeout=timeout) as resp:
                    status = resp.status_code
                    if status in _RETRY_STATUS:
                        last_error = f"HTTP {status} {resp.reason}"
                        failures += 1
                        continue
                    if status == 416 and offset:
                        # Range not satisfiable: the .part is as long as (or longer than) the
                        # file. Complete if the total matches; otherwise start over.
                        m = re.match(r"bytes\s+\*/(\d+)", resp.headers.get("Content-Range", ""))
                        remote = int(m.group(1)) if m else None
                        if remote == offset and total in (None, offset):
                            total = offset
                        else:
                            last_error = (f"HTTP 416 for bytes={offset}-: the server says the file "
                                          f"has {remote} bytes" + (f" but announced {total}"
                                          if total is not None else "") + "; restarting from 0")
                            part.unlink(missing_ok=True)
                            failures += 1
                            continue
                    elif status >= 400:
                        raise DownloadError(f"download failed: {url}: HTTP {status} {resp.reason}")
                    elif status == 206 and offset:
                        m = _CONTENT_RANGE.match(resp.headers.get("Content-Range", ""))
                        start = int(m.group(1)) if m else -1
                        new_total = int(m.group(3)) if m and m.group(3) != "*" else None
                        if start != offset or (total is not None and new_total not in (None, total)):
                            # Not the bytes we asked for, or the file changed size: start over.
                            last_error = (f"server answered Content-Range "
                                          f"{resp.headers.get('Content-Range')!r} to bytes={offset}-"
                                          + (f" after announcing {total} bytes" if total else "")
                                          + "; restarting from 0")
                            part.unlink(missing_ok=True)
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
                    validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
                    if status != 416:
                        if bar is None:
                            bar = _progress(total, offset, dest.name, progress)
                        else:
                            bar.reset(total)
                            bar.update(offset)
                        encoding = resp.headers.get("Content-Encoding", "identity").lower()
                        if encoding not in ("", "identity"):
                            raise DownloadError(f"download failed: {url}: the server sent "
                                                f"Content-Encoding {encoding!r} despite "
                                                "Accept-Encoding: identity; cannot resume it")
                        with open(part, mode, buffering=chunk_size) as fh:
                            # read1 hands over whatever arrived (up to chunk_size): bytes received
                            # before a dropped connection are kept, so a resume re-fetches only
                            # what never arrived (iter_content would drop a partial block).
                            while block := resp.raw.read1(chunk_size):
                                fh.write(block)
                                received += len(block)
                                bar.update(len(block))
            except (requests.ConnectionError, requests.Timeout,
                    requests.exceptions.ChunkedEncodingError, urllib3.exceptions.HTTPError,
                    OSError) as exc:
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
                last_error = f"received {have} bytes, more than the announced {total}; restarting"
                part.unlink(missing_ok=True)
                failures += 1
                continue
            digest = sha256_file(part)
            if sha256 and digest != sha256:
                part.unlink(missing_ok=True)
                if sha_restarts >= 1:
                    raise DownloadError(
                        f"download failed: {url}: sha256 {digest} != expected {sha256} on two "
                        "complete downloads (wrong --sha256, or the file changed on the server)")
                sha_restarts += 1
                last_error = f"sha256 mismatch ({digest}); downloading again from 0"
                continue
            with open(part, "rb+") as fh:
                os.fsync(fh.fileno())
            os.replace(part, dest)
            return FetchResult(dest, have, digest, attempts, received, resumed_from)
    finally:
        if bar is not None:
            bar.close()
        if own_session:
            session.close()


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


def _sources(mode: str, url: str, chunks: int, sha256: str | None,
             csv_url: str | None) -> list[_Source]:
    if mode == "zip":
        return [_Source("nights.zip", url, "zip", sha256)]
    if mode != "chunked":
        raise ValueError(f"download_night: mode must be 'zip' or 'chunked', got {mode!r}")
    if sha256:
        raise ValueError("download_night: --sha256 applies to --mode zip (one archive); "
                         "chunked archives are checked by size and zip CRC")
    if chunks < 1:
        raise ValueError(f"download_night: chunks must be >= 1, got {chunks}")
    base = url.rstrip("/")
    out = [_Source("data.csv", csv_url or f"{base}/data.csv", "file")]
    for kind in ("ref", "distort"):
        out += [_Source(f"{kind}/{i:03d}.zip", f"{base}/{kind}/{i:03d}.zip", kind)
                for i in range(chunks)]
    return out


def _log(msg: str) -> None:
    print(f"download-night: {msg}", file=sys.stderr, flush=True)


def _install(src: _Source, archive: Path, staging: Path) -> list[dict]:
    """Put one fetched source into `staging`; return its manifest entries."""
    if src.kind == "file":
        target = staging / Path(src.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, target)
        return [{"path": src.name, "size": _size(target), "sha256": sha256_file(target),
                 "source": src.name}]
    # nights.zip holds nights/...; chunks hold XXX/... or ref/XXX/...: strip the wrapper so the
    # files land at staging/data.csv, staging/ref/..., staging/distort/...
    if src.kind == "zip":
        entries = safe_extract(archive, staging, strip=_zip_wrapper(archive))
    else:
        entries = safe_extract(archive, staging, into=src.kind, strip=src.kind)
    return [{"path": e.path, "size": e.size, "sha256": e.sha256, "source": src.name}
            for e in entries]


def _zip_wrapper(archive: Path) -> str:
    """The folder holding data.csv inside the one-zip release ("nights"), "" if at the root."""
    import zipfile

    with zipfile.ZipFile(archive) as zf:
        names = [n.replace("\\", "/") for n in zf.namelist()]
    if "data.csv" in names:
        return ""
    tops = {n.split("/")[0] for n in names if "/" in n and not n.startswith("__MACOSX")}
    for top in sorted(tops):
        if f"{top}/data.csv" in names:
            return top
    return ""


def verify_manifest(root: str | os.PathLike, *,
                    check_sha256: bool = True) -> tuple[dict, list[tuple[str, str]]]:
    """(manifest, problems) for `root`/.night-complete.json; a problem is (relative path, what)."""
    root = Path(root)
    manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
    problems = []
    for entry in manifest.get("files", []):
        path = root / entry["path"]
        size = _size(path) if path.is_file() else None
        if size is None:
            problems.append((entry["path"], "missing"))
        elif size != entry["size"]:
            problems.append((entry["path"], f"{size} bytes, manifest says {entry['size']}"))
        elif check_sha256 and sha256_file(path) != entry["sha256"]:
            problems.append((entry["path"], "sha256 differs from the manifest"))
    return manifest, problems


def download_night(out: str | os.PathLike, *, mode: str = "zip", url: str | None = None,
                   sha256: str | None = None, chunks: int = 100, retries: int = 8,
                   timeout: float = 60.0, workdir: str | os.PathLike | None = None,
                   csv_url: str | None = None, keep_archives: bool = False,
                   check_sha256: bool = True, backoff: float = 1.0,
                   progress: bool = True) -> Path:
    """Download NIGHT into `out` (the folder that will hold data.csv, ref/, distort/).

    Archives go to `workdir` (default: `.{out name}.download` beside `out`) as `.part` files
    (resumable across runs) and are deleted after extraction unless `keep_archives`.
    Returns `out`. Raises DownloadError / ExtractError with the URL or file at fault.
    """
    out = Path(out).expanduser().resolve()
    url = url or (NIGHT_ZIP_URL if mode == "zip" else NIGHT_CHUNKED_URL)
    sources = _sources(mode, url, chunks, sha256, csv_url)
    own_workdir = workdir is None  # only a folder we chose may be removed at the end
    workdir = Path(workdir).resolve() if workdir else out.parent / f".{out.name}.download"
    session = requests.Session()
    try:
        if (out / MANIFEST_NAME).is_file():
            return _repair(out, sources, workdir, session, retries=retries, timeout=timeout,
                           keep_archives=keep_archives, check_sha256=check_sha256,
                           backoff=backoff, progress=progress, own_workdir=own_workdir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            # Never replace a folder this downloader did not complete (it may be user data).
            raise DownloadError(f"download-night: {out} exists and is not a completed download "
                                f"(no {MANIFEST_NAME}); remove it or choose another --out")
        # Staging beside `out` (same filesystem, so the final rename is atomic); it survives an
        # interrupted run together with a progress file, so a rerun skips finished archives.
        staging = out.parent / f".{out.name}.staging"
        done_path = workdir / "progress.json"
        done = json.loads(done_path.read_text()) if done_path.is_file() and staging.is_dir() else {}
        if not staging.is_dir():
            done = {}
        staging.mkdir(parents=True, exist_ok=True)
        for i, src in enumerate(sources):
            if src.name in done and src.url == done[src.name]["url"]:
                continue
            _log(f"[{i + 1}/{len(sources)}] {src.url}")
            archive = workdir / src.name
            res = fetch(src.url, archive, sha256=src.sha256, retries=retries, timeout=timeout,
                        session=session, progress=progress, backoff=backoff)
            entries = _install(src, archive, staging)
            done[src.name] = {"url": src.url, "size": res.size, "sha256": res.sha256,
                              "files": entries}
            write_json(done_path, done)  # after the files are in place: a record means done
            if not keep_archives:
                archive.unlink(missing_ok=True)
        if not (staging / "data.csv").is_file():
            raise DownloadError(f"download-night: no data.csv after extracting {url}; "
                                f"staging folder kept at {staging}")
        files = sorted((e for rec in done.values() for e in rec["files"]), key=lambda e: e["path"])
        manifest = {
            "format": "lipsim-night-download/1", "mode": mode, "url": url,
            "archives": {k: {kk: v[kk] for kk in ("url", "size", "sha256")} for k, v in done.items()},
            "files": files, "n_files": len(files), "bytes": sum(e["size"] for e in files),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_json(staging / MANIFEST_NAME, manifest)  # written last: marks completeness
        replace_dir(staging, out)
        done_path.unlink(missing_ok=True)
        _cleanup_workdir(workdir, keep_archives or not own_workdir)
        _log(f"complete: {len(files)} files, {manifest['bytes'] / 1e6:.1f} MB in {out}")
        return out
    finally:
        session.close()


def _cleanup_workdir(workdir: Path, keep: bool) -> None:
    """Remove the default workdir once it is empty (only empty folders: never rmtree)."""
    if keep or not workdir.is_dir():
        return
    for d in sorted((p for p in workdir.rglob("*") if p.is_dir()), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()
    if not any(workdir.iterdir()):
        workdir.rmdir()


def _repair(out: Path, sources: list[_Source], workdir: Path, session, *, retries, timeout,
            keep_archives, check_sha256, backoff, progress, own_workdir) -> Path:
    """A rerun over a complete folder: verify; re-fetch only the archives of failing files."""
    manifest, problems = verify_manifest(out, check_sha256=check_sha256)
    if not problems:
        _log(f"{out} is complete ({manifest['n_files']} files verified against {MANIFEST_NAME}); "
             "nothing to download")
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
        kind = ("file" if name == "data.csv" else "zip" if name == "nights.zip"
                else name.split("/")[0])
        src = by_name.get(name)
        src = _Source(name, rec["url"], kind, src.sha256 if src else None)
        archive = workdir / src.name
        res = fetch(src.url, archive, sha256=src.sha256, retries=retries, timeout=timeout,
                    session=session, progress=progress, backoff=backoff)
        # Extract next to `out` and move the files in one by one (each move is atomic).
        tmp = out.parent / f".{out.name}.repair"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            entries = _install(src, archive, tmp)
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
        raise DownloadError("download-night: files still fail verification after re-fetching:\n  "
                            + "\n  ".join(f"{out / rel}: {what}" for rel, what in still[:20]))
    _cleanup_workdir(workdir, keep_archives or not own_workdir)
    _log(f"repaired {out}")
    return out


