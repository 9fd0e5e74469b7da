"""Resumable, verified HTTP transfer of one file (`fetch`), and the rules every download of the
package shares: how long to retry (`Retry`), which request errors are worth a retry
(`transient`), and when a slow answer counts as stalled (`RateWatch`).

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
  permanent: one DownloadError naming the URL, at once; so is a full local disk (NoSpaceError
  naming the .part);
- everything is streamed in fixed-size chunks: memory does not grow with the file size.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3

from lipsim.atomic import NoSpaceError, no_space, write_json
from lipsim.checksum import sha256_file
from lipsim.configcheck import FromSchema, with_schema_defaults
from lipsim.data.content import KINDS, check_content, is_html_type
from lipsim.errors import LipSimError
from lipsim.progress import progress_bar

__all__ = [
    "CHUNK",
    "MIN_RATE",
    "REQUEST_ERRORS",
    "RETRIES",
    "RETRY_STATUS",
    "STALL_TIME",
    "TIMEOUT",
    "DownloadError",
    "FetchResult",
    "RateWatch",
    "Retry",
    "Session",
    "Stalled",
    "fetch",
    "get",
    "read_body",
    "read_timeout",
    "transient",
]

# The pipeline's defaults (workflow/schemas/config.schema.yaml, night.download) are the library's.
RETRIES = FromSchema("night.download.retries")
TIMEOUT = FromSchema("night.download.timeout")
# Stall rule: an attempt averaging under MIN_RATE bytes/s over STALL_TIME s is dropped.
MIN_RATE = FromSchema("night.download.min_rate")
STALL_TIME = FromSchema("night.download.stall_time")
CHUNK = 1 << 20  # 1 MiB: streaming buffer for network, hashing and extraction
# Transient answers (retried with backoff); any other 4xx is permanent and fails at once.
RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
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


# --------------------------------------------------------------------------- shared rules
class Retry:
    """The retry budget: `retries` consecutive attempts without progress, each one after an
    exponential backoff with jitter (no thundering herd). Progress resets the count."""

    @with_schema_defaults
    def __init__(
        self,
        retries: int = RETRIES,
        *,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.retries, self.sleep = retries, sleep
        self.backoff, self.max_backoff = backoff, max_backoff
        self.failures = 0  # consecutive attempts without progress
        self.last = "no attempt made"  # why the last attempt failed

    def failed(self, why: str) -> None:
        self.failures += 1
        self.last = why

    def progressed(self, why: str | None = None) -> None:
        self.failures = 0
        self.last = why or self.last

    @property
    def exhausted(self) -> bool:
        return self.failures > self.retries

    def wait(self) -> None:
        """Sleep before the next attempt (not before the first, nor after progress)."""
        if self.failures:
            delay = min(self.max_backoff, self.backoff * 2 ** (self.failures - 1))
            self.sleep(delay * (0.75 + 0.5 * random.random()))


# What a request can raise; `transient` sorts them into retried and permanent.
REQUEST_ERRORS = (requests.RequestException, urllib3.exceptions.HTTPError, OSError)


def transient(exc: BaseException, url: str) -> str:
    """Why an attempt failed, for a request error worth retrying (connection, timeout, cut
    body); raises DownloadError at once for a redirect loop or a bad URL."""
    if isinstance(exc, requests.TooManyRedirects):
        raise DownloadError(f"download failed: {url}: redirect loop ({exc})") from exc
    if isinstance(
        exc,
        (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ),
    ):
        raise DownloadError(f"download failed: {url}: bad URL ({exc})") from exc
    return f"{type(exc).__name__}: {exc}"


class Stalled(Exception):
    """An attempt fell below the minimum transfer rate (not an error of its own: retried)."""


class RateWatch:
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
                raise Stalled(
                    f"transfer too slow: {self.bytes} bytes in "
                    f"{now - self.start:.1f} s, "
                    f"below the minimum of {self.min_rate:g} bytes/s "
                    f"(--min-rate / --stall-time)"
                )
            self.start, self.bytes = now, 0


MAX_REDIRECTS = 30  # as requests


class Session(requests.Session):
    """requests' session, leaving redirects to `get`: requests reads a redirect's body whole
    before it follows (even with allow_redirects=False), beyond the stall rule's reach."""

    def resolve_redirects(self, resp, req, **kwargs):
        return iter(())


def get(session: requests.Session, url: str, *, headers: dict, timeouts) -> requests.Response:
    """A streamed GET that follows redirects itself, never reading their bodies (with a
    `Session`); more than MAX_REDIRECTS hops is a redirect loop (TooManyRedirects)."""
    for _ in range(MAX_REDIRECTS + 1):
        resp = session.get(
            url, headers=headers, stream=True, timeout=timeouts, allow_redirects=False
        )
        if not (resp.is_redirect and resp.headers.get("Location")):
            return resp
        url = urljoin(resp.url, resp.headers["Location"])
        resp.close()
    raise requests.TooManyRedirects(f"Exceeded {MAX_REDIRECTS} redirects.")


def read_timeout(timeout: float, min_rate: float, stall_time: float) -> float:
    """A read that waits longer than the stall window has stalled anyway."""
    return min(timeout, stall_time) if min_rate > 0 else timeout


def read_body(resp, limit: int, rate: RateWatch) -> bytes:
    """Up to `limit` bytes of a (small) body, under the stall rule: a page served at a
    trickle raises Stalled like a file would."""
    out = bytearray()
    while len(out) < limit and (block := resp.raw.read1(min(CHUNK, limit - len(out)))):
        out += block
        rate.add(len(block))
    return bytes(out)


# --------------------------------------------------------------------------- fetch
class _Again(Exception):
    """This attempt failed in a way worth retrying; `why` is shown if the budget runs out.
    `count`: whether it spends the retry budget (a sha256 restart does not)."""

    def __init__(self, why: str, *, count: bool = True):
        super().__init__(why)
        self.why, self.count = why, count


@dataclasses.dataclass
class _Transfer:
    """One file's transfer across attempts: the .part, what the server said about the file."""

    url: str
    dest: Path
    expect: str | None
    sha256: str | None
    total: int | None = None  # full size of the remote file, once known
    validator: str | None = None  # ETag / Last-Modified (If-Range)
    contradictions: int = 0  # restarts from 0 because the server contradicted itself
    sha_restarts: int = 0
    attempts: int = 0  # HTTP requests made
    received: int = 0  # body bytes received
    best: int = 0  # the largest the .part has been: growing past it is progress
    bar: Any = None

    @property
    def part(self) -> Path:
        return self.dest.with_name(self.dest.name + ".part")

    @property
    def sidecar(self) -> Path:
        return self.dest.with_name(self.dest.name + ".part.json")

    def have(self) -> int:
        try:
            return self.part.stat().st_size
        except FileNotFoundError:
            return 0

    def discard(self) -> None:
        self.part.unlink(missing_ok=True)
        self.sidecar.unlink(missing_ok=True)
        self.total = self.validator = None

    def restart(self, why: str) -> None:
        """Start over from byte 0, once; a second contradiction is permanent."""
        if self.contradictions >= 1:
            raise DownloadError(
                f"download failed: {self.url}: {why}, again after a restart from 0; "
                "the server contradicts itself about the file"
            )
        self.contradictions += 1
        self.discard()

    def tally(self, retry: Retry, why: str, min_gain: float = 1) -> None:
        """Count an attempt that ended with `why`: progress if the .part grew past its best
        by at least `min_gain` bytes, a failure otherwise."""
        have = self.have()
        if have - self.best >= max(min_gain, 1):
            self.best = have
            retry.progressed(why)
        else:
            self.best = max(self.best, have)
            retry.failed(why)

    def gave_up(self, retry: Retry) -> DownloadError:
        have = self.have()
        size = f"{have} of {self.total} bytes" if self.total is not None else f"{have} bytes"
        return DownloadError(
            f"download failed: {self.url}: {retry.last} ({size} in {self.part}, "
            f"{retry.failures} attempt(s) in a row without progress; rerun to resume)"
        )


@with_schema_defaults
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
    with `expect` (a kind of lipsim.data.content.KINDS), its content is what it must be (an
    HTML page never is). An attempt whose average rate stays below `min_rate` bytes/s for
    `stall_time` seconds is abandoned (curl's --speed-limit / --speed-time; 0 disables it).

    Raises DownloadError after `retries` consecutive attempts without progress, at once on a
    4xx answer (other than 408/429), a redirect loop, a bad URL, content that is not what
    `expect` says, a server that contradicts itself twice about the file's size, or a sha256
    mismatch of a complete file that a second full download confirms. On error nothing is at
    `dest`; the `.part` is kept for a later resume unless its content is known to be wrong.
    """
    if expect is not None and expect not in KINDS:
        raise ValueError(f"fetch: expect must be one of {sorted(KINDS)}, got {expect!r}")
    tr = _Transfer(url, Path(dest), expect, sha256.lower() if sha256 else None)
    tr.dest.parent.mkdir(parents=True, exist_ok=True)
    resumed_from = tr.best = tr.have()
    if resumed_from:
        # What an earlier run was told about the bytes in .part (size, ETag): without it a 416
        # "the file has exactly the .part's size" cannot be told from a truncated .part.
        known = _read_sidecar(tr.sidecar, url)
        tr.total, tr.validator = known.get("total"), known.get("validator")
    retry = Retry(retries, backoff=backoff, max_backoff=max_backoff, sleep=sleep)
    own_session = session is None
    session = session or Session()
    timeouts = (timeout, read_timeout(timeout, min_rate, stall_time))
    try:
        while True:
            if retry.exhausted:
                raise tr.gave_up(retry)
            retry.wait()
            try:
                rate = RateWatch(min_rate, stall_time)
                _attempt(tr, session, timeouts, rate, chunk_size, progress)
                size, digest = _verify(tr)
                return FetchResult(tr.dest, size, digest, tr.attempts, tr.received, resumed_from)
            except _Again as again:
                if again.count:
                    tr.tally(retry, again.why)
                else:
                    retry.last = again.why
            except Stalled as exc:
                # A trickle must not pass for progress: only a window's worth at the minimum
                # rate resets the retry budget.
                tr.tally(retry, str(exc), min_gain=min_rate * stall_time)
    finally:
        if tr.bar is not None:
            tr.bar.close()
        if own_session:
            session.close()


def _attempt(tr: _Transfer, session, timeouts, rate: RateWatch, chunk: int, progress: bool):
    """Request phase: ask for the bytes the .part lacks, check the answer, stream the body."""
    offset = tr.have()
    headers = {"Accept-Encoding": "identity"}  # sizes must be those of the raw bytes
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if tr.validator:
            headers["If-Range"] = tr.validator
    tr.attempts += 1
    try:
        with get(session, tr.url, headers=headers, timeouts=timeouts) as resp:
            mode = _answer(tr, resp, offset)
            if mode is not None:
                _start_bar(tr, progress, 0 if mode == "wb" else offset)
                _stream(tr, resp, mode, rate, chunk)
    except NoSpaceError:
        raise  # the local disk, not the network: retrying cannot help
    except REQUEST_ERRORS as exc:
        raise _Again(transient(exc, tr.url)) from exc


def _answer(tr: _Transfer, resp, offset: int) -> str | None:
    """Status/range phase: how the body extends the .part ("ab" append, "wb" rewrite from
    byte 0), None when a 416 says the .part is the whole file; _Again / DownloadError else."""
    status = resp.status_code
    if status in RETRY_STATUS:
        raise _Again(f"HTTP {status} {resp.reason}")
    if status == 416 and offset:
        _check_416(tr, resp, offset)
        return None
    if status not in (200, 206):
        # 4xx, and anything that is not a body (204, a 3xx without Location): permanent;
        # writing it as the file would make a wrong "complete" file.
        raise DownloadError(f"download failed: {tr.url}: HTTP {status} {resp.reason}")
    crange = resp.headers.get("Content-Range", "")
    m = _CONTENT_RANGE.match(crange)
    range_total = int(m.group(3)) if m and m.group(3) != "*" else None
    if status == 206 and offset:
        if (m is None or int(m.group(1)) != offset) or (
            tr.total is not None and range_total not in (None, tr.total)
        ):
            # Not the bytes we asked for, or the file changed size: start over.
            tr.restart(
                f"the server answered Content-Range {crange!r} to bytes={offset}-"
                + (f" after announcing {tr.total} bytes" if tr.total else "")
            )
            raise _Again("unexpected Content-Range; restarted from 0")
        tr.total = range_total if range_total is not None else tr.total
        mode = "ab"
    else:
        # 200 (or 206 for a request without Range): the whole file from 0. A server that
        # ignored Range (or an If-Range that says the file changed) means rewriting from 0.
        length = resp.headers.get("Content-Length")
        tr.total = int(length) if length and length.isdigit() else None
        if status == 206 and range_total is not None:
            tr.total = range_total
        mode = "wb"
    if tr.expect is not None and is_html_type(resp.headers.get("Content-Type", "")):
        raise DownloadError(
            f"download failed: {tr.url}: HTTP {status} answered with an HTML page "
            f"(Content-Type {resp.headers['Content-Type'].split(';')[0].strip()}), "
            f"not {KINDS[tr.expect]}"
        )
    encoding = resp.headers.get("Content-Encoding", "identity").lower()
    if encoding not in ("", "identity"):
        raise DownloadError(
            f"download failed: {tr.url}: the server sent Content-Encoding {encoding!r} "
            "despite Accept-Encoding: identity; cannot resume it"
        )
    tr.validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
    write_json(tr.sidecar, {"url": tr.url, "total": tr.total, "validator": tr.validator})
    return mode


def _check_416(tr: _Transfer, resp, offset: int) -> None:
    """Range not satisfiable: the .part is as long as (or longer than) the file. Complete only
    if that is the size announced for these bytes; otherwise start over."""
    m = re.match(r"bytes\s+\*/(\d+)", resp.headers.get("Content-Range", ""))
    remote = int(m.group(1)) if m else None
    if remote != offset or tr.total != offset:
        tr.restart(
            f"HTTP 416 for bytes={offset}-: the server says the file has {remote} bytes"
            + (f" but announced {tr.total}" if tr.total is not None else "")
        )
        raise _Again(f"HTTP 416 for bytes={offset}-; restarted from 0")


def _start_bar(tr: _Transfer, progress: bool, offset: int) -> None:
    if tr.bar is None:
        tr.bar = progress_bar(
            tr.total, tr.dest.name, "B", enabled=progress, initial=offset, unit_scale=True
        )
    else:
        tr.bar.reset(tr.total)
        tr.bar.update(offset)


def _stream(tr: _Transfer, resp, mode: str, rate: RateWatch, chunk: int) -> None:
    """Stream phase: the body into the .part, under the stall rule."""
    try:
        with open(tr.part, mode, buffering=chunk) as fh:
            # read1 hands over whatever arrived (up to chunk): bytes received before a dropped
            # connection are kept, so a resume re-fetches only what never arrived
            # (iter_content would drop a partial block).
            while block := resp.raw.read1(chunk):
                fh.write(block)
                tr.received += len(block)
                tr.bar.update(len(block))
                rate.add(len(block))
    except OSError as exc:
        if (full := no_space(exc, tr.part)) is not None:
            raise full from exc
        raise


def _verify(tr: _Transfer) -> tuple[int, str]:
    """Verify phase: size, content and sha256 of the .part; on success it becomes `dest`."""
    have = tr.have()
    if tr.total is None:
        tr.total = have  # no size announced: the body ending cleanly is all we can go by
    if have < tr.total:
        raise _Again(f"connection closed early: {have} of {tr.total} bytes")
    if have > tr.total:
        tr.restart(f"received {have} bytes, more than the announced {tr.total}")
        raise _Again(f"received {have} bytes, more than announced; restarted from 0")
    if tr.expect is not None and (why := check_content(tr.part, tr.expect)) is not None:
        tr.discard()
        raise DownloadError(f"download failed: {tr.url}: {why}; not kept")
    digest = sha256_file(tr.part)
    if tr.sha256 and digest != tr.sha256:
        tr.discard()
        if tr.sha_restarts >= 1:
            raise DownloadError(
                f"download failed: {tr.url}: sha256 {digest} != expected {tr.sha256} on two "
                "complete downloads (wrong --sha256, or the file changed on the server)"
            )
        tr.sha_restarts += 1
        raise _Again(f"sha256 mismatch ({digest}); downloading again from 0", count=False)
    try:
        with open(tr.part, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tr.part, tr.dest)
    except OSError as exc:
        if (full := no_space(exc, tr.dest)) is not None:
            raise full from exc
        raise
    tr.sidecar.unlink(missing_ok=True)
    return have, digest


def _read_sidecar(sidecar: Path, url: str) -> dict:
    try:
        known = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) and known.get("url") == url else {}
