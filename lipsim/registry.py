"""The registry of every metric a command can name: one table of facts, and how to build each.

    METRICS_TABLE["dreamsim_ensemble"].emb_dim        # 1792 (timm's pretrained_cfg, for metrics)
    names("teacher"), names("baseline")                 # the schema's enums are tested against these
    build_metric(spec, *, weights_dir=None, device="cpu", random_weights=False, image_size=None)

The table (`METRICS_TABLE`, name -> MetricCard) holds, per metric: family (baseline, teacher,
lipsim), display name, embedding size, input size, the weights it downloads (url, file, sha256
or the digest prefix known in advance) and a description, in the paper's order (Figure 3a:
pixel, CNN, single ViTs, the ensemble, then the demo teacher, then LipSim). Everything that
needs one of these facts reads it here: the teachers (lipsim.teachers.TEACHERS), the baselines,
fetch-weights, the workflow's rules (workflow/rules/common.smk) and reporting's labels and
order; a test checks that the schema's enums list the same names.

Specs understood by build_metric (docs/pipeline.md):
- `lipsim:<checkpoint>`: a LipSim model (lipsim.metric.load; a preset name such as
  `lipsim:tiny` builds seeded random weights) with the metric its checkpoint records;
  `lipsim-cosine:<checkpoint>` / `lipsim-ball:<checkpoint>` choose the LipSim metric;
- a teacher name (`demo`, `dreamsim_ensemble`, `dino_vitb16`, `clip_vitb32`,
  `open_clip_vitb32`): lipsim.teachers.get_teacher;
- a baseline (`l2`, `lpips`, `dists`): lipsim.baselines.

Nothing here downloads; `random_weights=True` builds the real architecture with seeded random
weights (tests, demo). image_size: for the baselines it becomes the metric's image_size (inputs
of another size are resized, bicubic); teachers and LipSim models have their own and ignore it.
"""

from __future__ import annotations

import dataclasses
import os

from lipsim.errors import LipSimError

FAMILIES = ("baseline", "teacher", "lipsim")


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
    in_paper: bool = True  # False: the demo teacher (no weights, not a paper metric)

    @property
    def needs_weights(self) -> bool:
        return bool(self.downloads)


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


def metric_card(name: str) -> MetricCard:
    """The registry's card of `name`; LipSimError naming the known ones otherwise."""
    try:
        return METRICS_TABLE[name]
    except KeyError:
        raise LipSimError(f"unknown metric {name!r}; known: {', '.join(METRICS_TABLE)}") from None


def names(family: str | None = None, *, paper_only: bool = False) -> list[str]:
    """Registry names of one family (all when None), in the paper's order."""
    if family is not None and family not in FAMILIES:
        raise LipSimError(f"unknown metric family {family!r}; known: {', '.join(FAMILIES)}")
    return [
        c.name
        for c in _CARDS
        if (family is None or c.family == family) and (c.in_paper or not paper_only)
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


def metric_names() -> list[str]:
    return [
        *BASELINE_NAMES,
        *TEACHER_NAMES,
        "lipsim:<checkpoint>",
        "lipsim-cosine:<checkpoint>",
        "lipsim-ball:<checkpoint>",
    ]


def build_metric(
    spec: str,
    *,
    weights_dir: str | os.PathLike | None = None,
    device="cpu",
    random_weights: bool = False,
    image_size: int | None = None,
):
    """The metric named by `spec` (see the module docstring), frozen, in eval mode, on device:
    a lipsim.similarity.SimilarityMetric."""
    from lipsim.device import resolve_device
    from lipsim.models.net import METRICS
    from lipsim.models.presets import PRESETS

    dev = resolve_device(device)
    lipsim_metric = None
    for name in METRICS:  # lipsim-cosine:PATH / lipsim-ball:PATH pick the LipSim metric
        if spec.startswith(f"lipsim-{name}:"):
            lipsim_metric, spec = name, "lipsim:" + spec[len(f"lipsim-{name}:") :]
    if spec.startswith("lipsim:"):
        from lipsim.metric import load

        path = spec[len("lipsim:") :]
        if not path:
            raise ValueError("metric spec 'lipsim:' needs a checkpoint path (lipsim:PATH)")
        # `lipsim:<preset>` is the documented spelling of seeded random weights.
        metric = load(
            path,
            device=dev,
            pretrained=not (random_weights or path in PRESETS),
            metric=lipsim_metric,
        )
    elif spec in TEACHER_NAMES:
        from lipsim.teachers import get_teacher

        metric = get_teacher(
            spec, weights_dir=weights_dir, device=str(dev), random_weights=random_weights
        )
    elif spec in BASELINE_NAMES:
        from lipsim.baselines import build_baseline

        metric = build_baseline(
            spec, weights_dir=weights_dir, random_weights=random_weights, image_size=image_size
        )
    else:
        raise ValueError(f"unknown metric {spec!r}; known: {', '.join(metric_names())}")
    metric = metric.to(dev).eval()
    metric.requires_grad_(False)
    if not getattr(metric, "name", None) or metric.name == "metric":
        metric.name = spec
    return metric


__all__ = [
    "BASELINE_NAMES",
    "FAMILIES",
    "METRICS_TABLE",
    "TEACHER_NAMES",
    "Download",
    "MetricCard",
    "build_metric",
    "comparison_metrics",
    "metric_card",
    "metric_names",
    "names",
    "needs_weights",
]
