r"""Table 2: 2AFC scores under attack, long form (csv/parquet) and the paper's wide layout (md/tex).

    python -m lipsim table2 --attacks R/attacks/lipsim-margin0.5/autoattack-l2-1.0.parquet ... \
        --teacher dreamsim_ensemble --out-prefix R/tables/table2

The metric, attack, norm and eps of each file are read from its path,
`.../attacks/{metric}/{attack}-{norm}-{eps}.parquet` (norm: l2 or linf; eps a decimal in image
units), so the file list can be the attack rule's outputs unchanged.
"""

from __future__ import annotations

import argparse

from lipsim.reporting import report_errors


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lipsim table2",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    p.add_argument(
        "--reference",
        default=None,
        help="reference values CSV (default: the packaged lipsim/reference_values.csv)",
    )
    p.add_argument("--no-reference", action="store_true", help="leave the paper columns empty")
    p.add_argument("--decimals", type=int, default=1, help="decimals in md/tex (default 1)")
    p.add_argument("--out-prefix", required=True, help="e.g. R/tables/table2")
    return p


def _run(args) -> None:
    from lipsim.reporting import tables
    from lipsim.reporting.reference import load_reference

    ref = None if args.no_reference else load_reference(args.reference)
    table = tables.table2(args.attacks, ref, args.teacher)
    clean = tables.clean_by_model(args.attacks)
    tables.write_table(
        args.out_prefix,
        table,
        tables.table2_markdown(table, clean, args.decimals),
        tables.table2_latex(table, clean, args.decimals),
    )


def main(argv: list[str] | None = None) -> int:
    return report_errors("table2", _run, build_parser().parse_args(argv))
