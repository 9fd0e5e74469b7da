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
from helpers import FAST

from lipsim.__main__ import main as lipsim_main
from lipsim.data.download import DownloadError, download_night, fetch
from lipsim.data.extract import ExtractError, safe_extract
from lipsim.data.synthetic import make_night


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_night(
        tmp_path_factory.mktemp("hostile") / "night",
        seed=3,
        n_train=4,
        n_val=2,
        n_test=4,
        image_size=8,
    )


def _zip(entries, compression=zipfile.ZIP_STORED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return buf.getvalue()


def _night_zip(demo: Path) -> bytes:
    return _zip(
        [
            (f"nights/{p.relative_to(demo).as_posix()}", p.read_bytes())
            for p in sorted(demo.rglob("*"))
            if p.is_file()
        ]
    )


def _cli(args: list[str], capsys) -> tuple[int, str]:
    rc = lipsim_main(args)
    err = capsys.readouterr().err
    return rc, err


# --------------------------------------------------------------------------- 1. short bodies
@pytest.mark.network  # the loopback server
def test_short_body_is_never_accepted_even_on_a_rerun(server, tmp_path):
    data = os.urandom(300_000)
    server.files["/f.bin"] = data
    server.behave("/f.bin", truncate_to=100_000)  # sends 100 kB of 300, then says "416 */100k"
    dest = tmp_path / "f.bin"
    for _ in range(2):  # the rerun finds the .part: the server's 416 must not certify it
        with pytest.raises(DownloadError, match="/f.bin"):
            fetch(server.url + "/f.bin", dest, retries=1, **FAST)
        assert not dest.exists()


@pytest.mark.network  # the loopback server
def test_short_zip_in_zip_mode_is_one_error_line_on_every_run(server, demo, tmp_path, capsys):
    data = _night_zip(demo)
    server.files["/nights.zip"] = data
    server.behave("/nights.zip", truncate_to=len(data) // 2)
    out = tmp_path / "night"
    args = [
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
    for _ in range(2):
        rc, err = _cli(args, capsys)
        assert rc == 1 and "Traceback" not in err and "/nights.zip" in err
        errors = [line for line in err.splitlines() if "error:" in line]
        assert len(errors) == 1 and errors[0].startswith("lipsim download-night: error:")
        assert not out.exists()
        assert not list(tmp_path.rglob("nights.zip"))  # never under its final name


@pytest.mark.network  # the loopback server
def test_short_data_csv_in_chunked_mode_is_not_recorded(server, demo, tmp_path):
    server.files["/data.csv"] = (demo / "data.csv").read_bytes()
    server.behave("/data.csv", truncate_to=50)
    out = tmp_path / "night"
    for _ in range(2):
        with pytest.raises(DownloadError, match="data.csv"):
            download_night(out, mode="chunked", url=server.url, chunks=1, retries=1, **FAST)
        assert not out.exists() and not (tmp_path / ".night.staging" / "data.csv").exists()


# --------------------------------------------------------------------------- 2. trickling server
@pytest.mark.network  # the loopback server
def test_trickling_server_is_given_up_on(server, tmp_path):
    server.files["/slow.bin"] = os.urandom(100_000)
    server.behave("/slow.bin", trickle=(1, 0.05))  # 20 bytes/s, forever
    t0 = time.monotonic()
    with pytest.raises(DownloadError, match="too slow.*bytes/s"):
        fetch(
            server.url + "/slow.bin",
            tmp_path / "slow.bin",
            retries=1,
            min_rate=1000,
            stall_time=0.5,
            **FAST,
        )
    assert time.monotonic() - t0 < 10  # 2 attempts of 0.5 s, not 100 000 x 0.05 s
    assert not (tmp_path / "slow.bin").exists()


@pytest.mark.network  # the loopback server
def test_stall_rule_is_a_cli_option(server, demo, tmp_path, capsys):
    server.files["/nights.zip"] = _night_zip(demo)
    server.behave("/nights.zip", trickle=(1, 0.05))
    out = tmp_path / "night"
    rc, err = _cli(
        [
            "download-night",
            "--url",
            server.url + "/nights.zip",
            "--out",
            str(out),
            "--retries",
            "0",
            "--min-rate",
            "1000",
            "--stall-time",
            "0.5",
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 1 and "too slow" in err and "Traceback" not in err and not out.exists()


# --------------------------------------------------------------------------- 3. HTML pages
_PAGE = b"<!DOCTYPE html>\n<html><body>Sorry, the dataset has moved.</body></html>\n"


@pytest.mark.network  # the loopback server
@pytest.mark.parametrize("ctype", ["text/html; charset=utf-8", "application/octet-stream"])
def test_html_page_is_not_taken_for_data_csv(server, tmp_path, ctype):
    server.files["/data.csv"] = _PAGE
    server.behave("/data.csv", content_type=ctype)
    out = tmp_path / "night"
    with pytest.raises(DownloadError, match=r"/data.csv.*HTML page"):
        download_night(out, mode="chunked", url=server.url, chunks=1, **FAST)
    assert not out.exists() and not list(tmp_path.rglob("data.csv"))


@pytest.mark.network  # the loopback server
def test_html_page_is_not_taken_for_the_zip(server, tmp_path, capsys):
    server.files["/nights.zip"] = _PAGE
    out = tmp_path / "night"
    rc, err = _cli(
        ["download-night", "--url", server.url + "/nights.zip", "--out", str(out), "--no-progress"],
        capsys,
    )
    assert rc == 1 and "HTML page" in err and "/nights.zip" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.rglob("nights.zip"))


@pytest.mark.network  # the loopback server
def test_csv_without_night_header_is_refused(server, tmp_path):
    server.files["/data.csv"] = b"a,b\n1,2\n"
    with pytest.raises(DownloadError, match="not NIGHT's data.csv"):
        download_night(tmp_path / "n", mode="chunked", url=server.url, chunks=1, **FAST)


# --------------------------------------------------------------------------- 9. permanent errors
@pytest.mark.network  # the loopback server
def test_redirect_loop_fails_at_once(server, tmp_path):
    server.files["/loop"] = b"x"
    server.behave("/loop", redirect_to="/loop")
    with pytest.raises(DownloadError, match=r"/loop.*redirect loop"):
        fetch(server.url + "/loop", tmp_path / "f", **FAST)
    assert server.count("/loop") <= 31  # one attempt (requests follows 30 redirects)


@pytest.mark.network  # the loopback server
def test_416_loop_fails_at_once(server, tmp_path):
    server.files["/f.bin"] = os.urandom(200_000)
    server.behave("/f.bin", range_416=True, always_drop_after=50_000)
    with pytest.raises(DownloadError, match=r"/f.bin.*416.*contradicts itself"):
        fetch(server.url + "/f.bin", tmp_path / "f.bin", **FAST)
    assert server.count("/f.bin") <= 4  # full, 416, full again, 416: no retry budget burnt


@pytest.mark.network  # the loopback server
@pytest.mark.parametrize("status", [401, 403, 410, 425, 451])
def test_permanent_4xx_fails_at_once_with_url_and_status(server, tmp_path, status):
    server.files["/f.bin"] = b"x"
    server.behave("/f.bin", fail_status=[status] * 5)
    with pytest.raises(DownloadError, match=rf"/f.bin: HTTP {status}"):
        fetch(server.url + "/f.bin", tmp_path / "f.bin", **FAST)
    assert server.count("/f.bin") == 1


def test_bad_url_fails_at_once(tmp_path):
    with pytest.raises(DownloadError, match="bad URL"):
        fetch("htp://127.0.0.1/x", tmp_path / "x", **FAST)


# --------------------------------------------------------------------------- 4. archive bombs
def _nothing_written(tmp_path: Path, dest: Path) -> bool:
    leftovers = [p for p in tmp_path.iterdir() if ".extract-" in p.name]
    return not leftovers and (not dest.exists() or not any(dest.rglob("*")))


def test_zip_bomb_is_refused_before_decompressing(tmp_path):
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(
        _zip([("data.csv", b"id\n"), ("ref/zeros.png", bytes(8 << 20))], zipfile.ZIP_DEFLATED)
    )
    assert archive.stat().st_size < 100_000  # 8 MiB of zeros in ~8 kB
    dest = tmp_path / "out"
    with pytest.raises(ExtractError, match=r"bomb.zip.*'ref/zeros.png'.*ratio"):
        safe_extract(archive, dest)
    assert _nothing_written(tmp_path, dest)
    safe_extract(archive, dest, max_ratio=None)  # a trusted archive: the limit is an option
    assert (dest / "ref" / "zeros.png").stat().st_size == 8 << 20


def test_many_small_bomb_entries_are_refused_by_the_total_ratio(tmp_path):
    archive = tmp_path / "bomb.zip"
    archive.write_bytes(
        _zip([(f"z/{i}.bin", bytes(512 << 10)) for i in range(8)], zipfile.ZIP_DEFLATED)
    )
    with pytest.raises(ExtractError, match="bomb.zip.*decompression bomb"):
        safe_extract(archive, tmp_path / "out")


def test_extraction_limit_is_configurable(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip([("a.bin", os.urandom(5000)), ("b.bin", os.urandom(5000))]))
    with pytest.raises(ExtractError, match=r"a.zip.*'b.bin'.*extraction limit"):
        safe_extract(archive, tmp_path / "out", max_bytes=8000)
    assert _nothing_written(tmp_path, tmp_path / "out")


def _tar_header(name: str, size: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    return info.tobuf(format=tarfile.GNU_FORMAT)


def test_tar_declaring_more_than_the_free_disk_is_refused_before_reading_on(tmp_path):
    # One header declaring a petabyte, and no data at all: refused from the header alone.
    archive = tmp_path / "huge.tar"
    archive.write_bytes(_tar_header("big.bin", 10**15) + bytes(1024))
    with pytest.raises(ExtractError, match=r"huge.tar.*free in"):
        safe_extract(archive, tmp_path / "out", max_ratio=None)
    assert _nothing_written(tmp_path, tmp_path / "out")


def test_tar_gz_bomb_is_refused_by_ratio(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 8 << 20
        tf.addfile(info, io.BytesIO(bytes(8 << 20)))
    with pytest.raises(ExtractError, match="bomb.tar.gz.*decompression bomb"):
        safe_extract(archive, tmp_path / "out")
    assert _nothing_written(tmp_path, tmp_path / "out")


def test_zip_entry_longer_than_declared_stops(tmp_path):
    raw = bytearray(_zip([("a.bin", b"A" * 4000)]))
    # Declare 1000 bytes in the central directory (the size zipfile trusts) of a stored entry.
    cd = raw.rfind(b"PK\x01\x02")
    raw[cd + 24 : cd + 28] = (1000).to_bytes(4, "little")
    archive = tmp_path / "long.zip"
    archive.write_bytes(bytes(raw))
    with pytest.raises(ExtractError, match="long.zip.*'a.bin'"):
        safe_extract(archive, tmp_path / "out", test_crc=False)
    assert _nothing_written(tmp_path, tmp_path / "out")


# --------------------------------------------------------------------------- 5. clashes
@pytest.mark.parametrize(
    "names",
    [
        ["ref/000/a.png", "ref\\000\\a.png"],
        ["ref/000", "ref/000/a.png"],
        ["ref/000/a.png", "ref/000"],
        ["ref/000/", "ref/000"],
    ],
    ids=["duplicate", "file-then-folder", "folder-then-file", "dir-entry-and-file"],
)
def test_clashing_members_are_refused_naming_both(tmp_path, names):
    archive = tmp_path / "clash.zip"
    archive.write_bytes(_zip([(n, b"" if n.endswith("/") else b"x") for n in names]))
    with pytest.raises(ExtractError) as err:
        safe_extract(archive, tmp_path / "out")
    assert all(repr(n) in str(err.value) for n in names)  # names both members
    assert _nothing_written(tmp_path, tmp_path / "out")


@pytest.mark.network  # the loopback server
def test_same_member_in_two_chunks_is_refused_naming_both(server, demo, tmp_path, capsys):
    server.files["/data.csv"] = (demo / "data.csv").read_bytes()
    for kind in ("ref", "distort"):
        files = sorted(p for p in (demo / kind).rglob("*") if p.is_file())
        half = len(files) // 2
        # Chunk 1 repeats the first file of chunk 0 (with other bytes): it must not win.
        server.files[f"/{kind}/000.zip"] = _zip(
            [(p.relative_to(demo / kind).as_posix(), p.read_bytes()) for p in files[:half]]
        )
        server.files[f"/{kind}/001.zip"] = _zip(
            [(files[0].relative_to(demo / kind).as_posix(), b"other")]
            + [(p.relative_to(demo / kind).as_posix(), p.read_bytes()) for p in files[half:]]
        )
    out = tmp_path / "night"
    rc, err = _cli(
        [
            "download-night",
            "--mode",
            "chunked",
            "--url",
            server.url,
            "--chunks",
            "2",
            "--out",
            str(out),
            "--no-progress",
        ],
        capsys,
    )
    assert rc == 1 and "Traceback" not in err
    assert "ref/001.zip" in err and "ref/000.zip" in err and "both hold" in err
    assert not out.exists()


def test_file_folder_clash_with_the_destination_is_an_error_not_a_traceback(tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "ref").write_text("a file where the archive needs a folder")
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip([("ref/000/a.png", b"x")]))
    with pytest.raises(ExtractError, match=r"a.zip.*'ref/000/a.png'.*is a file"):
        safe_extract(archive, dest)


# --------------------------------------------------------------------------- tar support
def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w:gz"):
    with tarfile.open(path, mode) as tf:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def test_tar_gz_extracts_with_strip_and_hashes(tmp_path):
    archive = _tar(
        tmp_path / "b.tar.gz",
        [
            (_member("dataset/2afc", tarfile.DIRTYPE), None),
            (_member("dataset/2afc/a.png"), b"abc"),
            (_member("dataset/2afc/b.png"), b"de"),
        ],
    )
    files = safe_extract(archive, tmp_path / "out", strip="dataset")
    assert sorted(f.path for f in files) == ["2afc/a.png", "2afc/b.png"]
    assert (tmp_path / "out" / "2afc" / "b.png").read_bytes() == b"de"


@pytest.mark.parametrize(
    "bad, reason",
    [
        (_member("../evil.txt"), "'..'"),
        (_member("/etc/evil"), "absolute"),
        (_member("x/link", tarfile.SYMTYPE, "/etc/passwd"), "symbolic link"),
        (_member("x/hard", tarfile.LNKTYPE, "x/a.png"), "hard link"),
        (_member("x/fifo", tarfile.FIFOTYPE), "fifo"),
        (_member("x/dev", tarfile.CHRTYPE), "device"),
        (_member("x/a.png"), "both extract to"),
    ],
    ids=["dotdot", "absolute", "symlink", "hardlink", "fifo", "device", "duplicate"],
)
def test_unsafe_tar_members_are_refused_before_writing(tmp_path, bad, reason):
    data = b"y" if bad.type == tarfile.REGTYPE else None
    archive = _tar(tmp_path / "t.tar.gz", [(_member("x/a.png"), b"x"), (bad, data)])
    with pytest.raises(ExtractError, match=reason):
        safe_extract(archive, tmp_path / "out")
    assert _nothing_written(tmp_path, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_truncated_tar_gz_is_refused_before_writing(tmp_path):
    archive = _tar(
        tmp_path / "t.tar.gz", [(_member(f"x/{i}.bin"), os.urandom(20_000)) for i in range(5)]
    )
    archive.write_bytes(archive.read_bytes()[:50_000])
    with pytest.raises(ExtractError, match="t.tar.gz"):
        safe_extract(archive, tmp_path / "out")
    assert _nothing_written(tmp_path, tmp_path / "out")


def test_neither_zip_nor_tar_is_one_error(tmp_path):
    archive = tmp_path / "x.tar.gz"
    archive.write_bytes(_PAGE)
    with pytest.raises(ExtractError, match="x.tar.gz.*neither a zip nor a readable tar"):
        safe_extract(archive, tmp_path / "out")


# --------------------------------------------------------------------------- 6. data tables
def _night_copy(demo: Path, tmp_path: Path, edits: dict[tuple[int, str], str]) -> Path:
    import shutil

    import pandas as pd

    root = Path(shutil.copytree(demo, tmp_path / "night"))
    df = pd.read_csv(root / "data.csv", dtype=str, keep_default_na=False)
    for (row, col), value in edits.items():
        df.loc[row, col] = value
    df.to_csv(root / "data.csv", index=False)
    return root


def test_verify_night_lists_every_bad_value_and_escaping_path(demo, tmp_path, capsys):
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"a file beside the dataset")
    edits = {
        (0, "votes"): "inf",
        (1, "votes"): "nan",
        (2, "votes"): "-6",
        (3, "votes"): "6.5",
        (4, "right_vote"): "1.5",
        (5, "left_vote"): "-inf",
        (6, "ref_path"): "../secret.png",
        (7, "left_path"): str(outside),
        (8, "right_path"): "ref/../../secret.png",
    }
    root = _night_copy(demo, tmp_path, edits)
    from lipsim.data.night import NightFormatError, read_night, verify_night

    problems = verify_night(root, min_votes=0)
    text = "\n".join(map(str, problems))
    for needle in (
        "line 2 (id",
        "not finite: 'inf'",
        "line 3",
        "not a number: 'nan'",
        "negative: '-6'",
        "not a whole number of votes: '6.5'",
        "vote share '1.5' outside [0, 1]",
        "not finite: '-inf'",
        "'../secret.png' leaves the dataset root",
        f"{str(outside)!r} leaves",
        "'ref/../../secret.png' leaves",
    ):
        assert needle in text, f"{needle!r} not in:\n{text}"
    with pytest.raises(NightFormatError, match="leaves the dataset root"):
        read_night(root, min_votes=0)
    rc, err = _cli(["verify-night", "--root", str(root), "--min-votes", "0", "--no-decode"], capsys)
    assert rc == 1 and "Traceback" not in err and "not finite: 'inf'" in err


def test_loader_refuses_a_path_out_of_the_root_even_when_the_file_exists(demo, tmp_path):
    (tmp_path / "secret.png").write_bytes(b"not for you")
    root = _night_copy(demo, tmp_path, {(0, "ref_path"): "../secret.png"})
    from lipsim.data.night import NightFormatError, read_night

    with pytest.raises(NightFormatError, match=r"data.csv line 2.*ref_path.*leaves"):
        read_night(root, min_votes=0)


def test_short_csv_rows_are_listed_not_a_crash(demo, tmp_path):
    root = _night_copy(demo, tmp_path, {})
    with open(root / "data.csv", "a", encoding="utf-8") as fh:
        fh.write("999,0.5\n")  # a row cut short
    from lipsim.data.night import verify_night

    text = "\n".join(map(str, verify_night(root, min_votes=0, decode=False)))
    assert "(id 999)" in text and "empty path" in text


# --------------------------------------------------------------------------- 7. checkpoints
@pytest.fixture
def tiny_ckpt(tmp_path) -> Path:
    import torch

    from lipsim.models import build_model, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path / "tiny.pt"
    save_checkpoint(path, build_model("tiny", 32, 16), stage="pretrained", teacher="demo")
    return path


def _edit_ckpt(src: Path, dst: Path, fn) -> Path:
    import torch

    ckpt = torch.load(src, weights_only=True)
    fn(ckpt)
    torch.save(ckpt, dst)
    return dst


_PEAK = """
import resource, sys
from lipsim.models.checkpoint import CheckpointError, load_checkpoint
load_checkpoint(sys.argv[1])  # a good file first: lazy library loading is not the loader's
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    load_checkpoint(sys.argv[2])
    print("LOADED")
except CheckpointError as exc:
    print("ERROR", exc)
print("GROWTH_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


@pytest.mark.slow  # a fresh interpreter importing torch, to measure its peak memory
def test_small_checkpoint_asking_for_a_huge_net_fails_without_allocating(tiny_ckpt, tmp_path):
    import subprocess
    import sys

    # Per-key sizes within 4x the tiny preset, but 1024 px inputs: a 134M-parameter net (over
    # 0.5 GB) asked for by a file of a few hundred kB.
    def huge(c):
        c["model_config"].update(image_size=1024, linear_inner=512)

    bad = _edit_ckpt(tiny_ckpt, tmp_path / "huge.pt", huge)
    assert bad.stat().st_size < 1_000_000
    res = subprocess.run(
        [sys.executable, "-c", _PEAK, str(tiny_ckpt), str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    out = res.stdout
    assert "ERROR" in out and "huge.pt" in out and "refusing to build it" in out, out + res.stderr
    growth_mb = int(out.split("GROWTH_KB")[1]) / 1024
    assert growth_mb < 100, f"the loader grew by {growth_mb:.0f} MB before refusing"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda c: c["model_config"].update(conv_depth=10**6), "conv_depth=1000000 is beyond"),
        (lambda c: c["model_config"].update(preset="gigantic"), "preset 'gigantic' is not one of"),
        (lambda c: c["model_config"].update(width=3), "unknown key"),
        (lambda c: c["model_config"].pop("channels"), "no channels"),
        (lambda c: c["model_config"].update(channels=-4), "channels=-4 is not a positive"),
        (lambda c: c["model_config"].update(emb_dim=10**5), "does not describe a LipSimNet"),
        (lambda c: c["model_config"].update(linear_inner=100), "shape mismatches"),
        (lambda c: c.update(format="other/2"), "not a lipsim-repro/1 checkpoint"),
        (lambda c: c["model_state_dict"].pop("linear.1.weight"), "missing keys: linear.1.weight"),
    ],
    ids=[
        "depth",
        "preset",
        "unknown-key",
        "missing-key",
        "negative",
        "emb-dim",
        "shapes",
        "format",
        "missing-tensor",
    ],
)
def test_checkpoint_problems_are_one_error_naming_the_file(tiny_ckpt, tmp_path, edit, message):
    from lipsim.models.checkpoint import CheckpointError, load_checkpoint

    bad = _edit_ckpt(tiny_ckpt, tmp_path / "bad.pt", edit)
    with pytest.raises(CheckpointError, match=message) as err:
        load_checkpoint(bad)
    assert str(bad) in str(err.value)


def test_truncated_and_refused_checkpoints_through_the_cli(tiny_ckpt, tmp_path, demo, capsys):
    import pickle

    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_ckpt.read_bytes()[:20_000])
    evil = tmp_path / "evil.pt"

    class Boom:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    evil.write_bytes(pickle.dumps({"format": "lipsim-repro/1", "x": Boom()}, protocol=2))
    for path, message in ((truncated, "not a readable torch checkpoint"), (evil, "refused")):
        rc, err = _cli(
            [
                "certify",
                "--checkpoint",
                str(path),
                "--night",
                str(demo),
                "--out",
                str(tmp_path / "c.parquet"),
                "--device",
                "cpu",
                "--splits",
                "test",
                "--metrics",
                "ball",
                "--half-votes",
                "keep",
                "--tie-radius",
                "zero",
                "--eps",
                "36",
                "--batch-size",
                "4",
                "--min-votes",
                "1",
            ],
            capsys,
        )
        assert rc == 1 and "Traceback" not in err, err
        lines = [line for line in err.splitlines() if "error:" in line]
        assert len(lines) == 1 and str(path) in lines[0] and message in lines[0], err
        # torch's own text advises weights_only=False, which would run the file's code.
        assert "weights_only` set to `False" not in err and "will likely succeed" not in err
        if path == evil:
            assert "system" in lines[0]  # the refused global is named
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------------------------- odd corners
@pytest.mark.network  # the loopback server
def test_a_body_that_is_not_a_200_or_206_is_never_the_file(server, tmp_path):
    server.files["/f.bin"] = b"x"
    server.behave("/f.bin", fail_status=[204])
    with pytest.raises(DownloadError, match="/f.bin: HTTP 204"):
        fetch(server.url + "/f.bin", tmp_path / "f.bin", **FAST)
    assert not (tmp_path / "f.bin").exists()


def test_unwritable_destination_is_one_error(tmp_path):
    archive = tmp_path / "a.zip"
    archive.write_bytes(_zip([("x" * 300 + "/a.png", b"x")]))  # a name no filesystem takes
    with pytest.raises(ExtractError, match="a.zip.*cannot write it"):
        safe_extract(archive, tmp_path / "out")
    assert _nothing_written(tmp_path, tmp_path / "out")


def test_checkpoint_with_nan_weights_is_refused(tiny_ckpt, tmp_path):
    from lipsim.models.checkpoint import CheckpointError, load_checkpoint

    def poison(c):
        c["model_state_dict"]["linear.1.weight"][0, 0] = float("nan")

    bad = _edit_ckpt(tiny_ckpt, tmp_path / "nan.pt", poison)
    with pytest.raises(CheckpointError, match=r"nan.pt.*non-finite.*linear.1.weight"):
        load_checkpoint(bad)


def test_flipped_byte_in_a_tar_gz_is_caught_by_its_crc(tmp_path):
    archive = _tar(tmp_path / "t.tar.gz", [(_member("x/a.bin"), os.urandom(200_000))])
    raw = bytearray(archive.read_bytes())  # random data: deflate keeps it in stored blocks
    raw[len(raw) // 2] ^= 0x01
    archive.write_bytes(bytes(raw))
    with pytest.raises(ExtractError, match="t.tar.gz.*corrupt"):
        safe_extract(archive, tmp_path / "out")
    assert _nothing_written(tmp_path, tmp_path / "out")


def test_bad_options_are_one_error_line(tmp_path, capsys):
    for extra, needle in (
        (["--sha256", "xyz"], "--sha256 'xyz' is not 64"),
        (["--mode", "chunked", "--chunks", "0"], "--chunks must be >= 1"),
    ):
        rc, err = _cli(
            [
                "download-night",
                "--out",
                str(tmp_path / "n"),
                "--url",
                "http://127.0.0.1:9/x",
                "--no-progress",
                *extra,
            ],
            capsys,
        )
        assert rc == 1 and needle in err and err.count("error:") == 1 and "Traceback" not in err


def test_tar_ending_in_a_zip_is_read_as_the_tar(tmp_path):
    inner = _zip([("../escape.txt", b"x")])  # what a zip reader would find at the end
    archive = _tar(
        tmp_path / "t.tar", [(_member("d/a.png"), b"a"), (_member("d/in.zip"), inner)], mode="w"
    )
    files = safe_extract(archive, tmp_path / "out")
    assert sorted(f.path for f in files) == ["d/a.png", "d/in.zip"]
    assert (tmp_path / "out" / "d" / "in.zip").read_bytes() == inner


def test_schema_defaults_are_the_library_defaults():
    import yaml

    from lipsim.configcheck import resolve
    from lipsim.data.download import MIN_RATE, STALL_TIME
    from lipsim.data.extract import MAX_RATIO

    schema = yaml.safe_load(
        (Path(__file__).parents[1] / "workflow" / "schemas" / "config.schema.yaml").read_text()
    )
    keys = schema["properties"]["night"]["properties"]["download"]["properties"]
    assert (
        keys["min_rate"]["default"],
        keys["stall_time"]["default"],
        keys["max_ratio"]["default"],
        keys["max_extract_gb"]["default"],
    ) == (resolve(MIN_RATE), resolve(STALL_TIME), resolve(MAX_RATIO), None)
