"""Attack every triplet of a loader and tabulate clean vs attacked 2AFC per triplet.

Output columns (one row per triplet, loader order):
    id, split, p, score_clean, score_adv, d0_adv, d1_adv, delta_norm
    + d0, d1 (clean), delta_l2, attack, norm, eps, seed, batch_size, group
score_* are per-triplet 2AFC scores in [0, 1] (lipsim.scoring.twoafc); the attacked one is
computed on the attacked reference with the unchanged x0/x1. delta_norm is ||ref_adv - ref||
in the attack's norm, delta_l2 its l2 norm (the consistency check compares it with the
certified l2 radius whatever the attack's norm), eps is in [0, 1]-pixel units. seed is the
seed the row was attacked with (AutoAttack: that of its call), batch_size the triplets per
loader batch of the run and group the number of the attack call the row was part of
(counting from 0 over the file): with the row order they say how to reproduce the file.

Which triplets are attacked: those the metric does not get wrong (ties included) with
p != 0.5. A wrong decision already scores min(p, 1 - p), the lowest a
triplet can score, and a p = 0.5 triplet scores 0.5 whatever the metric says; the others
keep their clean reference (delta 0).

The attacks are the registry's (lipsim.registry.names("attack")); each module registers a
class under its name (`@register("attack", name)`, lipsim/attacks/__init__.py imports the
modules) with three static methods:
    check(spec)                  raise ValueError when `spec` cannot run (at AttackSpec());
    run(adapter, rows, ref, label, keys, spec, state) -> (x_adv, seeds, group)
                                 attack the rows `rows` (indices into the batch) of the pairs
                                 `adapter` holds: their attacked references, the seed of each
                                 and the number of the attack call it was part of (from 0);
                                 `state` is a dict kept over the run's batches;
    passes(spec, robust_share)   (forward + backward, forward-only) adapter passes per
                                 attacked triplet: the cost model of benchmarks/.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import torch

from lipsim.attacks.adapter import TwoAFCAdapter, ball_radius, frozen
from lipsim.attacks.autoattack import AutoAttackConfig
from lipsim.attacks.norms import check_norm, lp_norm, project
from lipsim.attacks.pgd import row_seed
from lipsim.configcheck import schema_default
from lipsim.progress import progress_bar
from lipsim.registry import builder
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
    "batch_size",
    "group",
)


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """What to run: `kind` an attack of the registry; "autoattack" uses `autoattack`, "pgd"
    steps / restarts / step_size."""

    kind: str
    norm: str
    eps: float  # [0, 1]-pixel units
    seed: int = dataclasses.field(default_factory=lambda: schema_default("attacks.seed"))
    autoattack: AutoAttackConfig | None = None
    # PGD budget: the schema's defaults (one source), not a second copy here.
    steps: int = dataclasses.field(default_factory=lambda: schema_default("attacks.pgd_steps"))
    restarts: int = dataclasses.field(
        default_factory=lambda: schema_default("attacks.pgd_restarts")
    )
    step_size: float | None = None  # pgd; None = 2.5 * eps / steps

    def __post_init__(self) -> None:
        check_norm(self.norm)
        builder("attack", self.kind).check(self)


def _precise_distances(adapter: TwoAFCAdapter, ref: torch.Tensor):
    """Reported (d0, d1) in float64 where the metric allows (embedding arithmetic), so that
    near-ties are decided the same way as by lipsim.certify."""
    with torch.no_grad():
        if adapter.cache:
            m = adapter.metric
            e = m.embed(ref).double()
            rows = adapter.row_index(ref)
            d0 = m.distance_from_embeddings(e, adapter._e0[rows].double())
            d1 = m.distance_from_embeddings(e, adapter._e1[rows].double())
        else:
            d0, d1 = adapter.distances(ref)
    return d0.double().cpu().numpy(), d1.double().cpu().numpy()


def attack_batch(metric, ref, x0, x1, p, keys, spec: AttackSpec, *, state: dict | None = None):
    """Attack one batch; returns (x_adv, dict of per-row numpy columns).

    keys: one stable key per row (the triplet id) from which the seeds are derived. PGD rows
    are independent; AutoAttack attacks the batch's rows together (lipsim.attacks.autoattack),
    so their results depend on the batch. Column `group` numbers the attack calls from 0
    within the batch. state: the attack's state kept over a run's batches (module docstring).
    """
    with frozen(metric):
        return _attack_batch(metric, ref, x0, x1, p, keys, spec, {} if state is None else state)


def _attack_batch(metric, ref, x0, x1, p, keys, spec, state):
    device = ref.device
    adapter = TwoAFCAdapter(metric)
    adapter.set_pairs(x0, x1)
    p = np.asarray(p, dtype=np.float64)
    label = torch.as_tensor(hard_label(p), device=device)
    seeds = np.asarray([row_seed(spec.seed, k) for k in keys], dtype=np.int64)

    d0, d1 = _precise_distances(adapter, ref)
    # Attack every row whose score an attack can lower: not p = 0.5, not already wrong
    # (decided on the reported float64 distances; ties are attacked).
    lab = hard_label(p)
    wrong = ((lab == 1) & (d1 > d0)) | ((lab == 0) & (d0 > d1))
    active = (p != 0.5) & ~wrong
    x_adv = ref.detach().clone()
    idx = np.flatnonzero(active)
    group = np.full(len(p), -1, dtype=np.int64)  # -1: not attacked
    if len(idx):
        attack = builder("attack", spec.kind)
        adv, seeds[idx], group[idx] = attack.run(adapter, idx, ref, label, keys, spec, state)
        x_adv[torch.as_tensor(idx, device=device)] = adv
    norms = lp_norm(x_adv - ref, spec.norm)
    limit = ball_radius(spec.eps)
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
        "seed": seeds,
        "group": group,
    }
    return x_adv, cols


def attack_triplets(
    metric,
    loader,
    spec: AttackSpec,
    *,
    device,
    ids,
    splits,
    log="stderr",
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Run `spec` on every triplet of `loader` ((ref, x0, x1, p, index) batches).

    log: the stream the progress bar goes to (done/total triplets, ETA, running clean ->
    attacked score), "stderr" for sys.stderr at call time, None for no bar.
    batch_size: the loader's triplets per batch, recorded per row (default: the loader's
    batch_size attribute, else the first batch's size).
    """
    ids = np.asarray(ids)
    state: dict = {}
    total = (
        len(loader.dataset)
        if hasattr(loader, "dataset")
        else sum(len(b[4]) for b in loader)
        if isinstance(loader, (list, tuple))
        else None
    )
    bar = progress_bar(
        total=total,
        desc=f"attack {spec.kind}-{spec.norm} eps={spec.eps:.6g}",
        unit="triplet",
        file=None if log == "stderr" else log,
        enabled=log is not None,
    )
    state = {
        "groups": 0,
        "batch_size": batch_size or getattr(loader, "batch_size", None),
        "clean": 0.0,
        "adv": 0.0,
        "done": 0,
    }

    def batch_columns(ref, x0, x1, p, index):
        ref, x0, x1 = (t.to(device) for t in (ref, x0, x1))
        _, cols = attack_batch(
            metric, ref, x0, x1, p, [str(k) for k in ids[index]], spec, state=state
        )
        state["batch_size"] = state["batch_size"] or len(p)
        attacked = cols["group"] >= 0
        cols["group"][attacked] += state["groups"]
        state["groups"] = max(state["groups"], int(cols["group"].max()) + 1)
        return {
            **cols,
            "attack": spec.kind,
            "norm": spec.norm,
            "eps": float(spec.eps),
            "batch_size": np.full(len(p), state["batch_size"], dtype=np.int64),
        }

    def progress(part):
        state["done"] += len(part)
        state["clean"] += float(part["score_clean"].sum())
        state["adv"] += float(part["score_adv"].sum())
        bar.set_postfix_str(
            f"clean {100 * state['clean'] / state['done']:.1f}% -> attacked "
            f"{100 * state['adv'] / state['done']:.1f}%",
            refresh=False,
        )
        bar.update(len(part))

    try:
        return triplet_table(loader, ids, splits, COLUMNS, batch_columns, on_part=progress)
    finally:
        bar.close()


__all__ = ["COLUMNS", "AttackSpec", "attack_batch", "attack_triplets"]
