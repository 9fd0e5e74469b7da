"""Figure 3b distances (embedding-change attack) and image retrieval under attack."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from lipsim.attacks import lp_norm, row_seed
from lipsim.errors import LipSimError
from lipsim.factory import build_metric
from lipsim.retrieval import list_images, pick, push_away, retrieval_recall
from lipsim.similarity import SimilarityMetric


class Brightness(SimilarityMetric):
    """d = |mean(a) - mean(b)|: an attack on it has one useful direction (brighter/darker)."""

    has_embedding = True

    def embed(self, x):
        return x.mean(dim=(1, 2, 3)).unsqueeze(-1)

    def distance_from_embeddings(self, ea, eb):
        return (ea - eb).abs().sum(-1)


def _folder(tmp_path, n=8, size=8, step=12):
    """Flat grey images, level 60 + step * i: neighbours in pixel space are i - 1, i + 1."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    for i in range(n):
        arr = np.full((size, size, 3), 60 + step * i, dtype=np.uint8)
        Image.fromarray(arr).save(root / ("sub" if i % 2 else "") / f"img_{i:02d}.png")
    (root / "notes.txt").write_text("not an image")
    return root


def test_list_and_pick(tmp_path):
    root = _folder(tmp_path)
    names = list_images(root)
    assert len(names) == 8 and names == sorted(names) and "sub/img_01.png" in names
    assert pick(names, 3, 0) == pick(names, 3, 0) and len(pick(names, 3, 0)) == 3
    assert pick(names, 0, 0) == names
    with pytest.raises(FileNotFoundError):
        list_images(tmp_path / "missing")


def test_push_away_stays_in_ball_increases_distance_and_is_per_row():
    metric = build_metric("lipsim:tiny")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 32, 32, generator=g)
    seeds = [row_seed(0, i) for i in range(4)]
    x_adv = push_away(metric, x, eps=0.5, steps=4, seeds=seeds)
    assert (lp_norm(x_adv - x, "L2") <= 0.5 + 1e-5).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    with torch.no_grad():
        d = metric(x, x_adv)
        d_rand = metric(x, (x + 0.5 * torch.randn_like(x) / (3 * 32 * 32) ** 0.5).clamp(0, 1))
    assert (d > d_rand).all()  # better than a random direction of the same size
    # rows do not depend on their batch mates
    alone = push_away(metric, x[2:3], eps=0.5, steps=4, seeds=seeds[2:3])
    torch.testing.assert_close(alone, x_adv[2:3], atol=1e-5, rtol=0)
    assert torch.equal(push_away(metric, x, eps=0.0, steps=4, seeds=seeds), x)


def test_recall_definition_on_a_controlled_gallery(tmp_path):
    root = _folder(tmp_path)
    metric = build_metric("l2")
    df = retrieval_recall(
        metric,
        root,
        image_size=8,
        n_queries=0,
        eps_list=[0.0, 3.0],
        ks=[1, 3],
        steps=10,
        seed=0,
        batch_size=3,
        device="cpu",
    )
    assert list(df.columns) == [
        "eps",
        "k",
        "recall",
        "neighbour_overlap",
        "n_queries",
        "gallery_size",
        "distractors",
    ]
    clean = df[df["eps"] == 0]
    # l2: d(x, x) = 0 -> every query retrieves itself first; neighbours unchanged
    assert (clean["recall"] == 1.0).all() and (clean["neighbour_overlap"] == 1.0).all()
    # l2 has no preferred direction: a push of 3.0 is ~orthogonal to every other image, so
    # the attacked copy still retrieves its original
    assert (df.loc[df["eps"] == 3.0, "recall"] == 1.0).all()
    assert (df["n_queries"] == 8).all() and (df["gallery_size"] == 8).all()
    # brightness: the images are 12 levels apart; an l2 push of 3.0 (about 0.22 = 55 levels
    # on every pixel) moves the 6 inner queries past a neighbour whichever way they go (the
    # darkest / brightest may be pushed outwards and stay their own nearest image)
    df = retrieval_recall(
        Brightness(),
        root,
        image_size=8,
        n_queries=0,
        eps_list=[0.0, 3.0],
        ks=[1, 3],
        steps=10,
        seed=0,
        batch_size=3,
        device="cpu",
    )
    assert (df.loc[df["eps"] == 0, "recall"] == 1.0).all()
    r = df.set_index(["eps", "k"])["recall"]
    assert r[(3.0, 1)] <= 2 / 8 and r[(3.0, 3)] < 1.0


def test_distances_and_retrieval_cli(tmp_path):
    from lipsim.cli import distances, retrieval
    from lipsim.data.synthetic import make_image_folder

    root = make_image_folder(tmp_path / "natural", layout="flat", seed=2, n=10, image_size=32)
    out = tmp_path / "d.parquet"
    assert (
        distances.main(
            [
                "--metric",
                "demo",
                "--images",
                str(root),
                "--eps",
                "1.0",
                "--steps",
                "3",
                "--n-images",
                "6",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    d = pd.read_parquet(out)
    assert list(d.columns)[:3] == ["image", "eps", "distance"] and len(d) == 6
    assert (d["distance"] > 0).all() and (d["delta_norm"] <= 1.0 + 1e-5).all()
    out = tmp_path / "r.parquet"
    assert (
        retrieval.main(
            [
                "--metric",
                "lipsim:tiny",
                "--images",
                str(root),
                "--n-queries",
                "4",
                "--eps",
                "0",
                "0.5",
                "--k",
                "1",
                "3",
                "--steps",
                "2",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    r = pd.read_parquet(out)
    assert list(r.columns)[:4] == ["metric", "eps", "k", "recall"] and len(r) == 4
    assert r["metric"].iloc[0] == "lipsim-tiny"
    assert r["recall"].between(0, 1).all()


def test_noisy_copy_distractors_unsaturate_recall(tmp_path):
    """Noisy copies of each query are hard negatives: the clean query still retrieves itself
    (d(x, x) = 0), an attack that moves it further than the noise does retrieves a copy, and
    a metric moved by the attack no more than the noise keeps its recall."""
    from lipsim.retrieval import noisy_copies

    root = _folder(tmp_path)
    names = list_images(root)
    x = torch.rand(2, 3, 8, 8)
    copies = noisy_copies(x, names[:2], n=3, noise=0.05, seed=0)
    assert copies.shape == (6, 3, 8, 8) and copies.min() >= 0 and copies.max() <= 1
    torch.testing.assert_close(copies, noisy_copies(x, names[:2], n=3, noise=0.05, seed=0))
    assert not torch.equal(copies[0], copies[1])  # each copy its own noise
    # l2: copies ~0.05 * sqrt(192) = 0.7 away in random directions, the pushed query keeps
    # its original nearest
    df = retrieval_recall(
        build_metric("l2"),
        root,
        image_size=8,
        n_queries=4,
        eps_list=[0.0, 0.2],
        ks=[1],
        steps=10,
        seed=0,
        batch_size=4,
        device="cpu",
        distractors=3,
        distractor_noise=0.05,
    )
    assert (df["recall"] == 1.0).all()
    assert (df["gallery_size"] == 8 + 4 * 3).all() and (df["distractors"] == 3).all()
    assert (df.loc[df["eps"] == 0, "neighbour_overlap"] == 1.0).all()  # copies left out
    # brightness: a push of 0.2 moves the mean by 0.014, less than the 0.047 to the next
    # image (recall saturates without distractors), more than the copies' noise moves it
    # (~0.004): a copy pushed the same way is nearer than the original
    runs = [
        retrieval_recall(
            Brightness(),
            root,
            image_size=8,
            n_queries=4,
            eps_list=[0.0, 0.2],
            ks=[1],
            steps=10,
            seed=0,
            batch_size=4,
            device="cpu",
            distractors=n,
            distractor_noise=0.05,
        ).set_index("eps")["recall"]
        for n in (0, 3)
    ]
    assert runs[0][0.2] == 1.0 and runs[1][0.0] == 1.0
    assert runs[1][0.2] < 1.0
    with pytest.raises(LipSimError, match="distractors"):
        retrieval_recall(
            build_metric("l2"),
            root,
            image_size=8,
            n_queries=2,
            eps_list=[0.0],
            ks=[1],
            steps=1,
            seed=0,
            batch_size=4,
            device="cpu",
            distractors=-1,
        )
