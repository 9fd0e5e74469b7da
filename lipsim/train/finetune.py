"""Finetuning (LipSim step 2): hinge loss on NIGHT train with the LipSim distance.

phi(x) = project(f(x), metric) (lipsim.models.project: `cosine` = f/||f||, the authors';
`ball` = the unit-ball projection P(f)), d(a, b) = ||phi(a) - phi(b)||^2 / 2
(lipsim.models.ball_distance; with cosine's unit vectors it is 1 - cos(f(a), f(b))).
For a triplet (ref, x0, x1, p), p = share of votes for x1:
    logit = d(ref, x0) - d(ref, x1)     (> 0 when the model finds x1 closer)
    y     = 2 * round(p) - 1            (+1 when the majority chose x1; torch.round sends
                                         p = 0.5 to 0, so ties count as x0, as in DreamSim)
    loss  = max(0, margin - y * logit), summed (the authors') or averaged over the batch
(DreamSim's hinge loss; the public LipSim README's finetune command trained with RMSE
instead, a pitfall noted in the method notes.)

With DDP the gradients are averaged over ranks: a `sum` loss then trains like the sum over
the global batch divided by the number of processes (the authors finetuned in one process).
"""

from __future__ import annotations

import torch
from torch import nn

from lipsim.models import ball_distance, project

LOSS_REDUCTIONS = ("mean", "sum")


def lipsim_distances(model: nn.Module, ref, x0, x1, metric: str):
    """(d0, d1) under `metric` with one forward pass over the three images."""
    b = ref.shape[0]
    phi = project(model(torch.cat([ref, x0, x1])).float(), metric)
    e_ref, e0, e1 = phi[:b], phi[b : 2 * b], phi[2 * b :]
    return ball_distance(e_ref, e0), ball_distance(e_ref, e1)


def hinge_loss(
    d0: torch.Tensor, d1: torch.Tensor, p: torch.Tensor, margin: float, reduction: str
) -> torch.Tensor:
    y = 2.0 * torch.round(p.float()) - 1.0
    per_triplet = torch.clamp(margin - y * (d0 - d1), min=0.0)
    if reduction == "mean":
        return per_triplet.mean()
    if reduction == "sum":
        return per_triplet.sum()
    raise ValueError(
        f"--loss-reduction must be one of {', '.join(LOSS_REDUCTIONS)}, got {reduction!r}"
    )


class FinetuneTask:
    def __init__(self, dataset, margin: float, *, metric: str, loss_reduction: str):
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(
                f"--loss-reduction must be one of {', '.join(LOSS_REDUCTIONS)}, "
                f"got {loss_reduction!r}"
            )
        self.dataset, self.margin = dataset, float(margin)
        self.metric, self.loss_reduction = metric, loss_reduction

    def loss(self, model: nn.Module, batch, device: torch.device):
        ref, x0, x1, p, _ = batch
        d0, d1 = lipsim_distances(
            model,
            ref.to(device, non_blocking=True),
            x0.to(device, non_blocking=True),
            x1.to(device, non_blocking=True),
            self.metric,
        )
        return (
            hinge_loss(d0, d1, p.to(device), self.margin, self.loss_reduction),
            3 * ref.shape[0],
        )
