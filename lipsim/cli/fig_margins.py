"""Margin trade-off figure: natural and certified 2AFC against the margin.

    python -m lipsim fig-margins --certify pretrained=R/certify/pretrained.parquet \\
        margin0.5=R/certify/margin0.5.parquet --eval demo=R/eval/demo.parquet --metric ball \\
        --eps 36 72 108 --image-size 32 --eps-reference-size 224 --out-prefix R/figures/margins

Scores each certify file under --metric (natural, and certified with the sound radius at
--eps /255, applied at --image-size like the attack radii when --eps-reference-size is given,
and labelled with both radii); teacher, stage and margin come from the files. Finetuned models
are drawn as lines over their margin; the pretrained model (no hinge loss, so not "margin 0")
as open markers at the left, ticked "pretrained"; each --eval teacher's natural score as a grey
line. Writes {prefix}.pdf and {prefix}.png.
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
    p.add_argument(
        "--eval", nargs="*", default=[], metavar="TEACHER=FILE", help="teachers' evaluate outputs"
    )
    p.add_argument("--metric", required=True, choices=("cosine", "ball"), help="LipSim metric")
    p.add_argument("--eps", nargs="+", type=float, required=True, help="radii in /255 units")
    p.add_argument("--scoring", choices=("twoafc", "accuracy"), default="twoafc", help="score")
    p.add_argument("--image-size", type=int, default=None, help="image size certified (px)")
    p.add_argument("--eps-reference-size", type=int, default=None, help="size --eps are for")
    p.add_argument("--out-prefix", required=True, help="e.g. R/figures/margins")
    return p


def _run(args) -> None:
    from lipsim.reporting.certified import certify_radii
    from lipsim.reporting.figures import fig_margins, margins_table

    radii = certify_radii(args.eps, args.image_size, args.eps_reference_size)
    table = margins_table(
        parse_assignments(args.certify, "--certify"),
        parse_assignments(args.eval, "--eval"),
        args.metric,
        radii,
        args.scoring,
    )
    fig_margins(table, args.out_prefix, radii=radii)


def main(argv: list[str] | None = None) -> int:
    return report_errors("fig-margins", _run, build_parser().parse_args(argv))
