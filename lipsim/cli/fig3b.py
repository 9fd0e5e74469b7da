r"""Figure 3b: distribution (histogram + KDE) of d(x, x + delta) per metric.

    python -m lipsim fig3b --distances dreamsim_ensemble=R/distances/dreamsim_ensemble.parquet \
        lipsim-margin0.5=R/distances/lipsim-margin0.5.parquet --out-prefix R/figures/fig3b

Inputs have columns image, eps, distance; one panel per eps. Writes {prefix}.pdf and .png.
"""

from __future__ import annotations

import argparse

from lipsim.cli._args import parser
from lipsim.reporting import parse_assignments, report_errors


def build_parser() -> argparse.ArgumentParser:
    p = parser(__name__, __doc__)
    p.add_argument(
        "--distances",
        nargs="+",
        required=True,
        metavar="METRIC=FILE",
        help="distances outputs (columns image, eps, distance)",
    )
    p.add_argument(
        "--norm",
        default="l2",
        choices=["l2", "linf"],
        help="norm of delta, for the panel titles (default l2)",
    )
    p.add_argument("--out-prefix", required=True, help="e.g. R/figures/fig3b")
    return p


def _run(args) -> None:
    from lipsim.reporting.figures import fig3b

    fig3b(parse_assignments(args.distances, "--distances"), args.out_prefix, args.norm)


def main(argv: list[str] | None = None) -> int:
    return report_errors("fig3b", _run, build_parser().parse_args(argv))
