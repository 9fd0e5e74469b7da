r"""Retrieval table: recall@k per metric and attack size.

    python -m lipsim table-retrieval --inputs R/retrieval/lipsim-margin0.5.parquet ... \
        --out-prefix R/tables/retrieval

Inputs have columns metric, eps, k, recall; writes {prefix}.csv, .md, .tex, .parquet, .html.
With --image-size and --eps-reference-size the radii are labelled with the radius they stand
for at the reference size too (lipsim.radius).
"""

from __future__ import annotations

import argparse

from lipsim.cli._args import add_scaled_radius_options, parser
from lipsim.reporting import report_errors


def build_parser() -> argparse.ArgumentParser:
    p = parser(__name__, __doc__)
    p.add_argument(
        "--inputs",
        nargs="+",
        required=True,
        metavar="FILE",
        help="retrieval outputs (columns metric, eps, k, recall)",
    )
    add_scaled_radius_options(p)
    p.add_argument("--out-prefix", required=True, help="e.g. R/tables/retrieval")
    return p


def _run(args) -> None:
    from lipsim.reporting import tables

    table = tables.retrieval_table(args.inputs)
    size, ref_size = args.image_size, args.eps_reference_size
    tables.write_table(
        args.out_prefix,
        table,
        tables.retrieval_markdown(table, size, ref_size),
        tables.retrieval_latex(table, size, ref_size),
    )


def main(argv: list[str] | None = None) -> int:
    return report_errors("table-retrieval", _run, build_parser().parse_args(argv))
