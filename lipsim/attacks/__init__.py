"""Attacks on the reference image of 2AFC triplets (and on single images for figure 3b and
retrieval): the 2-class adapter, pyautoattack's AutoAttack, and PGD. See each module."""

from lipsim.attacks.adapter import TwoAFCAdapter, frozen, margin
from lipsim.attacks.autoattack import BUDGETS, AutoAttackConfig
from lipsim.attacks.pgd import lp_norm, pgd_2afc, pgd_maximize, project, row_seed
from lipsim.attacks.run import COLUMNS, AttackSpec, attack_batch, attack_triplets

__all__ = [
    "BUDGETS",
    "COLUMNS",
    "AttackSpec",
    "AutoAttackConfig",
    "TwoAFCAdapter",
    "attack_batch",
    "attack_triplets",
    "frozen",
    "lp_norm",
    "margin",
    "pgd_2afc",
    "pgd_maximize",
    "project",
    "row_seed",
]
