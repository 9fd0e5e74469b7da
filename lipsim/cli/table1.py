r"""Table 1: natural and certified scores of the LipSim models, with reference rows.

    python -m lipsim table1 --certify pretrained=R/certify/pretrained.parquet \
        margin0.2=R/certify/margin0.2.parquet --eval dreamsim_ensemble=R/eval/dreamsim_ensemble.parquet \
        --teacher dreamsim_ensemble --eps 36 72 108 --out-prefix R/tables/table1

A teacher sweep names each model's teacher (`--teacher` is then only the default of models
given without one):

    python -m lipsim table1 --certify demo/pretrained=R/certify/pretrained.parquet \
        demo2/pretrained=R/certify/demo2/pretrained.parquet \
        --eval demo=R/eval/demo.parquet demo2=R/eval/demo2.parquet --out-prefix R/tables/table1

Rows are grouped by teacher (its students, then its own natural score from the --eval file
named after it); other --eval metrics come last. Every row is scored by the same two rules:
natural / certified_* by DreamSim's 2AFC formula over every test triplet (sound radius), and
natural_authors / certified_*_authors by --scoring and --half-votes (the authors' radius).
Writes {prefix}.csv, .md, .tex, .parquet, .html (atomically).
"""

from __future__ import annotations

import argparse

from lipsim.cli._args import add_config_options, add_scaled_radius_options, parser
from lipsim.cli._rule import rule_from_args
from lipsim.reporting import parse_assignments, report_errors
from lipsim.reporting.reference import add_reference_options, reference_from_args


def build_parser() -> argparse.ArgumentParser:
    p = parser(__name__, __doc__)
    p.add_argument(
        "--certify",
        nargs="+",
        default=[],
        metavar="[TEACHER/]MODEL=FILE",
        help="certify output per LipSim model (MODEL: pretrained or margin{m}; TEACHER: the "
        "teacher it was distilled from, default --teacher)",
    )
    p.add_argument(
        "--eval",
        nargs="*",
        default=[],
        metavar="METRIC=FILE",
        help="evaluate output per reference metric (natural score only); a metric named "
        "like a teacher of --certify is that teacher's reference row",
    )
    p.add_argument(
        "--teacher", default=None, help="teacher of the --certify models given without TEACHER/"
    )
    add_config_options(p, "table1")  # --eps (in /255 units), --scoring
    add_scaled_radius_options(p)  # --image-size / --eps-reference-size: radii scaled
    add_reference_options(p)
    p.add_argument("--out-prefix", required=True, help="e.g. R/tables/table1")
    return p


def _run(args) -> None:
    from lipsim.reporting import table1
    from lipsim.reporting.certified import certify_radii
    from lipsim.reporting.tables import write_table

    table = table1.table1(
        parse_assignments(args.certify, "--certify"),
        parse_assignments(args.eval, "--eval"),
        args.teacher,
        args.eps,
        reference_from_args(args),
        rule_from_args(args),
        [r for r, _ in certify_radii(args.eps, args.image_size, args.eps_reference_size)],
    )
    write_table(
        args.out_prefix,
        table,
        table1.table1_markdown(table, args.decimals),
        table1.table1_latex(table, args.decimals),
    )


def main(argv: list[str] | None = None) -> int:
    return report_errors("table1", _run, build_parser().parse_args(argv))
