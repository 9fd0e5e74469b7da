"""Learning rates per optimisation step: the schedules (multipliers of the base lr), the
schedule's length, and which schedule value a step trains with. Pure functions.

Schedules, by name (f(step, total, warmup) -> multiplier):
constant         linear warm-up (step + 1) / warmup, then 1
cosine           linear warm-up (step + 1) / warmup, then cosine decay from 1 to 0 at `total`
triangular       linear rise to 1 at `warmup_steps` (half the run when 0), then linear fall to 0
                 (the one-cycle triangle of the public LipSim code's options)
interp           the authors' finetuning schedule (their `interp` option): piecewise linear
                 through (0, 0), (2T//5, 1), (4T//5, 1/20), (T, 0), T = `total`, integer
                 division for the knots, no warm-up (`warmup_steps` is not used)
cosine_restarts  the authors' distillation schedule (their cosine annealing with warm restarts,
                 minimum lr 0, cycle multiplier 1): within a cycle of `total` steps, warm-up
                 p / warmup from 0, then cosine from 1 to 0; at p = total the cycle starts over
                 (p = step mod total)

Length (schedule_steps): `total` is the run's number of steps, or, given a number of items,
epochs x items // global batch -- how the authors size both schedules (their hard-coded
1,281,167 ImageNet images and 15,941 NIGHT triplets), which is not the number of steps their
loaders run when partial batches are kept.

Timing (step_lr, LR_TIMINGS):
this_step      step s trains with f(s)
previous_step  step s trains with f(s - 1), and step 0 with the lr the optimizer starts with:
               the lr stored in a reloaded optimizer state, else f(0). This is the authors'
               timing: their loops set the lr after optimizer.step() from the index of the step
               just taken, so their distillation trains steps 0 and 1 at lr 0 and step s at
               (s - 1) / warmup, and their finetuning's first step uses the lr its reloaded
               optimizer state carries (the lr the distillation's last call left behind).
After the run, the optimizer holds step_lr(total_steps): the lr a next step would use, which
is what either timing leaves in a saved optimizer state (docs/authors-code.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from lipsim.errors import LipSimError

LR_TIMINGS = ("this_step", "previous_step")


def _warm(step: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0


def _constant(step: int, total: int, warmup: int) -> float:
    return _warm(step, warmup)


def _cosine(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return _warm(step, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _triangular(step: int, total: int, warmup: int) -> float:
    peak = warmup if warmup > 0 else max(1, total // 2)
    if step < peak:
        return (step + 1) / peak
    return max(0.0, (total - step) / max(1, total - peak))


def _interp(step: int, total: int, warmup: int) -> float:
    knots = (0, total * 2 // 5, total * 4 // 5, total)
    return float(np.interp(step, knots, (0.0, 1.0, 1.0 / 20.0, 0.0)))


def _cosine_restarts(step: int, total: int, warmup: int) -> float:
    p = step % total
    if p < warmup:
        return p / warmup
    return 0.5 * (1.0 + math.cos(math.pi * (p - warmup) / (total - warmup)))


SCHEDULES: dict[str, Callable[[int, int, int], float]] = {
    "constant": _constant,
    "cosine": _cosine,
    "triangular": _triangular,
    "interp": _interp,
    "cosine_restarts": _cosine_restarts,
}


def schedule_steps(run_steps: int, epochs: int, items: int, global_batch: int) -> int:
    """The schedule's length T: the run's steps (items = 0), else epochs x items // batch."""
    return epochs * items // global_batch if items else run_steps


def check_schedule(name: str, total: int, warmup: int) -> None:
    """A LipSimError naming the options when `name` cannot run over `total` steps."""
    if name not in SCHEDULES:
        raise LipSimError(f"--schedule {name!r} unknown; choose one of {', '.join(SCHEDULES)}")
    if total < 1:
        raise LipSimError(
            f"--schedule {name}: the schedule spans {total} steps (--schedule-items too small "
            "for the global batch?)"
        )
    if name == "cosine_restarts" and warmup >= total:
        raise LipSimError(
            f"--schedule cosine_restarts: --warmup-steps {warmup} must be below the schedule's "
            f"{total} steps"
        )


def step_lr(
    step: int,
    *,
    lr: float,
    schedule: str,
    total: int,
    warmup: int,
    timing: str,
    first_lr: float | None = None,
) -> float:
    """The lr optimisation step `step` (0-based) trains with (see the module docstring)."""
    f = SCHEDULES[schedule]
    if timing == "this_step":
        return lr * f(step, total, warmup)
    if timing != "previous_step":
        raise LipSimError(f"--lr-timing must be one of {', '.join(LR_TIMINGS)}, got {timing!r}")
    if step == 0:
        return lr * f(0, total, warmup) if first_lr is None else float(first_lr)
    return lr * f(step - 1, total, warmup)
