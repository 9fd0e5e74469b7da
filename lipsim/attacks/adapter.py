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

Rows: the adapter holds m pairs. A forward with n references uses them row by row when
n == m (batched PGD), and broadcasts a single pair (m == 1) over the n rows (pyautoattack
run on one triplet calls the model with batches it builds itself -- restarts, FAB, Square --
that all belong to that triplet). Anything else is an error, never a silent mismatch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from lipsim.similarity import SimilarityMetric


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
        self.calls = 0  # forward calls since the last set_pairs (benchmarks, tests)

    # -- pairs ---------------------------------------------------------------------------
    def set_pairs(
        self,
        x0: torch.Tensor,
        x1: torch.Tensor,
        *,
        e0: torch.Tensor | None = None,
        e1: torch.Tensor | None = None,
    ) -> None:
        """Hold (x0, x1) (m, 3, H, W); embed them now unless embeddings are given.

        The tensors are detached copies: nothing done through the adapter can write into the
        caller's x0/x1.
        """
        if x0.shape != x1.shape or x0.dim() != 4:
            raise ValueError(
                f"x0 and x1 must be (m, 3, H, W) of equal shape, got "
                f"{tuple(x0.shape)} and {tuple(x1.shape)}"
            )
        self._x0, self._x1 = x0.detach().clone(), x1.detach().clone()
        self._e0 = self._e1 = None
        if self.cache:
            if e0 is None or e1 is None:
                with torch.no_grad():
                    e0, e1 = self.metric.embed(self._x0), self.metric.embed(self._x1)
            self._e0, self._e1 = e0.detach(), e1.detach()
        self.calls = 0

    @property
    def n_pairs(self) -> int:
        return 0 if self._x0 is None else int(self._x0.shape[0])

    def _rows(self, t: torch.Tensor, n: int) -> torch.Tensor:
        m = t.shape[0]
        if m == n:
            return t
        if m == 1:
            return t.expand(n, *t.shape[1:])
        raise ValueError(
            f"TwoAFCAdapter holds {m} pairs but got {n} references; "
            "expected the same number, or 1 pair broadcast over the rows"
        )

    # -- distances -------------------------------------------------------------------------
    def distances(self, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d(ref, x0), d(ref, x1)), each (n,), differentiable w.r.t. ref."""
        if self._x0 is None:
            raise RuntimeError("TwoAFCAdapter: call set_pairs(x0, x1) before forward")
        n = ref.shape[0]
        if self.cache:
            e = self.metric.embed(ref)
            d0 = self.metric.distance_from_embeddings(e, self._rows(self._e0, n))
            d1 = self.metric.distance_from_embeddings(e, self._rows(self._e1, n))
        elif getattr(self.metric, "has_embedding", False):
            # Naive: all three images through the network on every call.
            e = self.metric.embed(ref)
            d0 = self.metric.distance_from_embeddings(e, self.metric.embed(self._rows(self._x0, n)))
            d1 = self.metric.distance_from_embeddings(e, self.metric.embed(self._rows(self._x1, n)))
        else:
            d0 = self.metric(ref, self._rows(self._x0, n))
            d1 = self.metric(ref, self._rows(self._x1, n))
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


__all__ = ["TwoAFCAdapter", "frozen", "margin"]
