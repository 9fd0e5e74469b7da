"""Learning-rate schedules (multipliers of the base lr, per optimisation step), by name.

constant    linear warmup over `warmup_steps`, then 1
cosine      linear warmup, then cosine decay from 1 to 0 at `total_steps`
triangular  linear rise to 1 at `warmup_steps` (half the run when 0), then linear fall to 0
            (the one-cycle triangle of the public LipSim code's options)
interp      the public LipSim code's default finetuning schedule (its `interp` option):
            piecewise linear through (0, 0), (2T//5, 1), (4T//5, 1/20), (T, 0) over the
            T = total_steps of the run, integer division for the knots, no warmup
            (`warmup_steps` is not used). Step s trains with the value at s, so the first
            step has lr 0. (Their code sets the lr after step s from np.interp at s, so their
            step s + 1 uses our step s's value, and their first step the lr reloaded with the
            optimizer: a one-step shift not copied here.)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch


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


SCHEDULES: dict[str, Callable[[int, int, int], float]] = {
    "constant": _constant,
    "cosine": _cosine,
    "triangular": _triangular,
    "interp": _interp,
}


def build_scheduler(
    optimizer: torch.optim.Optimizer, name: str, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    try:
        fn = SCHEDULES[name]
    except KeyError:
        raise ValueError(
            f"--schedule {name!r} unknown; choose one of {', '.join(SCHEDULES)}"
        ) from None
    total, warm = int(total_steps), int(warmup_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: fn(s, total, warm))
