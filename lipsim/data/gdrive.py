"""Google Drive downloads by file id, through Drive's confirmation page, with the project's
resumable transfer (lipsim.data.transfer.fetch).

Drive answers `DRIVE_DOWNLOAD_URL?id=ID&export=download` for a large file with an HTML page
("can't scan this file for viruses") instead of the file: a form whose hidden inputs (id,
export, confirm, uuid) make the real download URL, or (older pages) a link carrying
`confirm=`. `confirmed_url` reads that page; `fetch_drive` then streams the file with `fetch`
(resume from `.part`, retries, size from Content-Length, sha256 when given). A rerun resumes
the `.part` through a freshly confirmed URL. Both requests follow the transfer's rules: the
same retry budget and backoff, redirect loops and bad URLs permanent, and the stall rule
(`min_rate` over `stall_time`) for the page as for the file.
"""

from __future__ import annotations

import html
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urljoin

import requests

from lipsim.configcheck import with_schema_defaults
from lipsim.data.transfer import (
    MIN_RATE,
    REQUEST_ERRORS,
    RETRY_STATUS,
    STALL_TIME,
    DownloadError,
    FetchResult,
    RateWatch,
    Retry,
    Session,
    Stalled,
    fetch,
    get,
    read_body,
    read_timeout,
    transient,
)

__all__ = ["DRIVE_DOWNLOAD_URL", "confirmed_url", "drive_url", "fetch_drive"]

DRIVE_DOWNLOAD_URL = "https://drive.usercontent.google.com/download"
_PAGE_LIMIT = 1 << 20  # a confirmation page is a few kB; never read a large body into memory


def drive_url(file_id: str, base: str = DRIVE_DOWNLOAD_URL) -> str:
    return f"{base}?{urlencode({'id': file_id, 'export': 'download'})}"


class _Page(HTMLParser):
    """Forms (action + inputs), links and the title of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.links: list[str] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append((a.get("action", ""), {}))
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1][1][a["name"]] = a.get("value", "")
        elif tag == "a" and "href" in a:
            self.links.append(a["href"])
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def _from_page(page: str, page_url: str, url: str) -> str:
    parsed = _Page()
    parsed.feed(page)
    for action, inputs in parsed.forms:
        if "confirm" in inputs or "uuid" in inputs:
            return urljoin(page_url, action) + "?" + urlencode(inputs)
    for href in parsed.links:
        if "confirm=" in href:
            return urljoin(page_url, html.unescape(href))
    title = " ".join(parsed.title.split()) or "no title"
    raise DownloadError(
        f"download failed: {url}: Google Drive answered with an HTML page "
        f"({title!r}) that offers no download: the file may be private, removed "
        "or over its download quota; try later, or download it in a browser"
    )


@with_schema_defaults
def confirmed_url(
    url: str,
    *,
    session: requests.Session | None = None,
    timeout: float = 60.0,
    retries: int = 8,
    backoff: float = 1.0,
    min_rate: float = MIN_RATE,
    stall_time: float = STALL_TIME,
) -> str:
    """The URL that serves the file: `url` itself when Drive sends the file, else the target of
    its confirmation page. Connection errors, 5xx answers and a page served slower than the
    stall rule are retried (`retries` consecutive failures); a redirect loop is permanent."""
    own = session is None
    session = session or Session()
    retry = Retry(retries, backoff=backoff)
    timeouts = (timeout, read_timeout(timeout, min_rate, stall_time))
    try:
        while not retry.exhausted:
            retry.wait()
            try:
                headers = {"Accept-Encoding": "identity"}
                with get(session, url, headers=headers, timeouts=timeouts) as resp:
                    if resp.status_code in RETRY_STATUS:
                        retry.failed(f"HTTP {resp.status_code} {resp.reason}")
                        continue
                    if resp.status_code >= 400:
                        raise DownloadError(
                            f"download failed: {url}: HTTP {resp.status_code} {resp.reason}"
                        )
                    if "text/html" not in resp.headers.get("Content-Type", "").lower():
                        return resp.url  # the file itself (small files skip the page)
                    body = read_body(resp, _PAGE_LIMIT, RateWatch(min_rate, stall_time))
                    page = body.decode(resp.encoding or "utf-8", "replace")
                    return _from_page(page, resp.url, url)
            except Stalled as exc:
                retry.failed(f"confirmation page: {exc}")
            except REQUEST_ERRORS as exc:
                retry.failed(transient(exc, url))
        raise DownloadError(
            f"download failed: {url}: {retry.last} ({retry.failures} attempts in a row)"
        )
    finally:
        if own:
            session.close()


@with_schema_defaults
def fetch_drive(
    file_id: str,
    dest: str | Path,
    *,
    base: str = DRIVE_DOWNLOAD_URL,
    sha256: str | None = None,
    retries: int = 8,
    timeout: float = 60.0,
    backoff: float = 1.0,
    min_rate: float = MIN_RATE,
    stall_time: float = STALL_TIME,
    progress: bool = True,
    expect: str | None = "torch",
) -> FetchResult:
    """Download Drive file `file_id` to `dest` (resumable via `dest.part`, verified).

    Raises DownloadError naming the URL when the page offers no download, the transfer fails
    for good, the sha256 differs, or what arrived is not what `expect` says (fetch's content
    check, before the file gets its final name: an HTML page never passes for a checkpoint).
    """
    url = drive_url(file_id, base)
    rules = dict(
        retries=retries, timeout=timeout, backoff=backoff, min_rate=min_rate, stall_time=stall_time
    )
    with Session() as session:
        target = confirmed_url(url, session=session, **rules)
        return fetch(
            target, dest, sha256=sha256, session=session, progress=progress, expect=expect, **rules
        )
