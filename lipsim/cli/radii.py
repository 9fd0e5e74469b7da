"""Sound vs authors' certified radius: figure (per triplet) and table (per model).

    python -m lipsim radii --certify margin0.5=R/certify/margin0.5.parquet \\
        demo2/margin0.5=R/certify/demo2/margin0.5.parquet --eps 36 72 108 \\
        --image-size 32 --eps-reference-size 224 \\
        --table-prefix R/tables/radii --figure-prefix R/figures/radii

The table has one row per model and metric: quantiles of ||f(ref)|| and of R / m, and the
share of triplets with R < m (lipsim.reporting.radii). The figure draws the finetuned models'
--metric rows, one panel each, with the --eps radii (/255, applied at --image-size like the
attack radii when --eps-reference-size is given) marked. Writes {table prefix}.csv, .md, .tex,
.parquet, .html and {figure prefix}.pdf, .png, atomically.
"""

from __future__ import annotations

import argparse

from lipsim.cli._args import parser
from lipsim.reporting import parse_assignments, report_errors


def build_parser() -> argparse.ArgumentParser:
    p = parser(__name__, __doc__)
    p.add_argument(
        "--certify", nargs="+", required=True, metavar="MODEL=FILE", help="certify outputs"
    )
    p.add_argument("--metric", choices=("cosine", "ball"), default="cosine", help="figure's")
    p.add_argument("--eps", nargs="+", type=float, required=True, help="radii in /255 units")
    p.add_argument("--image-size", type=int, default=None, help="image size certified (px)")
    p.add_argument("--eps-reference-size", type=int, default=None, help="size --eps are for")
    p.add_argument("--table-prefix", required=True, help="e.g. R/tables/radii")
    p.add_argument("--figure-prefix", required=True, help="e.g. R/figures/radii")
    return p


def _run(args) -> None:
    from lipsim.reporting import radii
    from lipsim.reporting.certified import certify_radii
    from lipsim.reporting.tables import write_table

    certify = parse_assignments(args.certify, "--certify")
    table = radii.radii_table(certify)
    write_table(args.table_prefix, table, radii.radii_markdown(table), radii.radii_latex(table))
    eps = certify_radii(args.eps, args.image_size, args.eps_reference_size)
    radii.fig_radii(certify, args.figure_prefix, eps, args.metric)


def main(argv: list[str] | None = None) -> int:
    return report_errors("radii", _run, build_parser().parse_args(argv))
