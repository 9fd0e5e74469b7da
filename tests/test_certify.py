"""Certificates hold against a strong attack on the reference, and the scores are right."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import certify_options

from lipsim.certify import (
    COLUMNS,
    certified_scores,
    certify_triplets,
    radii,
    radius_from_embeddings,
    unsound_share,
)
from lipsim.metric import LipSim
from lipsim.models import SLLConv2d, SLLLinear, build_model
from lipsim.scoring import DREAMSIM, Rule, accuracy, twoafc


class _Centred(torch.nn.Module):
    """A real LipSimNet followed by a translation, f(x) - f(grey): still 1-Lipschitz, and it
    brings ||f|| near 1 so that P acts both inside the ball and on the sphere. (With raw
    random weights ||f|| is ~20, P divides every change by ~20 and the radii are ~20x loose,
    which would make the attack test toothless.)"""

    def __init__(self, net):
        super().__init__()
        self.net, self.image_size = net, net.image_size
        with torch.no_grad():
            self.register_buffer("centre", net(torch.full((1, 3, 32, 32), 0.5)))

    def forward(self, x):
        return self.net(x) - self.centre


def _metric(seed=0):
    """A tiny LipSim with its weights scaled up, so the SLL layers do real work."""
    torch.manual_seed(seed)
    net = build_model("tiny", 32, 64, conv_depth=2)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (SLLConv2d, SLLLinear)):
                (m.kernel if isinstance(m, SLLConv2d) else m.weight).mul_(3.0)
    net.requires_grad_(False).eval()
    return LipSim(_Centred(net))


def _triplets(n=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(n, 3, 32, 32, generator=g)

    def distort():
        s = 0.3 * torch.rand(n, 1, 1, 1, generator=g)
        return (ref + s * torch.randn(n, 3, 32, 32, generator=g)).clamp(0, 1)

    # x0 / x1: noisy copies of the reference at different strengths, so both decisions
    # occur and margins vary; the last two rows are p = 0.5 rows.
    p = torch.tensor(np.r_[np.round(np.linspace(0, 1, n - 2), 2), 0.5, 0.5], dtype=torch.float32)
    return ref, distort(), distort(), p


def _pgd(metric, ref, e0, e1, p, eps, sign, steps=50, restarts=2, seed=0):
    """l2 PGD on the reference only (x0, x1 fixed through their embeddings e0, e1; pixels
    kept in [0, 1]) minimising sign * (d0 - d1) within ||delta|| <= eps (per row).
    Returns the lowest sign * (d0 - d1) and the lowest 2AFC score seen per triplet over all
    iterates of all restarts (the clean point included)."""
    g = torch.Generator().manual_seed(seed)
    eps_b = eps.view(-1, 1, 1, 1).float()

    def evaluate(x):
        e = metric.embed(x)
        d0 = metric.distance_from_embeddings(e, e0)
        d1 = metric.distance_from_embeddings(e, e1)
        return d0, d1

    with torch.no_grad():
        d0, d1 = evaluate(ref)
    best_obj = sign * (d0 - d1).double()
    best_score = torch.as_tensor(twoafc(d0, d1, p))
    for r in range(restarts):
        delta = torch.randn(ref.shape, generator=g)
        delta *= 0.5 * r * eps_b / delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        step = 2.5 * eps_b / steps
        for it in range(steps + 1):
            delta.requires_grad_(True)
            d0, d1 = evaluate((ref + delta).clamp(0, 1))
            obj = sign * (d0 - d1)
            with torch.no_grad():
                best_obj = torch.minimum(best_obj, obj.double())
                best_score = torch.minimum(best_score, torch.as_tensor(twoafc(d0, d1, p)))
            if it == steps:
                break
            (grad,) = torch.autograd.grad(obj.sum(), delta)
            with torch.no_grad():
                gn = grad.flatten(1).norm(dim=1).clamp_min(1e-20).view(-1, 1, 1, 1)
                delta = delta - step * grad / gn
                norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
                delta = delta * (eps_b / norm.clamp_min(1e-20)).clamp(max=1.0)
                delta = (ref + delta).clamp(0, 1) - ref  # stay in the image box
    return best_obj, best_score


def _clean(metric, ref, x0, x1, column="radius"):
    with torch.no_grad():
        e0, e1 = metric.embed(x0), metric.embed(x1)
        r = radii(metric.raw_embed(ref), metric.raw_embed(x0), metric.raw_embed(x1), metric.metric)
    return e0, e1, r["d0"], r["d1"], r[column]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["ball", "cosine"])
def test_pgd_on_reference_never_flips_a_certified_triplet(which):
    metric = _metric()
    metric.metric = which
    ref, x0, x1, p = _triplets()
    e0, e1, d0, d1, radius = _clean(metric, ref, x0, x1)
    certified = radius > 1e-4
    assert certified.sum() >= 10, "test triplets too easy: few non-trivial radii"
    keep = torch.sign(d0 - d1).float()  # attack: flip the clean decision
    # Right at the certified radius no decision may flip...
    low, _ = _pgd(metric, ref, e0, e1, p, eps=radius * (1 - 1e-4), sign=keep)
    assert (low[certified] > 0).all(), (
        f"certified decisions flipped: {torch.nonzero(certified & (low <= 0)).flatten().tolist()}"
    )
    # ...while the same attack does flip most of them a few radii further out, so the
    # check above is not vacuous (the certificate is not wildly loose on this model).
    low, _ = _pgd(metric, ref, e0, e1, p, eps=4 * radius, sign=keep, steps=30, restarts=1)
    assert (low[certified] < 0).float().mean() > 0.5


@pytest.mark.slow
@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_certified_score_lower_bounds_attacked_score(eps):
    metric = _metric(seed=2)
    ref, x0, x1, p = _triplets(seed=3)
    e0, e1, d0, d1, radius = _clean(metric, ref, x0, x1)
    score = twoafc(d0, d1, p)
    certified = float(np.mean(score * (radius.numpy() > eps)))
    # To lower a p > 0.5 row's score, make d0 < d1 (choose x0); otherwise the reverse.
    sign = torch.where(p > 0.5, 1.0, -1.0)
    _, attacked = _pgd(metric, ref, e0, e1, p, eps=torch.full((len(p),), eps), sign=sign, steps=40)
    empirical = float(attacked.mean())
    assert 0 < certified <= empirical + 1e-12
    assert empirical < float(np.mean(score))  # the attack does lower the score


def test_radius_edge_cases():
    e = torch.nn.functional.normalize(torch.randn(4, 8, dtype=torch.float64), dim=-1)
    d0, d1, r = radius_from_embeddings(e, e[[1, 1, 2, 3]], e[[1, 2, 2, 0]])
    assert r[0] == 0 and r[2] == 0  # phi(x0) == phi(x1): a tie for every reference
    assert (r >= 0).all() and (r <= 1).all()
    # d0 == d1 with distinct embeddings: a tie, not certified.
    ref = torch.tensor([[1.0, 0.0, 0.0]])
    _, _, r = radius_from_embeddings(
        ref, torch.tensor([[0.0, 1.0, 0.0]]), torch.tensor([[0.0, 0.0, 1.0]])
    )
    assert r.item() == 0
    # Closed form: ref = e_1, x0 = e_1, x1 = e_2 -> d0 = 0, d1 = 1, R = 1 / sqrt(2).
    d0, d1, r = radius_from_embeddings(ref, ref, torch.tensor([[0.0, 1.0, 0.0]]))
    assert (d0.item(), d1.item()) == (0.0, 1.0)
    assert r.item() == pytest.approx(2**-0.5)


def test_certify_triplets_and_scores_in_memory():
    metric = _metric()
    ref, x0, x1, p = _triplets(n=12)
    data = torch.utils.data.TensorDataset(ref, x0, x1, p, torch.arange(len(p)))
    loader = torch.utils.data.DataLoader(data, batch_size=5)
    ids = np.arange(100, 112)
    splits = np.array(["test_imagenet"] * 4 + ["test_no_imagenet"] * 8)
    df = certify_triplets(metric, loader, "cpu", ids=ids, splits=splits)
    assert list(df.columns) == list(COLUMNS)
    assert set(df["metric"]) == {"ball"}
    assert df["id"].tolist() == ids.tolist() and len(df) == 12
    np.testing.assert_allclose(df["score"], twoafc(df["d0"], df["d1"], df["p"]))
    # The net runs in float32 and its sums differ with batch size (5 here, 12 there):
    # embeddings agree to ~1e-7 * ||f||, so a radius near 0 agrees only absolutely.
    np.testing.assert_allclose(
        df["radius"], metric.certified_radius(ref, x0, x1).numpy(), rtol=1e-4, atol=1e-6
    )

    s = certified_scores(df, [0.0, 0.01, 1.0])
    nat = s["natural"]
    assert nat["test"] == pytest.approx(100 * df["score"].mean())
    assert nat["test"] == pytest.approx(
        (4 * nat["test_imagenet"] + 8 * nat["test_no_imagenet"]) / 12
    )
    assert s["certified"][1.0]["test"] == 0.0  # R <= ||phi(x)|| <= 1, strict inequality
    assert s["certified"][0.0]["test"] <= nat["test"]
    assert s["certified"][0.01]["test"] <= s["certified"][0.0]["test"]
    expected = 100 * np.mean(df["score"] * (df["radius"] > 0.01))
    assert s["certified"][0.01]["test"] == pytest.approx(expected)


def test_certified_scores_hand_computed():
    df = pd.DataFrame(
        {
            "id": [1, 2, 3, 4],
            "split": ["test_imagenet", "test_imagenet", "test_no_imagenet", "val"],
            "p": [1.0, 0.5, 0.0, 1.0],
            "d0": [0.5, 0.2, 0.1, 0.3],
            "d1": [0.1, 0.1, 0.4, 0.3],
            "score": [1.0, 0.5, 1.0, 0.5],
            "radius": [0.5, 0.3, 0.1, 0.0],
        }
    )
    s = certified_scores(df, [0.2])
    assert s["natural"]["test"] == pytest.approx(100 * 2.5 / 3)
    assert s["certified"][0.2]["test"] == pytest.approx(100 * 1.5 / 3)  # p=0.5 row adds 0.5
    assert s["certified"][0.2]["val"] == 0.0


def test_certified_scores_under_the_authors_rule():
    """accuracy + drop: the p = 0.5 row leaves the denominator and `correct` is averaged."""
    d0, d1 = np.array([0.5, 0.2, 0.1, 0.3]), np.array([0.1, 0.1, 0.4, 0.2])
    p = np.array([1.0, 0.5, 0.0, 0.2])
    df = pd.DataFrame(
        {
            "split": ["test_imagenet", "test_imagenet", "test_no_imagenet", "test_no_imagenet"],
            "p": p,
            "score": twoafc(d0, d1, p),  # 1, .5, 1, .2
            "correct": accuracy(d0, d1, p),  # 1, 0, 1, 0
            "radius": [0.5, 0.3, 0.1, 0.4],
            "radius_authors": [0.5, 0.3, 0.3, 0.4],
        }
    )
    authors = Rule("accuracy", "drop")
    s = certified_scores(df, [0.2], "radius_authors", authors)
    assert s["natural"]["test"] == pytest.approx(100 * 2 / 3)  # rows 0, 2, 3
    assert s["certified"][0.2]["test"] == pytest.approx(100 * 2 / 3)  # R > .2 on all three
    assert s["natural"]["test_imagenet"] == pytest.approx(100.0)  # row 1 dropped
    plain = certified_scores(df, [0.2], "radius", DREAMSIM)
    assert plain["natural"]["test"] == pytest.approx(100 * 2.7 / 4)
    assert plain["certified"][0.2]["test"] == pytest.approx(100 * 1.7 / 4)  # rows 0, 1, 3
    # unsound over the rule's rows: row 2 (authors' .3 > .2 >= sound .1) of three
    assert unsound_share(df, 0.2, authors)["test"] == pytest.approx(100 / 3)
    assert unsound_share(df, 0.2)["test"] == pytest.approx(25.0)


def test_cli_certify_on_demo_night(tmp_path, capsys):
    from lipsim.__main__ import main as lipsim_main
    from lipsim.data.synthetic import make_night
    from lipsim.models import save_checkpoint

    night = make_night(tmp_path / "night", seed=0, n_train=2, n_val=2, n_test=10, image_size=32)
    torch.manual_seed(0)
    save_checkpoint(
        tmp_path / "m.pt",
        build_model("tiny", 32, 64, conv_depth=1),
        stage="pretrained",
        teacher="demo",
    )
    out = tmp_path / "certify" / "pretrained.parquet"
    rc = lipsim_main(
        [
            "certify",
            "--checkpoint",
            str(tmp_path / "m.pt"),
            "--night",
            str(night),
            "--splits",
            "test_imagenet",
            "test_no_imagenet",
            "--metrics",
            "cosine",
            "ball",
            "--half-votes",
            "drop",
            "--scoring",
            "accuracy",
            "--tie-radius",
            "infinite",
            "--eps",
            "36",
            "72",
            "--eps-scale",
            "255",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--min-votes",
            "1",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "cert@36" in printed and "test " in printed
    df = pd.read_parquet(out)
    assert list(df.columns) == [*COLUMNS, "tie_radius", "stage", "margin", "teacher"]
    assert set(df["tie_radius"]) == {"infinite"}
    assert set(df["stage"]) == {"pretrained"} and df["margin"].isna().all()
    cos, ball = df[df["metric"] == "cosine"], df[df["metric"] == "ball"]
    assert len(cos) == len(ball) > 0 and list(cos["id"]) == list(ball["id"])
    # Every triplet is kept, p = 0.5 ones too: --half-votes drop is applied when scoring.
    assert (df["p"] == 0.5).any()
    assert (
        "hard-label accuracy on round(p) (the authors' evaluation), p = 0.5 triplets dropped"
        in (printed)
    )
    assert set(df["split"]) <= {"test_imagenet", "test_no_imagenet"} and len(df) > 0
    np.testing.assert_allclose(df["score"], twoafc(df["d0"], df["d1"], df["p"]))
    np.testing.assert_array_equal(df["correct"], accuracy(df["d0"], df["d1"], df["p"]))


def test_certify_records_the_checkpoint_and_table1_reads_its_margin_not_the_name(tmp_path):
    """A finetuned checkpoint whose file name says nothing of its margin: certify copies
    stage, margin and teacher from the checkpoint and Table 1 takes them from there."""
    from lipsim.cli import certify
    from lipsim.data.synthetic import make_night
    from lipsim.models import save_checkpoint
    from lipsim.reporting.table1 import table1

    night = make_night(tmp_path / "night", seed=0, n_train=2, n_val=2, n_test=6, image_size=32)
    torch.manual_seed(0)
    save_checkpoint(
        tmp_path / "student.pt",
        build_model("tiny", 32, 64, conv_depth=1),
        stage="finetuned",
        margin=0.3,
        teacher="demo",
        metric="ball",
    )
    out = tmp_path / "run-b.parquet"
    assert certify.main(certify_options(tmp_path / "student.pt", night, out)) == 0
    df = pd.read_parquet(out)
    assert set(df["stage"]) == {"finetuned"} and set(df["teacher"]) == {"demo"}
    assert np.allclose(df["margin"], 0.3)
    row = table1({"run-b": out}, {}, "demo", [36], None).iloc[0]
    assert (row["model"], row["stage"], row["margin"]) == ("run-b", "finetuned", 0.3)
    # the record wins over a name that says otherwise
    renamed = table1({"lipsim-margin0.9": out}, {}, "demo", [36], None).iloc[0]
    assert (renamed["stage"], renamed["margin"]) == ("finetuned", 0.3)


def test_ball_distance_is_a_distance_and_the_public_cosine_outside_the_ball():
    from lipsim.models import ball_distance, project_to_ball

    g = torch.Generator().manual_seed(0)
    inside = project_to_ball(0.3 * torch.randn(16, 8, generator=g))
    assert torch.all(ball_distance(inside, inside) == 0)  # 1 - <a, a> would be 1 - ||a||^2
    f, h = 1.0 + torch.rand(16, 8, generator=g), 1.0 + torch.rand(16, 8, generator=g)
    f = f * (1.5 / f.norm(dim=1, keepdim=True))
    h = h * (2.5 / h.norm(dim=1, keepdim=True))
    cos = torch.nn.functional.cosine_similarity(f, h, dim=1)
    torch.testing.assert_close(ball_distance(project_to_ball(f), project_to_ball(h)), 1 - cos)


def test_radius_holds_for_embeddings_inside_the_ball():
    """Any phi(ref') within R of phi(ref) keeps the sign of d0 - d1, also where ||phi|| < 1."""
    from lipsim.certify import radius_from_embeddings
    from lipsim.models import ball_distance, project_to_ball

    g = torch.Generator().manual_seed(1)
    n, k = 256, 6
    scale = 0.2 + 0.8 * torch.rand(n, 1, generator=g)  # norms spread over (0, 1]
    e_ref, e0, e1 = (project_to_ball(scale * torch.randn(n, k, generator=g)) for _ in range(3))
    d0, d1, radius = radius_from_embeddings(e_ref, e0, e1)
    torch.testing.assert_close(d0, ball_distance(e_ref.double(), e0.double()))
    sign = torch.sign(d0 - d1)
    # The worst direction for d0 - d1 is along +-(e1 - e0) (and the certificate is tight there).
    u = (e1 - e0).double()
    u = u / u.norm(dim=1, keepdim=True)
    for factor, must_hold in ((0.999, True), (1.001, False)):
        for direction in (u, -u):
            moved = e_ref.double() + factor * radius[:, None] * direction
            new = torch.sign(ball_distance(moved, e0.double()) - ball_distance(moved, e1.double()))
            if must_hold:
                assert torch.all(new == sign)
        if not must_hold:
            flipped_either = (
                torch.sign(
                    ball_distance(e_ref.double() + factor * radius[:, None] * u, e0.double())
                    - ball_distance(e_ref.double() + factor * radius[:, None] * u, e1.double())
                )
                != sign
            ) | (
                torch.sign(
                    ball_distance(e_ref.double() - factor * radius[:, None] * u, e0.double())
                    - ball_distance(e_ref.double() - factor * radius[:, None] * u, e1.double())
                )
                != sign
            )
            assert flipped_either.all(), "the radius should be tight along e1 - e0"


def test_cosine_metric_is_one_minus_cos_of_the_raw_embeddings():
    metric = _metric()
    metric.metric = "cosine"
    ref, x0, _, _ = _triplets(n=6)
    with torch.no_grad():
        fa, fb = metric.raw_embed(ref), metric.raw_embed(x0)
        expected = 1 - torch.nn.functional.cosine_similarity(fa, fb, dim=1)
        torch.testing.assert_close(metric(ref, x0), expected, rtol=1e-5, atol=1e-6)
        # Inside the unit ball the two metrics differ (the ball keeps norms < 1).
        assert (fa.norm(dim=1) < 1).any()
        metric.metric = "ball"
        assert not torch.allclose(metric(ref, x0), expected, atol=1e-4)


def test_cosine_sound_radius_is_tight_and_the_authors_radius_is_not_sound_inside_the_ball():
    """Embedding space, f = identity (1-Lipschitz): every point within r m of f(ref) keeps the
    decision; the tie point at distance r m (just beyond it) flips it, and for ||f|| < 1 that
    point lies inside the authors' radius m."""
    g = torch.Generator().manual_seed(0)
    n, k = 128, 8
    f_ref = torch.randn(n, k, dtype=torch.float64, generator=g)
    f_ref = (
        f_ref
        * (0.1 + 0.8 * torch.rand(n, 1, dtype=torch.float64, generator=g))
        / f_ref.norm(dim=1, keepdim=True)
    )  # ||f(ref)|| in (0.1, 0.9): inside the ball
    f0, f1 = (torch.randn(n, k, dtype=torch.float64, generator=g) for _ in range(2))
    r = radii(f_ref, f0, f1, "cosine")
    assert torch.all(r["radius"] < r["radius_authors"])  # r m < m for r < 1

    def sign_at(f):
        c0 = torch.nn.functional.cosine_similarity(f, f0, dim=1)
        c1 = torch.nn.functional.cosine_similarity(f, f1, dim=1)
        return torch.sign((1 - c0) - (1 - c1))

    clean = sign_at(f_ref)
    g_dir = torch.nn.functional.normalize(f1, dim=1) - torch.nn.functional.normalize(f0, dim=1)
    g_dir = g_dir / g_dir.norm(dim=1, keepdim=True)
    side = torch.sign((f_ref * g_dir).sum(1, keepdim=True))
    worst = -side * g_dir  # straight towards the decision hyperplane
    for _ in range(20):  # random directions inside the sound radius never flip
        u = torch.randn(n, k, dtype=torch.float64, generator=g)
        u = u / u.norm(dim=1, keepdim=True)
        assert torch.all(sign_at(f_ref + 0.999 * r["radius"][:, None] * u) == clean)
    assert torch.all(sign_at(f_ref + 0.999 * r["radius"][:, None] * worst) == clean)
    beyond = f_ref + 1.001 * r["radius"][:, None] * worst
    assert torch.all(sign_at(beyond) != clean)  # flipped ...
    assert torch.all(1.001 * r["radius"] < r["radius_authors"])  # ... inside the authors' radius
    # Outside the ball the authors' radius is the smaller one (sound there, ours is r m >= m).
    far = radii(3 * f_ref / f_ref.norm(dim=1, keepdim=True), f0, f1, "cosine")
    assert torch.all(far["radius"] >= far["radius_authors"])


@pytest.mark.slow
def test_pgd_finds_flips_inside_the_authors_radius_on_a_real_net():
    """The authors' radius certifies triplets that an attack flips, where ||f(ref)|| < 1."""
    metric = _metric()
    metric.metric = "cosine"
    ref, x0, x1, p = _triplets(n=32, seed=5)
    e0, e1, d0, d1, authors = _clean(metric, ref, x0, x1, column="radius_authors")
    with torch.no_grad():
        norm = metric.raw_embed(ref).norm(dim=1)
    keep = torch.sign(d0 - d1).float()
    low, _ = _pgd(metric, ref, e0, e1, p, eps=authors * (1 - 1e-4), sign=keep)
    flipped = (low < 0) & (authors > 1e-4)
    assert flipped.any(), "no flip found inside the authors' radius"
    assert torch.all(norm[flipped] < 1)  # only where the normalisation is not 1-Lipschitz


def test_unsound_share_counts_rows_certified_only_by_the_authors_radius():
    df = pd.DataFrame(
        {
            "split": ["test_imagenet"] * 4 + ["test_no_imagenet"] * 4,
            "score": [1.0] * 8,
            "radius": [0.5, 0.1, 0.0, 0.3, 0.05, 0.5, 0.2, 0.0],
            "radius_authors": [0.5, 0.3, 0.2, 0.3, 0.2, 0.5, 0.1, 0.0],
        }
    )
    u = unsound_share(df, 0.15)
    # rows 1, 2 (imagenet) and 4 (no_imagenet) are certified at 0.15 by the authors only.
    assert u["test_imagenet"] == pytest.approx(50.0)
    assert u["test_no_imagenet"] == pytest.approx(25.0)
    assert u["test"] == pytest.approx(37.5)


def test_authors_accuracy_scoring():
    d0 = np.array([0.1, 0.5, 0.3, 0.3])
    d1 = np.array([0.2, 0.4, 0.3, 0.3])
    p = np.array([0.2, 0.9, 0.0, 1.0])
    # x0 closer & round(p) = 0: right; x1 closer & 1: right; ties predict x0 (argmax index 0).
    np.testing.assert_array_equal(accuracy(d0, d1, p), [1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(twoafc(d0, d1, p), [0.8, 0.9, 0.5, 0.5])
