"""The registry: one card per named metric and attack, and the builders registered for them.

    METRICS_TABLE["dreamsim_ensemble"].emb_dim        # 1792 (timm's pretrained_cfg, for metrics)
    names("teacher"), names("baseline"), names("attack")
    builder("teacher", "demo")(device="cpu")           # what lipsim.teachers.get_teacher calls

A card holds facts, no code: per metric (`METRICS_TABLE`, name -> MetricCard) its family
(baseline, teacher, lipsim), display name, embedding size, input size, the weights it
downloads (url, file, sha256 or the digest prefix known in advance) and a description, in the
paper's order (Figure 3a: pixel, CNN, single ViTs, the ensemble, then the demo teachers, then
LipSim); per attack (`ATTACKS_TABLE`) its display name and the config keys listing its radii.
Every list of names is read here: the schema's enums (lipsim.configcheck fills them in), CLI
choices and help, the workflow's attack wildcard and grid (workflow/rules/common.smk),
fetch-weights, reporting's labels and order, and the cost model (benchmarks/bench_paper_cost.py).

Builders register themselves, as timm's models do: the module that builds a metric or runs an
attack decorates its builder with `@register(kind, name)`. This module imports none of them
(it imports nothing of the package but its errors); the packages that hold builders import
their modules, one line each (lipsim.teachers, lipsim.attacks; lipsim.baselines is one
module), and lipsim.factory.build_metric imports those packages. Adding a teacher or a
baseline = its card here + its builder; adding an attack = its card here + its module + one
import line in lipsim/attacks/__init__.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from lipsim.errors import LipSimError

FAMILIES = ("baseline", "teacher", "lipsim")  # the kinds of metric
KINDS = (*FAMILIES, "attack")


@dataclasses.dataclass(frozen=True)
class Download:
    """One file a metric's weights come from, fetched into weights_dir/<metric>/."""

    url: str
    kind: str  # "zip": extracted into the metric's folder; "file": saved under `name`
    name: str
    # The file's sha256, or the leading hex digits of it known in advance (torchvision names
    # its checkpoints NAME-<8 hex>.pth); None: not pinned upstream -- fetch-weights records the
    # digest of what it got in its marker json.
    sha256: str | None = None


@dataclasses.dataclass(frozen=True)
class MetricCard:
    """The facts about one named metric (what timm calls a model's pretrained config)."""

    name: str
    family: str  # one of FAMILIES
    display: str  # label in tables and figures
    emb_dim: int | None  # embedding size; None: depends on the input (l2) or has none
    image_size: int | None  # input side the metric works at; None: any (baselines: option)
    downloads: tuple[Download, ...] = ()
    description: str = ""
    in_paper: bool = True  # False: the demo teachers (no weights, not paper metrics)

    @property
    def needs_weights(self) -> bool:
        return bool(self.downloads)


@dataclasses.dataclass(frozen=True)
class AttackCard:
    """The facts about one attack on the reference image of a 2AFC triplet."""

    name: str  # `lipsim attack --attack NAME`; files R/attacks/{metric}/{name}-{norm}-{eps}
    display: str  # label in tables and figures
    description: str

    @property
    def radius_keys(self) -> dict[str, str]:
        """norm -> the key of the config's attacks section listing this attack's radii (Table
        2's grid; l2 in image units, linf in /255 units)."""
        return {"L2": f"{self.name}_l2_eps", "Linf": f"{self.name}_linf_eps_255"}


_ALEXNET = Download(
    "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "file",
    "alexnet-owt-7be5be79.pth",
    "7be5be79",
)
_VGG16 = Download(
    "https://download.pytorch.org/models/vgg16-397923af.pth",
    "file",
    "vgg16-397923af.pth",
    "397923af",
)
_DINO = Download(
    "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
    "file",
    "dino_vitbase16_pretrain.pth",
)
# The DreamSim ensemble LipSim distilled from (2023, dreamsim 0.1.x): DINO, CLIP and OpenCLIP
# ViT-B/16 (strides 16,16,16 in every released dreamsim config; CLIP/OpenCLIP B/16 and B/32
# both give 512-d embeddings, hence 768 + 512 + 512 = 1792). The zip holds the CLIP/OpenCLIP
# backbones and `ensemble_lora/`; dreamsim 0.2.x ships a re-released ensemble checkpoint
# (v0.2.0-checkpoints/dreamsim_ensemble_checkpoint.zip) with the same layout.
_ENSEMBLE_V01 = Download(
    "https://github.com/ssundaram21/dreamsim/releases/download/v0.1.0/dreamsim_checkpoint.zip",
    "zip",
    "dreamsim_ensemble_v0.1.zip",
)
# The single-backbone DreamSim releases (the URLs of dreamsim.config.dreamsim_weights; a test
# keeps them equal to the installed package's).
_DREAMSIM_RELEASE = "https://github.com/ssundaram21/dreamsim/releases/download/v0.2.0-checkpoints"


def _dreamsim_zip(key: str) -> Download:
    return Download(
        f"{_DREAMSIM_RELEASE}/dreamsim_{key}_checkpoint.zip", "zip", f"dreamsim_{key}.zip"
    )


_CARDS = (
    MetricCard(
        "l2",
        "baseline",
        "L2",
        None,
        None,
        (),
        "Euclidean pixel distance ||a - b||_2 (images in [0, 1])",
    ),
    MetricCard(
        "lpips",
        "baseline",
        "LPIPS",
        None,
        None,
        (_ALEXNET,),
        "LPIPS v0.1, AlexNet trunk (torchvision's ImageNet checkpoint)",
    ),
    MetricCard(
        "dists",
        "baseline",
        "DISTS",
        None,
        None,
        (_VGG16,),
        "DISTS (DISTS_pytorch; alpha / beta ship in its wheel), VGG16 trunk",
    ),
    MetricCard(
        "clip_vitb32",
        "teacher",
        "CLIP",
        512,
        224,
        (_dreamsim_zip("clip_vitb32"),),
        "DreamSim single CLIP ViT-B/32",
    ),
    MetricCard(
        "dino_vitb16",
        "teacher",
        "DINO",
        768,
        224,
        (_dreamsim_zip("dino_vitb16"), _DINO),
        "DreamSim single DINO ViT-B/16",
    ),
    MetricCard(
        "open_clip_vitb32",
        "teacher",
        "OpenCLIP",
        512,
        224,
        (_dreamsim_zip("open_clip_vitb32"),),
        "DreamSim single OpenCLIP ViT-B/32",
    ),
    MetricCard(
        "dreamsim_ensemble",
        "teacher",
        "DreamSim",
        1792,
        224,
        (_ENSEMBLE_V01, _DINO),
        "DreamSim ensemble: DINO ViT-B/16 (768) + CLIP ViT-B/16 (512) + OpenCLIP ViT-B/16 (512)",
    ),
    MetricCard(
        "demo",
        "teacher",
        "Demo teacher",
        64,
        32,
        (),
        "seeded random multi-scale conv features (demo; no weights)",
        in_paper=False,
    ),
    # A second demo teacher (other filters and rotation) so the demo runs a teacher sweep.
    MetricCard(
        "demo2",
        "teacher",
        "Demo teacher 2",
        64,
        32,
        (),
        "the demo teacher with another seed (demo teacher sweep; no weights)",
        in_paper=False,
    ),
    # LipSim models are named by checkpoint (`lipsim:<path>`); their embedding size is their
    # teacher's and their input size the checkpoint's; released weights: fetch-released.
    MetricCard(
        "lipsim",
        "lipsim",
        "LipSim",
        None,
        None,
        (),
        "1-Lipschitz student distilled from a teacher (lipsim:<checkpoint>)",
    ),
)
METRICS_TABLE: dict[str, MetricCard] = {card.name: card for card in _CARDS}

_ATTACK_CARDS = (
    AttackCard(
        "autoattack",
        "AutoAttack",
        "pyautoattack's APGD-CE + FAB-T + Square (lipsim.attacks.autoattack)",
    ),
    AttackCard("pgd", "PGD", "projected gradient ascent on the 2AFC margin (lipsim.attacks.pgd)"),
)
ATTACKS_TABLE: dict[str, AttackCard] = {card.name: card for card in _ATTACK_CARDS}


def metric_card(name: str) -> MetricCard:
    """The registry's card of `name`; LipSimError naming the known ones otherwise."""
    try:
        return METRICS_TABLE[name]
    except KeyError:
        raise LipSimError(f"unknown metric {name!r}; known: {', '.join(METRICS_TABLE)}") from None


def attack_card(name: str) -> AttackCard:
    """The registry's card of attack `name`; LipSimError naming the known ones otherwise."""
    try:
        return ATTACKS_TABLE[name]
    except KeyError:
        raise LipSimError(f"unknown attack {name!r}; known: {', '.join(ATTACKS_TABLE)}") from None


def names(kind: str | None = None, *, paper_only: bool = False) -> list[str]:
    """Registry names of one kind (None: every metric), in the paper's order."""
    if kind is not None and kind not in KINDS:
        raise LipSimError(f"unknown registry kind {kind!r}; known: {', '.join(KINDS)}")
    if kind == "attack":
        return list(ATTACKS_TABLE)
    return [
        c.name
        for c in _CARDS
        if (kind is None or c.family == kind) and (c.in_paper or not paper_only)
    ]


def comparison_metrics() -> list[str]:
    """Metrics figure 3a can compare LipSim with (the schema's baselines.metrics enum): the
    baselines and the paper's teachers."""
    return [n for n in names(paper_only=True) if METRICS_TABLE[n].family != "lipsim"]


def needs_weights() -> list[str]:
    """Metrics whose pretrained weights fetch-weights downloads."""
    return [c.name for c in _CARDS if c.needs_weights]


TEACHER_NAMES = tuple(names("teacher"))
BASELINE_NAMES = tuple(names("baseline"))

# (kind, name) -> builder, filled by @register in the builders' own modules.
_BUILDERS: dict[tuple[str, str], Any] = {}


def register(kind: str, name: str) -> Callable[[Any], Any]:
    """Decorator: the builder of `name` (a teacher, baseline or attack), which must have a card.
    What a builder is depends on the kind: teachers and baselines a function returning the
    metric (see lipsim.teachers.get_teacher, lipsim.baselines), attacks a class
    (lipsim.attacks.run)."""
    if name not in names(kind):
        raise LipSimError(f"register: {kind} {name!r} has no card in lipsim.registry")

    def add(obj):
        if (kind, name) in _BUILDERS:
            raise LipSimError(f"register: {kind} {name!r} is registered twice")
        _BUILDERS[(kind, name)] = obj
        return obj

    return add


def builder(kind: str, name: str) -> Any:
    """The registered builder of `name`; LipSimError naming the known names otherwise."""
    if name not in names(kind):
        raise LipSimError(f"unknown {kind} {name!r}; known: {', '.join(names(kind))}")
    try:
        return _BUILDERS[(kind, name)]
    except KeyError:
        raise LipSimError(
            f"{kind} {name!r} has a card but no builder: the module that registers it is "
            "not imported (lipsim.teachers, lipsim.baselines and lipsim.attacks import theirs)"
        ) from None


__all__ = [
    "ATTACKS_TABLE",
    "BASELINE_NAMES",
    "FAMILIES",
    "KINDS",
    "METRICS_TABLE",
    "TEACHER_NAMES",
    "AttackCard",
    "Download",
    "MetricCard",
    "attack_card",
    "builder",
    "comparison_metrics",
    "metric_card",
    "names",
    "needs_weights",
    "register",
]
