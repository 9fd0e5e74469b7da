"""The scoring rule (lipsim.scoring.Rule) of --scoring / --half-votes: the options of the
config keys certify.scoring and certify.half_votes, which the steps that score NIGHT or BAPPS
triplets (certify, evaluate, evaluate-bapps) and the tables built from them take (x-cli)."""

from __future__ import annotations

import argparse


def rule_from_args(args: argparse.Namespace):
    from lipsim.scoring import Rule

    return Rule(args.scoring, args.half_votes)
