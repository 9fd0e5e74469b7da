"""LipSim checkpoints: our own format (save/load); released ones: lipsim.models.released.

Our format (docs/pipeline.md, "Checkpoints"): a dict loadable with
torch.load(weights_only=True):
    {"format": "lipsim-repro/1", "model_config": net.config, "model_state_dict": ...,
     "stage": "pretrained" | "finetuned", "margin": float | None, "teacher": str,
     "metric": "cosine" | "ball" | None (the metric a finetuned model was trained with),
     "meta": {plain types},
     "optimizer_state_dict": Adam state (optional; params in net.parameters() order) }
The optimizer state lets finetuning continue the distillation's Adam moments (the authors'
recipe); it is absent when a run did not keep it.

Released checkpoints (the authors' layout) are converted by lipsim.models.released.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from lipsim.atomic import torch_save
from lipsim.models.net import METRICS, LipSimNet, build_model

FORMAT = "lipsim-repro/1"
STAGES = ("pretrained", "finetuned")


def save_checkpoint(path: str | os.PathLike, net: LipSimNet, *, stage: str,
                    margin: float | None = None, teacher: str, metric: str | None = None,
                    meta: dict | None = None, optimizer_state: dict | None = None) -> None:
    """Write `net` atomically in the lipsim-repro/1 format (DDP wrappers are unwrapped)."""
    net = getattr(net, "module", net)
    if not isinstance(net, LipSimNet):
        raise TypeError(f"save_checkpoint expects a LipSimNet, got {type(net).__name__}")
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    extra = {} if optimizer_state is None else {"optimizer_state_dict": optimizer_state}
    torch_save(path, {
        "format": FORMAT,
        "model_config": dict(net.config),
        "model_state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        "stage": stage,
        "margin": None if margin is None else float(margin),
        "teacher": str(teacher),
        "metric": metric,
        "meta": dict(meta or {}),
        **extra,
    })


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[LipSimNet, dict]:
    """(net, checkpoint dict) from a lipsim-repro/1 file; net is in eval mode."""
    ckpt = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        hint = ("; a released LipSim checkpoint? convert it with `lipsim import-checkpoint`"
                if isinstance(ckpt, dict) and "model_state_dict" in ckpt else "")
        raise ValueError(f"{path}: not a {FORMAT} checkpoint (format: {found!r}){hint}")
    for key in ("model_config", "model_state_dict", "stage", "teacher"):
        if key not in ckpt:
            raise ValueError(f"{path}: checkpoint has no {key!r} entry")
    net = build_model(**ckpt["model_config"])
    _load_strict(net, ckpt["model_state_dict"], source=str(path))
    net.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")
    return net.eval(), ckpt


def _load_strict(net: LipSimNet, state: Mapping, source: str) -> None:
    expected = net.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sorted(set(state) & set(expected))
              if tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {'; '.join(shapes)}")
    if problems:
        raise ValueError(f"{source} does not fit LipSimNet {net.config}: " + " | ".join(problems))
    net.load_state_dict(state, strict=True)
