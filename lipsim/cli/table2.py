r"""Table 2: 2AFC scores under attack.

Long form (csv/parquet) and the paper's wide layout (md/tex).

    python -m lipsim table2 --attacks R/attacks/lipsim-margin0.5/autoattack-l2-1.0.parquet ... \
        --teacher dreamsim_ensemble --out-prefix R/tables/table2

The metric, attack, norm and eps of each file are read from its path,
`.../attacks/{metric}/{attack}-{norm}-{eps}.parquet` (norm: l2 or linf; eps a decimal in image
units), so the file list can be the attack rule's outputs unchanged.

The Natural column is the unattacked score of the triplets the attacks ran on (every file of
a model must hold the same ones), which the table's note says. With --eps-reference-size, l2
radii are labelled with the radius they stand for at that size too (lipsim.radius).
"""

from __future__ import annotations

import argparse

from lipsim.cli._args import add_scaled_radius_options, parser
from lipsim.reporting import report_errors
from lipsim.reporting.reference import add_reference_options, reference_from_args


def build_parser() -> argparse.ArgumentParser:
    p = parser(__name__, __doc__)
    p.add_argument(
        "--attacks",
        nargs="+",
        required=True,
        metavar="FILE",
        help="attack outputs R/attacks/{metric}/{attack}-{norm}-{eps}.parquet",
    )
    p.add_argument(
        "--teacher",
        default=None,
        help="teacher of the LipSim models: reference LipSim rows are compared only when "
        "their teacher is this one (default: none; LipSim rows get no paper values)",
    )
    add_scaled_radius_options(p)
    add_reference_options(p)
    p.add_argument("--out-prefix", required=True, help="e.g. R/tables/table2")
    return p


def _run(args) -> None:
    from lipsim.reporting import tables

    ref = reference_from_args(args)
    size, ref_size = args.image_size, args.eps_reference_size
    table = tables.table2(args.attacks, ref, args.teacher, size, ref_size)
    clean = tables.clean_by_model(args.attacks)
    tables.write_table(
        args.out_prefix,
        table,
        tables.table2_markdown(table, clean, args.decimals, size, ref_size),
        tables.table2_latex(table, clean, args.decimals, size, ref_size),
    )


def main(argv: list[str] | None = None) -> int:
    return report_errors("table2", _run, build_parser().parse_args(argv))
