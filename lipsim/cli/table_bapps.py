r"""BAPPS table: natural 2AFC per category and overall, certified scores of the LipSim models.

    python -m lipsim table-bapps --inputs lipsim-margin0.5=R/bapps/lipsim-margin0.5.parquet \
        l2=R/bapps/l2.parquet --eps 36 72 108 --out-prefix R/tables/bapps

Inputs are `lipsim evaluate-bapps` outputs. natural / certified_* follow LPIPS's evaluation
(the 2AFC formula over every triplet, the sound radius), natural_authors / certified_*_authors
--scoring and --half-votes (the authors' radius), the same for every row. Writes
{prefix}.csv, .md, .tex, .parquet, .html.
"""

from __future__ import annotations

import argparse

from lipsim.cli._args import add_config_options, parser
from lipsim.cli._rule import rule_from_args
from lipsim.reporting import parse_assignments, report_errors


def build_parser() -> argparse.ArgumentParser:
    p = parser(__name__, __doc__)
    p.add_argument(
        "--inputs",
        nargs="+",
        required=True,
        metavar="METRIC=FILE",
        help="evaluate-bapps output per metric",
    )
    add_config_options(p, "table-bapps")  # --eps: certified radii in /255 units
    p.add_argument("--decimals", type=int, default=1, help="decimals in md/tex (default 1)")
    p.add_argument("--out-prefix", required=True, help="e.g. R/tables/bapps")
    return p


def _run(args) -> None:
    from lipsim.reporting import bapps, tables

    inputs = parse_assignments(args.inputs, "--inputs")
    table = bapps.bapps_table(inputs, args.eps, rule_from_args(args))
    tables.write_table(
        args.out_prefix,
        table,
        bapps.bapps_markdown(table, args.decimals),
        bapps.bapps_latex(table, args.decimals),
    )


def main(argv: list[str] | None = None) -> int:
    return report_errors("table-bapps", _run, build_parser().parse_args(argv))
