"""The registry of every metric a command can name, behind the SimilarityMetric interface.

    build_metric(spec, *, weights_dir=None, device="cpu", random_weights=False, image_size=None)

Specs (docs/pipeline.md):
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

import os

from lipsim.baselines import BASELINES, DISTS, LPIPSMetric, PixelL2
from lipsim.device import resolve_device
from lipsim.models.net import METRICS
from lipsim.models.presets import PRESETS
from lipsim.similarity import SimilarityMetric

TEACHER_NAMES = (
    "demo",
    "demo2",
    "dreamsim_ensemble",
    "dino_vitb16",
    "clip_vitb32",
    "open_clip_vitb32",
)


def metric_names() -> list[str]:
    return [
        *BASELINES,
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
) -> SimilarityMetric:
    """The metric named by `spec` (see the module docstring), frozen, in eval mode, on device."""
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
    elif spec == "l2":
        metric = PixelL2(image_size)
    elif spec == "lpips":
        metric = LPIPSMetric(
            weights_dir=weights_dir, random_weights=random_weights, image_size=image_size
        )
    elif spec == "dists":
        metric = DISTS(
            weights_dir=weights_dir, random_weights=random_weights, image_size=image_size
        )
    else:
        raise ValueError(f"unknown metric {spec!r}; known: {', '.join(metric_names())}")
    metric = metric.to(dev).eval()
    metric.requires_grad_(False)
    if not getattr(metric, "name", None) or metric.name == "metric":
        metric.name = spec
    return metric
