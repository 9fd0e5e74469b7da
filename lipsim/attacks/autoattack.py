"""AutoAttack (pyautoattack 0.2.0) on the 2AFC adapter, one triplet at a time.

Which attacks: standard AutoAttack is APGD-CE, APGD-T (DLR), FAB-T and Square. With two
classes the DLR loss is undefined (it needs the third-largest logit) and its targeted
variant needs >= 4 classes, so the meaningful ensemble is APGD-CE + FAB-T with one target
class (the only other class) + Square with 5000 queries -- the paper's configuration.
pyautoattack's own `version="standard"` would add APGD-T and 9 FAB targets, which fail or
are meaningless here, so we use `version="custom"` and set each attack's budget.

Budgets (`BUDGETS`):
- standard: APGD-CE 100 iterations x 1 restart, FAB-T 100 iterations x 1 target,
  Square 5000 queries (pyautoattack's standard settings for these three attacks);
- demo: APGD-CE 10 iterations + Square 200 queries (seconds per triplet on a CPU).

Why one triplet per pyautoattack run (and not batches):
1. Identity: pyautoattack calls the model on subsets and copies of its input batch that it
   selects itself (still-robust points, restarts, Square's remaining points), so a model
   seeing a batch cannot know which x0/x1 belongs to which row. With one triplet per run,
   every row of every call belongs to that triplet and the adapter broadcasts its pair.
2. Reproducibility: pyautoattack reseeds the global torch RNG per attack and draws noise
   and Square's square positions for the whole batch at once, so a batched row's result
   depends on its batch mates. Per triplet, with the seed derived from the run seed and the
   triplet id (`row_seed`), results do not depend on batching or on --max-triplets.
The cost is GPU utilisation (batch 1); the embeddings of x0/x1 are still computed in
batches and cached, so one attack step costs one forward/backward of the reference.

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
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from lipsim.attacks.pgd import check_norm

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
        attacks=("apgd-ce", "square"),
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
    aa.fab.n_iter = cfg.fab_iters
    aa.fab.n_target_classes = 1
    aa.fab.n_restarts = 1
    aa.square.n_queries = cfg.square_queries
    aa.square.rescale_schedule = cfg.square_queries != 5000
    return aa


def autoattack_one(aa, ref: torch.Tensor, label: torch.Tensor, seed: int) -> torch.Tensor:
    """Attack one reference (1, 3, H, W) whose pair the model (adapter) holds."""
    if ref.shape[0] != 1:
        raise ValueError(f"autoattack_one takes one reference, got {ref.shape[0]}")
    aa.seed = int(seed)
    # pyautoattack warns through this logger about points with zero gradient etc.; keep
    # those, but its per-attack progress lines are debug-level noise at one triplet a run.
    logging.getLogger("auto-attack").setLevel(logging.INFO)
    x_adv, _ = aa.run_standard_evaluation(ref, label.long().reshape(1), batch_size=1)
    return x_adv.detach()


__all__ = ["BUDGETS", "SUPPORTED", "AutoAttackConfig", "autoattack_one", "make_autoattack"]
