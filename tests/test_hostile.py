"""Hostile inputs and faults (issue 12): each test is one item of the issue's list, run against
the loopback server (tests/loopback_server.py) or on crafted files. Every expected failure
must end in one clear error naming the URL / file, with nothing that looks complete."""

from __future__ import annotations

import io
import os
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from loopback_server import LoopbackServer

from lipsim.__main__ import main as lipsim_main
from lipsim.data.download import DownloadError, download_night, fetch
from lipsim.data.extract import ExtractError, safe_extract
from lipsim.data.synthetic import make_night

FAST = dict(backoff=0.001, progress=False, timeout=10)


@pytest.fixture
def server():
    with LoopbackServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_night(tmp_path_factory.mktemp("hostile") / "night", seed=3, n_train=4, n_val=2,
                      n_test=4, image_size=8)


def _zip(entries, compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def _night_zip(demo: Path) -> bytes:
    return _zip([(f"nights/{p.relative_to(demo).as_posix()}", p.read_bytes())
                 for p in sorted(demo.rglob("*")) if p.is_file()])


def _cli(args: list[str], capsys) -> tuple[int, str]:
    rc = lipsim_main(args)
    err = capsys.readouterr().err
    return rc, err


# --------------------------------------------------------------------------- 1. short bodies
def test_short_body_is_never_accepted_even_on_a_rerun(server, tmp_path):
    data = os.urandom(300_000)
    server.files["/f.bin"] = data
    server.behave("/f.bin", truncate_to=100_000)  # sends 100 kB of 300, then says "416 */100k"
    dest = tmp_path / "f.bin"
    for _ in range(2):  # the rerun finds the .part: the server's 416 must not certify it
        with pytest.raises(DownloadError, match="/f.bin"):
            fetch(server.url + "/f.bin", dest, retries=2, **FAST)
        assert not dest.exists()


def test_short_zip_in_zip_mode_is_one_error_line_on_every_run(server, demo, tmp_path, capsys):
    data = _night_zip(demo)
    server.files["/nights.zip"] = data
    server.behave("/nights.zip", truncate_to=len(data) // 2)
    out = tmp_path / "night"
    args = ["download-night", "--mode", "zip", "--url", server.url + "/nights.zip", "--out",
            str(out), "--retries", "1", "--no-progress"]
    for _ in range(2):
        rc, err = _cli(args, capsys)
        assert rc == 1 and "Traceback" not in err and "/nights.zip" in err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and errors[0].startswith("lipsim download-night: error:")
        assert not out.exists()
        assert not list(tmp_path.rglob("nights.zip"))  # never under its final name


def test_short_data_csv_in_chunked_mode_is_not_recorded(server, demo, tmp_path):
    server.files["/data.csv"] = (demo / "data.csv").read_bytes()
    server.behave("/data.csv", truncate_to=50)
    out = tmp_path / "night"
    for _ in range(2):
        with pytest.raises(DownloadError, match="data.csv"):
            download_night(out, mode="chunked", url=server.url, chunks=1, retries=1, **FAST)
        assert not out.exists() and not (tmp_path / ".night.staging" / "data.csv").exists()


# --------------------------------------------------------------------------- 2. trickling server
def test_trickling_server_is_given_up_on(server, tmp_path):
    server.files["/slow.bin"] = os.urandom(100_000)
    server.behave("/slow.bin", trickle=(1, 0.05))  # 20 bytes/s, forever
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="too slow.*bytes/s"):
        fetch(server.url + "/slow.bin", tmp_path / "slow.bin", retries=1, min_rate=1000,
              stall_time=0.5, **FAST)
    assert time.monotonic() - t0 < 10  # 2 attempts of 0.5 s, not 100 000 x 0.05 s
    assert not (tmp_path / "slow.bin").exists()


def test_stall_rule_is_a_cli_option(server, demo, tmp_path, capsys):
    server.files["/nights.zip"] = _night_zip(demo)
    server.behave("/nights.zip", trickle=(1, 0.05))
    out = tmp_path / "night"
    rc, err = _cli(["download-night", "--url", server.url + "/nights.zip", "--out", str(out),
                    "--retries", "0", "--min-rate", "1000", "--stall-time", "0.5",
                    "--no-progress"], capsys)
    assert rc == 1 and "too slow" in err and "Traceback" not in err and not out.exists()


# --------------------------------------------------------------------------- 3. HTML pages
_PAGE = b"<!DOCTYPE html>\n<html><body>Sorry, the dataset has moved.</body></html>\n"


@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", "application/octet-stream"])
def test_html_page_is_not_taken_for_data_csv(server, tmp_path, ctype):
    server.files["/data.csv"] = _PAGE
    server.behave("/data.csv", content_type=ctype)
    out = tmp_path / "night"
    with pytest.raises(DownloadError, match=r"/data.csv.*HTML page"):
        download_night(out, mode="chunked", url=server.url, chunks=1, **FAST)
    assert not out.exists() and not list(tmp_path.rglob("data.csv"))


def test_html_page_is_not_taken_for_the_zip(server, tmp_path, capsys):
    server.files["/nights.zip"] = _PAGE
    out = tmp_path / "night"
    rc, err = _cli(["download-night", "--url", server.url + "/nights.zip", "--out", str(out),
                    "--no-progress"], capsys)
    assert rc == 1 and "HTML page" in err and "/nights.zip" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.rglob("nights.zip"))


def test_csv_without_night_header_is_refused(server, tmp_path):
    server.files["/data.csv"] = b"a,b\n1,2\n"
    with pytest.raises(DownloadError, match="not NIGHT's data.csv"):
        download_night(tmp_path / "n", mode="chunked", url=server.url, chunks=1, **FAST)


# --------------------------------------------------------------------------- 9. permanent errors
def test_redirect_loop_fails_at_once(server, tmp_path):
    server.files["/loop"] = b"x"
    server.behave("/loop", redirect_to="/loop")
    with pytest.raises(DownloadError, match=r"/loop.*redirect loop"):
        fetch(server.url + "/loop", tmp_path / "f", **FAST)
    assert server.count("/loop") <= 31  # one attempt (requests follows 30 redirects)


def test_416_loop_fails_at_once(server, tmp_path):
    server.files["/f.bin"] = os.urandom(200_000)
    server.behave("/f.bin", range_416=True, always_drop_after=50_000)
    with pytest.raises(DownloadError, match=r"/f.bin.*416.*contradicts itself"):
        fetch(server.url + "/f.bin", tmp_path / "f.bin", **FAST)
    assert server.count("/f.bin") <= 4  # full, 416, full again, 416: no retry budget burnt


@pytest.mark.parametrize("status", [401, 403, 410, 451])
def test_permanent_4xx_fails_at_once_with_url_and_status(server, tmp_path, status):
    server.files["/f.bin"] = b"x"
    server.behave("/f.bin", fail_status=[status] * 5)
    with pytest.raises(DownloadError, match=rf"/f.bin: HTTP {status}"):
        fetch(server.url + "/f.bin", tmp_path / "f.bin", **FAST)
    assert server.count("/f.bin") == 1


def test_bad_url_fails_at_once(tmp_path):
    with pytest.raises(DownloadError, match="bad URL"):
        fetch("htp://127.0.0.1/x", tmp_path / "x", **FAST)
