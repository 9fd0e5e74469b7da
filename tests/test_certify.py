"""Certificates hold against a strong attack on the reference, and the scores are right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lipsim.certify import certified_scores, certify_triplets, radius_from_embeddings
from lipsim.metric import LipSim
from lipsim.models import SLLConv2d, SLLLinear, build_model
from lipsim.scoring import twoafc


def _metric(seed=0):
    """A tiny LipSim whose weights are scaled up, so distances and radii are not trivial."""
    torch.manual_seed(seed)
    net = build_model("tiny", 32, 64, conv_depth=2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (SLLConv2d, SLLLinear)):
                (m.kernel if isinstance(m, SLLConv2d) else m.weight).mul_(3.0)
    return LipSim(net.requires_grad_(False))


def _triplets(n=24, seed=1):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(n, 3, 32, 32, generator=g)
    # x0 / x1: perturbed copies of the reference at different strengths, so both kinds of
    # decisions occur and several margins are large enough to certify.
    x0 = (ref + 0.3 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1)
    x1 = (ref + 0.3 * torch.rand(n, 1, 1, 1, generator=g) * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1)
    p = torch.tensor(np.r_[np.round(np.linspace(0, 1, n - 2), 2), 0.5, 0.5], dtype=torch.float32)
    return ref, x0, x1, p


def _pgd_attacked_d(metric, ref, e0, e1, p, eps, steps=100, restarts=3, seed=0):
    """l2 PGD on the reference only (x0, x1 fixed; pixels kept in [0, 1]) that tries to
    push the decision towards the answer humans like less. Returns the (d0, d1) pair with
    the lowest 2AFC score found per triplet (including the clean point)."""
    g = torch.Generator().manual_seed(seed)
    want_x0 = p > 0.5  # to lower the score of a p > 0.5 row, make d0 < d1
    sign = torch.where(want_x0, 1.0, -1.0)  # minimise sign * (d0 - d1)

    def dists(x):
        e = metric.embed(x)
        return metric.distance_from_embeddings(e, e0), metric.distance_from_embeddings(e, e1)

    with torch.no_grad():
        d0, d1 = dists(ref)
    best0, best1 = d0.clone(), d1.clone()
    best_score = torch.as_tensor(twoafc(d0, d1, p))
    eps_b = eps.view(-1, 1, 1, 1)
    for r in range(restarts):
        delta = torch.randn(ref.shape, generator=g)
        delta = delta / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) * eps_b * (0.5 if r else 0.0)
        delta.requires_grad_(True)
        step = 2.5 * eps_b / steps
        for _ in range(steps):
            x = (ref + delta).clamp(0, 1)
            d0, d1 = dists(x)
            loss = (sign * (d0 - d1)).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                score = torch.as_tensor(twoafc(d0, d1, p))
                better = score < best_score
                best_score = torch.where(better, score, best_score)
                best0, best1 = torch.where(better, d0, best0), torch.where(better, d1, best1)
                gn = grad.flatten(1).norm(dim=1).clamp_min(1e-20).view(-1, 1, 1, 1)
                delta -= step * grad / gn
                norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                delta *= (eps_b / norm.clamp_min(1e-20)).clamp(max=1.0)
                delta.copy_((ref + delta).clamp(0, 1) - ref)  # stay in the image box
        with torch.no_grad():
            d0, d1 = dists((ref + delta).clamp(0, 1))
            score = torch.as_tensor(twoafc(d0, d1, p))
            better = score < best_score
            best_score = torch.where(better, score, best_score)
            best0, best1 = torch.where(better, d0, best0), torch.where(better, d1, best1)
    return best0, best1, best_score


def test_pgd_on_reference_never_flips_a_certified_triplet():
    metric = _metric()
    ref, x0, x1, p = _triplets()
    with torch.no_grad():
        e0, e1 = metric.embed(x0), metric.embed(x1)
        d0, d1, radius = radius_from_embeddings(metric.embed(ref), e0, e1)
    radius = radius.float()
    assert (radius > 1e-3).sum() >= 10, "test triplets too easy: few non-trivial radii"
    # Attack each triplet right at its certified radius: no decision may flip.
    _, _, _ = None, None, None
    a0, a1, _ = _pgd_attacked_d(metric, ref, e0, e1, p, eps=radius * (1 - 1e-4))
    clean = torch.sign(d0 - d1).float()
    attacked = torch.sign(a0.double() - a1.double()).float()
    certified = radius > 1e-6
    assert (attacked[certified] == clean[certified]).all(), (
        f"certified decisions flipped: {torch.nonzero(attacked != clean).flatten().tolist()}")
    # The attack is strong enough to matter: at 8x the radius it flips most of them.
    b0, b1, _ = _pgd_attacked_d(metric, ref, e0, e1, p, eps=8 * radius, steps=60, restarts=1)
    flipped = torch.sign(b0.double() - b1.double()).float() != clean
    assert flipped[certified].float().mean() > 0.5


@pytest.mark.parametrize("eps", [0.02, 0.1])
def test_certified_score_lower_bounds_attacked_score(eps):
    metric = _metric(seed=2)
    ref, x0, x1, p = _triplets(seed=3)
    with torch.no_grad():
        e0, e1 = metric.embed(x0), metric.embed(x1)
        d0, d1, radius = radius_from_embeddings(metric.embed(ref), e0, e1)
    score = twoafc(d0, d1, p)
    certified = float(np.mean(score * (radius.numpy() > eps)))
    _, _, attacked = _pgd_attacked_d(metric, ref, e0, e1, p,
                                     eps=torch.full((len(p),), eps), steps=60, restarts=2)
    empirical = float(attacked.mean())
    assert certified <= empirical + 1e-12
    assert empirical <= float(np.mean(score)) + 1e-12


def test_radius_edge_cases():
    e = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    d0, d1, r = radius_from_embeddings(e, e[[1, 1, 2, 3]], e[[1, 2, 2, 0]])
    assert r[0] == 0 and r[2] == 0  # phi(x0) == phi(x1): a tie for every reference
    assert (r >= 0).all() and (r <= 1).all()
    # d0 == d1 with distinct embeddings: a tie, not certified.
    ref = torch.tensor([[1.0, 0.0, 0.0]])
    _, _, r = radius_from_embeddings(ref, torch.tensor([[0.0, 1.0, 0.0]]),
                                     torch.tensor([[0.0, 0.0, 1.0]]))
    assert r.item() == 0
    # Closed form: ref = e_1, x0 = e_1, x1 = e_2 -> d0 = 0, d1 = 1, R = 1 / sqrt(2).
    d0, d1, r = radius_from_embeddings(ref, ref, torch.tensor([[0.0, 1.0, 0.0]]))
    assert (d0.item(), d1.item()) == (0.0, 1.0)
    assert r.item() == pytest.approx(2 ** -0.5)


def test_certify_triplets_and_scores_in_memory():
    metric = _metric()
    ref, x0, x1, p = _triplets(n=12)
    data = torch.utils.data.TensorDataset(ref, x0, x1, p, torch.arange(len(p)))
    loader = torch.utils.data.DataLoader(data, batch_size=5)
    ids = np.arange(100, 112)
    splits = np.array(["test_imagenet"] * 4 + ["test_no_imagenet"] * 8)
    df = certify_triplets(metric, loader, "cpu", ids=ids, splits=splits)
    assert list(df.columns) == ["id", "split", "p", "d0", "d1", "score", "radius"]
    assert df["id"].tolist() == ids.tolist() and len(df) == 12
    np.testing.assert_allclose(df["score"], twoafc(df["d0"], df["d1"], df["p"]))
    np.testing.assert_allclose(df["radius"], metric.certified_radius(ref, x0, x1).numpy())

    s = certified_scores(df, [0.0, 0.01, 1.0])
    nat = s["natural"]
    assert nat["test"] == pytest.approx(100 * df["score"].mean())
    assert nat["test"] == pytest.approx((4 * nat["test_imagenet"] + 8 * nat["test_no_imagenet"]) / 12)
    assert s["certified"][1.0]["test"] == 0.0  # R <= ||phi(x)|| <= 1, strict inequality
    assert s["certified"][0.0]["test"] <= nat["test"]
    assert s["certified"][0.01]["test"] <= s["certified"][0.0]["test"]
    expected = 100 * np.mean(df["score"] * (df["radius"] > 0.01))
    assert s["certified"][0.01]["test"] == pytest.approx(expected)


def test_certified_scores_hand_computed():
    df = pd.DataFrame({"id": [1, 2, 3, 4], "split": ["test_imagenet", "test_imagenet",
                                                      "test_no_imagenet", "val"],
                       "p": [1.0, 0.5, 0.0, 1.0], "d0": [0.5, 0.2, 0.1, 0.3],
                       "d1": [0.1, 0.1, 0.4, 0.3], "score": [1.0, 0.5, 1.0, 0.5],
                       "radius": [0.5, 0.3, 0.1, 0.0]})
    s = certified_scores(df, [0.2])
    assert s["natural"]["test"] == pytest.approx(100 * 2.5 / 3)
    assert s["certified"][0.2]["test"] == pytest.approx(100 * 1.5 / 3)  # p=0.5 row adds 0.5
    assert s["certified"][0.2]["val"] == 0.0
