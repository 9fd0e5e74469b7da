"""The metric options shared by evaluate / attack / distances / retrieval / evaluate-bapps
(their --device is a config option: the schema's `device`)."""

from __future__ import annotations

import torch

from lipsim.device import resolve_device
from lipsim.factory import build_metric
from lipsim.registry import names
from lipsim.similarity import SimilarityMetric

DEFAULT_IMAGE_SIZE = 224  # NIGHT / DreamSim preprocessing


def add_metric_args(ap) -> None:
    ap.add_argument(
        "--metric",
        required=True,
        help=f"metric spec: lipsim:CKPT, a teacher ({', '.join(names('teacher'))}) "
        f"or a baseline ({', '.join(names('baseline'))})",
    )
    ap.add_argument("--weights-dir", default=None, help="folder of fetched pretrained weights")
    ap.add_argument(
        "--random-weights",
        action="store_true",
        help="real architecture with seeded random weights (tests, demo)",
    )
    ap.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input size for metrics without their own (l2, lpips, dists; "
        f"default {DEFAULT_IMAGE_SIZE}); LipSim and teachers use their own",
    )


def metric_from_args(args) -> tuple[SimilarityMetric, torch.device, int]:
    """(metric, device, image size to load images at) from add_metric_args options.

    Images are loaded at the metric's own size when it has one (LipSim's certificate holds
    in its input space; teachers resize anyway), else at --image-size, else 224.
    """
    device = resolve_device(args.device)
    metric = build_metric(
        args.metric,
        weights_dir=args.weights_dir,
        device=device,
        random_weights=args.random_weights,
        image_size=args.image_size,
    )
    size = getattr(metric, "image_size", None) or args.image_size or DEFAULT_IMAGE_SIZE
    return metric, device, int(size)
