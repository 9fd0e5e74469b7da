"""Progress bars for long steps (train, attack, certify) that cost the same at any step rate.

`progress_bar(total, desc, unit)` is a tqdm bar showing done/total, rate and ETA that redraws
at most every TTY_INTERVAL_S seconds on a terminal and every LOG_INTERVAL_S seconds in a log
file, however many updates it gets. Callers change the postfix with
`set_postfix(..., refresh=False)` / `set_postfix_str(..., refresh=False)`: a refreshing
postfix redraws on every call and defeats the interval.

In a log file (snakemake's `log:`, SLURM output) tqdm's carriage-return redraws would pile
up on one line that grows by every redraw; there each redraw is written as its own line.
"""

from __future__ import annotations

import sys
from typing import TextIO

TTY_INTERVAL_S = 2.0
LOG_INTERVAL_S = 30.0


class _Lines:
    """A log file as tqdm's output: every redraw becomes one complete line."""

    def __init__(self, fh: TextIO) -> None:
        self.fh = fh

    def write(self, s: str) -> None:
        line = s.replace("\r", "").rstrip()
        if line:
            self.fh.write(line + "\n")

    def flush(self) -> None:
        self.fh.flush()


def progress_bar(
    total: int | None,
    desc: str,
    unit: str,
    *,
    file: TextIO | None = None,
    enabled: bool = True,
    initial: int = 0,
    interval_s: float | None = None,
    unit_scale: bool = False,
):
    """A tqdm bar (a no-op one when not enabled) on `file` (default: stderr at call time).
    `unit_scale`: show 1.20G/58.0G (binary prefixes) rather than a raw count (bytes)."""
    from tqdm import tqdm

    file = sys.stderr if file is None else file
    tty = bool(getattr(file, "isatty", lambda: False)())
    interval = interval_s if interval_s is not None else TTY_INTERVAL_S if tty else LOG_INTERVAL_S
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not enabled,
        file=file if tty else _Lines(file),
        mininterval=interval,
        maxinterval=max(interval, 10.0),
        dynamic_ncols=tty,
        ascii=not tty,
        unit_scale=unit_scale,
        unit_divisor=1024 if unit_scale else 1000,
    )


__all__ = ["LOG_INTERVAL_S", "TTY_INTERVAL_S", "progress_bar"]
