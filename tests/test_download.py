"""Downloader and safe extraction against a real (misbehaving) HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
from helpers import FAST

from lipsim.data.download import MANIFEST_NAME, DownloadError, download_night, fetch
from lipsim.data.extract import ExtractError, safe_extract
from lipsim.data.night import read_night, verify_night
from lipsim.data.synthetic import make_night

pytestmark = pytest.mark.network


@pytest.fixture(scope="module")
def payload() -> bytes:
    return os.urandom(1_500_000)


# --------------------------------------------------------------------------- fetch
def test_good_file(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    sha = hashlib.sha256(payload).hexdigest()
    res = fetch(server.url + "/f.bin", tmp_path / "f.bin", sha256=sha, **FAST)
    assert (tmp_path / "f.bin").read_bytes() == payload
    assert res.sha256 == sha and res.attempts == 1 and server.sent["/f.bin"] == len(payload)
    assert not (tmp_path / "f.bin.part").exists()


def test_dropped_connection_resumes_with_only_the_remainder(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    server.behave("/f.bin", drop_after=[600_000, 300_000])
    res = fetch(server.url + "/f.bin", tmp_path / "f.bin", **FAST)
    assert (tmp_path / "f.bin").read_bytes() == payload
    assert [r[1] for r in server.requests] == [None, "bytes=600000-", "bytes=900000-"]
    assert [r[2] for r in server.requests] == [200, 206, 206]
    assert server.sent["/f.bin"] == len(payload)  # nothing sent twice
    assert res.attempts == 3


def test_resume_from_part_left_by_an_earlier_run(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    (tmp_path / "f.bin.part").write_bytes(payload[:1_000_000])
    res = fetch(server.url + "/f.bin", tmp_path / "f.bin", **FAST)
    assert res.resumed_from == 1_000_000 and server.sent["/f.bin"] == len(payload) - 1_000_000
    assert (tmp_path / "f.bin").read_bytes() == payload


def test_503_then_ok_with_exponential_backoff(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    server.behave("/f.bin", fail_status=[503, 503, 502])
    delays = []
    fetch(
        server.url + "/f.bin", tmp_path / "f.bin", sleep=delays.append, **{**FAST, "backoff": 1.0}
    )
    assert (tmp_path / "f.bin").read_bytes() == payload
    assert [r[2] for r in server.requests] == [503, 503, 502, 200]
    assert len(delays) == 3 and delays[0] < delays[1] < delays[2]  # 1, 2, 4 s +- 25 % jitter


def test_server_ignoring_range_restarts_from_zero(server, payload, tmp_path):
    server.files["/f.bin"] = payload
    server.behave("/f.bin", drop_after=[500_000], ignore_range=True)
    fetch(server.url + "/f.bin", tmp_path / "f.bin", **FAST)
    assert (tmp_path / "f.bin").read_bytes() == payload
    assert [r[2] for r in server.requests] == [200, 200]  # asked for a range, got the whole file


def test_many_small_drops_still_complete(server, tmp_path):
    data = os.urandom(40_000)
    server.files["/f.bin"] = data
    server.behave("/f.bin", always_drop_after=5_000)
    fetch(server.url + "/f.bin", tmp_path / "f.bin", retries=2, **FAST)  # progress resets retries
    assert (tmp_path / "f.bin").read_bytes() == data and server.sent["/f.bin"] == len(data)


@pytest.mark.parametrize(
    "behaviour",
    [dict(extra_length=100), dict(always_drop_after=0)],
    ids=["content-length-lies", "closes-before-body"],
)
def test_truncated_file_gives_a_clear_error_and_nothing_final(server, payload, tmp_path, behaviour):
    server.files["/f.bin"] = payload
    server.behave("/f.bin", **behaviour)
    with pytest.raises(DownloadError) as err:
        fetch(server.url + "/f.bin", tmp_path / "f.bin", retries=3, **FAST)
    msg = str(err.value)
    # A lying Content-Length ends in a 416 loop (the server contradicts itself): refused at once.
    assert "/f.bin" in msg and (
        "attempt(s) in a row without progress" in msg or "contradicts itself" in msg
    )
    assert not (tmp_path / "f.bin").exists()
    assert len(server.requests) <= 10


def test_http_404_and_sha_mismatch(server, payload, tmp_path):
    with pytest.raises(DownloadError, match="HTTP 404"):
        fetch(server.url + "/nope", tmp_path / "nope", **FAST)
    assert len(server.requests) == 1
    server.files["/f.bin"] = payload
    with pytest.raises(DownloadError, match="sha256"):
        fetch(server.url + "/f.bin", tmp_path / "f.bin", sha256="0" * 64, **FAST)
    assert server.count("/f.bin") == 2  # one retry from scratch, then a clear error
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()


# --------------------------------------------------------------------------- extraction
def _zip(entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return buf.getvalue()


def _symlink_info(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize(
    "bad, reason",
    [
        ("../evil.txt", "'..'"),
        ("a/../../evil.txt", "'..'"),
        ("/etc/evil", "absolute"),
        ("C:/evil.txt", "absolute"),
        (None, "symbolic link"),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "drive", "symlink"],
)
def test_unsafe_zip_entries_are_rejected_before_extracting(tmp_path, bad, reason):
    bad_entry = (_symlink_info("ref/000/link.png"), b"/etc/passwd") if bad is None else (bad, b"x")
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip([("ref/000/000.png", b"fine"), bad_entry]))
    dest = tmp_path / "out"
    with pytest.raises(ExtractError, match=reason):
        safe_extract(archive, dest)
    assert not dest.exists() or not any(dest.rglob("*"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.zip"] + (
        ["out"] if dest.exists() else []
    )
    assert not (tmp_path / "evil.txt").exists()


def test_corrupt_zip_fails_integrity_test(tmp_path):
    raw = _zip([("a.txt", b"hello world payload " * 10)])
    archive = tmp_path / "a.zip"
    archive.write_bytes(raw.replace(b"hello world payload", b"hellO world payload", 1))
    with pytest.raises(ExtractError, match="integrity"):
        safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_extract_strips_wrapper_and_hashes(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip([("ref/000/000.png", b"abc"), ("ref/000/001.png", b"de")]))
    files = safe_extract(archive, tmp_path / "out", into="ref", strip="ref")
    assert sorted(f.path for f in files) == ["ref/000/000.png", "ref/000/001.png"]
    assert (tmp_path / "out" / "ref" / "000" / "001.png").read_bytes() == b"de"
    assert files[0].sha256 == hashlib.sha256(b"abc").hexdigest()


# --------------------------------------------------------------------------- NIGHT download
@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_night(
        tmp_path_factory.mktemp("dl") / "night", seed=2, n_train=6, n_val=2, n_test=4, image_size=8
    )


def _night_zip(demo: Path) -> bytes:
    return _zip(
        [
            (f"nights/{p.relative_to(demo).as_posix()}", p.read_bytes())
            for p in sorted(demo.rglob("*"))
            if p.is_file()
        ]
    )


def _chunks(demo: Path, n: int) -> dict[str, bytes]:
    """ref/000.zip .. and distort/000.zip ..: files dealt round-robin; chunk 0 keeps the
    leading ref/ (distort/) folder in its entry names, the others do not (both exist)."""
    files = {"/data.csv": (demo / "data.csv").read_bytes()}
    for kind in ("ref", "distort"):
        paths = sorted(p for p in (demo / kind).rglob("*") if p.is_file())
        for k in range(n):
            mine = paths[k::n]
            files[f"/{kind}/{k:03d}.zip"] = _zip(
                [
                    (
                        (p.relative_to(demo) if k == 0 else p.relative_to(demo / kind)).as_posix(),
                        p.read_bytes(),
                    )
                    for p in mine
                ]
            )
    return files


def test_download_night_zip_mode_and_rerun_does_not_download(server, demo, tmp_path):
    data = _night_zip(demo)
    server.files["/nights.zip"] = data
    server.behave("/nights.zip", drop_after=[len(data) // 2])
    out = tmp_path / "night"
    download_night(
        out,
        mode="zip",
        url=server.url + "/nights.zip",
        sha256=hashlib.sha256(data).hexdigest(),
        **FAST,
    )
    assert read_night(out).equals(
        read_night(demo).assign(
            **{
                c: read_night(demo)[c].str.replace(str(demo), str(out))
                for c in ("ref_path", "left_path", "right_path")
            }
        )
    )
    assert verify_night(out) == []
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["n_files"] == len([p for p in demo.rglob("*") if p.is_file()])
    assert server.sent["/nights.zip"] == len(data)  # resumed, nothing sent twice
    assert sorted(p.name for p in tmp_path.iterdir()) == ["night"]  # no staging / workdir left
    before = len(server.requests)
    download_night(out, mode="zip", url=server.url + "/nights.zip", **FAST)
    assert len(server.requests) == before


def test_download_night_chunked_and_repair(server, demo, tmp_path):
    server.files.update(_chunks(demo, 2))
    server.behave("/distort/001.zip", fail_status=[503])
    out = tmp_path / "night"
    download_night(out, mode="chunked", url=server.url, chunks=2, **FAST)
    assert verify_night(out) == [] and len(read_night(out)) == len(read_night(demo))
    assert {p for p, _, s in server.requests if s == 200} == {
        "/data.csv",
        "/ref/000.zip",
        "/ref/001.zip",
        "/distort/000.zip",
        "/distort/001.zip",
    }
    # Damage one file: the rerun re-fetches only the chunk that holds it.
    df = read_night(out)
    victim = Path(df["left_path"][0])
    victim.write_bytes(b"damaged")
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    source = next(e["source"] for e in manifest["files"] if out / e["path"] == victim)
    n = len(server.requests)
    download_night(out, mode="chunked", url=server.url, chunks=2, **FAST)
    assert [p for p, _, _ in server.requests[n:]] == [f"/{source}"]
    assert verify_night(out) == []


def test_download_night_rejects_unsafe_archive(server, demo, tmp_path):
    server.files["/nights.zip"] = _zip([("nights/data.csv", b"id\n"), ("../evil.txt", b"x")])
    out = tmp_path / "night"
    from lipsim.__main__ import main

    rc = main(
        [
            "download-night",
            "--mode",
            "zip",
            "--url",
            server.url + "/nights.zip",
            "--out",
            str(out),
            "--retries",
            "1",
            "--no-progress",
        ]
    )
    assert rc == 1
    assert not out.exists() and not (tmp_path / "evil.txt").exists()


def test_cli_chunked(server, demo, tmp_path, capsys):
    server.files.update(_chunks(demo, 1))
    from lipsim.__main__ import main

    out = tmp_path / "n"
    args = [
        "download-night",
        "--mode",
        "chunked",
        "--url",
        server.url,
        "--out",
        str(out),
        "--chunks",
        "1",
        "--retries",
        "2",
        "--timeout",
        "10",
        "--no-progress",
    ]
    assert main(args) == 0 and (out / "data.csv").is_file()
    assert main(args) == 0
    assert "nothing to download" in capsys.readouterr().err


def test_interrupted_download_resumes_across_runs(server, demo, tmp_path):
    chunks = _chunks(demo, 2)
    server.files.update({k: v for k, v in chunks.items() if k != "/distort/001.zip"})
    out = tmp_path / "night"
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_night(out, mode="chunked", url=server.url, chunks=2, **FAST)
    assert not out.exists()
    server.files["/distort/001.zip"] = chunks["/distort/001.zip"]
    n = len(server.requests)
    download_night(out, mode="chunked", url=server.url, chunks=2, **FAST)
    # Only the archive that was missing is fetched again (a retry of it under load is fine).
    assert {p for p, _, _ in server.requests[n:]} == {"/distort/001.zip"}
    assert verify_night(out) == []


def test_refuses_to_replace_a_foreign_folder(server, demo, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    with pytest.raises(DownloadError, match="not a completed download"):
        download_night(out, mode="chunked", url=server.url, chunks=1, **FAST)
    assert (out / "precious.txt").read_text() == "keep me" and not server.requests


def test_the_bar_in_a_log_is_whole_lines_in_bytes(server, payload, tmp_path, capsys):
    """The download bar is lipsim.progress's: in a log (not a terminal) every redraw is its
    own line, never a carriage-return pile-up, with sizes in binary units."""
    server.files["/f.bin"] = payload
    server.behave("/f.bin", drop_after=[500_000])  # a resume redraws from the .part's size
    fetch(server.url + "/f.bin", tmp_path / "f.bin", **{**FAST, "progress": True})
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("f.bin:")]
    assert lines and lines[-1].startswith("f.bin: 100%") and "1.43M/1.43M" in lines[-1], err
