"""Projected gradient ascent in an l2 or linf ball, row-independent and seeded per row.

`pgd_maximize(loss_fn, x, ...)` maximises a per-row objective loss_fn(x_adv) -> (B,) over
{x + delta : ||delta|| <= eps, x + delta in [0, 1]} and returns, per row, the best point seen
(highest objective over all steps and restarts). It is used three ways:

- 2AFC attack (`pgd_2afc`): objective = margin of the adapter's logits (> 0 = flipped),
  equivalent to cross-entropy PGD for two classes (lipsim.attacks.adapter.margin);
- figure 3b and retrieval: objective = d(x, x + delta) (embedding change).

Why rows are independent: every random draw (random starts) comes from a generator seeded
by that row's own seed, never from a batch-wide RNG, and the objective is per row, so a
row's result does not depend on which other rows share its batch (up to floating-point
differences of batched kernels). Seeds are derived from the run seed and a row key (a NIGHT
id, an image path) with `row_seed`.

Steps: l2 -- x + step * g / ||g||_2; linf -- x + step * sign(g); then projection onto the
eps-ball (radial scaling for l2, clamping for linf) and clipping to [0, 1]. Clipping after
the projection never leaves the ball: it only shrinks |delta_i| coordinate-wise.
Random start: a point drawn in the ball (l2: a random direction times eps * U(0, 1);
linf: U(-eps, eps) per pixel), clipped. `random_start="after_first"` starts restart 0 at
the clean point (the natural start when the gradient there is informative, as for the 2AFC
margin), "always" draws every start (needed when x is a stationary point of the objective,
as for d(x, x + delta), whose gradient vanishes at delta = 0).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import torch

from lipsim.attacks.adapter import TwoAFCAdapter, margin
from lipsim.attacks.norms import check_norm, project
from lipsim.registry import register


def row_seed(seed: int, key) -> int:
    """A 31-bit seed for one row from the run seed and a stable key (id, path)."""
    return zlib.crc32(f"{int(seed)}/{key}".encode()) & 0x7FFFFFFF


def _random_start(
    x: torch.Tensor, norm: str, eps: float, seeds: Sequence[int], restart: int
) -> torch.Tensor:
    noise = []
    for s in seeds:
        # Generators live on the CPU so a row draws the same noise on every device.
        g = torch.Generator().manual_seed(int(s) * 1009 + restart)
        shape = (1, *x.shape[1:])
        if norm == "L2":
            d = torch.randn(shape, generator=g, dtype=torch.float64)
            d = d / torch.linalg.vector_norm(d).clamp_min(1e-12)
            d = d * eps * torch.rand((), generator=g, dtype=torch.float64)
        else:
            d = (2.0 * torch.rand(shape, generator=g, dtype=torch.float64) - 1.0) * eps
        noise.append(d)
    delta = torch.cat(noise).to(device=x.device, dtype=x.dtype)
    return project(x, x + delta, norm, eps)


def _step(x_adv: torch.Tensor, grad: torch.Tensor, norm: str, step_size: float) -> torch.Tensor:
    if norm == "L2":
        g = grad.reshape(grad.shape[0], -1)
        g = g / torch.linalg.vector_norm(g, dim=1, keepdim=True).clamp_min(1e-12)
        return x_adv + step_size * g.reshape(grad.shape)
    return x_adv + step_size * grad.sign()


def pgd_maximize(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    norm: str,
    eps: float,
    steps: int,
    step_size: float | None = None,
    restarts: int = 1,
    seeds: Sequence[int],
    random_start: str = "after_first",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_best, loss_best): per row, the highest-objective point found in the ball.

    loss_fn maps (B, 3, H, W) -> (B,) and must treat rows independently. The clean point
    and every iterate are candidates, so the result is never worse than doing nothing.
    step_size defaults to 2.5 * eps / steps (Madry et al.).
    """
    check_norm(norm)
    if random_start not in ("after_first", "always"):
        raise ValueError(f"random_start must be 'after_first' or 'always', got {random_start!r}")
    if len(seeds) != x.shape[0]:
        raise ValueError(f"one seed per row: got {len(seeds)} seeds for {x.shape[0]} rows")
    if eps < 0 or steps < 0 or restarts < 1:
        raise ValueError(
            f"need eps >= 0, steps >= 0, restarts >= 1 (got {eps}, {steps}, {restarts})"
        )
    x = x.detach()
    if step_size is None:
        step_size = 2.5 * eps / max(steps, 1)

    def evaluate(z: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return loss_fn(z).detach().reshape(-1)

    best_x, best_loss = x.clone(), evaluate(x)
    if eps == 0:
        return best_x, best_loss
    for restart in range(restarts):
        if restart == 0 and random_start == "after_first":
            x_adv = x.clone()
        else:
            x_adv = _random_start(x, norm, eps, seeds, restart)
        for _ in range(steps):
            x_adv = x_adv.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = loss_fn(x_adv).reshape(-1)
                (grad,) = torch.autograd.grad(loss.sum(), [x_adv])
            with torch.no_grad():
                better = loss.detach() > best_loss  # loss of the point before this step
                best_x[better], best_loss[better] = x_adv.detach()[better], loss.detach()[better]
                x_adv = project(x, _step(x_adv.detach(), grad, norm, step_size), norm, eps)
        final = evaluate(x_adv)
        better = final > best_loss
        best_x[better], best_loss[better] = x_adv.detach()[better], final[better]
    return best_x, best_loss


def pgd_2afc(
    adapter,
    ref: torch.Tensor,
    label: torch.Tensor,
    *,
    norm: str,
    eps: float,
    steps: int,
    step_size: float | None = None,
    restarts: int = 1,
    seeds: Sequence[int],
) -> torch.Tensor:
    """PGD on the reference of each triplet held by `adapter` (row i <-> pair i).

    Maximises the margin logit(other) - logit(label); returns the attacked references.
    """
    label = label.to(ref.device).long()
    x_adv, _ = pgd_maximize(
        lambda z: margin(adapter(z), label),
        ref,
        norm=norm,
        eps=eps,
        steps=steps,
        step_size=step_size,
        restarts=restarts,
        seeds=seeds,
        random_start="after_first",
    )
    return x_adv


@register("attack", "pgd")
class PGD:
    """The `pgd` attack of lipsim.attacks.run: PGD on the 2AFC margin (`pgd_2afc`), each row
    seeded from the run seed and its own key, so rows are attacked independently."""

    @staticmethod
    def check(spec) -> None:
        if spec.steps < 0 or spec.restarts < 1:
            raise ValueError(
                f"pgd: need steps >= 0 and restarts >= 1, got {spec.steps}, {spec.restarts}"
            )

    @staticmethod
    def run(adapter, rows, ref, label, keys, spec, state):
        seeds = [row_seed(spec.seed, keys[i]) for i in rows]
        sub = TwoAFCAdapter(adapter.metric)
        sub.set_pairs(**adapter.pairs(rows))
        x_adv = pgd_2afc(
            sub,
            ref[rows],
            label[rows],
            norm=spec.norm,
            eps=spec.eps,
            steps=spec.steps,
            step_size=spec.step_size,
            restarts=spec.restarts,
            seeds=seeds,
        )
        return x_adv, seeds, [0] * len(rows)  # one attack call for the batch

    @staticmethod
    def passes(spec, robust_share: float = 1.0) -> tuple[float, float]:
        """(forward + backward, forward-only) adapter passes per attacked triplet."""
        return float(spec.steps * spec.restarts), 0.0


__all__ = ["PGD", "pgd_2afc", "pgd_maximize", "row_seed"]
