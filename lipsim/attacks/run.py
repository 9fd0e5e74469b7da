"""Attack every triplet of a loader and tabulate clean vs attacked 2AFC per triplet.

Output columns (one row per triplet, loader order):
    id, split, p, score_clean, score_adv, d0_adv, d1_adv, delta_norm
    + d0, d1 (clean), delta_l2, attack, norm, eps, seed
score_* are per-triplet 2AFC scores in [0, 1] (lipsim.scoring.twoafc); the attacked one is
computed on the attacked reference with the unchanged x0/x1. delta_norm is ||ref_adv - ref||
in the attack's norm, delta_l2 its l2 norm (the consistency check compares it with the
certified l2 radius whatever the attack's norm), eps is in [0, 1]-pixel units.

Which triplets are attacked: those the metric does not get wrong (ties included) with
p != 0.5. A wrong decision already scores min(p, 1 - p), the lowest a
triplet can score, and a p = 0.5 triplet scores 0.5 whatever the metric says; the others
keep their clean reference (delta 0).
"""

from __future__ import annotations

import dataclasses
import sys
import time

import numpy as np
import pandas as pd
import torch

from lipsim.attacks.adapter import TwoAFCAdapter, frozen
from lipsim.attacks.autoattack import AutoAttackConfig, autoattack_one, make_autoattack
from lipsim.attacks.pgd import check_norm, lp_norm, pgd_2afc, project, row_seed
from lipsim.scoring import hard_label, triplet_table, twoafc

COLUMNS = (
    "id",
    "split",
    "p",
    "score_clean",
    "score_adv",
    "d0_adv",
    "d1_adv",
    "delta_norm",
    "d0",
    "d1",
    "delta_l2",
    "attack",
    "norm",
    "eps",
    "seed",
)
# Float slack of the final ball check: the attacks project in float32.
_BALL_TOL = 1e-5


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """What to run: `kind` "autoattack" (uses `autoattack`) or "pgd" (steps/restarts)."""

    kind: str
    norm: str
    eps: float  # [0, 1]-pixel units
    seed: int = 0
    autoattack: AutoAttackConfig | None = None
    steps: int = 50
    restarts: int = 1
    step_size: float | None = None  # pgd; None = 2.5 * eps / steps

    def __post_init__(self) -> None:
        check_norm(self.norm)
        if self.kind not in ("autoattack", "pgd"):
            raise ValueError(f"attack must be 'autoattack' or 'pgd', got {self.kind!r}")
        if self.kind == "autoattack" and self.autoattack is None:
            raise ValueError("AttackSpec(kind='autoattack') needs an AutoAttackConfig")


def _precise_distances(adapter: TwoAFCAdapter, ref: torch.Tensor):
    """Reported (d0, d1) in float64 where the metric allows (embedding arithmetic), so that
    near-ties are decided the same way as by lipsim.certify."""
    with torch.no_grad():
        if adapter.cache:
            m = adapter.metric
            e = m.embed(ref).double()
            n = ref.shape[0]
            d0 = m.distance_from_embeddings(e, adapter._rows(adapter._e0, n).double())
            d1 = m.distance_from_embeddings(e, adapter._rows(adapter._e1, n).double())
        else:
            d0, d1 = adapter.distances(ref)
    return d0.double().cpu().numpy(), d1.double().cpu().numpy()


def attack_batch(metric, ref, x0, x1, p, keys, spec: AttackSpec, *, aa_cache: dict | None = None):
    """Attack one batch; returns (x_adv, dict of per-row numpy columns). Rows independent.

    keys: one stable key per row (the triplet id) from which the row's seed is derived.
    """
    with frozen(metric):
        return _attack_batch(metric, ref, x0, x1, p, keys, spec, aa_cache)


def _attack_batch(metric, ref, x0, x1, p, keys, spec, aa_cache):
    device = ref.device
    adapter = TwoAFCAdapter(metric)
    adapter.set_pairs(x0, x1)
    p = np.asarray(p, dtype=np.float64)
    label = torch.as_tensor(hard_label(p), device=device)
    seeds = [row_seed(spec.seed, k) for k in keys]

    d0, d1 = _precise_distances(adapter, ref)
    # Attack every row whose score an attack can lower: not p = 0.5, not already wrong
    # (decided on the reported float64 distances; ties are attacked).
    lab = hard_label(p)
    wrong = ((lab == 1) & (d1 > d0)) | ((lab == 0) & (d0 > d1))
    active = (p != 0.5) & ~wrong
    x_adv = ref.detach().clone()
    idx = np.flatnonzero(active)
    if len(idx):
        if spec.kind == "pgd":
            sub = TwoAFCAdapter(metric)
            sub.set_pairs(
                x0[idx],
                x1[idx],
                e0=_rows_or_none(adapter._e0, idx),
                e1=_rows_or_none(adapter._e1, idx),
            )
            x_adv[idx] = pgd_2afc(
                sub,
                ref[idx],
                label[idx],
                norm=spec.norm,
                eps=spec.eps,
                steps=spec.steps,
                step_size=spec.step_size,
                restarts=spec.restarts,
                seeds=[seeds[i] for i in idx],
            )
        else:
            # One AutoAttack (and its adapter) per run: reused for every triplet.
            aa = None if aa_cache is None else aa_cache.get("aa")
            if aa is None:
                aa = make_autoattack(TwoAFCAdapter(metric), spec.autoattack, device, seed=spec.seed)
                if aa_cache is not None:
                    aa_cache["aa"] = aa
            one = aa.model
            for i in idx:
                one.set_pairs(
                    x0[i : i + 1],
                    x1[i : i + 1],
                    e0=_rows_or_none(adapter._e0, [i]),
                    e1=_rows_or_none(adapter._e1, [i]),
                )
                x_adv[i : i + 1] = autoattack_one(aa, ref[i : i + 1], label[i : i + 1], seeds[i])
    norms = lp_norm(x_adv - ref, spec.norm)
    limit = spec.eps * (1 + _BALL_TOL) + _BALL_TOL
    if (norms > limit).any():
        worst = float(norms.max())
        raise RuntimeError(
            f"{spec.kind}: a perturbation left the {spec.norm} ball "
            f"(norm {worst:.6g} > eps {spec.eps:.6g}); refusing to report it"
        )
    # Rounding can put a point a hair outside the ball; pull it in (scores use the result).
    over = norms > spec.eps
    if over.any():
        rows = torch.nonzero(over.to(device)).flatten()
        x_adv[rows] = project(ref[rows], x_adv[rows], spec.norm, spec.eps)
    d0a, d1a = _precise_distances(adapter, x_adv)
    cols = {
        "p": p,
        "score_clean": twoafc(d0, d1, p),
        "score_adv": twoafc(d0a, d1a, p),
        "d0_adv": d0a,
        "d1_adv": d1a,
        "delta_norm": lp_norm(x_adv - ref, spec.norm).cpu().numpy(),
        "d0": d0,
        "d1": d1,
        "delta_l2": lp_norm(x_adv - ref, "L2").cpu().numpy(),
        "seed": np.asarray(seeds, dtype=np.int64),
    }
    return x_adv, cols


def _rows_or_none(t, idx):
    if t is None:
        return None
    return t[torch.as_tensor(np.asarray(idx), device=t.device, dtype=torch.long)]


def attack_triplets(
    metric, loader, spec: AttackSpec, *, device, ids, splits, log=sys.stdout
) -> pd.DataFrame:
    """Run `spec` on every triplet of `loader` ((ref, x0, x1, p, index) batches)."""
    ids = np.asarray(ids)
    aa_cache: dict = {}
    start, done = time.time(), 0

    def batch_columns(ref, x0, x1, p, index):
        ref, x0, x1 = (t.to(device) for t in (ref, x0, x1))
        _, cols = attack_batch(
            metric, ref, x0, x1, p, [str(k) for k in ids[index]], spec, aa_cache=aa_cache
        )
        return {**cols, "attack": spec.kind, "norm": spec.norm, "eps": float(spec.eps)}

    def progress(part):
        nonlocal done
        done += len(part)
        if log is not None:
            print(
                f"attack {spec.kind}-{spec.norm} eps={spec.eps:.6g}: {done} triplets, "
                f"clean {100 * part['score_clean'].mean():.1f}% -> attacked "
                f"{100 * part['score_adv'].mean():.1f}% (this batch), "
                f"{time.time() - start:.1f}s",
                file=log,
                flush=True,
            )

    return triplet_table(loader, ids, splits, COLUMNS, batch_columns, on_part=progress)


__all__ = ["COLUMNS", "AttackSpec", "attack_batch", "attack_triplets"]
