"""Google Drive downloads by file id, through Drive's confirmation page, with the project's
resumable downloader (lipsim.data.download.fetch).

Drive answers `DRIVE_DOWNLOAD_URL?id=ID&export=download` for a large file with an HTML page
("can't scan this file for viruses") instead of the file: a form whose hidden inputs (id,
export, confirm, uuid) make the real download URL, or (older pages) a link carrying
`confirm=`. `confirmed_url` reads that page; `fetch_drive` then streams the file with `fetch`
(resume from `.part`, retries, size from Content-Length, sha256 when given). A rerun resumes
the `.part` through a freshly confirmed URL.
"""

from __future__ import annotations

import html
import random
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlencode, urljoin

import requests

from lipsim.data.download import _RETRY_STATUS, DownloadError, FetchResult, fetch

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


def confirmed_url(
    url: str,
    *,
    session: requests.Session | None = None,
    timeout: float = 60.0,
    retries: int = 8,
    backoff: float = 1.0,
) -> str:
    """The URL that serves the file: `url` itself when Drive sends the file, else the target of
    its confirmation page. Connection errors and 5xx answers are retried (`retries` times)."""
    own = session is None
    session = session or requests.Session()
    last = ""
    try:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(min(60.0, backoff * 2 ** (attempt - 1)) * (0.75 + 0.5 * random.random()))
            try:
                with session.get(
                    url, stream=True, timeout=timeout, headers={"Accept-Encoding": "identity"}
                ) as resp:
                    if resp.status_code in _RETRY_STATUS:
                        last = f"HTTP {resp.status_code} {resp.reason}"
                        continue
                    if resp.status_code >= 400:
                        raise DownloadError(
                            f"download failed: {url}: HTTP {resp.status_code} {resp.reason}"
                        )
                    if "text/html" not in resp.headers.get("Content-Type", "").lower():
                        return resp.url  # the file itself (small files skip the page)
                    page = resp.raw.read(_PAGE_LIMIT).decode(resp.encoding or "utf-8", "replace")
                    return _from_page(page, resp.url, url)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}: {exc}"
        raise DownloadError(f"download failed: {url}: {last} ({retries + 1} attempts)")
    finally:
        if own:
            session.close()


def fetch_drive(
    file_id: str,
    dest: str | Path,
    *,
    base: str = DRIVE_DOWNLOAD_URL,
    sha256: str | None = None,
    retries: int = 8,
    timeout: float = 60.0,
    backoff: float = 1.0,
    progress: bool = True,
    expect: str | None = "torch",
) -> FetchResult:
    """Download Drive file `file_id` to `dest` (resumable via `dest.part`, verified).

    Raises DownloadError naming the URL when the page offers no download, the transfer fails
    for good, the sha256 differs, or what arrived is not what `expect` says (fetch's content
    check, before the file gets its final name: an HTML page never passes for a checkpoint).
    """
    url = drive_url(file_id, base)
    with requests.Session() as session:
        target = confirmed_url(
            url, session=session, timeout=timeout, retries=retries, backoff=backoff
        )
        res = fetch(
            target,
            dest,
            sha256=sha256,
            retries=retries,
            timeout=timeout,
            session=session,
            progress=progress,
            backoff=backoff,
            expect=expect,
        )
    return res
