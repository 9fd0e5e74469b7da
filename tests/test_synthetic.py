"""Demo generators: determinism, NIGHT format, vote structure, image-folder layouts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lipsim.data.night import COLUMNS, read_night
from lipsim.data.synthetic import make_image_folder, make_night

SIZES = dict(n_train=40, n_val=8, n_test=24, image_size=16)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def night(tmp_path_factory) -> Path:
    return make_night(tmp_path_factory.mktemp("syn") / "night", seed=0, **SIZES)


def test_same_seed_same_bytes_different_seed_differs(night, tmp_path):
    again = make_night(tmp_path / "again", seed=0, **SIZES)
    other = make_night(tmp_path / "other", seed=1, **SIZES)
    a, b, c = _digest(night), _digest(again), _digest(other)
    assert a == b
    assert a.keys() == c.keys() and a != c
    assert a["data.csv"] != c["data.csv"]


def test_night_layout_and_columns(night):
    raw = pd.read_csv(night / "data.csv")
    assert tuple(raw.columns) == COLUMNS
    assert len(raw) == 72 and raw["id"].tolist() == list(range(72))
    assert set(raw["split"]) == {"train", "val", "test"}
    test = raw[raw["split"] == "test"]
    assert set(test["is_imagenet"]) == {True, False}
    for col in ("ref_path", "left_path", "right_path"):
        assert all((night / p).is_file() for p in raw[col])
    assert raw["ref_path"][3] == "ref/000/003.png"
    assert raw["left_path"][3] == "distort/000/003_0.png"
    assert raw["right_path"][3] == "distort/000/003_1.png"
    np.testing.assert_allclose(raw["left_vote"] + raw["right_vote"], 1.0, atol=1e-5)
    assert (raw["votes"] < 6).any() and (raw["votes"] >= 6).mean() > 0.7
    assert (raw["right_vote"] == 0.5).any()  # ties exist
    from PIL import Image

    with Image.open(night / raw["ref_path"][0]) as im:
        assert im.size == (16, 16) and im.mode == "RGB"


def test_vote_filter_and_splits(night):
    raw = pd.read_csv(night / "data.csv")
    df = read_night(night)
    assert len(df) == int((raw["votes"] >= 6).sum())
    assert set(df["split"]) == {"train", "val", "test_imagenet", "test_no_imagenet"}
    assert len(read_night(night, min_votes=0)) == len(raw)


def test_observer_prefers_less_distorted(night):
    """Pixel L2 distance (a weak metric) should agree with the simulated observer > 60%."""
    from lipsim.data.night import NightTriplets
    from lipsim.scoring import twoafc

    df = read_night(night)
    ds = NightTriplets(df, None)
    d0, d1 = [], []
    for i in range(len(ds)):
        ref, x0, x1, _, _ = ds[i]
        d0.append(float((ref - x0).norm()))
        d1.append(float((ref - x1).norm()))
    assert twoafc(d0, d1, df["p"]).mean() > 0.6


def test_rerun_replaces_folder_cleanly(tmp_path):
    out = make_night(tmp_path / "n", seed=3, n_train=4, n_val=1, n_test=2, image_size=8)
    (out / "stale.txt").write_text("old")
    make_night(out, seed=3, n_train=2, n_val=1, n_test=2, image_size=8)
    assert not (out / "stale.txt").exists()
    assert len(pd.read_csv(out / "data.csv")) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["n"]  # no temp folders left behind


def test_failed_generation_leaves_old_folder(tmp_path):
    out = make_night(tmp_path / "n", seed=3, n_train=2, n_val=1, n_test=2, image_size=8)
    before = _digest(out)
    with pytest.raises(ValueError):
        make_night(out, seed=3, n_train=2, n_val=1, n_test=2, image_size=2)
    assert _digest(out) == before


def test_image_folders(tmp_path):
    a = make_image_folder(
        tmp_path / "inet", layout="imagenet", seed=1, classes=3, per_class=4, image_size=16
    )
    b = make_image_folder(
        tmp_path / "inet2", layout="imagenet", seed=1, classes=3, per_class=4, image_size=16
    )
    assert _digest(a) == _digest(b)
    assert sorted(p.name for p in (a / "train").iterdir()) == [
        "n00000000",
        "n00000001",
        "n00000002",
    ]
    assert len(list((a / "train" / "n00000001").glob("*.png"))) == 4
    f = make_image_folder(tmp_path / "flat", layout="flat", seed=2, n=5, image_size=16)
    assert sorted(p.name for p in f.iterdir()) == [f"img_{j:05d}.png" for j in range(5)]
    g = make_image_folder(tmp_path / "flat2", layout="flat", seed=3, n=5, image_size=16)
    assert _digest(f) != _digest(g)


def test_cli(tmp_path):
    from lipsim.__main__ import main

    assert (
        main(
            [
                "make-demo-night",
                "--out",
                str(tmp_path / "n"),
                "--seed",
                "0",
                "--n-train",
                "4",
                "--n-val",
                "2",
                "--n-test",
                "4",
                "--image-size",
                "16",
            ]
        )
        == 0
    )
    assert len(pd.read_csv(tmp_path / "n" / "data.csv")) == 10
    assert (
        main(
            [
                "make-demo-images",
                "--out",
                str(tmp_path / "i"),
                "--layout",
                "imagenet",
                "--seed",
                "1",
                "--classes",
                "2",
                "--per-class",
                "3",
                "--image-size",
                "16",
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "i" / "train").rglob("*.png"))) == 6
    assert (
        main(
            [
                "make-demo-images",
                "--out",
                str(tmp_path / "f"),
                "--layout",
                "flat",
                "--n",
                "3",
                "--image-size",
                "16",
            ]
        )
        == 0
    )
    assert len(list((tmp_path / "f").glob("*.png"))) == 3
