"""AutoAttack (pyautoattack 0.2.0) on the 2AFC adapter, many triplets per AutoAttack call.

Which attacks: standard AutoAttack is APGD-CE, APGD-T (DLR), FAB-T and Square. With two
classes the DLR loss is undefined (it needs the third-largest logit) and its targeted
variant needs >= 4 classes, so the meaningful ensemble is APGD-CE + FAB-T with one target
class (the only other class) + Square with 5000 queries -- the paper's configuration.
pyautoattack's own `version="standard"` would add APGD-T and 9 FAB targets, which fail or
are meaningless here, so we use `version="custom"` and set each attack's budget.

Budgets (`BUDGETS`):
- standard: APGD-CE 100 iterations x 1 restart, FAB-T 100 iterations x 1 target,
  Square 5000 queries (pyautoattack's standard settings for these three attacks);
- demo: the same ensemble, APGD-CE 10 iterations, FAB-T 10, Square 200 queries.

Batches (`autoattack_rows`): one AutoAttack call attacks a batch of triplets whose
references are more than 2 eps apart in the attack's norm (`separated_groups`: greedy, in
batch order, so nearly always one group per batch). pyautoattack calls the model on subsets
and copies of the batch that it selects itself, so the model cannot know a row's x0/x1 by
position; the adapter finds it exactly (lipsim.attacks.adapter):
- APGD, Square and AutoAttack's checks only evaluate points of the eps-balls around the
  clean references: the one reference within eps of a row is its own;
- FAB's iterates leave the eps-ball, so FAB (`_PinnedFAB`) first drops, as FAB itself
  would, the rows the model already gets wrong (repeating until the batch is stable), then
  runs on a batch that FAB never subsets (every row correctly classified, the same forward
  on the same batch giving the same answer; 1 restart, 1 target), with the adapter pinned
  to those rows: a call of another size raises instead of mislabelling, and FAB-T is then
  rerun one row at a time (exact whatever it subsets).
Seeds and reproducibility: pyautoattack reseeds the global torch RNG per attack and draws
noise and Square's square positions for the whole batch, so a row's result depends on its
batch mates. The batch is fixed by the triplet order and --batch-size, and the seed of a
call is derived from the run seed and the ids of its triplets (`row_seed`), so a rerun with
the same batch size gives the same file; with one triplet per batch the seed is the
triplet's own (results independent of batching, as before batching existed).

Details checked in pyautoattack 0.2.0's source:
- APGD's checkpoint schedule (n_iter_2, n_iter_min, size_decr) is fixed in its constructor,
  so a different iteration budget needs a new APGDAttack (built as AutoAttack builds it),
  not a changed `n_iter` attribute.
- FAB-T uses target `output.sort()[1][:, -target_class]` for target_class = 2..n_targets+1:
  with 2 classes only n_target_classes = 1 exists (the other class). AutoAttack forces
  FAB-T's restarts to 1.
- Square: AutoAttack builds it with resc_schedule=False (its p schedule is tuned for 10000
  iterations and cut at 5000). For a non-standard query budget we rescale the schedule so a
  short run still goes through all square sizes.
- Every attack keeps iterates in the eps-ball and [0, 1] (APGD, Square project; FAB only
  returns points with norm <= eps); the runner still checks the final norm.
- FAB's perturb: predict(x) -> acc, attack_single_run(x[acc]) -> predict again -> attack the
  correctly classified rows; on a batch where every row is correctly classified (and the
  forward is deterministic) both subsets are the whole batch, in order.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from lipsim.attacks.adapter import PinnedRowsError, TwoAFCAdapter, ball_radius
from lipsim.attacks.norms import check_norm, lp_norm
from lipsim.attacks.pgd import row_seed
from lipsim.registry import register

SUPPORTED = ("apgd-ce", "fab-t", "square")
_NOT_FOR_TWO_CLASSES = {
    "apgd-t": "targeted APGD uses the DLR loss, which needs >= 4 classes",
    "apgd-dlr": "the DLR loss needs >= 3 classes",
}

BUDGETS: dict[str, dict] = {
    "standard": dict(
        attacks=("apgd-ce", "fab-t", "square"),
        apgd_iters=100,
        apgd_restarts=1,
        fab_iters=100,
        square_queries=5000,
    ),
    "demo": dict(
        attacks=("apgd-ce", "fab-t", "square"),
        apgd_iters=10,
        apgd_restarts=1,
        fab_iters=10,
        square_queries=200,
    ),
}


@dataclasses.dataclass(frozen=True)
class AutoAttackConfig:
    norm: str
    eps: float  # in [0, 1]-pixel units
    attacks: tuple[str, ...] = BUDGETS["standard"]["attacks"]
    apgd_iters: int = 100
    apgd_restarts: int = 1
    fab_iters: int = 100
    square_queries: int = 5000

    def __post_init__(self) -> None:
        check_norm(self.norm)
        if not self.eps > 0:
            raise ValueError(f"AutoAttack needs eps > 0, got {self.eps}")
        for a in self.attacks:
            if a in _NOT_FOR_TWO_CLASSES:
                raise ValueError(
                    f"attack {a!r} does not apply to 2AFC (2 classes): "
                    f"{_NOT_FOR_TWO_CLASSES[a]}; use {', '.join(SUPPORTED)}"
                )
            if a not in SUPPORTED:
                raise ValueError(f"unknown attack {a!r}; supported: {', '.join(SUPPORTED)}")
        if not self.attacks:
            raise ValueError("AutoAttackConfig: no attacks")
        for name in ("apgd_iters", "apgd_restarts", "fab_iters", "square_queries"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_budget(cls, budget: str, norm: str, eps: float, **overrides) -> AutoAttackConfig:
        if budget not in BUDGETS:
            raise ValueError(f"unknown budget {budget!r}; known: {', '.join(BUDGETS)}")
        fields = {**BUDGETS[budget], **{k: v for k, v in overrides.items() if v is not None}}
        fields["attacks"] = tuple(fields["attacks"])
        return cls(norm=norm, eps=float(eps), **fields)


def separated_groups(ref: torch.Tensor, norm: str, eps: float) -> list[np.ndarray]:
    """Rows 0..n-1 of ref split into groups whose references are pairwise more than
    2 ball_radius(eps) apart in `norm`: greedy in row order (deterministic), each row joins
    the first group it is far enough from."""
    flat = ref.detach().reshape(ref.shape[0], -1)
    limit = 2 * ball_radius(eps)
    groups: list[list[int]] = []
    for i in range(flat.shape[0]):
        for g in groups:
            if float(lp_norm(flat[g] - flat[i], norm).min()) > limit:
                g.append(i)
                break
        else:
            groups.append([i])
    return [np.asarray(g, dtype=np.int64) for g in groups]


def group_seed(seed: int, keys) -> int:
    """The seed of one AutoAttack call: from the run seed and its triplets' keys (for one
    triplet, that triplet's own row_seed)."""
    return row_seed(seed, ",".join(str(k) for k in keys))


def _pinned_fab(model, cfg: AutoAttackConfig, device, seed: int):
    from pyautoattack.fab_pt import FABAttack_PT

    class _PinnedFAB(FABAttack_PT):
        """FAB-T on a batch it never subsets, the adapter pinned to its rows (module doc)."""

        def perturb(self, x, y):
            adapter = self.predict
            with torch.no_grad():
                rows = adapter.row_index(x)  # clean references: found by nearness
                keep = torch.arange(x.shape[0], device=x.device)
                while len(keep):
                    with adapter.pinned(rows[keep]):
                        ok = adapter(x[keep]).argmax(1) == y[keep]
                    if bool(ok.all()):
                        break
                    keep = keep[ok]
            adv = x.clone()
            if len(keep):
                try:
                    with adapter.pinned(rows[keep]):
                        adv[keep] = super().perturb(x[keep], y[keep])
                except PinnedRowsError as err:
                    # A forward that answered differently on the same batch (non-deterministic
                    # kernels): one row at a time is exact whatever FAB subsets.
                    logging.getLogger(__name__).warning("%s; FAB-T reruns row by row", err)
                    for i in keep.tolist():
                        with adapter.pinned(rows[i : i + 1]):
                            adv[i : i + 1] = super().perturb(x[i : i + 1], y[i : i + 1])
            return adv

    # Same arguments as AutoAttack.__init__ uses for its FAB, with our budget.
    fab = _PinnedFAB(
        model,
        n_restarts=1,
        n_iter=cfg.fab_iters,
        eps=cfg.eps,
        seed=seed,
        norm=cfg.norm,
        verbose=False,
        device=device,
    )
    fab.n_target_classes = 1
    return fab


def make_autoattack(model, cfg: AutoAttackConfig, device, seed: int = 0):
    """A pyautoattack AutoAttack running cfg.attacks with cfg's budgets on `model`."""
    from pyautoattack import AutoAttack
    from pyautoattack.autopgd_base import APGDAttack

    aa = AutoAttack(
        model,
        attacks=list(cfg.attacks),
        device=device,
        eps=cfg.eps,
        norm=cfg.norm,
        seed=seed,
        version="custom",
    )
    aa.verbose = False
    # Same arguments as AutoAttack.__init__ uses, with our iteration / restart budget.
    aa.apgd = APGDAttack(
        model,
        n_restarts=cfg.apgd_restarts,
        n_iter=cfg.apgd_iters,
        verbose=False,
        eps=cfg.eps,
        norm=cfg.norm,
        eot_iter=1,
        rho=0.75,
        seed=seed,
        device=device,
        logger=aa.logger,
    )
    aa.fab = _pinned_fab(model, cfg, device, seed)
    aa.square.n_queries = cfg.square_queries
    aa.square.rescale_schedule = cfg.square_queries != 5000
    return aa


def autoattack_rows(aa, ref: torch.Tensor, label: torch.Tensor, seed: int) -> torch.Tensor:
    """Attack the references (n, 3, H, W) whose pairs the model (adapter) holds, in one
    AutoAttack call: one pair broadcast (n = 1), or n pairs with their references set
    (set_pairs(refs=...), references from one `separated_groups` group)."""
    aa.seed = int(seed)
    # pyautoattack warns through this logger about points with zero gradient etc.; keep
    # those, but its per-attack progress lines are debug-level noise.
    logging.getLogger("auto-attack").setLevel(logging.INFO)
    x_adv, _ = aa.run_standard_evaluation(ref, label.long().reshape(-1), batch_size=ref.shape[0])
    return x_adv.detach()


def autoattack_one(aa, ref: torch.Tensor, label: torch.Tensor, seed: int) -> torch.Tensor:
    """Attack one reference (1, 3, H, W) whose pair the model (adapter) holds."""
    if ref.shape[0] != 1:
        raise ValueError(f"autoattack_one takes one reference, got {ref.shape[0]}")
    return autoattack_rows(aa, ref, label, seed)


@register("attack", "autoattack")
class AutoAttack:
    """The `autoattack` attack of lipsim.attacks.run: spec.autoattack's ensemble on the rows,
    one call per `separated_groups` group, seeded by `group_seed`. One pyautoattack instance
    serves the whole run (kept in the run's state)."""

    @staticmethod
    def check(spec) -> None:
        if spec.autoattack is None:
            raise ValueError("AttackSpec(kind='autoattack') needs an AutoAttackConfig")

    @staticmethod
    def run(adapter, rows, ref, label, keys, spec, state):
        aa = state.get("aa")
        if aa is None:
            model = TwoAFCAdapter(adapter.metric)
            aa = state["aa"] = make_autoattack(model, spec.autoattack, ref.device, seed=spec.seed)
        one = aa.model
        x_adv = ref[rows].clone()
        seeds = np.zeros(len(rows), dtype=np.int64)
        group = np.zeros(len(rows), dtype=np.int64)
        for k, g in enumerate(separated_groups(ref[rows], spec.norm, spec.eps)):
            sub = rows[g]
            t = torch.as_tensor(sub, device=ref.device)
            one.set_pairs(
                **adapter.pairs(sub),
                refs=ref[t] if len(sub) > 1 else None,
                norm=spec.norm,
                eps=spec.eps,
            )
            seed = group_seed(spec.seed, [keys[i] for i in sub])
            x_adv[torch.as_tensor(g, device=ref.device)] = autoattack_rows(
                aa, ref[t], label[t], seed
            )
            seeds[g], group[g] = seed, k
        return x_adv, seeds, group

    @staticmethod
    def passes(spec, robust_share: float = 1.0) -> tuple[float, float]:
        """(forward + backward, forward-only) adapter passes per attacked triplet: APGD on
        every triplet; FAB and Square on the share `robust_share` still unbroken after it."""
        cfg = spec.autoattack
        grad = float(cfg.apgd_iters * cfg.apgd_restarts) if "apgd-ce" in cfg.attacks else 0.0
        fwd = 0.0
        if "fab-t" in cfg.attacks:
            grad += robust_share * cfg.fab_iters
            fwd += robust_share * cfg.fab_iters
        if "square" in cfg.attacks:
            fwd += robust_share * cfg.square_queries
        return grad, fwd


__all__ = [
    "AutoAttack",
    "BUDGETS",
    "SUPPORTED",
    "AutoAttackConfig",
    "autoattack_one",
    "autoattack_rows",
    "group_seed",
    "make_autoattack",
    "separated_groups",
]
