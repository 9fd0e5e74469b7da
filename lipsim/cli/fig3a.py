r"""Figure 3a: natural vs attacked 2AFC score per metric (grouped bars).

    python -m lipsim fig3a --eval l2=R/eval/l2.parquet dreamsim_ensemble=R/eval/dreamsim_ensemble.parquet \
        --attacks dreamsim_ensemble=R/attacks/dreamsim_ensemble/autoattack-l2-2.0.parquet \
        lipsim-margin0.5=R/attacks/lipsim-margin0.5/autoattack-l2-2.0.parquet \
        --out-prefix R/figures/fig3a

A metric given only in --attacks takes its natural bar from the attack file's score_clean.
The attacked bars' legend label is read from the attack file names when they all share
attack/norm/eps (e.g. "l2-AutoAttack eps=2"); --norm/--eps override those settings and
--attack-label replaces the whole label. With --image-size and --eps-reference-size an l2
radius reads "ε=0.286 (paper 2)" and the title says how it was scaled.
Writes {prefix}.pdf and {prefix}.png.
"""

from __future__ import annotations

import argparse

from lipsim.cli._args import add_scaled_radius_options, parser
from lipsim.reporting import parse_assignments, report_errors


def build_parser() -> argparse.ArgumentParser:
    p = parser(__name__, __doc__)
    p.add_argument(
        "--eval",
        nargs="*",
        default=[],
        metavar="METRIC=FILE",
        help="evaluate outputs (natural score)",
    )
    p.add_argument(
        "--attacks",
        nargs="*",
        default=[],
        metavar="METRIC=FILE",
        help="attack outputs (attacked score), one attack setting for all metrics",
    )
    p.add_argument("--attack-label", default=None, help="legend label of the attacked bars")
    p.add_argument(
        "--norm",
        default=None,
        type=str.lower,
        choices=["l2", "linf"],
        help="norm of the attack, for the label (default: from the attack files)",
    )
    p.add_argument(
        "--eps",
        type=float,
        default=None,
        help="attack radius for the label, in image units as configured (an l2 radius is "
        "scaled by --image-size / --eps-reference-size when both are given; default: from "
        "the attack files)",
    )
    add_scaled_radius_options(p)
    p.add_argument("--out-prefix", required=True, help="e.g. R/figures/fig3a")
    return p


def _run(args) -> None:
    from lipsim.reporting.figures import fig3a

    fig3a(
        parse_assignments(args.eval, "--eval"),
        parse_assignments(args.attacks, "--attacks"),
        args.out_prefix,
        args.attack_label,
        args.norm,
        args.eps,
        args.image_size,
        args.eps_reference_size,
    )


def main(argv: list[str] | None = None) -> int:
    return report_errors("fig3a", _run, build_parser().parse_args(argv))
