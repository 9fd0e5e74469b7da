"""The public metric API: lipsim.load(preset | checkpoint), m(a, b), embed, certified_radius."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lipsim
from lipsim.metric import LipSim
from lipsim.models import build_model, save_checkpoint
from lipsim.similarity import SimilarityMetric


def test_load_preset_is_seeded_and_frozen():
    a, b, c = (
        lipsim.load("tiny", pretrained=False),
        lipsim.load("tiny", pretrained=False),
        lipsim.load("tiny", pretrained=False, seed=1),
    )
    assert isinstance(a, SimilarityMetric) and a.has_embedding and a.image_size == 32
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(a.embed(x), b.embed(x))
        assert not torch.equal(a.embed(x), c.embed(x))
    assert not any(p.requires_grad for p in a.parameters())
    assert lipsim.load("tiny", emb_dim=16, pretrained=False).embed(x).shape == (2, 16)


def test_distance_embed_and_radius_shapes():
    m = lipsim.load("tiny", pretrained=False)
    a, b, c = (torch.rand(5, 3, 32, 32) for _ in range(3))
    d = m(a, b)
    assert d.shape == (5,) and (d >= 0).all() and (d <= 2).all()
    e = m.embed(a)
    assert e.shape == (5, 128) and (e.norm(dim=-1) <= 1 + 1e-6).all()
    torch.testing.assert_close(m.distance_from_embeddings(e, m.embed(b)), d)
    assert torch.allclose(m(a, a), torch.zeros(5), atol=1e-6)
    r = m.certified_radius(a, b, c)
    assert r.shape == (5,) and (r >= 0).all()
    with pytest.raises(ValueError, match="resize first"):
        m.certified_radius(torch.rand(1, 3, 64, 64), b[:1], c[:1])
    # Other sizes are resized for embed / distance.
    assert m(torch.rand(2, 3, 48, 48), torch.rand(2, 3, 48, 48)).shape == (2,)


def test_input_gradients_flow_for_attacks():
    m = lipsim.load("tiny", pretrained=False)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    m(x, torch.rand(2, 3, 32, 32)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_load_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    net = build_model("tiny", 32, 64, conv_depth=1)
    path = tmp_path / "margin0.5.pt"
    save_checkpoint(path, net, stage="finetuned", margin=0.5, teacher="demo")
    m = lipsim.load(str(path))
    assert isinstance(m, LipSim) and m.name == "lipsim-margin0.5"
    assert (m.info["stage"], m.info["margin"], m.info["teacher"]) == ("finetuned", 0.5, "demo")
    x, y = torch.rand(3, 3, 32, 32), torch.rand(3, 3, 32, 32)
    expected = LipSim(net.eval())(x, y)
    torch.testing.assert_close(m(x, y), expected)
    with pytest.raises(ValueError, match="image_size=32, asked 224"):
        lipsim.load(path, image_size=224)
    with pytest.raises(FileNotFoundError, match="neither a checkpoint file nor a preset"):
        lipsim.load(tmp_path / "nope.pt")


def test_preprocess_pil():
    from PIL import Image

    m = lipsim.load("tiny", pretrained=False)
    img = Image.fromarray((np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8))
    t = m.preprocess(img)
    assert t.shape == (1, 3, 32, 32) and t.dtype == torch.float32
    assert 0 <= t.min() and t.max() <= 1
    assert m(t, t).item() == pytest.approx(0.0, abs=1e-6)


def test_metric_input_contract_is_enforced():
    m = lipsim.load("tiny", pretrained=False)
    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(TypeError, match="uint8"):
        m(x, (x * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="divide by 255"):
        m(x, x * 255)
    with pytest.raises(TypeError, match="numpy array"):
        m(x, x.numpy())
    with pytest.raises(TypeError, match="preprocess"):
        m(x, "image.png")
    with pytest.raises(ValueError, match="batches of 2 and 1"):
        m(x, x[:1])
    # float64 is converted (documented), not refused
    torch.testing.assert_close(m(x, x.double() * 0.5), m(x, x * 0.5))
    with pytest.raises(ValueError, match="pretrained=False"):
        lipsim.load("tiny")


def test_metric_switch_and_spec():
    from lipsim.factory import build_metric

    cos = lipsim.load("tiny", pretrained=False, metric="cosine")
    ball = lipsim.load("tiny", pretrained=False)
    assert (cos.metric, ball.metric) == ("cosine", "ball")
    x, y = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        fa, fb = cos.raw_embed(x), cos.raw_embed(y)
        torch.testing.assert_close(cos(x, y), 1 - torch.nn.functional.cosine_similarity(fa, fb))
    assert build_metric("lipsim-cosine:tiny").metric == "cosine"
    assert build_metric("lipsim:tiny").metric == "ball"
