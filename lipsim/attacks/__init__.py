"""Attacks on the reference image of 2AFC triplets (and on single images for figure 3b and
retrieval): the 2-class adapter, pyautoattack's AutoAttack, and PGD. See each module.

Each attack module registers its attack into lipsim.registry; importing it here (one line per
module) is what makes it known to lipsim.attacks.run.
"""

from lipsim.attacks.adapter import TwoAFCAdapter, frozen, margin
from lipsim.attacks.autoattack import BUDGETS, AutoAttackConfig
from lipsim.attacks.norms import lp_norm, project
from lipsim.attacks.pgd import pgd_2afc, pgd_maximize, row_seed
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
