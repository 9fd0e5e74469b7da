"""build_metric: any metric a command can name, from its spec (timm's create_model).

Specs (docs/pipeline.md):
- `lipsim:<checkpoint>`: a LipSim model (lipsim.metric.load; a preset name such as
  `lipsim:tiny` builds seeded random weights) with the metric its checkpoint records;
  `lipsim-cosine:<checkpoint>` / `lipsim-ball:<checkpoint>` choose the LipSim metric;
- a teacher or a baseline of the registry (lipsim.registry.names("teacher" / "baseline")),
  built by the builder its module registered.

Nothing here downloads; `random_weights=True` builds the real architecture with seeded random
weights (tests, demo). image_size: for the baselines it becomes the metric's image_size (inputs
of another size are resized, bicubic); teachers and LipSim models have their own and ignore it.
"""

from __future__ import annotations

import os

# Imported for their registrations: every teacher and baseline builder is in the registry.
import lipsim.baselines  # noqa: F401
import lipsim.teachers  # noqa: F401
from lipsim.device import resolve_device
from lipsim.errors import LipSimError
from lipsim.models.net import METRICS
from lipsim.models.presets import PRESETS
from lipsim.registry import builder, names


def metric_names() -> list[str]:
    """Every spec build_metric understands, as users write them."""
    return [
        *names("baseline"),
        *names("teacher"),
        "lipsim:<checkpoint>",
        *(f"lipsim-{m}:<checkpoint>" for m in METRICS),
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
    dev = resolve_device(device)
    lipsim_metric = None
    for name in METRICS:  # lipsim-cosine:PATH / lipsim-ball:PATH pick the LipSim metric
        if spec.startswith(f"lipsim-{name}:"):
            lipsim_metric, spec = name, "lipsim:" + spec[len(f"lipsim-{name}:") :]
    if spec.startswith("lipsim:"):
        from lipsim.metric import load

        path = spec[len("lipsim:") :]
        if not path:
            raise LipSimError("metric spec 'lipsim:' needs a checkpoint path (lipsim:PATH)")
        # `lipsim:<preset>` is the documented spelling of seeded random weights.
        metric = load(
            path,
            device=dev,
            pretrained=not (random_weights or path in PRESETS),
            metric=lipsim_metric,
        )
    elif spec in names("teacher"):
        metric = builder("teacher", spec)(
            weights_dir=weights_dir, device=str(dev), random_weights=random_weights
        )
    elif spec in names("baseline"):
        metric = builder("baseline", spec)(
            weights_dir=weights_dir, random_weights=random_weights, image_size=image_size
        )
    else:
        raise LipSimError(f"unknown metric {spec!r}; known: {', '.join(metric_names())}")
    metric = metric.to(dev).eval()
    metric.requires_grad_(False)
    if not getattr(metric, "name", None) or metric.name == "metric":
        metric.name = spec
    return metric


__all__ = ["build_metric", "metric_names"]
