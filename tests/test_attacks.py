"""The 2AFC attack adapter, AutoAttack (pyautoattack) and PGD on the reference image."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lipsim.attacks import (
    AttackSpec,
    AutoAttackConfig,
    TwoAFCAdapter,
    attack_batch,
    attack_triplets,
    lp_norm,
    pgd_2afc,
    row_seed,
)
from lipsim.attacks.autoattack import autoattack_one, make_autoattack
from lipsim.scoring import twoafc
from lipsim.similarity import SimilarityMetric, cosine_distance

S = 16  # image side: small enough for pyautoattack runs in well under a second


class LinearCosine(SimilarityMetric):
    """A deliberately non-robust embedding metric: cosine distance of a random projection."""

    name = "toy"
    has_embedding = True

    def __init__(self, dim: int = 8, seed: int = 0, size: int = S) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = torch.nn.Parameter(torch.randn(3 * size * size, dim, generator=g))
        self.embed_inputs: list[torch.Tensor] = []

    def embed(self, x):
        self.embed_inputs.append(x.detach().clone())
        return (x.flatten(1) - 0.5) @ self.w

    def distance_from_embeddings(self, ea, eb):
        return cosine_distance(ea, eb)


class PairwiseOnly(LinearCosine):
    """The same metric without embeddings: the adapter must call d(ref, x) directly."""

    has_embedding = False

    def distance(self, a, b):
        return cosine_distance(LinearCosine.embed(self, a), LinearCosine.embed(self, b))


def triplets(n: int, seed: int = 1, size: int = S):
    g = torch.Generator().manual_seed(seed)
    ref, x0, x1 = (torch.rand(n, 3, size, size, generator=g) for _ in range(3))
    p = np.array([0.0, 1.0, 0.2, 0.9, 0.5, 1.0, 0.0, 0.7][:n] * (n // 8 + 1))[:n]
    return ref, x0, x1, p


def small_aa(norm, eps, attacks=("apgd-ce", "fab-t", "square")):
    return AutoAttackConfig(
        norm=norm, eps=eps, attacks=attacks, apgd_iters=10, fab_iters=5, square_queries=30
    )


EPS = {"L2": 0.5, "Linf": 4 / 255}


def test_adapter_logits_are_d1_d0_and_cache_matches_naive():
    metric = LinearCosine()
    ref, x0, x1, _ = triplets(4)
    fast, naive = TwoAFCAdapter(metric), TwoAFCAdapter(metric, cache=False)
    fast.set_pairs(x0, x1)
    naive.set_pairs(x0, x1)
    logits = fast(ref)
    expected = torch.stack((metric.distance(ref, x1), metric.distance(ref, x0)), 1)
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(naive(ref), expected)
    # class 1 <=> x1 closer
    assert torch.equal(
        logits.argmax(1), (metric.distance(ref, x1) < metric.distance(ref, x0)).long()
    )
    # one pair broadcast over rows; other counts refused
    one = TwoAFCAdapter(metric)
    one.set_pairs(x0[:1], x1[:1])
    torch.testing.assert_close(one(ref[:1].repeat(3, 1, 1, 1)), logits[:1].repeat(3, 1))
    with pytest.raises(ValueError, match="holds 4 pairs"):
        fast(ref[:3])


def test_embeddings_of_x0_x1_computed_once():
    metric = LinearCosine()
    ref, x0, x1, p = triplets(1)
    adapter = TwoAFCAdapter(metric)
    adapter.set_pairs(x0, x1)
    metric.embed_inputs.clear()
    aa = make_autoattack(adapter, small_aa("L2", 0.5), "cpu")
    label = adapter(ref).argmax(1)  # correctly classified: every attack runs
    adapter.calls = 0
    metric.embed_inputs.clear()
    autoattack_one(aa, ref, label, seed=3)
    assert adapter.calls > 20
    # every embed call was one adapter forward on a reference, none on x0 / x1
    assert len(metric.embed_inputs) == adapter.calls
    for x in metric.embed_inputs:
        for row in x:
            assert not torch.equal(row, x0[0]) and not torch.equal(row, x1[0])


@pytest.mark.parametrize("kind", ["autoattack", "pgd"])
@pytest.mark.parametrize("norm", ["L2", "Linf"])
@pytest.mark.parametrize("metric_cls", [LinearCosine, PairwiseOnly])
def test_only_reference_moves_within_ball(kind, norm, metric_cls):
    metric = metric_cls()
    ref, x0, x1, p = triplets(6)
    saved = [t.clone() for t in (ref, x0, x1)]
    eps = EPS[norm]
    spec = AttackSpec(kind, norm, eps, seed=0, autoattack=small_aa(norm, eps), steps=5, restarts=2)
    x_adv, cols = attack_batch(metric, ref, x0, x1, p, [str(i) for i in range(6)], spec)
    for before, after in zip(saved, (ref, x0, x1), strict=True):
        assert torch.equal(before, after)  # bit for bit: inputs are never written
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    norms = lp_norm(x_adv - ref, norm).numpy()
    assert (norms <= eps + 1e-5).all()
    np.testing.assert_allclose(cols["delta_norm"], norms, rtol=1e-6)
    # the reported attacked distances are those of the returned reference
    d0 = metric.distance(x_adv, x0).detach().double().numpy()
    d1 = metric.distance(x_adv, x1).detach().double().numpy()
    np.testing.assert_allclose(cols["d0_adv"], d0, atol=1e-5)
    np.testing.assert_allclose(cols["d1_adv"], d1, atol=1e-5)
    np.testing.assert_array_equal(cols["score_adv"], twoafc(cols["d0_adv"], cols["d1_adv"], p))
    # p = 0.5 rows are never attacked (their score is 0.5 whatever happens)
    assert norms[p == 0.5].max() == 0


@pytest.mark.parametrize("kind", ["autoattack", "pgd"])
def test_attack_breaks_non_robust_metric(kind):
    metric = LinearCosine(dim=4)
    ref, x0, x1, _ = triplets(8, seed=5)
    p = np.array([0.0, 1.0] * 4)
    d0, d1 = metric.distance(ref, x0).detach().numpy(), metric.distance(ref, x1).detach().numpy()
    p = np.where(d1 < d0, 1.0, 0.0)  # every triplet correct: clean score 100 %
    cfg = AutoAttackConfig(
        norm="L2", eps=4.0, attacks=("apgd-ce", "square"), apgd_iters=20, square_queries=50
    )
    spec = AttackSpec(kind, "L2", 4.0, seed=0, autoattack=cfg, steps=20)
    _, cols = attack_batch(metric, ref, x0, x1, p, [str(i) for i in range(8)], spec)
    assert cols["score_clean"].mean() == 1.0
    assert cols["score_adv"].mean() <= 0.125  # near 0: (almost) every decision flipped


def test_no_attack_no_change_at_tiny_eps():
    metric = LinearCosine()
    ref, x0, x1, p = triplets(6)
    spec = AttackSpec("pgd", "L2", 1e-9, steps=3)
    _, cols = attack_batch(metric, ref, x0, x1, p, [str(i) for i in range(6)], spec)
    np.testing.assert_array_equal(cols["score_adv"], cols["score_clean"])


class _Loader(list):
    """(ref, x0, x1, p, index) batches over in-memory triplets."""


def _batches(ref, x0, x1, p, order, batch_size):
    out = _Loader()
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        out.append((ref[idx], x0[idx], x1[idx], torch.tensor(p[idx]), torch.tensor(idx)))
    return out


@pytest.mark.parametrize("kind", ["autoattack", "pgd"])
@pytest.mark.parametrize("norm", ["L2", "Linf"])
def test_results_do_not_depend_on_batching(kind, norm):
    metric = LinearCosine(dim=4)
    n = 8
    ref, x0, x1, p = triplets(n, seed=7)
    ids = np.arange(100, 100 + n)
    splits = np.array(["test_imagenet"] * n)
    eps = 2.0 if norm == "L2" else 16 / 255  # big enough that some rows break
    spec = AttackSpec(kind, norm, eps, seed=4, autoattack=small_aa(norm, eps), steps=6, restarts=2)
    whole = attack_triplets(
        metric,
        _batches(ref, x0, x1, p, np.arange(n), n),
        spec,
        device="cpu",
        ids=ids,
        splits=splits,
        log=None,
    )
    split = attack_triplets(
        metric,
        _batches(ref, x0, x1, p, np.arange(n), 3),
        spec,
        device="cpu",
        ids=ids,
        splits=splits,
        log=None,
    )
    # a different subset and order: rows 5, 2, 6 alone
    sub = attack_triplets(
        metric,
        _batches(ref, x0, x1, p, np.array([5, 2, 6]), 2),
        spec,
        device="cpu",
        ids=ids,
        splits=splits,
        log=None,
    )
    assert (whole["score_adv"] < whole["score_clean"]).any()  # the check has teeth
    for other in (split, sub.set_index("id").loc[whole["id"].iloc[[5, 2, 6]]].reset_index()):
        ref_rows = whole.set_index("id").loc[other["id"]].reset_index()
        for col in ("score_clean", "score_adv"):
            np.testing.assert_array_equal(other[col].to_numpy(), ref_rows[col].to_numpy())
        for col in ("d0_adv", "d1_adv", "delta_norm"):
            np.testing.assert_allclose(other[col].to_numpy(), ref_rows[col].to_numpy(), atol=1e-5)
    assert list(whole.columns)[:8] == [
        "id",
        "split",
        "p",
        "score_clean",
        "score_adv",
        "d0_adv",
        "d1_adv",
        "delta_norm",
    ]


def test_pgd_respects_ball_and_box_from_the_edges():
    # references at 0 / 1 everywhere: clipping binds in every direction
    metric = LinearCosine()
    ref = torch.cat([torch.zeros(2, 3, S, S), torch.ones(2, 3, S, S)])
    g = torch.Generator().manual_seed(0)
    x0, x1 = torch.rand(4, 3, S, S, generator=g), torch.rand(4, 3, S, S, generator=g)
    adapter = TwoAFCAdapter(metric)
    adapter.set_pairs(x0, x1)
    label = adapter(ref).argmax(1)
    for norm, eps in (("L2", 3.0), ("Linf", 0.1)):
        x_adv = pgd_2afc(
            adapter,
            ref,
            label,
            norm=norm,
            eps=eps,
            steps=7,
            restarts=3,
            seeds=[row_seed(0, i) for i in range(4)],
        )
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (lp_norm(x_adv - ref, norm) <= eps + 1e-5).all()
        assert (x_adv != ref).any()


def test_autoattack_config():
    with pytest.raises(ValueError, match="apgd-t"):
        AutoAttackConfig(norm="L2", eps=1.0, attacks=("apgd-ce", "apgd-t"))
    with pytest.raises(ValueError, match="norm"):
        AutoAttackConfig(norm="L1", eps=1.0)
    std = AutoAttackConfig.from_budget("standard", "L2", 2.0)
    assert std.attacks == ("apgd-ce", "fab-t", "square") and std.square_queries == 5000
    assert std.apgd_iters == 100 and std.fab_iters == 100
    demo = AutoAttackConfig.from_budget("demo", "Linf", 4 / 255, square_queries=50)
    assert demo.square_queries == 50 and "fab-t" not in demo.attacks
    aa = make_autoattack(TwoAFCAdapter(LinearCosine()), std, "cpu")
    assert aa.fab.n_target_classes == 1 and aa.square.n_queries == 5000
    assert aa.apgd.n_iter == 100 and aa.apgd.n_restarts == 1 and not aa.square.rescale_schedule
    assert aa.attacks_to_run == ["apgd-ce", "fab-t", "square"]


def test_fab_t_alone_breaks_non_robust_metric():
    # FAB-T with its single target (the other class) works with 2 classes
    metric = LinearCosine(dim=4)
    ref, x0, x1, _ = triplets(4, seed=5)
    with torch.no_grad():
        p = np.where(metric.distance(ref, x1).numpy() < metric.distance(ref, x0).numpy(), 1.0, 0.0)
    cfg = AutoAttackConfig(norm="L2", eps=4.0, attacks=("fab-t",), fab_iters=20)
    _, cols = attack_batch(
        metric, ref, x0, x1, p, list("abcd"), AttackSpec("autoattack", "L2", 4.0, autoattack=cfg)
    )
    assert cols["score_adv"].mean() < cols["score_clean"].mean()


def test_attack_cli_end_to_end(tmp_path):
    from lipsim.cli import attack, evaluate
    from lipsim.data.synthetic import make_night

    night = make_night(tmp_path / "night", seed=0, n_train=0, n_val=0, n_test=12, image_size=32)
    out = tmp_path / "aa.parquet"
    rc = attack.main(
        [
            "--metric",
            "lipsim:tiny",
            "--night",
            str(night),
            "--splits",
            "test",
            "--attack",
            "autoattack",
            "--norm",
            "Linf",
            "--eps",
            "8",
            "--eps-scale",
            "255",
            "--budget",
            "demo",
            "--square-queries",
            "20",
            "--max-triplets",
            "6",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    df = pd.read_parquet(out)
    assert len(df) == 6 and df["eps"].iloc[0] == pytest.approx(8 / 255)
    assert set(df["split"]) <= {"test_imagenet", "test_no_imagenet"}
    assert (df["delta_norm"] <= 8 / 255 + 1e-5).all()
    # clean scores agree with `evaluate` on the same triplets
    ev = tmp_path / "eval.parquet"
    assert (
        evaluate.main(
            [
                "--metric",
                "lipsim:tiny",
                "--night",
                str(night),
                "--splits",
                "test",
                "--device",
                "cpu",
                "--out",
                str(ev),
            ]
        )
        == 0
    )
    merged = df.merge(pd.read_parquet(ev), on="id")
    np.testing.assert_allclose(merged["score_clean"], merged["score"])
    np.testing.assert_allclose(merged["d0_x"], merged["d0_y"], atol=1e-6)
    # PGD through the CLI, same subset (same seed)
    out2 = tmp_path / "pgd.parquet"
    assert (
        attack.main(
            [
                "--metric",
                "lipsim:tiny",
                "--night",
                str(night),
                "--splits",
                "test",
                "--attack",
                "pgd",
                "--norm",
                "L2",
                "--eps",
                "0.5",
                "--steps",
                "3",
                "--max-triplets",
                "6",
                "--device",
                "cpu",
                "--out",
                str(out2),
            ]
        )
        == 0
    )
    assert list(pd.read_parquet(out2)["id"]) == list(df["id"])
