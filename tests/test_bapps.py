"""BAPPS 2AFC: the generated set, the loader, the checker, the download path (loopback), the
per-category scores and table, and the demo DAG's BAPPS jobs."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from loopback_server import LoopbackServer

from lipsim.data.bapps import (
    CATEGORIES,
    GROUPS,
    BappsFormatError,
    BappsTriplets,
    check_bapps,
    download_bapps,
    make_bapps,
    read_bapps,
)
from lipsim.data.download import DownloadError
from lipsim.models import build_model, save_checkpoint
from lipsim.reporting.bapps import ALL, bapps_markdown, bapps_table

ROOT = Path(__file__).resolve().parents[1]
N = 3  # triplets per category


@pytest.fixture(scope="module")
def bapps(tmp_path_factory) -> Path:
    return make_bapps(tmp_path_factory.mktemp("bapps") / "bapps", seed=5, n_per_category=N)


def _files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_generated_set_has_the_bapps_layout_and_is_seeded(bapps, tmp_path):
    for cat in CATEGORIES:
        for sub, ext in (("ref", "png"), ("p0", "png"), ("p1", "png"), ("judge", "npy")):
            assert sorted(p.name for p in (bapps / "val" / cat / sub).iterdir()) == [
                f"{i:06d}.{ext}" for i in range(N)
            ]
    judge = np.load(bapps / "val" / "cnn" / "judge" / "000000.npy")
    assert judge.shape == (1,) and judge.dtype == np.float32  # BAPPS' judge format
    from PIL import Image

    with Image.open(bapps / "val" / "cnn" / "ref" / "000000.png") as im:
        assert im.size == (64, 64) and im.mode == "RGB"
    again = make_bapps(tmp_path / "again", seed=5, n_per_category=N)
    assert _files(again) == _files(bapps)
    other = make_bapps(tmp_path / "other", seed=6, n_per_category=N)
    assert _files(other) != _files(bapps)


def test_loader_table_and_batches(bapps):
    df = read_bapps(bapps)  # the folder holding val/ works, as val/ itself does
    assert list(df.columns) == ["id", "split", "p", "ref_path", "left_path", "right_path"]
    assert df["split"].value_counts().to_dict() == {c: N for c in CATEGORIES}
    assert list(dict.fromkeys(df["split"])) == list(CATEGORIES)
    assert df["id"].is_unique and df["id"].iloc[0] == "traditional/000000"
    # p is the judge value: the share of (5 demo) judges preferring p1 = x1 = right_path.
    for row in df.itertuples():
        cat, stem = row.id.split("/")
        assert row.p == pytest.approx(
            float(np.load(bapps / "val" / cat / "judge" / f"{stem}.npy")[0])
        )
        assert row.right_path.endswith(f"{cat}/p1/{stem}.png")
        assert row.left_path.endswith(f"{cat}/p0/{stem}.png")
    assert set(np.round(df["p"] * 5, 6)) <= set(range(6))
    assert len(read_bapps(bapps / "val", ["cnn", "color"])) == 2 * N

    loader = torch.utils.data.DataLoader(BappsTriplets(df, 32), batch_size=4, shuffle=False)
    ref, x0, x1, p, index = next(iter(loader))
    assert ref.shape == x0.shape == x1.shape == (4, 3, 32, 32)
    assert 0 <= float(ref.min()) and float(ref.max()) <= 1
    assert torch.equal(index, torch.arange(4))
    assert torch.allclose(p, torch.tensor(df["p"].to_numpy()[:4], dtype=torch.float32))


@pytest.mark.slow
def test_checker_and_loader_name_the_broken_file(bapps, tmp_path):
    problems, counts = check_bapps(bapps)
    assert problems == [] and counts == {c: N for c in CATEGORIES}
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(bapps, broken)
    (broken / "val" / "deblur" / "p1" / "000001.png").unlink()
    np.save(broken / "val" / "color" / "judge" / "000002.npy", np.array([1.5]))
    (broken / "val" / "cnn" / "ref" / "000000.png").write_bytes(b"not a png")
    shutil.rmtree(broken / "val" / "frameinterp")
    problems, _ = check_bapps(broken)
    text = "\n".join(problems)
    assert "deblur/p1/000001.png: missing" in text
    assert "color/judge/000002.npy" in text and "[0, 1]" in text
    assert "cnn/ref/000000.png: unreadable image" in text
    assert "frameinterp: category folder missing" in text
    with pytest.raises(BappsFormatError, match="deblur/p1/000001.png"):
        read_bapps(broken, ["deblur"])
    with pytest.raises(BappsFormatError, match=r"color/judge/000002.npy must hold one number"):
        read_bapps(broken, ["color"])
    with pytest.raises(BappsFormatError, match="unknown category night; expected traditional"):
        read_bapps(bapps, ["night"])
    # The command: every problem listed, one line each, exit 1, no report, no traceback.
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lipsim",
            "check-bapps",
            "--root",
            str(broken),
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "4 problem(s)" in proc.stderr and not report.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lipsim",
            "evaluate-bapps",
            "--metric",
            "l2",
            "--bapps",
            str(empty),
            "--out",
            str(tmp_path / "x.parquet"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("lipsim evaluate-bapps: error: BAPPS: no category folder")


def _zip_folder(folder: Path, archive: Path) -> bytes:
    with zipfile.ZipFile(archive, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(folder).as_posix())
    return archive.read_bytes()


@pytest.mark.network
def test_download_fetches_extracts_and_checks(bapps, tmp_path):
    # The real archive is a .tar.gz; lipsim.data.extract.safe_extract takes the archive
    # whatever its format, so the same path is exercised here with a zip.
    good = _zip_folder(bapps, tmp_path / "good.zip")
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "readme.txt").write_text("no categories here")
    bad = _zip_folder(tmp_path / "flat", tmp_path / "bad.zip")
    with LoopbackServer({"/twoafc_val.zip": good, "/bad.zip": bad}) as srv:
        srv.behave("/twoafc_val.zip", drop_after=[len(good) // 3])
        out = download_bapps(
            tmp_path / "data" / "bapps",
            url=srv.url + "/twoafc_val.zip",
            sha256=hashlib.sha256(good).hexdigest(),
            progress=False,
        )
        assert any(r is not None for _, r, _ in srv.requests), "the dropped transfer resumed"
        assert _files(out) == _files(bapps)
        assert not (tmp_path / "data" / ".bapps.download").exists()  # archive removed
        before = srv.count("/twoafc_val.zip")
        download_bapps(out, url=srv.url + "/twoafc_val.zip", progress=False)
        assert srv.count("/twoafc_val.zip") == before  # complete: nothing fetched again
        with pytest.raises(DownloadError, match="twoafc_val.zip: sha256"):
            download_bapps(
                tmp_path / "data" / "b2",
                url=srv.url + "/twoafc_val.zip",
                sha256="0" * 64,
                progress=False,
            )
        assert not (tmp_path / "data" / "b2").exists()
        with pytest.raises(BappsFormatError, match="bad.zip .*does not hold the BAPPS"):
            download_bapps(
                tmp_path / "data" / "b3", url=srv.url + "/bad.zip", sha256=None, progress=False
            )
        assert not (tmp_path / "data" / "b3").exists()


@pytest.mark.slow
def test_scores_per_category_and_certified_never_above_natural(bapps, tmp_path):
    torch.manual_seed(0)
    net = build_model("tiny", image_size=32, emb_dim=64)
    ckpt = tmp_path / "margin0.5.pt"
    save_checkpoint(ckpt, net, stage="finetuned", margin=0.5, teacher="demo")
    outs = {}
    for name, spec in (("lipsim-margin0.5", f"lipsim:{ckpt}"), ("l2", "l2")):
        outs[name] = tmp_path / f"{name}.parquet"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "lipsim",
                "evaluate-bapps",
                "--metric",
                spec,
                "--bapps",
                str(bapps),
                "--image-size",
                "32",
                "--device",
                "cpu",
                "--scoring",
                "accuracy",
                "--half-votes",
                "drop",
                "--out",
                str(outs[name]),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr
        # LPIPS's rule first, then the one asked for
        assert proc.stdout.index("2AFC score (DreamSim's formula), all triplets") < (
            proc.stdout.index("(the authors' evaluation), p = 0.5 triplets dropped")
        )
    rows = pd.read_parquet(outs["lipsim-margin0.5"])
    assert {"id", "split", "p", "d0", "d1", "score", "correct", "radius"} <= set(rows.columns)
    assert "radius" not in pd.read_parquet(outs["l2"]).columns
    eps = [0.0, 0.25, 1.0, 36.0]  # /255: small radii make the certified scores non-trivial
    table = bapps_table(outs, eps)
    assert list(table["category"].iloc[:9]) == [*CATEGORIES, "distortions", "real_algorithms", ALL]
    lip = table[table["model"] == "lipsim-margin0.5"].set_index("category")
    cert = [f"certified_{e:g}" for e in eps]
    assert lip["certified_0"].max() > 0, "no certificate at all: the test would be vacuous"
    for cat, row in lip.iterrows():
        values = [row["natural"], *row[cert]]
        assert all(a >= b - 1e-9 for a, b in zip(values, values[1:], strict=False)), (cat, values)
    # Overall = mean over every triplet (categories have equal sizes here).
    assert lip.loc[ALL, "natural"] == pytest.approx(lip.loc[list(CATEGORIES), "natural"].mean())
    assert lip.loc[ALL, "n"] == N * len(CATEGORIES) and lip.loc["distortions", "n"] == 2 * N
    assert lip.loc["distortions", "natural"] == pytest.approx(
        lip.loc[["traditional", "cnn"], "natural"].mean()
    )
    # A subset of the categories: each group is scored over the categories present.
    sub = pd.read_parquet(outs["l2"])
    sub[sub["split"].isin(["cnn", "color"])].to_parquet(tmp_path / "sub.parquet")
    only = bapps_table({"l2": tmp_path / "sub.parquet"}, [])
    assert list(only["category"]) == ["cnn", "color", "distortions", "real_algorithms", ALL]
    assert only.set_index("category").loc["distortions", "natural"] == pytest.approx(
        only.set_index("category").loc["cnn", "natural"]
    )
    by_hand = 100 * rows.groupby("split")["score"].mean()
    for cat in CATEGORIES:
        assert lip.loc[cat, "natural"] == pytest.approx(by_hand[cat])
    l2 = table[table["model"] == "l2"]
    assert l2[cert].isna().all().all() and l2["natural"].notna().all()
    md = bapps_markdown(table)
    lines = [
        [c.strip() for c in line.strip("|").split("|")] for line in md.splitlines() if "|" in line
    ]
    labels = {(m, score) for m, score, *_ in lines}
    assert ("l2", "natural") in labels and ("lipsim-margin0.5", "certified 36/255") in labels
    assert not any(m == "l2" and score.startswith("certified") for m, score in labels)
    assert "triplet-weighted" in md


def test_authors_rule_scores_every_bapps_row_alike(bapps, tmp_path):
    """--scoring accuracy --half-votes drop: natural_authors of every metric (LipSim or not)
    and every category or group is the accuracy over its triplets without p = 0.5 ones, and
    certified_*_authors uses the authors' radius; natural stays LPIPS's 2AFC."""
    from lipsim.cli import evaluate_bapps
    from lipsim.scoring import Rule, accuracy, triplet_scores, twoafc

    torch.manual_seed(1)
    ckpt = tmp_path / "margin0.5.pt"
    save_checkpoint(
        ckpt, build_model("tiny", 32, 64), stage="finetuned", margin=0.5, teacher="demo"
    )
    outs = {}
    for name, spec in (("lipsim-margin0.5", f"lipsim-cosine:{ckpt}"), ("l2", "l2")):
        outs[name] = tmp_path / f"{name}.parquet"
        argv = ["--metric", spec, "--bapps", str(bapps), "--image-size", "32", "--device", "cpu"]
        assert evaluate_bapps.main([*argv, "--eps", "0.5", "--out", str(outs[name])]) == 0
        # some p = 0.5 rows (the generated judges rarely give one)
        df = pd.read_parquet(outs[name])
        p = np.where(df.index % 4 == 0, 0.5, df["p"])
        df.assign(p=p, **triplet_scores(df["d0"], df["d1"], p)).to_parquet(outs[name])
    table = bapps_table(outs, [0.5], Rule("accuracy", "drop"))
    assert set(table["scoring"]) == {"accuracy"} and set(table["half_votes"]) == {"drop"}
    groups = {c: (c,) for c in CATEGORIES} | dict(GROUPS) | {ALL: CATEGORIES}
    for name, path in outs.items():
        df = pd.read_parquet(path)
        kept = (df["p"] != 0.5).to_numpy()
        correct = accuracy(df["d0"], df["d1"], df["p"])
        score = twoafc(df["d0"], df["d1"], df["p"])
        rows = table[table["model"] == name].set_index("category")
        for cat, members in groups.items():
            inside = df["split"].isin(members).to_numpy()
            assert rows.loc[cat, "natural"] == pytest.approx(100 * score[inside].mean())
            mine = inside & kept
            assert rows.loc[cat, "natural_authors"] == pytest.approx(100 * correct[mine].mean())
            assert rows.loc[cat, "n_authors"] == mine.sum()
            if name.startswith("lipsim"):
                theirs = correct * (df["radius_authors"].to_numpy() > 0.5 / 255)
                assert rows.loc[cat, "certified_0.5_authors"] == pytest.approx(
                    100 * theirs[mine].mean()
                )
        assert rows.loc[ALL, "n_authors"] < rows.loc[ALL, "n"]
    assert (table["natural"] != table["natural_authors"]).any()


def test_demo_dag_has_the_bapps_jobs(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-n",
        "-s",
        str(ROOT / "workflow" / "Snakefile"),
        "-d",
        str(tmp_path),
        "--configfile",
        str(ROOT / "config" / "test.yaml"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rules = re.findall(r"^(?:local)?rule (\w+):", proc.stdout, flags=re.M)
    assert rules.count("make_demo_bapps") == 1 and rules.count("check_bapps") == 1
    assert rules.count("table_bapps") == 1
    evaluated = set(re.findall(r"bapps/([\w.-]+)\.parquet", proc.stdout))
    assert evaluated == {"lipsim-pretrained", "lipsim-margin0.2", "lipsim-margin0.5", "demo", "l2"}
    for ext in ("csv", "md", "tex", "parquet"):
        assert f"results/test/tables/bapps.{ext}" in proc.stdout
