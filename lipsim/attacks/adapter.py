"""2AFC as a 2-class classifier of the reference image, for attacks (pyautoattack, PGD).

A triplet (ref, x0, x1, p) becomes a classification problem over the *reference only*:

    logits(ref) = (d(ref, x1), d(ref, x0))        label = round(p) = hard_label(p)

Class 1 wins when d(ref, x0) > d(ref, x1), i.e. when the metric judges x1 closer, which is
what label 1 (the majority voted for x1) means. Flipping the argmax flips the metric's
2AFC decision; for a correctly predicted triplet that lowers its 2AFC score from
max(p, 1 - p) to min(p, 1 - p). x0 and x1 are held by the adapter and never handed to an
attack, so they cannot be perturbed (the public LipSim code attacked a stacked
(ref, x0, x1) tensor whose eps-ball covered all three images).

Embedding metrics: x0's and x1's embeddings are computed once (no graph) when the pair is
set and reused by every forward, so one attack step costs one embedding of the reference
instead of three. Non-embedding metrics (LPIPS, DISTS) evaluate d(ref, x0) and d(ref, x1)
in full on each call.

Rows: the adapter holds m pairs, and finds the pair of each row of every forward in one of
four ways (`row_index`), never by guessing:
- m == n, no references held: row by row (batched PGD, which never subsets its batch);
- m == 1: the single pair broadcast over the n rows (pyautoattack on one triplet: every row
  of every call it builds -- restarts, FAB, Square -- belongs to that triplet);
- references held (`set_pairs(..., refs=, norm=, eps=)`, batched AutoAttack): pyautoattack
  passes subsets and copies of its batch that it picks itself, but APGD, Square and
  AutoAttack's own checks only ever evaluate points of the eps-balls around the clean
  references. The references of one batch are more than 2 r apart (r = `ball_radius(eps)`,
  checked here; lipsim.attacks.autoattack.separated_groups forms such batches), so the one
  reference within r of a row is its own: a row is identified by finding a reference within
  r (proposed by position or by l2 nearness, then verified in the attack's norm), and a
  row within r of none is an error;
- pinned (`pinned(rows)`): every call must carry exactly these pairs' rows, in order. FAB's
  iterates leave the eps-ball (it searches for the smallest adversarial perturbation and
  only returns those within eps), so they cannot be identified by nearness; FAB is run on a
  batch on which it provably never subsets (lipsim.attacks.autoattack), and a call of any
  other size is an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from lipsim.attacks.norms import check_norm, lp_norm
from lipsim.similarity import SimilarityMetric

# Float slack of the ball checks: attacks project in float32, so an iterate may sit a hair
# outside the eps-ball.
BALL_TOL = 1e-5


def ball_radius(eps: float) -> float:
    """The radius up to which a point counts as inside the eps-ball (float slack included)."""
    return float(eps) * (1 + BALL_TOL) + BALL_TOL


def min_separation(refs: torch.Tensor, norm: str) -> float:
    """Smallest distance between two rows of refs in `norm` (inf for fewer than 2 rows)."""
    flat = refs.detach().reshape(refs.shape[0], -1)
    best = float("inf")
    for i in range(flat.shape[0] - 1):
        best = min(best, float(lp_norm(flat[i + 1 :] - flat[i], norm).min()))
    return best


class PinnedRowsError(RuntimeError):
    """A call to a pinned adapter did not carry the pinned rows (see TwoAFCAdapter.pinned)."""


@contextlib.contextmanager
def frozen(metric: nn.Module) -> Iterator[nn.Module]:
    """Eval mode and no weight gradients for the duration of an attack.

    Attacks differentiate w.r.t. the input only: weights that require grad would make
    autograd keep their graph and (LipSim) disable the SLL layers' cached rescaling vectors,
    which are recomputed on every forward then. The previous state is restored afterwards.
    """
    was_training = metric.training
    flags = [(p, p.requires_grad) for p in metric.parameters()]
    metric.eval()
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield metric
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        metric.train(was_training)


class TwoAFCAdapter(nn.Module):
    """A SimilarityMetric seen as a 2-class model of the reference: forward(ref) -> (n, 2).

    `cache=False` is the naive variant (re-embeds x0 and x1 on every call); it exists for the
    benchmark and for tests that check both variants agree.
    """

    def __init__(self, metric: SimilarityMetric, *, cache: bool = True) -> None:
        super().__init__()
        self.metric = metric
        self.cache = bool(cache and getattr(metric, "has_embedding", False))
        self._x0: torch.Tensor | None = None
        self._x1: torch.Tensor | None = None
        self._e0: torch.Tensor | None = None
        self._e1: torch.Tensor | None = None
        self._refs: torch.Tensor | None = None
        self._norm, self._radius = "L2", 0.0
        self._pinned: torch.Tensor | None = None
        self.calls = 0  # forward calls since the last set_pairs (benchmarks, tests)

    # -- pairs ---------------------------------------------------------------------------
    def set_pairs(
        self,
        x0: torch.Tensor,
        x1: torch.Tensor,
        *,
        e0: torch.Tensor | None = None,
        e1: torch.Tensor | None = None,
        refs: torch.Tensor | None = None,
        norm: str | None = None,
        eps: float | None = None,
    ) -> None:
        """Hold (x0, x1) (m, 3, H, W); embed them now unless embeddings are given.

        With `refs` (the m clean references, more than 2 ball_radius(eps) apart in `norm`),
        rows are identified by the reference whose eps-ball holds them (module docstring).
        The tensors are detached copies: nothing done through the adapter can write into the
        caller's x0/x1.
        """
        if x0.shape != x1.shape or x0.dim() != 4:
            raise ValueError(
                f"x0 and x1 must be (m, 3, H, W) of equal shape, got "
                f"{tuple(x0.shape)} and {tuple(x1.shape)}"
            )
        self._refs, self._pinned = None, None
        if refs is not None:
            if refs.shape != x0.shape or norm is None or eps is None:
                raise ValueError(
                    "set_pairs(refs=...) needs one reference per pair (same shape "
                    "as x0) and the attack's norm and eps"
                )
            self._norm, self._radius = check_norm(norm), ball_radius(eps)
            gap = min_separation(refs, norm)
            if not gap > 2 * self._radius:
                raise ValueError(
                    f"references {gap:.6g} apart in {norm}: rows could not be told "
                    f"apart within eps {eps:.6g} (need > {2 * self._radius:.6g})"
                )
            self._refs = refs.detach().clone()
        self._x0, self._x1 = x0.detach().clone(), x1.detach().clone()
        self._e0 = self._e1 = None
        if self.cache:
            if e0 is None or e1 is None:
                with torch.no_grad():
                    e0, e1 = self.metric.embed(self._x0), self.metric.embed(self._x1)
            self._e0, self._e1 = e0.detach(), e1.detach()
        self.calls = 0

    def pairs(self, rows) -> dict[str, torch.Tensor | None]:
        """The held pairs `rows` (indices) as set_pairs keywords (x0, x1, e0, e1): an attack
        hands a subset to another adapter without embedding x0 / x1 again."""
        t = torch.as_tensor(rows, dtype=torch.long, device=self._x0.device)
        held = {"x0": self._x0, "x1": self._x1, "e0": self._e0, "e1": self._e1}
        return {k: None if v is None else v[t.to(v.device)] for k, v in held.items()}

    @property
    def n_pairs(self) -> int:
        return 0 if self._x0 is None else int(self._x0.shape[0])

    @contextlib.contextmanager
    def pinned(self, rows: torch.Tensor) -> Iterator[None]:
        """Within the block, every forward must carry exactly the pairs `rows`, in order."""
        previous, self._pinned = self._pinned, rows.detach().to(torch.long).reshape(-1)
        try:
            yield
        finally:
            self._pinned = previous

    def row_index(self, ref: torch.Tensor) -> torch.Tensor:
        """The held pair (0 .. m-1) of each of the n rows of `ref` (module docstring)."""
        n, m = ref.shape[0], self.n_pairs
        if self._pinned is not None:
            if n != self._pinned.numel():
                raise PinnedRowsError(
                    f"TwoAFCAdapter pinned to {self._pinned.numel()} rows got "
                    f"a call with {n}: the attack subset its batch"
                )
            return self._pinned
        if self._refs is not None:
            return self._lookup(ref)
        if m == n:
            return torch.arange(n, device=ref.device)
        if m == 1:
            return torch.zeros(n, dtype=torch.long, device=ref.device)
        raise ValueError(
            f"TwoAFCAdapter holds {m} pairs but got {n} references; "
            "expected the same number, or 1 pair broadcast over the rows"
        )

    def _lookup(self, ref: torch.Tensor) -> torch.Tensor:
        x = ref.detach().reshape(ref.shape[0], -1)
        refs = self._refs.reshape(self._refs.shape[0], -1)
        if x.shape[0] == refs.shape[0]:
            guess = torch.arange(x.shape[0], device=x.device)  # the whole batch, in order
        else:
            guess = torch.cdist(x.float(), refs.float()).argmin(1)
        far = lp_norm(x - refs[guess], self._norm) > self._radius
        for i in torch.nonzero(far).flatten().tolist():
            d = lp_norm(refs - x[i], self._norm)
            j = int(d.argmin())
            if float(d[j]) > self._radius:
                raise RuntimeError(
                    f"TwoAFCAdapter: a row is {float(d[j]):.6g} from the nearest "
                    f"reference in {self._norm}, outside the eps-ball "
                    f"(radius {self._radius:.6g}): cannot tell whose it is"
                )
            guess[i] = j
        return guess

    # -- distances -------------------------------------------------------------------------
    def distances(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d(ref, x0), d(ref, x1)), each (n,), differentiable w.r.t. ref."""
        if self._x0 is None:
            raise RuntimeError("TwoAFCAdapter: call set_pairs(x0, x1) before forward")
        n = ref.shape[0]
        rows = self.row_index(ref)
        if self.cache:
            e = self.metric.embed(ref)
            d0 = self.metric.distance_from_embeddings(e, self._e0[rows])
            d1 = self.metric.distance_from_embeddings(e, self._e1[rows])
        elif getattr(self.metric, "has_embedding", False):
            # Naive: all three images through the network on every call.
            e = self.metric.embed(ref)
            d0 = self.metric.distance_from_embeddings(e, self.metric.embed(self._x0[rows]))
            d1 = self.metric.distance_from_embeddings(e, self.metric.embed(self._x1[rows]))
        else:
            d0 = self.metric(ref, self._x0[rows])
            d1 = self.metric(ref, self._x1[rows])
        return d0.reshape(n), d1.reshape(n)

    def forward(self, ref: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        d0, d1 = self.distances(ref)
        # A fresh tensor each call: Square writes -inf into the logits it receives.
        return torch.stack((d1, d0), dim=1)


def margin(logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """logit(other class) - logit(label), (n,): > 0 exactly when the decision is flipped.

    With two classes the cross-entropy is softplus(-(logit_label - logit_other)), a strictly
    monotone function of this margin, so PGD on it takes the same normalised / sign steps as
    PGD on the cross-entropy.
    """
    idx = torch.arange(logits.shape[0], device=logits.device)
    return logits[idx, 1 - label] - logits[idx, label]


__all__ = [
    "BALL_TOL",
    "PinnedRowsError",
    "TwoAFCAdapter",
    "ball_radius",
    "frozen",
    "margin",
    "min_separation",
]
