"""Metric registry: every spec builds offline (seeded random weights) and behaves as a metric."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lipsim import baselines
from lipsim.baselines import DISTS
from lipsim.errors import LipSimError
from lipsim.factory import build_metric
from lipsim.registry import metric_card

B = 3


def _images(seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, 3, size, size, generator=g), torch.rand(B, 3, size, size, generator=g)


@pytest.mark.parametrize(
    "spec",
    [
        "l2",
        "lpips",
        "dists",
        "demo",
        "lipsim:tiny",
        pytest.param("dino_vitb16", marks=pytest.mark.slow),
        pytest.param("clip_vitb32", marks=pytest.mark.slow),
        pytest.param("open_clip_vitb32", marks=pytest.mark.slow),
        pytest.param("dreamsim_ensemble", marks=pytest.mark.slow),
    ],
)
def test_builds_offline_with_random_weights(spec):
    metric = build_metric(spec, random_weights=True, device="cpu")
    a, b = _images()
    with torch.no_grad():
        d = metric(a, b)
        d_self = metric(a, a)
    assert d.shape == (B,) and torch.isfinite(d).all()
    assert (d_self <= d + 1e-6).all()  # an image is closer to itself than to noise
    assert not any(p.requires_grad for p in metric.parameters())  # frozen
    assert not metric.training
    if metric.has_embedding:
        e = metric.embed(a)
        torch.testing.assert_close(metric.distance_from_embeddings(e, metric.embed(b)), d)
    # differentiable w.r.t. the input (attacks need it)
    x = a.clone().requires_grad_(True)
    metric(x, b).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_seeded_random_weights_are_reproducible():
    a, b = _images()
    for spec in ("lpips", "dists"):
        d1 = build_metric(spec, random_weights=True)(a, b)
        d2 = build_metric(spec, random_weights=True)(a, b)
        torch.testing.assert_close(d1, d2)


def test_l2_is_pixel_distance_and_image_size_resizes():
    a, b = _images()
    torch.testing.assert_close(build_metric("l2")(a, b), (a - b).flatten(1).norm(dim=1))
    m = build_metric("l2", image_size=16)
    assert m.image_size == 16 and m.embed(a).shape == (B, 3 * 16 * 16)


def test_dists_is_zero_on_identical_images():
    a, _ = _images()
    d = build_metric("dists", random_weights=True)(a, a)
    torch.testing.assert_close(d, torch.zeros(B), atol=1e-5, rtol=0)


@pytest.mark.parametrize("spec", ["lpips", "dists"])
def test_missing_weights_name_the_fetch_command(spec, tmp_path):
    with pytest.raises(FileNotFoundError, match=f"fetch-weights --teacher {spec} --weights-dir"):
        build_metric(spec, weights_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="fetch-weights"):
        build_metric(spec)  # no weights_dir at all


def test_unknown_spec():
    with pytest.raises(LipSimError, match="unknown metric 'nope'.*lpips"):
        build_metric("nope")
    with pytest.raises(LipSimError, match="checkpoint path"):
        build_metric("lipsim:")


@pytest.mark.filterwarnings("ignore:.*deprecated:UserWarning")
def test_lpips_loads_torchvision_alexnet_from_weights_dir(tmp_path, monkeypatch):
    from torchvision.models import alexnet

    torch.manual_seed(3)
    sd = alexnet(weights=None).state_dict()
    path = tmp_path / "lpips" / metric_card("lpips").downloads[0].name
    path.parent.mkdir()
    torch.save(sd, path)
    # a file we wrote cannot match torchvision's sha256 prefix: the check must refuse it...
    with pytest.raises(ValueError, match="sha256"):
        build_metric("lpips", weights_dir=tmp_path)
    # ...and with the check out of the way, the trunk is exactly the file's features
    monkeypatch.setattr(baselines, "_check_hash_prefix", lambda p: None)
    m = build_metric("lpips", weights_dir=tmp_path)
    torch.testing.assert_close(m.net.net.slice1[0].weight, sd["features.0.weight"])
    torch.testing.assert_close(m.net.net.slice5._modules["10"].bias, sd["features.10.bias"])
    # the linear layers are the ones shipped with lpips, not random
    import lpips

    ref = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)
    torch.testing.assert_close(m.net.lin0.model[1].weight, ref.lin0.model[1].weight)


@pytest.mark.slow
def test_dists_is_the_dists_pytorch_model_with_its_shipped_alpha_beta(tmp_path, monkeypatch):
    import DISTS_pytorch
    from torchvision.models import vgg16

    torch.manual_seed(4)
    sd = vgg16(weights=None).state_dict()  # a seeded stand-in for torchvision's checkpoint
    folder = tmp_path / "dists"
    folder.mkdir()
    torch.save(
        {k: v for k, v in sd.items() if k.startswith("features.")},
        folder / metric_card("dists").downloads[0].name,
    )
    # a file we wrote cannot match torchvision's sha256 prefix: the check must refuse it...
    with pytest.raises(ValueError, match="sha256"):
        build_metric("dists", weights_dir=tmp_path)
    # ...and with the check out of the way, the trunk is exactly the file's features
    monkeypatch.setattr(baselines, "_check_hash_prefix", lambda p: None)
    m = build_metric("dists", weights_dir=tmp_path)
    assert isinstance(m, DISTS) and isinstance(m.net, DISTS_pytorch.DISTS)
    torch.testing.assert_close(m.net.stage1[0].weight, sd["features.0.weight"])
    torch.testing.assert_close(m.net.stage5._modules["28"].weight, sd["features.28.weight"])
    # alpha / beta are the ones shipped in the DISTS_pytorch wheel
    shipped = torch.load(Path(DISTS_pytorch.__file__).parent / "weights.pt", weights_only=True)
    torch.testing.assert_close(m.net.alpha.data, shipped["alpha"])
    torch.testing.assert_close(m.net.beta.data, shipped["beta"])
    # the distance is DISTS_pytorch's own forward, one value per pair, differentiable
    a, b = _images()
    a.requires_grad_(True)
    d = m(a, b)
    assert d.shape == (B,)
    torch.testing.assert_close(d.detach(), m.net(a.detach(), b).reshape(B))
    d.sum().backward()
    assert a.grad is not None and a.grad.abs().sum() > 0
    # building never left DISTS_pytorch without torchvision (no lasting patch)
    import torchvision.models

    assert DISTS_pytorch.DISTS_pt.models is torchvision.models


def test_dists_fetches_only_the_vgg16_trunk():
    (download,) = metric_card("dists").downloads
    assert (download.url, download.name) == (
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "vgg16-397923af.pth",
    )


def test_evaluate_cli(tmp_path, night):
    from lipsim.cli import evaluate
    from lipsim.scoring import accuracy, twoafc

    out = tmp_path / "eval.parquet"
    assert (
        evaluate.main(
            [
                "--metric",
                "l2",
                "--night",
                str(night),
                "--image-size",
                "32",
                "--batch-size",
                "4",
                "--device",
                "cpu",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    df = pd.read_parquet(out)
    assert list(df.columns) == ["id", "split", "p", "d0", "d1", "score", "correct"]
    np.testing.assert_allclose(df["score"], twoafc(df["d0"], df["d1"], df["p"]))
    np.testing.assert_array_equal(df["correct"], accuracy(df["d0"], df["d1"], df["p"]))
    assert set(df["split"]) == {"test_imagenet", "test_no_imagenet"}
