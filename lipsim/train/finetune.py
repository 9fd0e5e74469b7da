"""Finetuning (LipSim step 2): hinge loss on NIGHT train with the projected LipSim distance.

phi(x) = P(f(x)) (projection onto the unit ball), d(a, b) = ||phi(a) - phi(b)||^2 / 2
(lipsim.models.ball_distance, the metric's own distance).
For a triplet (ref, x0, x1, p), p = share of votes for x1:
    logit = d(ref, x0) - d(ref, x1)     (> 0 when the model finds x1 closer)
    y     = 2 * round(p) - 1            (+1 when the majority chose x1; torch.round sends
                                         p = 0.5 to 0, so ties count as x0, as in DreamSim)
    loss  = mean over the batch of max(0, margin - y * logit)
(DreamSim's hinge loss; the public LipSim README's finetune command trained with RMSE
instead, a pitfall noted in the method notes.)
"""

from __future__ import annotations

import torch
from torch import nn

from lipsim.models import ball_distance, project_to_ball


def lipsim_distances(model: nn.Module, ref, x0, x1):
    """(d0, d1) with one forward pass over the three images."""
    b = ref.shape[0]
    phi = project_to_ball(model(torch.cat([ref, x0, x1])).float())
    e_ref, e0, e1 = phi[:b], phi[b:2 * b], phi[2 * b:]
    return ball_distance(e_ref, e0), ball_distance(e_ref, e1)


def hinge_loss(d0: torch.Tensor, d1: torch.Tensor, p: torch.Tensor, margin: float) -> torch.Tensor:
    y = 2.0 * torch.round(p.float()) - 1.0
    return torch.clamp(margin - y * (d0 - d1), min=0.0).mean()


class FinetuneTask:
    def __init__(self, dataset, margin: float):
        self.dataset, self.margin = dataset, float(margin)

    def loss(self, model: nn.Module, batch, device: torch.device):
        ref, x0, x1, p, _ = batch
        d0, d1 = lipsim_distances(model, ref.to(device, non_blocking=True),
                                  x0.to(device, non_blocking=True),
                                  x1.to(device, non_blocking=True))
        return hinge_loss(d0, d1, p.to(device), self.margin), 3 * ref.shape[0]
