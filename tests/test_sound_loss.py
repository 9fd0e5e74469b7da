"""The hinge on the sound radius (finetune.loss: hinge_sound): what its docstring claims.

Embeddings are random float64 tensors (the loss acts on f, whatever the network), and the CLI
test finetunes a tiny seeded model for real.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lipsim.certify import radii
from lipsim.data.synthetic import make_night
from lipsim.models import build_model, load_checkpoint, project, save_checkpoint
from lipsim.train.finetune import FinetuneTask, hinge_loss, hinge_on, lipsim_distances, sound_logit


def _embeddings(n=64, dim=8, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    f = [scale * torch.randn(n, dim, generator=g, dtype=torch.float64) for _ in range(3)]
    # norms spread on both sides of 1: where cosine's two radii differ
    f[0] = f[0] * torch.exp(torch.randn(n, 1, generator=g, dtype=torch.float64))
    p = torch.rand(n, generator=g, dtype=torch.float64)
    return (*f, p)


def _chord(f0, f1, metric):
    return torch.linalg.vector_norm(project(f1, metric) - project(f0, metric), dim=-1)


@pytest.mark.parametrize("metric", ["cosine", "ball"])
def test_logit_over_chord_is_the_sound_radius_and_moving_that_far_ties(metric):
    f_ref, f0, f1, _ = _embeddings()
    s = sound_logit(f_ref, f0, f1, metric)
    r = radii(f_ref, f0, f1, metric)
    torch.testing.assert_close(s.abs() / _chord(f0, f1, metric), r["radius"])
    if metric == "cosine":
        # Geometry, not the formula: f(ref) moved by R towards the boundary H = {<v, g> = 0}
        # lands on it (a tie), and stays strictly on its side when moved by 0.99 R.
        g = project(f1, metric) - project(f0, metric)
        n = g / torch.linalg.vector_norm(g, dim=-1, keepdim=True)
        side = torch.sign(s).unsqueeze(-1)
        for frac, tie in ((1.0, True), (0.99, False)):
            moved = f_ref - frac * side * r["radius"].unsqueeze(-1) * n
            gap = sound_logit(moved, f0, f1, metric)
            if tie:
                assert gap.abs().max() < 1e-9
            else:
                assert (torch.sign(gap) == torch.sign(s)).all()


def test_ball_sound_loss_is_the_paper_loss():
    torch.manual_seed(0)
    net = nn.Linear(12, 6).double()
    g = torch.Generator().manual_seed(1)
    batch = (*(0.3 * torch.randn(16, 12, generator=g, dtype=torch.float64) for _ in range(3)),)
    batch = (*batch, torch.rand(16, generator=g), torch.arange(16))
    grads = {}
    for loss in ("hinge", "hinge_sound"):
        net.zero_grad()
        task = FinetuneTask(None, 0.5, metric="ball", loss_reduction="mean", loss=loss)
        value, n = task.loss(lambda x: net(x).double(), batch, "cpu")
        value.backward()
        grads[loss] = (value.item(), net.weight.grad.clone())
        assert n == 48
    assert grads["hinge"][0] == pytest.approx(grads["hinge_sound"][0], rel=1e-6)
    torch.testing.assert_close(grads["hinge"][1], grads["hinge_sound"][1], rtol=1e-5, atol=1e-6)


def test_cosine_gradient_is_the_boundary_normal_and_sees_the_norm():
    f_ref, f0, f1, p = _embeddings(n=32)
    f_ref = f_ref.clone().requires_grad_(True)
    y = 2 * torch.round(p) - 1
    s = sound_logit(f_ref, f0, f1, "cosine")
    active = (0.5 - y * s > 0).detach()
    assert active.sum() >= 8
    hinge_on(s, p, 0.5, "mean").backward()
    e0, e1 = project(f0, "cosine"), project(f1, "cosine")
    want = -(y * active).unsqueeze(-1) * (e1 - e0) / len(p)
    torch.testing.assert_close(f_ref.grad, want)

    # cosine of the angle between the gradient and f(ref): the radial share of the step
    def radial(grad, f):
        dot = (grad * f).sum(-1)
        return dot.abs() / (torch.linalg.vector_norm(grad, dim=-1) * f.norm(dim=-1) + 1e-300)

    # The paper's cosine hinge only turns f(ref): its gradient has no radial part.
    ref2 = f_ref.detach().clone().requires_grad_(True)
    d0, d1 = lipsim_distances(nn.Identity(), ref2, f0, f1, "cosine")
    hinge_loss(d0, d1, p, 0.5, "mean").backward()
    assert radial(ref2.grad, ref2)[active].max() < 1e-6
    assert radial(f_ref.grad, f_ref)[active].median() > 0.05


def test_scaling_scales_the_logit_and_an_offset_cannot_inflate_it():
    f_ref, f0, f1, p = _embeddings()
    s = sound_logit(f_ref, f0, f1, "cosine")
    torch.testing.assert_close(sound_logit(0.5 * f_ref, 0.5 * f0, 0.5 * f1, "cosine"), 0.5 * s)
    d0, d1 = lipsim_distances(nn.Identity(), f_ref, f0, f1, "cosine")
    e0, e1 = lipsim_distances(nn.Identity(), 0.5 * f_ref, 0.5 * f0, 0.5 * f1, "cosine")
    torch.testing.assert_close(d0 - d1, e0 - e1)  # the paper's logit does not see the scale
    # A constant offset c raises every norm; the logit decays like 1 / ||c|| and the loss
    # climbs to its margin.
    c = torch.randn(
        f_ref.shape[-1], generator=torch.Generator().manual_seed(5), dtype=torch.float64
    )
    c = c / torch.linalg.vector_norm(c)
    sizes = (10.0, 100.0, 1000.0)
    logits = [sound_logit(f_ref + k * c, f0 + k * c, f1 + k * c, "cosine") for k in sizes]
    mags = [float(v.abs().mean()) for v in logits]
    assert mags[1] < mags[0] / 5 and mags[2] < mags[1] / 5
    assert float(hinge_on(logits[2], p, 0.5, "mean")) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("metric", ["cosine", "ball"])
@pytest.mark.parametrize("scale", [0.1, 1.0, 30.0])
def test_logit_is_at_most_twice_the_distance_to_the_rejected_embedding(metric, scale):
    f_ref, f0, f1, p = _embeddings(n=256, seed=3, scale=scale)
    y = 2 * torch.round(p) - 1
    s = y * sound_logit(f_ref, f0, f1, metric)
    rejected = torch.where((y > 0).unsqueeze(-1), f0, f1)
    bound = _chord(f0, f1, metric) * torch.linalg.vector_norm(f_ref - rejected, dim=-1)
    correct = s > 0
    assert correct.sum() > 50
    assert (s[correct] <= bound[correct] + 1e-12).all()
    assert (bound <= 2 * torch.linalg.vector_norm(f_ref - rejected, dim=-1) + 1e-12).all()


def test_unknown_loss_is_refused():
    with pytest.raises(ValueError, match="--loss must be one of hinge, hinge_sound"):
        FinetuneTask(None, 0.5, metric="cosine", loss_reduction="mean", loss="rmse")


def test_finetune_cli_trains_hinge_sound_and_records_it(tmp_path):
    from lipsim.cli import finetune as finetune_cli

    torch.manual_seed(0)
    save_checkpoint(
        tmp_path / "pre.pt", build_model("tiny", 32, 16), stage="pretrained", teacher="demo"
    )
    night = make_night(tmp_path / "night", seed=0, n_train=32, n_val=0, n_test=0, image_size=32)
    common = ["--init", str(tmp_path / "pre.pt"), "--night", str(night), "--margin", "0.5"]
    common += ["--min-votes", "6", "--metric", "cosine", "--loss-reduction", "mean"]
    common += ["--optimizer-state", "fresh", "--epochs", "1", "--batch-size", "16", "--lr", "0.01"]
    common += ["--beta1", "0.5", "--beta2", "0.9", "--weight-decay", "0", "--schedule", "constant"]
    common += ["--warmup-steps", "0", "--seed", "0", "--workers", "0", "--amp", "none"]
    common += ["--ckpt-every", "100", "--device", "cpu", "--no-progress"]
    nets = {}
    for loss in ("hinge", "hinge_sound"):
        out = tmp_path / f"{loss}.pt"
        args = [*common, "--loss", loss, "--workdir", str(tmp_path / loss), "--out", str(out)]
        assert finetune_cli.main(args) == 0
        nets[loss], ck = load_checkpoint(out)
        assert ck["meta"]["loss"] == loss and ck["metric"] == "cosine"
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(nets["hinge"](x), nets["hinge_sound"](x))
