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

`hinge_sound` (config finetune.loss; `hinge` above is the paper's) puts the same hinge on the
sound certified radius instead of the distance gap:
    logit = (d0 - d1) * k,   k = ||f(ref)|| for cosine, 1 for ball   (lipsim.certify.sound_factor)
          = y R ||phi(x1) - phi(x0)||   for a correctly decided triplet,
R the sound radius certify reports, scaled by the chord between the two candidates exactly as
the paper's logit y (d0 - d1) = y m ||phi(x1) - phi(x0)|| scales the authors' radius m. So the
two losses agree wherever ||f(ref)|| = 1 and a margin means the same in both; for ball they are
the same loss (its m is already sound). For cosine the logit is <f(ref), N f(x1) - N f(x0)>,
linear in the raw reference embedding: its gradient in f(ref) is y (e1 - e0), normal to the
decision hyperplane H through the origin, the direction that grows R fastest, where the paper's
cosine hinge only turns f(ref) (its gradient is orthogonal to f(ref): it cannot see the norm).

Why inflating ||f|| cannot win it: f is 1-Lipschitz, so it cannot be scaled up; scaling it
down by a < 1 scales the logit by a. Adding a constant offset c raises every norm without
touching the Lipschitz constant, but the normalised embeddings then crowd around c / ||c||:
the chord shrinks like 1 / ||c|| and d0 - d1 like 1 / ||c||^2, so the logit decays like
1 / ||c|| and the hinge returns to its margin. In general, R is the distance of the reference
embedding to the decision boundary (for cosine H, for ball the bisector of phi(x0), phi(x1)),
and the rejected image's embedding lies beyond it, so R <= ||f(ref) - f(x_rejected)|| <=
||ref - x_rejected||: the logit is at most twice the input distance to the image the humans
rejected, whatever the norms.
"""

from __future__ import annotations

import torch
from torch import nn

from lipsim.certify import distance_gap, sound_factor
from lipsim.models import ball_distance, project

LOSSES = ("hinge", "hinge_sound")
LOSS_REDUCTIONS = ("mean", "sum")


def lipsim_distances(model: nn.Module, ref, x0, x1, metric: str):
    """(d0, d1) under `metric` with one forward pass over the three images."""
    b = ref.shape[0]
    phi = project(model(torch.cat([ref, x0, x1])).float(), metric)
    e_ref, e0, e1 = phi[:b], phi[b : 2 * b], phi[2 * b :]
    return ball_distance(e_ref, e0), ball_distance(e_ref, e1)


def sound_logit(f_ref: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, metric: str):
    """(d0 - d1) x sound_factor from raw embeddings f: |logit| / ||phi(x1) - phi(x0)|| is the
    sound radius R (lipsim.certify.radii); the hinge_sound logit before its sign y."""
    e_ref, e0, e1 = (project(f, metric) for f in (f_ref, f0, f1))
    return distance_gap(e_ref, e0, e1)[0] * sound_factor(f_ref, metric)


def hinge_loss(
    d0: torch.Tensor, d1: torch.Tensor, p: torch.Tensor, margin: float, reduction: str
) -> torch.Tensor:
    """The paper's hinge on the distance gap d0 - d1."""
    return hinge_on(d0 - d1, p, margin, reduction)


def hinge_on(logit: torch.Tensor, p: torch.Tensor, margin: float, reduction: str):
    """max(0, margin - y logit), y = 2 round(p) - 1, reduced over the batch."""
    y = 2.0 * torch.round(p.float()) - 1.0
    per_triplet = torch.clamp(margin - y * logit, min=0.0)
    if reduction == "mean":
        return per_triplet.mean()
    if reduction == "sum":
        return per_triplet.sum()
    raise ValueError(
        f"--loss-reduction must be one of {', '.join(LOSS_REDUCTIONS)}, got {reduction!r}"
    )


class FinetuneTask:
    def __init__(
        self, dataset, margin: float, *, metric: str, loss_reduction: str, loss: str = "hinge"
    ):
        if loss_reduction not in LOSS_REDUCTIONS:
            raise ValueError(
                f"--loss-reduction must be one of {', '.join(LOSS_REDUCTIONS)}, "
                f"got {loss_reduction!r}"
            )
        if loss not in LOSSES:
            raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        self.dataset, self.margin = dataset, float(margin)
        self.metric, self.loss_reduction, self.loss_name = metric, loss_reduction, loss

    def loss(self, model: nn.Module, batch, device: torch.device):
        ref, x0, x1, p, _ = batch
        ref, x0, x1 = (t.to(device, non_blocking=True) for t in (ref, x0, x1))
        if self.loss_name == "hinge":
            d0, d1 = lipsim_distances(model, ref, x0, x1, self.metric)
            logit = d0 - d1
        else:
            f_ref, f0, f1 = model(torch.cat([ref, x0, x1])).float().chunk(3)
            logit = sound_logit(f_ref, f0, f1, self.metric)
        return hinge_on(logit, p.to(device), self.margin, self.loss_reduction), 3 * ref.shape[0]
