"""Embedding cache: shards + manifests + index, memory-mapped reads equal the teacher's
embeddings, damaged shards are detected and rebuilt (never read), undecodable images are
reported with their path and skipped or fatal per option."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import train_options

from lipsim.__main__ import main as lipsim_main
from lipsim.data.synthetic import make_image_folder
from lipsim.embcache import (
    BadImageError,
    CacheError,
    EmbeddingCache,
    build_index,
    fill_part,
    list_images,
    load_train_image,
    n_shards,
    part_shards,
    shard_path,
)
from lipsim.teachers import get_teacher

BAD = "train/n00000001/n00000001_bad.png"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = make_image_folder(
        tmp_path_factory.mktemp("img") / "imagenet", seed=1, classes=3, per_class=9, image_size=32
    )
    (root / BAD).write_bytes(b"\x89PNG\r\n\x1a\n but not really")  # sorts last in its class
    return root


def _fill(images, out, *extra, parts=2):
    # Through the dispatcher, as snakemake runs them: expected errors are rc 1 + an error line.
    assert (
        lipsim_main(["cache-list", "--images", str(images), "--out", str(out / "images.parquet")])
        == 0
    )
    for k in range(parts):
        rc = lipsim_main(
            [
                "cache-fill",
                "--teacher",
                "demo",
                "--images",
                str(images),
                "--list",
                str(out / "images.parquet"),
                "--part",
                str(k),
                "--parts",
                str(parts),
                "--shard-size",
                "8",
                "--dtype",
                "float32",
                "--batch-size",
                "5",
                "--workers",
                "0",
                "--device",
                "cpu",
                "--out-dir",
                str(out),
                "--no-progress",
                *extra,
            ]
        )
        if rc:
            return rc
    return lipsim_main(["cache-index", "--cache-dir", str(out), "--parts", str(parts)])


def test_layout_arithmetic():
    assert n_shards(1_281_167, 1000) == 1282  # + parts, list, index: far below 2,000 files
    ranges = [part_shards(k, 3, 10) for k in range(3)]
    assert [list(r) for r in ranges] == [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]
    with pytest.raises(ValueError, match="--part 3"):
        part_shards(3, 3, 10)


def test_fill_index_read_and_bad_image_skipped(images, tmp_path, capsys):
    out = tmp_path / "cache"
    assert _fill(images, out, "--on-bad-image", "skip") == 0
    err = capsys.readouterr().err
    assert BAD in err  # reported with its path
    lst = pd.read_parquet(out / "images.parquet")
    assert len(lst) == 28 and list(lst["path"]) == sorted(lst["path"])
    assert sorted(lst["label"].unique()) == [0, 1, 2]
    idx = pd.read_parquet(out / "index.parquet")
    assert list(idx.columns) == ["path", "label", "shard", "row", "ok"]
    bad_row = int(np.flatnonzero(idx["path"] == BAD)[0])
    assert not idx["ok"][bad_row] and idx["ok"].sum() == 27
    reported = [
        b["path"]
        for k in (0, 1)
        for b in json.loads((out / f"part-{k}.json").read_text())["bad_images"]
    ]
    assert reported == [BAD]
    assert sorted(p.name for p in out.glob("shard-*.npy")) == [
        f"shard-0000{i}.npy" for i in range(4)
    ]

    cache = EmbeddingCache(out)
    assert cache.emb_dim == 64 and len(cache) == 28
    teacher = get_teacher("demo")
    rows = [i for i in (0, 9, 27, 13) if i != bad_row]
    x = torch.stack([load_train_image(images / cache.paths[i], 32) for i in rows])
    with torch.no_grad():
        expected = teacher.embed(x).numpy()
    np.testing.assert_allclose(cache.get(rows), expected, rtol=1e-5, atol=1e-6)
    # The bad row is NaN on disk (never a silent zero) and refused by the reader.
    assert np.isnan(np.load(shard_path(out, idx["shard"][bad_row]))[idx["row"][bad_row]]).all()
    with pytest.raises(CacheError, match="not decodable"):
        cache[bad_row]


def test_bad_image_fatal_names_path(images, tmp_path, capsys):
    assert _fill(images, tmp_path / "cache", "--on-bad-image", "fail", parts=1) == 1
    assert BAD in capsys.readouterr().err
    assert not (tmp_path / "cache" / "part-0.json").exists()


@pytest.mark.parametrize("damage", ["truncate", "corrupt"])
def test_damaged_shard_detected_and_rebuilt(images, tmp_path, caplog, damage):
    out = tmp_path / "cache"
    assert _fill(images, out) == 0
    victim = shard_path(out, 1)
    good = victim.read_bytes()
    if damage == "truncate":
        victim.write_bytes(good[: len(good) // 2])
    else:  # same size, flipped bytes inside the data (the header still parses)
        data = bytearray(good)
        data[-40:-20] = bytes(b ^ 0xFF for b in data[-40:-20])
        victim.write_bytes(bytes(data))
    # Verification catches it, naming the file ...
    with pytest.raises(CacheError, match="shard-00001.npy"):
        build_index(out, 2)
    assert lipsim_main(["cache-index", "--cache-dir", str(out), "--parts", "2"]) == 1
    # ... and cache-fill rebuilds it from the images instead of keeping what is on disk.
    caplog.clear()
    assert _fill(images, out) == 0
    assert victim.read_bytes() == good
    rebuilt = [r.getMessage() for r in caplog.records if "rebuilding" in r.getMessage()]
    assert len(rebuilt) == 1 and "shard-00001.npy" in rebuilt[0]  # only the damaged one


def test_interrupted_part_resumes_at_shard_granularity(tmp_path):
    """A part that dies mid-way (here: a bad image under --on-bad-image fail in its third
    shard) keeps its finished shards; the rerun only computes the rest."""
    root = make_image_folder(tmp_path / "imagenet", seed=4, classes=2, per_class=12, image_size=32)
    lst = list_images(root)
    broken = root / lst["path"][17]  # row 17 -> shard 2 at shard size 8
    good = broken.read_bytes()
    broken.write_bytes(b"garbage")
    out = tmp_path / "cache"
    teacher = get_teacher("demo")
    kw = dict(
        teacher=teacher,
        images=root,
        image_list=lst,
        out_dir=out,
        part=0,
        parts=1,
        shard_size=8,
        on_bad_image="fail",
        progress=False,
    )
    with pytest.raises(BadImageError, match=str(lst["path"][17])):
        fill_part(**kw)
    assert not (out / "part-0.json").exists()  # the manifest only comes last
    done = {p.name: p.stat().st_mtime_ns for p in out.glob("shard-*.npy")}
    assert sorted(done) == ["shard-00000.npy", "shard-00001.npy"]
    broken.write_bytes(good)
    manifest = fill_part(**kw)
    assert manifest["counts"] == {"shards": 3, "images": 24, "bad": 0}
    assert {n: (out / n).stat().st_mtime_ns for n in done} == done  # kept, not recomputed
    assert not list(out.glob(".part-0.progress.json"))


def test_fill_progress_in_a_log_is_one_line_per_redraw(tmp_path, capsys):
    """cache-fill reports through lipsim.progress: in a log file (not a terminal) each redraw
    is a line of its own, no carriage returns piling up; kept shards count as done."""
    root = make_image_folder(tmp_path / "imagenet", seed=4, classes=2, per_class=5, image_size=32)
    kw = dict(
        teacher=get_teacher("demo"),
        images=root,
        image_list=list_images(root),
        out_dir=tmp_path / "cache",
        part=0,
        parts=1,
        shard_size=4,
    )
    for _ in range(2):  # filled, then every shard kept
        fill_part(**kw)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.startswith("cache part 0/1")]
        assert "\r" not in err and lines and "10/10" in lines[-1], err


@pytest.mark.parametrize("damage", ["corrupt-in-place", "truncate"])
def test_reader_refuses_a_damaged_shard_and_the_rerun_rebuilds_it(
    images, tmp_path, caplog, capsys, damage
):
    """Issue 12, item 8: a shard damaged after indexing is never read; the error names it, and
    its part loses its manifest (and the cache its index), which is what makes the workflow
    rerun cache-fill for that part and cache-index."""
    out = tmp_path / "cache"
    assert _fill(images, out) == 0
    cache = EmbeddingCache(out)
    rows = np.flatnonzero(cache.ok)
    before = cache.get(rows)
    victim = shard_path(out, 3)  # 4 shards of 8 over 2 parts: shard 3 is part 1's
    good = victim.read_bytes()
    if damage == "truncate":
        damaged = good[:-16]
    else:  # same size, bytes flipped inside the data: np.load would read it without a word
        data = bytearray(good)
        data[-40:-20] = bytes(b ^ 0xFF for b in data[-40:-20])
        damaged = bytes(data)
    victim.write_bytes(damaged)
    with pytest.raises(CacheError, match=r"shard-00003.npy: (sha256|size).*part 1 is marked"):
        EmbeddingCache(out)
    assert not (out / "part-1.json").exists() and not (out / "index.parquet").exists()
    assert (out / "part-0.json").exists()
    # The same through a training step: one error line naming the shard, no traceback.
    assert _fill(images, out) == 0  # what the workflow reruns (part 0 is kept as it is)
    victim.write_bytes(damaged)
    capsys.readouterr()
    rc = lipsim_main(
        [
            "distill",
            "--cache-dir",
            str(out),
            "--images",
            str(images),
            "--teacher",
            "demo",
            "--preset",
            "tiny",
            "--image-size",
            "32",
            "--out",
            str(tmp_path / "p.pt"),
            "--workdir",
            str(tmp_path / "work"),
            "--no-progress",
            "--crop",
            "resize_center",
            "--teacher-view",
            "original",
            "--rmse-reduction",
            "image",
            "--jitter-input",
            "float",
            *train_options(lr=0.01),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err and "shard-00003.npy" in err
    assert not (tmp_path / "p.pt").exists()
    caplog.clear()
    assert _fill(images, out) == 0
    rebuilt = [r.getMessage() for r in caplog.records if "rebuilding" in r.getMessage()]
    assert len(rebuilt) == 1 and "shard-00003.npy" in rebuilt[0]  # only the damaged one
    assert victim.read_bytes() == good
    np.testing.assert_array_equal(EmbeddingCache(out).get(rows), before)


def test_index_without_checksums_is_refused(images, tmp_path):
    out = tmp_path / "cache"
    assert _fill(images, out) == 0
    pd.read_parquet(out / "index.parquet").to_parquet(out / "index.parquet")  # metadata lost
    with pytest.raises(CacheError, match="index.parquet: records no shard checksums"):
        EmbeddingCache(out)


def test_cache_cli_errors_are_one_line(tmp_path, capsys):
    for args, needle in (
        (
            [
                "cache-list",
                "--images",
                str(tmp_path / "nope"),
                "--out",
                str(tmp_path / "l.parquet"),
            ],
            "nope does not exist",
        ),
        (
            [
                "cache-fill",
                "--teacher",
                "demo",
                "--images",
                str(tmp_path),
                "--list",
                str(tmp_path / "absent.parquet"),
                "--part",
                "0",
                "--parts",
                "1",
                "--shard-size",
                "8",
                "--dtype",
                "float32",
                "--batch-size",
                "4",
                "--workers",
                "0",
                "--out-dir",
                str(tmp_path / "c"),
            ],
            "absent.parquet: missing",
        ),
    ):
        assert lipsim_main(args) == 1
        err = capsys.readouterr().err
        assert "Traceback" not in err and needle in err and err.count("error:") == 1
