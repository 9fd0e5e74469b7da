"""A real HTTP server on 127.0.0.1 for download tests and benchmarks, misbehaving on command.

    with LoopbackServer({"/a.zip": b"...", "/big.zip": Path("big.zip")}) as srv:
        srv.behave("/a.zip", fail_status=[503, 503], drop_after=[1000])
        fetch(srv.url + "/a.zip", dest)
        srv.sent["/a.zip"]   # body bytes written for that path (all requests)

Files are served from bytes or streamed from a Path in 64 KiB blocks. Ranges (`bytes=N-`,
`bytes=N-M`), If-Range (with an ETag) and 416 are implemented as a real server does, unless a
behaviour says otherwise. Behaviours (per path, consumed request by request):
- fail_status: list of statuses answered (with an empty body) to the next requests;
- drop_after: list of byte counts: the next responses close the connection after that many
  body bytes (the headers announce the full length);
- ignore_range: answer 200 with the whole file even when a Range is asked;
- extra_length: announce this many bytes more than are sent, then close (a lying server);
- always_drop_after: close every response after that many bytes;
- truncate_to: the server holds only the first N bytes but announces the full length on a
  plain GET (sends N, closes) and answers ranges as if the file had N bytes (416 from N on);
- trickle: (bytes, seconds): send the body that many bytes at a time with a pause between;
- content_type: the Content-Type header (default application/octet-stream);
- redirect_to: answer 302 with this Location (a path on this server; itself = a loop);
- range_416: answer every Range request 416 with the full size (a server contradicting itself).
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import re
import socket
import threading
import time
from pathlib import Path

_BLOCK = 1 << 16


@dataclasses.dataclass
class Behaviour:
    fail_status: list[int] = dataclasses.field(default_factory=list)
    drop_after: list[int] = dataclasses.field(default_factory=list)
    ignore_range: bool = False
    extra_length: int = 0
    always_drop_after: int | None = None
    truncate_to: int | None = None
    trickle: tuple[int, float] | None = None
    content_type: str | None = None
    redirect_to: str | None = None
    range_416: bool = False


class LoopbackServer:
    def __init__(self, files: dict[str, bytes | Path] | None = None):
        self.files: dict[str, bytes | Path] = dict(files or {})
        self.behaviours: dict[str, Behaviour] = {}
        self.sent: dict[str, int] = {}  # body bytes written per path
        self.requests: list[tuple[str, str | None, int]] = []  # (path, Range header, status)
        self._lock = threading.Lock()
        self._etags: dict[str, str] = {}
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )  # short poll: fast shutdown in tests

    # ------------------------------------------------------------------ control
    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def behave(self, path: str, **kwargs) -> Behaviour:
        self.behaviours[path] = Behaviour(**kwargs)
        return self.behaviours[path]

    def total_sent(self) -> int:
        return sum(self.sent.values())

    def count(self, path: str) -> int:
        return sum(1 for p, _, _ in self.requests if p == path)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ serving
    def _etag(self, path: str) -> str:
        if path not in self._etags:
            data = self.files[path]
            key = data if isinstance(data, bytes) else f"{data}:{data.stat().st_mtime_ns}".encode()
            self._etags[path] = '"' + hashlib.sha1(key).hexdigest()[:16] + '"'
        return self._etags[path]

    def _handler_class(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as requests' Session expects

            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                beh = server.behaviours.get(path, Behaviour())
                with server._lock:
                    fail = beh.fail_status.pop(0) if beh.fail_status else None
                if path not in server.files:
                    return self._empty(path, rng, 404)
                if fail is not None:
                    return self._empty(path, rng, fail)
                if beh.redirect_to is not None:
                    server.requests.append((path, rng, 302))
                    self.send_response(302)
                    self.send_header("Location", beh.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = server.files[path]
                size = len(data) if isinstance(data, bytes) else data.stat().st_size
                if beh.range_416 and rng:
                    return self._416(path, rng, size)
                if beh.truncate_to is not None:
                    if rng:  # ranges as if the file had truncate_to bytes
                        size = beh.truncate_to
                    data = data[: beh.truncate_to]
                start, end, status = 0, size - 1, 200
                if_range = self.headers.get("If-Range")
                use_range = (
                    rng and not beh.ignore_range and (if_range in (None, server._etag(path)))
                )
                if use_range:
                    m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
                    if m:
                        start = int(m.group(1))
                        end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                        if start >= size:
                            return self._416(path, rng, size)
                        status = 206
                length = end - start + 1
                # Logged before answering: a client retrying at once must not be logged first.
                server.requests.append((path, rng, status))
                self.send_response(status)
                self.send_header("Content-Type", beh.content_type or "application/octet-stream")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", server._etag(path))
                self.send_header("Content-Length", str(length + beh.extra_length))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                self.end_headers()
                with server._lock:  # a drop is consumed by a response that has a body
                    drop = beh.drop_after.pop(0) if beh.drop_after else beh.always_drop_after
                limit = length if drop is None else min(length, drop)
                if beh.truncate_to is not None:
                    limit = min(limit, max(0, beh.truncate_to - start))
                self._body(path, data, start, limit, beh.trickle)
                if limit < length + beh.extra_length:
                    # Announced more than we send: close so the client sees a short body.
                    self.close_connection = True
                    try:
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

            def _416(self, path, rng, size):
                server.requests.append((path, rng, 416))
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _body(self, path, data, start, limit, trickle=None):
                pos, left = start, limit
                fh = None if isinstance(data, bytes) else open(data, "rb")
                try:
                    if fh is not None:
                        fh.seek(start)
                    while left > 0:
                        n = min(_BLOCK if trickle is None else trickle[0], left)
                        block = data[pos : pos + n] if fh is None else fh.read(n)
                        if not block:
                            break
                        try:
                            self.wfile.write(block)
                            if trickle is not None:
                                self.wfile.flush()
                                time.sleep(trickle[1])
                        except OSError:  # client went away
                            return
                        with server._lock:
                            server.sent[path] = server.sent.get(path, 0) + len(block)
                        pos += len(block)
                        left -= len(block)
                finally:
                    if fh is not None:
                        fh.close()

            def _empty(self, path, rng, status):
                server.requests.append((path, rng, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
