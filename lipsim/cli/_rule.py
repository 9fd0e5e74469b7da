"""--scoring / --half-votes: the scoring rule (lipsim.scoring.Rule) of the steps that score
NIGHT or BAPPS triplets (certify, evaluate, evaluate-bapps) and of the tables built from
them, read from the same config keys (certify.scoring, certify.half_votes) in the workflow."""

from __future__ import annotations

import argparse


def add_rule_options(p: argparse.ArgumentParser, what: str) -> None:
    """The two options; `what` says which scores follow the rule (for the help text)."""
    from lipsim.configcheck import schema_default
    from lipsim.scoring import HALF_VOTES, SCORING

    p.add_argument(
        "--scoring",
        choices=SCORING,
        default=schema_default("certify.scoring"),
        help=f"{what}: the 2AFC score (DreamSim's formula) or hard-label accuracy on round(p) "
        "(the authors' evaluation)",
    )
    p.add_argument(
        "--half-votes",
        choices=HALF_VOTES,
        default=schema_default("certify.half_votes"),
        help=f"{what}: keep the p = 0.5 triplets (score 0.5) or drop them (the authors')",
    )


def rule_from_args(args: argparse.Namespace):
    from lipsim.scoring import Rule

    return Rule(args.scoring, args.half_votes)
