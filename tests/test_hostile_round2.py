"""Hostile inputs, round 2 (issues 19 and 23): each section is one item of the issues' lists,
against the loopback server (tests/loopback_server.py), crafted files, a file-size limit or a
small tmpfs. Each test builds the class of inputs, not one case: every variant must end in
one clear error naming the file / URL / key / row, with nothing that looks complete left."""

from __future__ import annotations

import errno
import hashlib
import io
import math
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import FAST, certify_options, options, train_options
from loopback_server import LoopbackServer

import lipsim
from lipsim.__main__ import _written_file
from lipsim.__main__ import main as lipsim_main
from lipsim.atomic import NoSpaceError, torch_save, write_parquet
from lipsim.configcheck import (
    SCHEMA_PATH,
    ConfigError,
    file_number,
    schema_default,
    validate_config,
)
from lipsim.data.bapps import download_bapps, make_bapps
from lipsim.data.download import DownloadError, download_night
from lipsim.data.extract import ExtractError, check_archive, safe_extract
from lipsim.data.gdrive import fetch_drive
from lipsim.data.synthetic import make_night
from lipsim.models import build_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    return make_night(
        tmp_path_factory.mktemp("night") / "night",
        seed=3,
        n_train=8,
        n_val=2,
        n_test=8,
        image_size=32,
    )


@pytest.fixture(scope="module")
def bapps(tmp_path_factory) -> Path:
    return make_bapps(tmp_path_factory.mktemp("bapps") / "bapps", n_per_category=1, image_size=8)


def _cli(args: list[str], capsys) -> tuple[int, str]:
    """The command in this process: an unexpected exception propagates out of main() (and
    fails the test); an expected one is the returned code and stderr's `error:` line."""
    rc = lipsim_main(args)
    return rc, capsys.readouterr().err


def _download_bapps(url: str, out: Path, capsys, *extra: str) -> tuple[int, str]:
    """`lipsim download-bapps` of `url` (no checksum) into `out`: (exit code, stderr)."""
    args = ["download-bapps", "--url", url, "--sha256", "", "--out", str(out), "--no-progress"]
    return _cli([*args, *extra], capsys)


def _errors(text: str) -> list[str]:
    """The command's error lines (the loopback server's threads may log resets as well)."""
    return [line for line in text.splitlines() if line.startswith("lipsim ") and "error:" in line]


def _tar_gz(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _folder_tar_gz(folder: Path) -> bytes:
    return _tar_gz(
        {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    )


def _zip(entries: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- 1. HTML pages
_PAGES = {
    "doctype": b"<!doctype html><html><body>The dataset has moved.</body></html>\n",
    "bom": b"\xef\xbb\xbf<!DOCTYPE html>\n<title>Error</title>",
    "upper-indented": b"\n   <HTML><HEAD><TITLE>403 Forbidden</TITLE></HEAD></HTML>",
    "head": b"<head><meta http-equiv='refresh' content='0; url=/login'></head>",
    "plain-text": b"Access denied.\n",
}


@pytest.mark.network  # the loopback server
@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", "application/gzip", None])
@pytest.mark.parametrize("page", list(_PAGES))
def test_a_page_never_gets_the_archive_name(server, tmp_path, capsys, page, ctype):
    server.files["/twoafc_val.tar.gz"] = _PAGES[page]
    server.behave("/twoafc_val.tar.gz", content_type=ctype)
    url = server.url + "/twoafc_val.tar.gz"
    out = tmp_path / "bapps"
    for _ in range(2):  # a rerun must not find a complete-looking file either
        rc, err = _download_bapps(url, out, capsys, "--retries", "0")
        assert rc == 1
        (line,) = _errors(err)
        assert line.startswith(f"lipsim download-bapps: error: download failed: {url}: "), err
        assert not out.exists()
        assert not _files(tmp_path), "the page was kept under some name"


def _refused_archives(bapps: Path) -> dict[str, bytes]:
    good = _folder_tar_gz(bapps)
    flipped = bytearray(_tar_gz({"val/cnn/ref/000000.png": os.urandom(200_000)}))
    flipped[len(flipped) // 2] ^= 0xFF  # the first header still reads; the stream is corrupt
    return {
        "not-bapps": _tar_gz({"readme.txt": b"no categories here\n"}),
        "unsafe-member": _tar_gz({"val/../../evil.txt": b"x"}),
        "corrupt-stream": bytes(flipped),
        "bad-layout": _tar_gz({n: d for n, d in _tar_members(good).items() if "/p1/" not in n}),
    }


def _tar_members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}


@pytest.mark.network  # the loopback server
@pytest.mark.parametrize("case", ["not-bapps", "unsafe-member", "corrupt-stream", "bad-layout"])
def test_an_archive_refused_after_the_download_is_not_kept(server, bapps, tmp_path, capsys, case):
    server.files["/twoafc_val.tar.gz"] = _refused_archives(bapps)[case]
    url = server.url + "/twoafc_val.tar.gz"
    out = tmp_path / "bapps"
    rc, err = _download_bapps(url, out, capsys)
    assert rc == 1
    (line,) = _errors(err)
    assert "twoafc_val.tar.gz" in line and "a rerun downloads it again" in line, line
    assert not out.exists() and not _files(tmp_path)


@pytest.mark.network  # the loopback server
def test_a_refused_night_zip_is_not_kept(server, tmp_path, capsys):
    server.files["/nights.zip"] = _zip({"nights/data.csv": b"id\n", "nights/../evil": b"x"})
    out = tmp_path / "night"
    rc, err = _cli(
        ["download-night", "--url", server.url + "/nights.zip", "--out", str(out), "--no-progress"],
        capsys,
    )
    assert rc == 1 and "path traversal" in err
    assert not out.exists() and not list(tmp_path.rglob("nights.zip*"))


# --------------------------------------------------------------------------- 2. judge files
def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=arr.dtype == object)
    return buf.getvalue()


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, p=np.array([0.5], dtype=np.float32))
    return buf.getvalue()


_JUDGES = {
    "unicode": (_npy(np.array(["0.5"])), "dtype <U3"),
    "bytes": (_npy(np.array([b"0.5"])), "dtype |S3"),
    "structured": (
        _npy(np.array([(0.5, 3)], dtype=[("p", "<f4"), ("n", "<i4")])),
        "dtype [('p', '<f4'), ('n', '<i4')]",
    ),
    "complex": (_npy(np.array([0.5 + 1j])), "dtype complex128"),
    "bool": (_npy(np.array([True])), "dtype bool"),
    "datetime": (_npy(np.array(["2020-01-01"], dtype="datetime64[D]")), "dtype datetime64[D]"),
    "object": (_npy(np.array([0.5], dtype=object)), "cannot read judge file"),
    "npz": (_npz(), "NpzFile"),
}


def _with_bad_judge(bapps: Path, dest: Path, kind: str) -> Path:
    shutil.copytree(bapps, dest)
    judge = dest / "val" / "cnn" / "judge" / "000000.npy"
    judge.write_bytes(_JUDGES[kind][0])
    return judge


@pytest.mark.parametrize("kind", list(_JUDGES))
def test_judge_files_of_the_wrong_kind_are_named(bapps, tmp_path, capsys, kind):
    judge = _with_bad_judge(bapps, tmp_path / "b", kind)
    what = _JUDGES[kind][1]
    rc, err = _cli(["check-bapps", "--root", str(tmp_path / "b"), "--no-decode"], capsys)
    assert rc == 1
    assert any(str(judge) in ln and what in ln for ln in err.splitlines()), err
    rc, err = _cli(
        [
            "evaluate-bapps",
            "--metric",
            "l2",
            "--image-size",
            "8",
            "--device",
            "cpu",
            "--bapps",
            str(tmp_path / "b"),
            "--out",
            str(tmp_path / "e.parquet"),
        ],
        capsys,
    )
    assert rc == 1
    (line,) = _errors(err)
    assert line.startswith("lipsim evaluate-bapps: error: BAPPS:") and str(judge) in line, err
    assert what in line and not (tmp_path / "e.parquet").exists()


@pytest.mark.network  # the loopback server
@pytest.mark.parametrize("kind", ["unicode", "structured"])
def test_download_refuses_judge_files_of_the_wrong_kind(bapps, tmp_path, capsys, kind):
    judge = _with_bad_judge(bapps, tmp_path / "b", kind)
    with LoopbackServer({"/twoafc_val.tar.gz": _folder_tar_gz(tmp_path / "b")}) as srv:
        out = tmp_path / "out"
        rc, err = _download_bapps(srv.url + "/twoafc_val.tar.gz", out, capsys)
    assert rc == 1
    (line,) = _errors(err)  # the layout error, its problems on the lines below it
    assert line.startswith("lipsim download-bapps: error: BAPPS:")
    problem = next(ln for ln in err.splitlines() if "/judge/" in ln)
    assert judge.relative_to(tmp_path / "b").as_posix() in problem
    assert _JUDGES[kind][1] in problem and not out.exists()


# --------------------------------------------------------------------------- 3. Drive fetch
_CONFIRM = (
    '<!DOCTYPE html><html><head><title>Virus scan warning</title></head><body><form action="{to}">'
    '<input type="hidden" name="id" value="abc"><input type="hidden" name="confirm" value="t">'
    "</form></body></html>"
)


def _page(to: str) -> bytes:
    return _CONFIRM.format(to=to).encode()


@pytest.mark.network  # the loopback server
@pytest.mark.parametrize("loop", ["endpoint", "two-hop", "confirmed-url"])
def test_a_drive_redirect_loop_is_one_error(tmp_path, capsys, loop):
    with LoopbackServer({"/download": b"x", "/hop": b"x", "/file": b"x"}) as srv:
        if loop == "endpoint":
            srv.behave("/download", redirect_to="/download")
        elif loop == "two-hop":
            srv.behave("/download", redirect_to="/hop")
            srv.behave("/hop", redirect_to="/download")
        else:  # the page is fine; the URL it confirms loops
            srv.files["/download"] = _page(f"{srv.url}/file")
            srv.behave("/download", content_type="text/html; charset=utf-8")
            srv.behave("/file", redirect_to="/file")
        out = tmp_path / "ckpt.pth"
        rc, err = _cli(
            [
                "fetch-released",
                "--id",
                "abc",
                "--url",
                srv.url + "/download",
                "--out",
                str(out),
                "--retries",
                "3",
                "--no-progress",
            ],
            capsys,
        )
        requests_made = len(srv.requests)
    assert rc == 1
    (line,) = _errors(err)
    assert line.startswith("lipsim fetch-released: error: download failed: http://127.0.0.1")
    assert "redirect loop" in line
    assert requests_made <= 2 * 31  # at once: the retry budget is not spent on a loop
    assert not _files(tmp_path)


@pytest.mark.network  # the loopback server
@pytest.mark.parametrize("slow", ["confirmation-page", "file"])
def test_a_trickling_drive_answer_is_given_up_on(tmp_path, slow):
    payload = io.BytesIO()
    torch.save({"w": torch.zeros(10_000)}, payload)
    with LoopbackServer({"/download": b"", "/file": payload.getvalue()}) as srv:
        srv.files["/download"] = _page(f"{srv.url}/file")
        srv.behave("/download", content_type="text/html; charset=utf-8")
        if slow == "confirmation-page":
            srv.behave("/download", content_type="text/html; charset=utf-8", trickle=(1, 0.05))
        else:
            srv.behave("/file", trickle=(1, 0.05))
        t0 = time.monotonic()
        with pytest.raises(DownloadError, match=r"download failed: http://.*too slow"):
            fetch_drive(
                "abc",
                tmp_path / "ckpt.pth",
                base=srv.url + "/download",
                retries=1,
                min_rate=1000,
                stall_time=0.5,
                **FAST,
            )
    assert time.monotonic() - t0 < 15  # two attempts of 0.5 s (plus the page), not forever
    assert not (tmp_path / "ckpt.pth").exists()


class _SlowRedirectServer(LoopbackServer):
    """/download answers 302 to /file with a long body sent at a trickle (never read whole)."""

    def _handler_class(self):
        base = super()._handler_class()

        class Handler(base):
            def do_GET(self):
                if self.path.split("?")[0] != "/download":
                    return super().do_GET()
                self.send_response(302)
                self.send_header("Location", "/file")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                try:
                    for _ in range(100000):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.05)
                except OSError:  # the client went on without reading it: as it should
                    pass

        return Handler


@pytest.mark.network  # the loopback server
def test_a_redirect_with_a_trickling_body_is_followed_without_reading_it(tmp_path):
    payload = io.BytesIO()
    torch.save({"w": torch.zeros(1000)}, payload)
    with _SlowRedirectServer({"/download": b"", "/file": payload.getvalue()}) as srv:
        t0 = time.monotonic()
        res = fetch_drive("abc", tmp_path / "ckpt.pth", base=srv.url + "/download", **FAST)
    assert time.monotonic() - t0 < 10 and res.path.read_bytes() == payload.getvalue()


# --------------------------------------------------------------------------- 4. full disks
_FULL = re.compile(
    r"^lipsim (?P<step>[\w-]+): error: (no space left on device|disk quota exceeded|"
    r"file too large for the file-size limit) writing (?P<path>\S+) \("
)


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


def _limited(limit: int):
    def set_limit():
        resource.setrlimit(
            resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1])
        )

    return set_limit


def _run(args: list[str], *, fsize: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lipsim", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
        preexec_fn=_limited(fsize) if fsize else None,
    )


def _tmpfs_available() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt 2>/dev/null"],
        capture_output=True,
    )
    return probe.returncode == 0


def _run_on_tmpfs(args: list[str], mount: Path, size: str = "4k") -> subprocess.CompletedProcess:
    """`python -m lipsim ARGS` with `mount` a tmpfs of `size` (a private mount namespace)."""
    cmd = " ".join(["exec", sys.executable, "-m", "lipsim", *args])
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size={size} tmpfs {mount} && {cmd}"],
        capture_output=True,
        text=True,
        timeout=300,
        env=_env(),
    )


def _assert_full(proc, step: str, under: Path) -> Path:
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    (line,) = _errors(proc.stderr)
    m = _FULL.match(line)
    assert m and m["step"] == step, line
    path = Path(m["path"])
    assert path.is_relative_to(under), line
    return path


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "pretrained.pt"
    torch.manual_seed(0)
    save_checkpoint(
        path, build_model("tiny", 32, 16, conv_depth=1), stage="pretrained", teacher="demo"
    )
    return path


def _certify(ckpt: Path, night: Path, out: Path) -> list[str]:
    return ["certify", *certify_options(ckpt, night, out, metrics=("cosine", "ball"))]


@pytest.mark.slow  # two certify runs in fresh interpreters
def test_certify_on_a_full_disk_names_the_file_and_a_rerun_succeeds(init_ckpt, night, tmp_path):
    out = tmp_path / "certify" / "pretrained.parquet"
    proc = _run(_certify(init_ckpt, night, out), fsize=2048)
    assert _assert_full(proc, "certify", tmp_path) == out
    assert not out.exists() and not list(out.parent.glob(".*.tmp"))  # nothing half-written
    assert _run(_certify(init_ckpt, night, out)).returncode == 0 and out.is_file()


@pytest.mark.slow  # a certify run in a fresh interpreter
@pytest.mark.skipif(not _tmpfs_available(), reason="needs unshare -rm and a tmpfs mount")
def test_certify_on_a_full_tmpfs_names_the_file(init_ckpt, night, tmp_path):
    (tmp_path / "full").mkdir()
    out = tmp_path / "full" / "pretrained.parquet"
    proc = _run_on_tmpfs(_certify(init_ckpt, night, out), tmp_path / "full")
    assert "no space left on device" in proc.stderr
    assert _assert_full(proc, "certify", tmp_path / "full") == out


def _finetune(init: Path, night: Path, out: Path, workdir: Path, *extra: str) -> list[str]:
    return [
        "finetune",
        "--init",
        str(init),
        "--night",
        str(night),
        *options(
            margin=0.5, min_votes=1, metric="ball", loss_reduction="mean", optimizer_state="fresh"
        ),
        *train_options(),
        "--no-progress",
        "--workdir",
        str(workdir),
        "--out",
        str(out),
        *extra,
    ]


@pytest.mark.slow  # training runs in fresh interpreters
@pytest.mark.parametrize("full", ["work-folder", "metrics-log"])
def test_finetune_on_a_full_disk_names_the_file(init_ckpt, night, tmp_path, full):
    out, work = tmp_path / "m.pt", tmp_path / "work"
    if full == "work-folder":  # the first big write: a resume checkpoint
        args = _finetune(init_ckpt, night, out, work, "--epochs", "1", "--ckpt-every", "1")
        limit = 4096
    else:  # the metrics log grows line by line (a plain append, not an atomic write)
        args = _finetune(init_ckpt, night, out, work, "--epochs", "40", "--ckpt-every", "1000")
        args += ["--metrics", str(tmp_path / "metrics.csv")]
        limit = 1024
    path = _assert_full(_run(args, fsize=limit), "finetune", tmp_path)
    if full == "work-folder":
        assert path.parent == work and path.name.startswith("resume-")
    else:
        assert path == tmp_path / "metrics.csv"
    assert not out.exists()
    rerun = _run(args)
    assert rerun.returncode == 0 and out.is_file(), rerun.stderr[-2000:]


@pytest.mark.slow  # a training run in a fresh interpreter
@pytest.mark.skipif(not _tmpfs_available(), reason="needs unshare -rm and a tmpfs mount")
def test_finetune_with_a_full_output_folder_names_the_checkpoint(init_ckpt, night, tmp_path):
    (tmp_path / "full").mkdir()
    out = tmp_path / "full" / "m.pt"
    args = _finetune(init_ckpt, night, out, tmp_path / "work", "--epochs", "1")
    args += ["--ckpt-every", "1000"]
    proc = _run_on_tmpfs(args, tmp_path / "full", size="8k")
    assert _assert_full(proc, "finetune", tmp_path / "full") == out


@pytest.mark.network  # the loopback server
def test_download_on_a_full_disk_names_the_part_and_resumes(night, tmp_path):
    data = _zip(
        {f"nights/{p.relative_to(night).as_posix()}": p.read_bytes() for p in _files(night)}
    )
    out = tmp_path / "night"
    with LoopbackServer({"/nights.zip": data}) as srv:
        args = ["download-night", "--url", srv.url + "/nights.zip", "--out", str(out)]
        proc = _run([*args, "--retries", "0", "--no-progress"], fsize=len(data) // 3)
        part = _assert_full(proc, "download-night", tmp_path)
        assert part.name == "nights.zip.part" and not out.exists()
        assert srv.count("/nights.zip") == 1  # a full disk is not retried
        rerun = _run([*args, "--no-progress"])
        assert rerun.returncode == 0, rerun.stderr
        assert srv.requests[-1][1] is not None  # resumed from the .part, not from 0
    assert (out / "data.csv").read_bytes() == (night / "data.csv").read_bytes()


@pytest.mark.slow  # a fresh interpreter writing a folder of PNGs
def test_a_generator_on_a_full_disk_names_the_file(tmp_path):
    out = tmp_path / "night"
    args = ["make-demo-night", "--out", str(out), "--seed", "0"]
    proc = _run(args, fsize=300)
    _assert_full(proc, "make-demo-night", tmp_path)
    assert not out.exists()
    assert _run(args).returncode == 0 and (out / "data.csv").is_file()


def _file_limit(limit: int):
    """A context in which files of this process may not grow past `limit` bytes (EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    class _Limit:
        def __enter__(self):
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))

        def __exit__(self, *exc):
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    return _Limit()


@pytest.mark.parametrize(
    "writer",
    [
        lambda p: torch_save(p, {"w": torch.zeros(50_000)}),
        lambda p: write_parquet(p, __import__("pandas").DataFrame({"x": np.arange(50_000)})),
        lambda p: save_checkpoint(p, build_model("tiny", 32, 16), stage="pretrained", teacher="d"),
    ],
    ids=["torch_save", "parquet", "checkpoint"],
)
def test_every_atomic_writer_names_the_file_and_keeps_the_old_one(tmp_path, writer):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with _file_limit(4096), pytest.raises(NoSpaceError) as info:
        writer(path)
    assert info.value.errno == errno.EFBIG and str(path) in str(info.value)
    assert path.read_bytes() == b"old" and _files(tmp_path) == [path]


def test_a_plain_write_is_named_by_the_file_it_was_writing(tmp_path):
    log = tmp_path / "metrics.csv"
    with _file_limit(100):
        try:
            with open(log, "a", encoding="utf-8") as fh:
                for _ in range(100):
                    fh.write("step,loss\n")
                    fh.flush()
        except OSError as exc:
            caught = exc
    assert caught.errno == errno.EFBIG and caught.filename is None
    assert _written_file(caught) == str(log)


# --------------------------------------------------------------------------- 5. config values
_BAD_CONFIGS = [
    ({"evaluation": {"splits": []}}, "evaluation.splits"),
    ({"retrieval": {"k": []}}, "retrieval.k"),
    ({"retrieval": {"eps": []}}, "retrieval.eps"),
    ({"certify": {"eps_255": []}}, "certify.eps_255"),
    ({"results_dir": ""}, "results_dir"),
    ({"results_dir": "  "}, "results_dir"),
    ({"attacks": {"pgd_linf_eps_255": [300]}}, "attacks.pgd_linf_eps_255"),
    ({"attacks": {"autoattack_linf_eps_255": [4, 255.5]}}, "attacks.autoattack_linf_eps_255"),
    ({"margins": [1e300, 0.5]}, "margins"),
    ({"margins": [1e-5, 0.5]}, "margins"),
    ({"margins": [0.1234567, 0.5]}, "margins"),
    ({"margins": [math.nan, 0.5]}, "margins"),
    ({"margins": [math.inf, 0.5]}, "margins"),
    ({"attacks": {"pgd_l2_eps": [1e6]}}, "attacks.pgd_l2_eps"),
    ({"attacks": {"pgd_l2_eps": [math.nan]}}, "attacks.pgd_l2_eps"),
    ({"attacks": {"autoattack_l2_eps": [math.inf]}}, "attacks.autoattack_l2_eps"),
    ({"attacks": {"fig3a_eps": 1e-7}}, "attacks.fig3a_eps"),
    ({"certify": {"eps_255": [36, 36.0]}}, "certify.eps_255"),
    ({"certify": {"eps_255": [1e7]}}, "certify.eps_255"),
    ({"retrieval": {"eps": [0, 2.0000001]}}, "retrieval.eps"),
    ({"distances": {"eps": math.nan}}, "distances.eps"),
    ({"finetune": {"lr": math.inf}}, "finetune.lr"),
    ({"teacher_settings": {"demo": {"distill": {"lr": math.nan}}}}, "teacher_settings.demo"),
]


@pytest.mark.parametrize(("over", "key"), _BAD_CONFIGS, ids=[k for _, k in _BAD_CONFIGS])
def test_config_values_that_cannot_work_are_named(over, key):
    with pytest.raises(ConfigError) as info:
        validate_config(dict(over), SCHEMA_PATH)
    lines = str(info.value).splitlines()[1:]
    assert lines and all(ln.startswith("  ") for ln in lines)
    assert any(ln.strip().startswith(key) for ln in lines), str(info.value)


@pytest.mark.parametrize("x", [0.5, 2, 0.25, 36, 108, 0.0001, 999999, 0.123456, 4.0])
def test_numbers_that_pass_round_trip_through_file_names(x):
    cfg = validate_config({"margins": [x], "primary_margin": x}, SCHEMA_PATH)
    name = file_number(cfg["margins"][0])
    assert re.fullmatch(r"\d+(\.\d+)?", name) and float(name) == float(x)


def _snakemake_n(tmp_path: Path, *config: str, flags: tuple = ()) -> subprocess.CompletedProcess:
    shutil.copytree(ROOT / "config", tmp_path / "config", dirs_exist_ok=True)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile")]
    cmd += ["-d", str(tmp_path), "-n", *flags, "--cores", "1", "--config", *config]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=_env())


def test_a_dry_run_names_a_missing_night_path(tmp_path):
    proc = _snakemake_n(tmp_path, 'night={"source": "path", "path": "/nonexistent/night"}')
    said = proc.stdout + proc.stderr  # snakemake prints its errors on either
    assert proc.returncode != 0 and "MissingInputException" not in said
    assert "  night.path = '/nonexistent/night' does not exist: provide a NIGHT folder" in said


@pytest.mark.slow  # a snakemake dry run each
@pytest.mark.parametrize(
    ("config", "key"),
    [
        (['night={"source": "path", "path": "/nonexistent/night"}'], "night.path"),
        (["pretrained_checkpoint=/nonexistent/pretrained.pt"], "pretrained_checkpoint"),
        # (without the check, snakemake silently plans a finetune instead of the import)
        (['finetuned_checkpoints={"0.5": "/nonexistent/m.pt"}'], "finetuned_checkpoints.0.5"),
        (["margins=[1e-5,0.5]"], "margins"),
        (['attacks={"pgd_l2_eps": [1e6]}'], "attacks.pgd_l2_eps"),
    ],
    ids=["night.path", "pretrained", "finetuned", "margins", "pgd_l2_eps"],
)
def test_a_dry_run_names_the_key_before_planning(tmp_path, config, key):
    proc = _snakemake_n(tmp_path, *config)
    assert proc.returncode != 0
    assert "MissingInputException" not in proc.stderr + proc.stdout
    said = proc.stdout + proc.stderr  # snakemake prints its errors on either
    assert re.search(rf"^\s+{re.escape(key)}[: =]", said, flags=re.M), said[-3000:]


@pytest.mark.slow  # a snakemake dry run
def test_the_member_limit_reaches_the_download_rule(tmp_path):
    config = 'night={"source": "download", "download": {"max_members": 1234}}'
    proc = _snakemake_n(tmp_path, config, flags=("-p",))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--max-members 1234" in " ".join(proc.stdout.split())


# --------------------------------------------------------------------------- 6. NaN inputs
@pytest.fixture(scope="module")
def metric():
    return lipsim.load("tiny", pretrained=False)


def _with_nan(n: int, rows: list[int], dtype=torch.float32) -> torch.Tensor:
    x = torch.rand(n, 3, 32, 32, dtype=dtype)
    for r in rows:
        x[r, r % 3, (7 * r) % 32, (5 * r) % 32] = float("nan")
    return x


@pytest.mark.parametrize(
    ("n", "rows", "named"),
    [(1, [0], "row 0"), (5, [3], "row 3"), (6, [5], "row 5"), (6, [1, 4], "rows 1, 4")],
)
@pytest.mark.parametrize("call", ["distance-a", "distance-b", "embed", "ref", "x0", "x1"])
def test_nan_in_any_row_is_refused_naming_it(metric, n, rows, named, call):
    clean, bad = torch.rand(n, 3, 32, 32), _with_nan(n, rows)
    calls = {
        "distance-a": (lambda: metric(bad, clean), "a"),
        "distance-b": (lambda: metric(clean, bad), "b"),
        "embed": (lambda: metric.embed(bad), "x"),
        "ref": (lambda: metric.certified_radius(bad, clean, clean), "ref"),
        "x0": (lambda: metric.certified_radius(clean, bad, clean), "x0"),
        "x1": (lambda: metric.certified_radius(clean, clean, bad), "x1"),
    }
    fn, name = calls[call]
    with pytest.raises(ValueError, match=rf"^{name}: {named} holds? NaN"):
        fn()


def test_nan_is_refused_in_float64_resized_and_gradient_inputs(metric):
    with pytest.raises(ValueError, match="row 2 holds NaN"):
        metric.embed(_with_nan(3, [2], torch.float64))
    with pytest.raises(ValueError, match="row 1 holds NaN"):
        metric(torch.rand(2, 3, 48, 48), _with_nan(2, [1]).repeat(1, 1, 2, 2)[:, :, :48, :48])
    x = _with_nan(2, [0]).requires_grad_(True)
    with pytest.raises(ValueError, match="row 0 holds NaN"):
        metric(x, torch.rand(2, 3, 32, 32))
    inf = torch.rand(4, 3, 32, 32)
    inf[2, 0, 0, 0] = float("-inf")
    with pytest.raises(ValueError, match=r"row 2; LipSim takes images in \[0, 1\]$"):
        metric(inf, torch.rand(4, 3, 32, 32))


# --------------------------------------------------------------------------- 7. short bodies
class _NoLengthServer(LoopbackServer):
    """Serves `cut` paths the way an HTTP/1.0-style server does: no Content-Length, the body
    cut after `cut[path]` bytes, then the connection closed (the client sees a clean end)."""

    def __init__(self, files, cut: dict[str, int]):
        super().__init__(files)
        self.cut = cut

    def _handler_class(self):
        server, base = self, super()._handler_class()

        class Handler(base):
            def do_GET(self):
                path = self.path.split("?")[0]
                if path not in server.cut:
                    return super().do_GET()
                server.requests.append((path, self.headers.get("Range"), 200))
                self.send_response(200)
                self.send_header("Content-Type", "text/csv")
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(server.files[path][: server.cut[path]])
                self.close_connection = True

        return Handler


def _chunks(night: Path) -> dict[str, bytes]:
    files = {"/data.csv": (night / "data.csv").read_bytes()}
    for kind in ("ref", "distort"):
        files[f"/{kind}/000.zip"] = _zip(
            {p.relative_to(night / kind).as_posix(): p.read_bytes() for p in _files(night / kind)}
        )
    return files


@pytest.mark.network  # the loopback server
@pytest.mark.parametrize("cut", ["mid-row", "mid-quoted-field", "after-header"])
def test_a_data_csv_cut_short_without_a_length_is_refused(night, tmp_path, cut):
    files = _chunks(night)
    text = files["/data.csv"]
    lines = text.split(b"\n")
    middle = len(text) // 2
    row = text.index(b"\n", middle) + 1  # the start of a row in the middle
    if cut == "mid-row":  # in its ref_path: fields are missing
        at = row + text[row:].index(b"ref/") + 3
    elif cut == "mid-quoted-field":  # a prompt with a comma, quoted, cut inside the quotes
        end = text.index(b"\n", row)
        prompt = text[row:end].rsplit(b",", 1)[1]
        quoted = text[:row] + text[row:end].replace(prompt, b'"' + prompt + b', indoors"')
        files["/data.csv"] = text = quoted + text[end:]
        at = text.index(b', indoors"')
    else:  # the header and part of the first row
        at = len(lines[0]) + 1 + 5
    with _NoLengthServer(files, {"/data.csv": at}) as srv:
        with pytest.raises(DownloadError, match=r"/data.csv: not .*NIGHT.*data.csv"):
            download_night(tmp_path / "night", mode="chunked", url=srv.url, chunks=1, **FAST)
    assert not (tmp_path / "night").exists() and not list(tmp_path.rglob("data.csv*"))


def _recorded(tmp_path: Path) -> dict:
    import json

    return json.loads((tmp_path / ".night.download" / "progress.json").read_text())


@pytest.mark.network  # the loopback server
@pytest.mark.parametrize(
    "short",
    [
        {"truncate_to": 100},
        {"extra_length": 50},
        {"always_drop_after": 100, "ignore_range": True},
    ],
    ids=["truncated", "announces-more", "drops-every-time"],
)
def test_staging_holds_only_recorded_complete_files(night, tmp_path, short):
    files = _chunks(night)
    with LoopbackServer(files) as srv:
        srv.behave("/distort/000.zip", **short)
        out = tmp_path / "night"
        with pytest.raises(DownloadError, match="distort/000.zip"):
            download_night(out, mode="chunked", url=srv.url, chunks=1, retries=1, **FAST)
        staging = tmp_path / ".night.staging"
        recorded = {e["path"]: e for rec in _recorded(tmp_path).values() for e in rec["files"]}
        on_disk = {p.relative_to(staging).as_posix(): p for p in _files(staging)}
        assert set(on_disk) == set(recorded)  # nothing there that no record vouches for
        for rel, p in on_disk.items():
            assert hashlib.sha256(p.read_bytes()).hexdigest() == recorded[rel]["sha256"]
        # A staged file damaged between runs is not trusted: the rerun fetches it again; a
        # file no record vouches for (an interrupted extraction's) does not survive.
        (staging / "data.csv").write_bytes((staging / "data.csv").read_bytes()[:40])
        (staging / "distort" / "000").mkdir(parents=True, exist_ok=True)
        (staging / "distort" / "000" / "000_0.png").write_bytes(b"half a png")
        srv.behave("/distort/000.zip")
        download_night(out, mode="chunked", url=srv.url, chunks=1, retries=1, **FAST)
        assert srv.count("/data.csv") == 2
    assert [p.relative_to(out) for p in _files(out)] == sorted(
        [p.relative_to(night) for p in _files(night)] + [Path(".night-complete.json")]
    )
    for p in _files(night):
        assert (out / p.relative_to(night)).read_bytes() == p.read_bytes()


# --------------------------------------------------------------------------- 8. member counts
def _lying_zip(members: int, declared: int) -> bytes:
    data = bytearray(_zip({f"d/{i:05d}.png": b"" for i in range(members)}))
    pos = data.rfind(b"PK\x05\x06")
    struct.pack_into("<HH", data, pos + 8, declared, declared)  # entries: this disk, total
    return bytes(data)


@pytest.mark.parametrize(
    ("kind", "archive"),
    [
        ("zip", lambda n: _zip({f"d/{i:05d}": b"" for i in range(n)})),
        ("zip-lying-count", lambda n: _lying_zip(n, 1)),
        ("zip-folders", lambda n: _zip({f"d{i:05d}/": b"" for i in range(n)})),
        ("tar.gz", lambda n: _tar_gz({f"d/{i:05d}": b"" for i in range(n)})),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_archives_over_the_member_limit_are_refused_before_extracting(tmp_path, kind, archive):
    path = tmp_path / f"a.{kind.split('-')[0]}"
    path.write_bytes(archive(101))
    with pytest.raises(ExtractError, match=rf"{path}: .* members, over the limit of 100"):
        safe_extract(path, tmp_path / "out", max_members=100)
    assert not (tmp_path / "out").exists() and _files(tmp_path) == [path]
    assert len(safe_extract(path, tmp_path / "out", max_members=101)) == (
        0 if kind == "zip-folders" else 101
    )


@pytest.mark.network  # the loopback server
@pytest.mark.parametrize("names", ["refs-only", "junk"])
def test_a_bapps_archive_with_the_wrong_file_list_is_refused_before_extracting(
    tmp_path, capsys, names
):
    """issue 23: under the member limit, a BAPPS-style tar of thousands of small members is
    refused from its file list, before any file is written (the problems name archive paths,
    not extracted files)."""
    if names == "refs-only":
        entries = {f"val/cnn/ref/{i:06d}.png": b"" for i in range(3000)}
    else:
        entries = {f"val/x{i % 7}/{i:06d}.png": b"" for i in range(3000)}
    with LoopbackServer({"/twoafc_val.tar.gz": _tar_gz(entries)}) as srv:
        url = srv.url + "/twoafc_val.tar.gz"
        out = tmp_path / "bapps"
        rc, err = _download_bapps(url, out, capsys)
    assert rc == 1
    (line,) = _errors(err)
    assert "does not hold the BAPPS 2AFC layout" in line and "a rerun downloads it again" in line
    first = err.splitlines()[err.splitlines().index(line) + 1].strip()
    assert first == (
        "cnn/p0/000000.png: missing (ref/000000.png exists)"
        if names == "refs-only"
        else "no file in <category>/{ref,p0,p1,judge}/ for any of traditional, cnn, superres, "
        "deblur, color, frameinterp"
    )
    assert not out.exists() and not _files(tmp_path)


@pytest.mark.slow  # writes a 70 000-member zip
def test_a_zip64_listing_is_refused_without_reading_it(tmp_path):
    import tracemalloc

    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(70_000):  # more than 65535: zip64 end records
            zf.writestr(f"d/{i}", b"")
    schema_default("night.download.max_ratio")  # the schema is read once, outside the window
    tracemalloc.start()
    try:
        with pytest.raises(ExtractError, match="declares 70000 members, over the limit of 1000"):
            check_archive(path, max_members=1000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # zipfile would hold 70 000 entries (tens of MB) before any check


@pytest.mark.network  # the loopback server
def test_member_limit_in_both_downloads(night, bapps, tmp_path, capsys):
    nights = _zip(
        {f"nights/{p.relative_to(night).as_posix()}": p.read_bytes() for p in _files(night)}
    )
    tar = _folder_tar_gz(bapps)
    with LoopbackServer({"/nights.zip": nights, "/twoafc_val.tar.gz": tar}) as srv:
        out = tmp_path / "night"
        rc, err = _cli(
            [
                "download-night",
                "--url",
                srv.url + "/nights.zip",
                "--out",
                str(out),
                "--max-members",
                "10",
                "--no-progress",
            ],
            capsys,
        )
        assert rc == 1 and "over the limit of 10" in err
        assert not out.exists() and not list(tmp_path.rglob("nights.zip*"))
        with pytest.raises(ExtractError, match="over the limit of 10"):
            download_bapps(
                tmp_path / "bapps",
                url=srv.url + "/twoafc_val.tar.gz",
                sha256=None,
                progress=False,
                max_members=10,
            )
        assert not (tmp_path / "bapps").exists() and not list(tmp_path.rglob("twoafc_val*"))
