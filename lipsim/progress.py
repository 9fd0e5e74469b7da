"""Progress of long steps: done/total, rate and ETA, redrawn at most every few seconds.

A thin wrapper over tqdm whose redraw interval does not depend on the step rate (a bar on a
log file at paper scale must not grow by a line per step), and that can be switched off with
one flag (`--no-progress` on every long step).
"""

from __future__ import annotations

import sys

MIN_INTERVAL_S = 5.0


class Progress:
    """with Progress(total, "certify", unit="triplet") as bar: bar.update(n)"""

    def __init__(
        self,
        total: int,
        desc: str,
        *,
        unit: str = "it",
        enabled: bool = True,
        initial: int = 0,
        file=None,
    ) -> None:
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                desc=desc,
                unit=unit,
                mininterval=MIN_INTERVAL_S,
                maxinterval=max(MIN_INTERVAL_S, 60.0),
                file=file or sys.stderr,
                dynamic_ncols=False,
                ascii=True,
            )

    def update(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
