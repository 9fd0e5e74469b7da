"""Finetuning objectives at equal margins: table and figure (config study.objectives).

    python -m lipsim study \\
        --certify hinge-cosine/margin0.5-hinge-cosine=R/certify/margin0.5-hinge-cosine.parquet \\
        hinge_sound-cosine/margin0.5-hinge_sound-cosine=R/certify/... \\
        --attacks hinge-cosine/margin0.5-hinge-cosine=R/attacks/.../autoattack-L2-2.parquet ... \\
        --eps 36 72 108 --image-size 32 --eps-reference-size 224 \\
        --table-prefix R/tables/study --figure-prefix R/figures/study

Keys are OBJECTIVE/MODEL, OBJECTIVE = LOSS-METRIC; each model is scored under its objective's
metric: natural, certified with the sound radius at --eps (/255, applied at --image-size like
the attack radii when --eps-reference-size is given), and the --attacks file's attacked score
(lipsim.reporting.study). Writes {table prefix}.csv, .md, .tex, .parquet, .html and {figure
prefix}.pdf, .png, atomically.
"""

from __future__ import annotations

import argparse

from lipsim.cli._args import parser
from lipsim.reporting import parse_assignments, report_errors


def build_parser() -> argparse.ArgumentParser:
    p = parser(__name__, __doc__)
    p.add_argument(
        "--certify", nargs="+", required=True, metavar="OBJECTIVE/MODEL=FILE", help="certify"
    )
    p.add_argument(
        "--attacks", nargs="*", default=[], metavar="OBJECTIVE/MODEL=FILE", help="attack files"
    )
    p.add_argument("--eps", nargs="+", type=float, required=True, help="radii in /255 units")
    p.add_argument("--scoring", choices=("twoafc", "accuracy"), default="twoafc", help="score")
    p.add_argument("--image-size", type=int, default=None, help="image size certified (px)")
    p.add_argument("--eps-reference-size", type=int, default=None, help="size --eps are for")
    p.add_argument("--table-prefix", required=True, help="e.g. R/tables/study")
    p.add_argument("--figure-prefix", required=True, help="e.g. R/figures/study")
    return p


def _run(args) -> None:
    from lipsim.reporting import study
    from lipsim.reporting.certified import certify_radii
    from lipsim.reporting.tables import write_table

    radii = certify_radii(args.eps, args.image_size, args.eps_reference_size)
    table = study.study_table(
        parse_assignments(args.certify, "--certify"),
        parse_assignments(args.attacks, "--attacks"),
        radii,
        args.scoring,
        args.image_size,
        args.eps_reference_size,
    )
    write_table(
        args.table_prefix,
        table,
        study.study_markdown(table, radii),
        study.study_latex(table, radii),
    )
    study.fig_study(table, args.figure_prefix, radii)


def main(argv: list[str] | None = None) -> int:
    return report_errors("study", _run, build_parser().parse_args(argv))
