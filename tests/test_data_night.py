"""NIGHT loader, Dataset, verifier and folder checks: formats and error messages."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lipsim.data.folders import check_image_folder, check_imagenet
from lipsim.data.night import NightFormatError, NightTriplets, read_night, verify_night
from lipsim.data.synthetic import make_image_folder, make_night


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_night(
        tmp_path_factory.mktemp("nightbase") / "night",
        seed=5,
        n_train=12,
        n_val=4,
        n_test=8,
        image_size=16,
    )


@pytest.fixture
def night(base, tmp_path) -> Path:
    """A private copy tests may damage."""
    return Path(shutil.copytree(base, tmp_path / "night"))


def _edit_csv(root: Path, fn) -> pd.DataFrame:
    df = pd.read_csv(root / "data.csv", dtype=str, keep_default_na=False)
    df = fn(df)
    df.to_csv(root / "data.csv", index=False)
    return df


def test_read_night_columns_and_values(base):
    df = read_night(base)
    for col in ("id", "split", "p", "ref_path", "left_path", "right_path", "votes", "prompt"):
        assert col in df.columns
    assert df["id"].dtype == np.int64
    assert (df["votes"] >= 6).all()
    raw = pd.read_csv(base / "data.csv").set_index("id")
    np.testing.assert_allclose(df["p"], raw.loc[df["id"], "right_vote"])
    for col in ("ref_path", "left_path", "right_path"):
        assert all(Path(p).is_absolute() and Path(p).is_file() for p in df[col])
    assert (
        df["left_path"].str.endswith("_0.png").all()
        and df["right_path"].str.endswith("_1.png").all()
    )
    only_test = read_night(base, splits="test")
    assert set(only_test["split"]) == {"test_imagenet", "test_no_imagenet"}
    assert set(read_night(base, splits=["train", "val"])["split"]) == {"train", "val"}
    with pytest.raises(ValueError, match="unknown split"):
        read_night(base, splits=["nope"])


def test_vote_counts_are_turned_into_shares(night):
    def to_counts(df):
        votes = df["votes"].astype(int)
        df["right_vote"] = (df["right_vote"].astype(float) * votes).round().astype(int).astype(str)
        df["left_vote"] = (votes - df["right_vote"].astype(int)).astype(str)
        return df

    shares = read_night(night)["p"].to_numpy()
    _edit_csv(night, to_counts)
    np.testing.assert_allclose(read_night(night)["p"].to_numpy(), shares, atol=1e-6)


def test_parent_folder_and_nights_prefixed_paths(night, tmp_path):
    parent = tmp_path / "extracted"
    (parent).mkdir()
    shutil.move(str(night), parent / "nights")
    assert len(read_night(parent)) == len(read_night(parent / "nights"))
    # paths written relative to the parent ("nights/ref/...") are found too
    _edit_csv(
        parent / "nights",
        lambda df: df.assign(
            **{c: "nights/" + df[c] for c in ("ref_path", "left_path", "right_path")}
        ),
    )
    df = read_night(parent)
    assert Path(df["ref_path"][0]).is_file()


def test_dataset_items(base):
    df = read_night(base)
    ds = NightTriplets(df, image_size=24)
    ref, x0, x1, p, idx = ds[3]
    for x in (ref, x0, x1):
        assert x.shape == (3, 24, 24) and x.dtype == torch.float32
        assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert idx == 3 and p.dtype == torch.float32 and float(p) == pytest.approx(df["p"][3])
    native = NightTriplets(df, image_size=None)[3]
    from PIL import Image

    left = np.asarray(Image.open(df["left_path"][3]).convert("RGB"), dtype=np.float32) / 255
    np.testing.assert_allclose(native[1].permute(1, 2, 0).numpy(), left, atol=1e-6)
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert batch[0].shape == (4, 3, 24, 24) and batch[3].shape == (4,)


def test_missing_column_is_named(night):
    _edit_csv(night, lambda df: df.drop(columns=["votes"]))
    with pytest.raises(NightFormatError, match=r"data.csv.*missing column\(s\) votes"):
        read_night(night)


def test_bad_value_names_line_and_id(night):
    _edit_csv(night, lambda df: df.assign(votes=df["votes"].where(df.index != 2, "many")))
    with pytest.raises(NightFormatError, match=r"data.csv line 4 \(id 2\) \[votes\]: not a number"):
        read_night(night, min_votes=0)


def test_missing_image_names_file_and_line(night):
    df = read_night(night)
    victim = Path(df["right_path"][1])
    victim.unlink()
    with pytest.raises(FileNotFoundError) as err:
        read_night(night)
    msg = str(err.value)
    assert str(victim) in msg and f"line {df['line'][1]}" in msg and "right_path" in msg


def test_unreadable_image_names_file_and_line(night):
    df = read_night(night)
    Path(df["ref_path"][0]).write_bytes(b"not a png")
    ds = NightTriplets(df, 16)
    with pytest.raises(NightFormatError) as err:
        ds[0]
    assert df["ref_path"][0] in str(err.value) and f"line {df['line'][0]}" in str(err.value)


def test_verify_lists_all_problems(night, tmp_path):
    df = read_night(night)
    Path(df["ref_path"][0]).unlink()  # missing
    Path(df["left_path"][1]).write_bytes(b"\x89PNG broken")  # unreadable
    _edit_csv(night, lambda d: d.assign(split=d["split"].where(d.index != 5, "holdout")))
    problems = verify_night(night)
    text = "\n".join(map(str, problems))
    assert len(problems) == 3, text
    assert (
        "missing image" in text and "unreadable image" in text and "unknown split 'holdout'" in text
    )
    assert df["ref_path"][0] in text and df["left_path"][1] in text
    assert (
        verify_night(
            make_night(tmp_path / "ok", seed=1, n_train=4, n_val=2, n_test=4, image_size=8),
            min_votes=0,
        )
        == []
    )

    from lipsim.__main__ import main

    report = tmp_path / "r.json"
    assert main(["verify-night", "--root", str(night), "--report", str(report)]) == 1
    data = json.loads(report.read_text())
    assert data["n_problems"] == 3 and not data["ok"]


def test_verify_missing_split_and_no_csv(night, tmp_path):
    _edit_csv(night, lambda d: d[d["split"] != "val"])
    assert any("split val" in str(p) for p in verify_night(night))
    assert "no data.csv" in str(verify_night(tmp_path / "empty")[0])


def test_check_folders(tmp_path):
    inet = make_image_folder(
        tmp_path / "inet", layout="imagenet", classes=3, per_class=2, image_size=8
    )
    assert check_imagenet(inet, expect_classes=3).ok
    rep = check_imagenet(inet, expect_classes=1000)
    assert not rep.ok and "found 3 class folders, expected 1000" in rep.problems[0]
    assert "image-net.org" in rep.problems[0]
    bad = next((inet / "train" / "n00000001").glob("*.png"))
    bad.write_bytes(b"junk")
    rep = check_imagenet(inet, expect_classes=3)
    assert not rep.ok and str(bad) in rep.unreadable[0]
    assert "cocodataset.org" in check_image_folder(tmp_path / "nope").problems[0]
    flat = make_image_folder(tmp_path / "flat", layout="flat", n=3, image_size=8)
    assert check_image_folder(flat).n_images == 3

    from lipsim.__main__ import main

    report = tmp_path / "rep.json"
    assert (
        main(["check-folder", "--layout", "flat", "--root", str(flat), "--report", str(report)])
        == 0
    )
    assert json.loads(report.read_text())["n_images"] == 3
    assert (
        main(["check-folder", "--layout", "imagenet", "--root", str(inet), "--expect-classes", "3"])
        == 1
    )
