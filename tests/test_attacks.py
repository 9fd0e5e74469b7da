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
from lipsim.attacks.adapter import ball_radius
from lipsim.attacks.autoattack import autoattack_one, make_autoattack, separated_groups
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
    # PGD rows are independent at any batch size; AutoAttack's at --batch-size 1 (one
    # triplet per call, seeded by its id), whatever the other triplets of the run.
    metric = LinearCosine(dim=4)
    n = 8
    ref, x0, x1, p = triplets(n, seed=7)
    ids = np.arange(100, 100 + n)
    splits = np.array(["test_imagenet"] * n)
    eps = 2.0 if norm == "L2" else 16 / 255  # big enough that some rows break
    spec = AttackSpec(kind, norm, eps, seed=4, autoattack=small_aa(norm, eps), steps=6, restarts=2)
    bs = (n, 3, 2) if kind == "pgd" else (1, 1, 1)
    whole = attack_triplets(
        metric,
        _batches(ref, x0, x1, p, np.arange(n), bs[0]),
        spec,
        device="cpu",
        ids=ids,
        splits=splits,
        log=None,
    )
    split = attack_triplets(
        metric,
        _batches(ref, x0, x1, p, np.arange(n), bs[1]),
        spec,
        device="cpu",
        ids=ids,
        splits=splits,
        log=None,
    )
    # a different subset and order: rows 5, 2, 6 alone
    sub = attack_triplets(
        metric,
        _batches(ref, x0, x1, p, np.array([5, 2, 6]), bs[2]),
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
    assert demo.square_queries == 50 and demo.attacks == std.attacks  # the full ensemble
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


# ---- batched AutoAttack ----------------------------------------------------------------------
def _close_references(n: int, eps: float, norm: str = "L2", seed: int = 3):
    """n references on a line, neighbours just over 2 ball_radius(eps) apart in `norm` (the
    closest a batch allows), and the direction of the line (unit length in `norm`)."""
    g = torch.Generator().manual_seed(seed)
    base = 0.4 + 0.2 * torch.rand(1, 3, S, S, generator=g)
    step = torch.randn(1, 3, S, S, generator=g).sign()
    step = step / float(lp_norm(step, norm)[0])
    refs = torch.cat([base + 2.02 * ball_radius(eps) * (k - (n - 1) / 2) * step for k in range(n)])
    assert refs.min() >= 0 and refs.max() <= 1
    return refs, step


def test_lookup_finds_each_rows_own_pair_among_close_references():
    metric = LinearCosine()
    eps = 0.5
    refs, step = _close_references(6, eps)
    g = torch.Generator().manual_seed(4)
    x0, x1 = torch.rand(6, 3, S, S, generator=g), torch.rand(6, 3, S, S, generator=g)
    adapter = TwoAFCAdapter(metric)
    adapter.set_pairs(x0, x1, refs=refs, norm="L2", eps=eps)
    # a shuffled subset of points on the edge of their balls, pushed towards the next
    # reference: the rows a wrong (nearest-but-not-own, positional) lookup would misplace
    for order in ([4, 0, 5, 2], [1, 0, 3, 2, 5, 4]):
        pts = refs[order] + eps * step
        expected = torch.stack(
            (metric.distance(pts, x1[order]), metric.distance(pts, x0[order])), 1
        )
        torch.testing.assert_close(adapter(pts), expected)
        assert adapter.row_index(pts).tolist() == order
    # a point outside every ball cannot be placed: an error, not a guess
    side = torch.randn(1, 3, S, S, generator=g)
    side = side - (side * step).sum() * step  # orthogonal to the line of references
    with pytest.raises(RuntimeError, match="outside the eps-ball"):
        adapter(refs[:1] + 1.5 * eps * side / side.norm())
    # references closer than 2 radii are refused (their balls overlap)
    with pytest.raises(ValueError, match="apart"):
        adapter.set_pairs(x0[:2], x1[:2], refs=refs[:2], norm="L2", eps=1.02 * eps)
    # pinned rows: the same count only
    with adapter.pinned(torch.tensor([3, 1])):
        torch.testing.assert_close(
            adapter(refs[[3, 1]] + 10 * step),
            torch.stack(
                (
                    metric.distance(refs[[3, 1]] + 10 * step, x1[[3, 1]]),
                    metric.distance(refs[[3, 1]] + 10 * step, x0[[3, 1]]),
                ),
                1,
            ),
        )
        with pytest.raises(RuntimeError, match="pinned to 2 rows"):
            adapter(refs[:3])


def test_separated_groups():
    eps = 0.5
    refs, _ = _close_references(4, eps)
    # rows 0-3 pairwise far enough; row 4 repeats row 1, row 5 is within 2 radii of row 2
    ref = torch.cat([refs, refs[1:2], refs[2:3] + 0.01])
    groups = [g.tolist() for g in separated_groups(ref, "L2", eps)]
    assert groups == [[0, 1, 2, 3], [4, 5]]
    assert [g.tolist() for g in separated_groups(ref, "Linf", 4 / 255)] == [[0, 1, 2, 3], [4, 5]]
    assert [g.tolist() for g in separated_groups(ref, "L2", 1e-4)] == [[0, 1, 2, 3, 5], [4]]


def _labelled(metric, ref, x0, x1):
    """p = the metric's own decision on each triplet: every triplet attacked."""
    with torch.no_grad():
        return np.where(
            metric.distance(ref, x1).numpy() < metric.distance(ref, x0).numpy(), 1.0, 0.0
        )


def _run(metric, ref, x0, x1, p, spec, batch_size):
    n = ref.shape[0]
    return attack_triplets(
        metric,
        _batches(ref, x0, x1, p, np.arange(n), batch_size),
        spec,
        device="cpu",
        ids=np.arange(n),
        splits=np.array(["test"] * n),
        log=None,
    )


@pytest.mark.parametrize("norm", ["L2", "Linf"])
def test_batched_fab_equals_per_triplet_fab_on_close_references(norm):
    # FAB-T is deterministic: batched, each row must end exactly where it ends alone. The
    # references are as close as one batch allows, so a row attacked against a neighbour's
    # pair (a wrong lookup) would take another path.
    metric = LinearCosine(dim=4)
    eps = 0.1 if norm == "L2" else 1 / 255
    n = 8
    refs, _ = _close_references(n, eps, norm)
    g = torch.Generator().manual_seed(6)
    x0, x1 = torch.rand(n, 3, S, S, generator=g), torch.rand(n, 3, S, S, generator=g)
    p = _labelled(metric, refs, x0, x1)
    cfg = AutoAttackConfig(norm=norm, eps=eps, attacks=("fab-t",), fab_iters=10)
    spec = AttackSpec("autoattack", norm, eps, autoattack=cfg)
    one, many = _run(metric, refs, x0, x1, p, spec, 1), _run(metric, refs, x0, x1, p, spec, n)
    assert (many["group"] == 0).all() and (many["batch_size"] == n).all()  # one call
    assert list(one["group"]) == list(range(n)) and (one["batch_size"] == 1).all()
    flipped = one["score_adv"] < one["score_clean"]
    assert 0 < flipped.sum() < n  # the comparison has teeth
    np.testing.assert_array_equal(many["score_adv"], one["score_adv"])
    np.testing.assert_allclose(many["delta_norm"], one["delta_norm"], atol=1e-4)


def test_batched_ensemble_never_weaker_than_per_triplet_by_more_than_one_in_32():
    metric = LinearCosine(dim=4)
    n, eps = 32, 0.2
    ref, x0, x1, _ = triplets(n, seed=11)
    p = _labelled(metric, ref, x0, x1)
    spec = AttackSpec("autoattack", "L2", eps, seed=2, autoattack=small_aa("L2", eps))
    one, many = _run(metric, ref, x0, x1, p, spec, 1), _run(metric, ref, x0, x1, p, spec, n)
    flips_one = int((one["score_adv"] < one["score_clean"]).sum())
    flips_many = int((many["score_adv"] < many["score_clean"]).sum())
    assert 0 < flips_one < n  # some triplets hold, some break
    assert flips_many >= flips_one - 1
    assert many["group"].max() == 0  # random images: one call for the batch


def test_attack_rerun_gives_a_byte_identical_file(tmp_path):
    from lipsim.cli import attack
    from lipsim.data.synthetic import make_night

    night = make_night(tmp_path / "night", seed=0, n_train=0, n_val=0, n_test=12, image_size=32)
    args = [
        "--metric",
        "lipsim:tiny",
        "--night",
        str(night),
        "--splits",
        "test",
        "--attack",
        "autoattack",
        "--norm",
        "L2",
        "--eps",
        "0.5",
        "--budget",
        "demo",
        "--square-queries",
        "30",
        "--batch-size",
        "5",
        "--device",
        "cpu",
        "--no-progress",
    ]
    outs = [tmp_path / f"run{i}.parquet" for i in range(2)]
    for out in outs:
        assert attack.main([*args, "--out", str(out)]) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()
    df = pd.read_parquet(outs[0])
    assert (df["batch_size"] == 5).all()
    attacked = df[df["group"] >= 0]
    assert len(attacked) and attacked["group"].is_monotonic_increasing


class OwnPairChecker(LinearCosine):
    """LinearCosine whose embeddings carry a tag: for x0 / x1, the triplet they belong to;
    for any other image, the reference whose eps-ball holds it (-1: none, e.g. FAB's far
    iterates). Every distance between a tagged image and a pair image whose tags differ is
    recorded: a row attacked against another triplet's pair."""

    def __init__(self, refs, x0, x1, norm, eps):
        super().__init__(dim=4)
        self.refs, self.pairs, self.norm, self.r = refs, (x0, x1), norm, ball_radius(eps)
        self.checked, self.wrong = 0, 0

    def _tag(self, row):
        for x in self.pairs:
            hit = (x.flatten(1) == row.flatten()).all(1).nonzero().flatten()
            if len(hit):
                return float(hit[0])
        d = lp_norm(self.refs - row, self.norm)
        return float(d.argmin()) if float(d.min()) <= self.r else -1.0

    def embed(self, x):
        tags = torch.tensor([[self._tag(row.detach())] for row in x], dtype=x.dtype)
        return torch.cat((super().embed(x), tags), 1)

    def distance_from_embeddings(self, ea, eb):
        ta, tb = ea[:, -1].detach(), eb[:, -1].detach()
        seen = ta >= 0
        self.checked += int(seen.sum())
        self.wrong += int((ta[seen] != tb[seen]).sum())
        return cosine_distance(ea[:, :-1], eb[:, :-1])


@pytest.mark.parametrize("norm", ["L2", "Linf"])
def test_every_row_is_attacked_against_its_own_pair(norm):
    # The full ensemble on references as close as one batch allows; APGD flips some rows so
    # FAB and Square get subsets of the batch, in which a positional lookup would go wrong.
    n = 8
    eps = 0.1 if norm == "L2" else 1 / 255
    refs, _ = _close_references(n, eps, norm)
    g = torch.Generator().manual_seed(6)
    x0, x1 = torch.rand(n, 3, S, S, generator=g), torch.rand(n, 3, S, S, generator=g)
    metric = OwnPairChecker(refs, x0, x1, norm, eps)
    p = _labelled(LinearCosine(dim=4), refs, x0, x1)
    spec = AttackSpec("autoattack", norm, eps, seed=1, autoattack=small_aa(norm, eps))
    out = _run(metric, refs, x0, x1, p, spec, n)
    assert (out["group"] == 0).all()  # one AutoAttack call for the 8 triplets
    flipped = int((out["score_adv"] < out["score_clean"]).sum())
    assert 0 < flipped < n  # later attacks ran on subsets
    assert metric.checked > 50 * n and metric.wrong == 0


class Flaky(LinearCosine):
    """A metric whose distances change from call to call (a non-deterministic forward)."""

    def __init__(self):
        super().__init__(dim=4)
        self.noise = torch.Generator().manual_seed(0)

    def distance_from_embeddings(self, ea, eb):
        return cosine_distance(ea, eb) + 0.5 * torch.rand(ea.shape[0], generator=self.noise)


def test_fab_falls_back_to_one_row_at_a_time_when_the_forward_is_not_deterministic(caplog):
    metric = Flaky()
    n, eps = 8, 0.1
    refs, _ = _close_references(n, eps)
    g = torch.Generator().manual_seed(6)
    x0, x1 = torch.rand(n, 3, S, S, generator=g), torch.rand(n, 3, S, S, generator=g)
    adapter = TwoAFCAdapter(metric)
    adapter.set_pairs(x0, x1, refs=refs, norm="L2", eps=eps)
    aa = make_autoattack(
        adapter, AutoAttackConfig(norm="L2", eps=eps, attacks=("fab-t",), fab_iters=3), "cpu"
    )
    y = torch.zeros(n, dtype=torch.long)
    with caplog.at_level("WARNING"):
        adv = aa.fab.perturb(refs.clone(), y)
    assert "FAB-T reruns row by row" in caplog.text
    assert (lp_norm(adv - refs, "L2") <= eps + 1e-5).all()


def test_batched_and_per_triplet_fab_agree_on_the_demo_model(tmp_path):
    # The demo model (tiny LipSim, 32 px) on generated NIGHT triplets, FAB-T alone
    # (deterministic): one AutoAttack call for the whole set flips exactly the triplets that
    # one call per triplet flips.
    from lipsim.cli._night import read_triplets, triplet_loader
    from lipsim.data.synthetic import make_night
    from lipsim.metric import load

    metric = load("tiny", pretrained=False)
    night = make_night(tmp_path / "night", seed=0, n_train=0, n_val=0, n_test=16, image_size=32)
    df = read_triplets(night, splits=["test"], min_votes=0)
    cfg = AutoAttackConfig(norm="L2", eps=0.5, attacks=("fab-t",), fab_iters=10)
    spec = AttackSpec("autoattack", "L2", 0.5, autoattack=cfg)
    out = {
        bs: attack_triplets(
            metric,
            triplet_loader(df, 32, bs, 0),
            spec,
            device="cpu",
            ids=df["id"].to_numpy(),
            splits=df["split"].to_numpy(),
            log=None,
        )
        for bs in (1, len(df))
    }
    one, many = out[1], out[len(df)]
    flipped = one["score_adv"] < one["score_clean"]
    assert flipped.any() and (many["group"].max() == 0)
    np.testing.assert_array_equal(many["score_adv"] < many["score_clean"], flipped)
    np.testing.assert_allclose(many["delta_norm"], one["delta_norm"], atol=1e-4)
