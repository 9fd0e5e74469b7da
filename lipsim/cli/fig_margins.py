"""Margin trade-off figure: natural and certified 2AFC against the margin.

    python -m lipsim fig-margins --table1 R/tables/table1.parquet --out-prefix R/figures/margins

Finetuned models are drawn as lines over their margin; the pretrained model (no hinge loss, so
not "margin 0") as open squares at the left, ticked "pretrained"; reference rows (teachers) as a
dotted line at their natural score. Writes {prefix}.pdf and {prefix}.png.
"""

from __future__ import annotations

import argparse

from lipsim.cli._args import parser
from lipsim.reporting import report_errors


def build_parser() -> argparse.ArgumentParser:
    p = parser(__name__, __doc__)
    p.add_argument("--table1", required=True, help="table1.parquet (or .csv) from `lipsim table1`")
    p.add_argument(
        "--metric",
        default=None,
        choices=("cosine", "ball"),
        help="LipSim metric whose rows are drawn (default: all rows)",
    )
    p.add_argument("--out-prefix", required=True, help="e.g. R/figures/margins")
    return p


def _run(args) -> None:
    from lipsim.reporting import read_table
    from lipsim.reporting.figures import fig_margins

    table = read_table(args.table1, ("model", "stage", "margin", "natural"), "--table1")
    fig_margins(table, args.out_prefix, metric=args.metric)


def main(argv: list[str] | None = None) -> int:
    return report_errors("fig-margins", _run, build_parser().parse_args(argv))
