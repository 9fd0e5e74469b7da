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
import re
from collections.abc import Mapping

import torch

from lipsim.atomic import torch_save
from lipsim.errors import LipSimError
from lipsim.models.net import _ARCH_KEYS, METRICS, LipSimNet, build_model
from lipsim.models.presets import PRESETS

FORMAT = "lipsim-repro/1"
STAGES = ("pretrained", "finetuned")


def save_checkpoint(
    path: str | os.PathLike,
    net: LipSimNet,
    *,
    stage: str,
    margin: float | None = None,
    teacher: str,
    metric: str | None = None,
    meta: dict | None = None,
    optimizer_state: dict | None = None,
) -> None:
    """Write `net` atomically in the lipsim-repro/1 format (DDP wrappers are unwrapped)."""
    net = getattr(net, "module", net)
    if not isinstance(net, LipSimNet):
        raise TypeError(f"save_checkpoint expects a LipSimNet, got {type(net).__name__}")
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    if metric is not None and metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    extra = {} if optimizer_state is None else {"optimizer_state_dict": optimizer_state}
    torch_save(
        path,
        {
            "format": FORMAT,
            "model_config": dict(net.config),
            "model_state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
            "stage": stage,
            "margin": None if margin is None else float(margin),
            "teacher": str(teacher),
            "metric": metric,
            "meta": dict(meta or {}),
            **extra,
        },
    )


class CheckpointError(LipSimError, ValueError):
    """A checkpoint cannot be used (unreadable, truncated, refused, wrong format or shapes);
    the message names the file."""


# A stored model config may ask for at most _SIZE_FACTOR times each size of its preset (the
# file's own preset family) and as many parameters as the preset has at _REF_IMAGE_SIZE, at
# an image side of at most _MAX_IMAGE_SIZE: checked before anything is built, so a small file
# cannot make the loader allocate a huge network.
_SIZE_FACTOR = 4
_MAX_IMAGE_SIZE = 1024
_REF_IMAGE_SIZE = 224  # the paper's input size: the parameter budget of a preset is taken there
_CONFIG_KEYS = ("preset", "image_size", "emb_dim", *_ARCH_KEYS)


def check_model_config(config, source: str) -> dict:
    """The stored model config, checked: known keys, a known preset, whole-number sizes in a
    sane range for that preset. Raises CheckpointError naming `source` and the key."""
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{source}: model_config is a {type(config).__name__}, not a dict")
    unknown = sorted(str(k) for k in set(config) - set(_CONFIG_KEYS))
    missing = [k for k in _CONFIG_KEYS if k not in config]
    if unknown or missing:
        raise CheckpointError(
            f"{source}: model_config has "
            + "; ".join(
                ([f"unknown key(s) {', '.join(unknown)}"] if unknown else [])
                + ([f"no {', '.join(missing)}"] if missing else [])
            )
            + f" (expected {', '.join(_CONFIG_KEYS)})"
        )
    preset = config["preset"]
    if not isinstance(preset, str) or preset not in PRESETS:
        raise CheckpointError(
            f"{source}: model_config preset {preset!r} is not one of {', '.join(PRESETS)}"
        )
    for key in _CONFIG_KEYS[1:]:
        value = config[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(
                f"{source}: model_config {key}={value!r} is not a positive whole number"
            )
    bounds = {
        "image_size": _MAX_IMAGE_SIZE,
        **{k: _SIZE_FACTOR * v for k, v in PRESETS[preset].items()},
    }
    for key, bound in bounds.items():
        if config[key] > bound:
            raise CheckpointError(
                f"{source}: model_config {key}={config[key]} is beyond "
                f"{bound}, the sane bound for preset {preset!r}; refusing to "
                "build it"
            )
    try:
        with torch.device("meta"):  # shapes only: no memory is allocated
            n = sum(t.numel() for t in build_model(**config).parameters())
            ref = sum(t.numel() for t in build_model(preset, _REF_IMAGE_SIZE, 1).parameters())
    except (ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(
            f"{source}: model_config {dict(config)} does not describe a LipSimNet: {exc}"
        ) from exc
    if n > _SIZE_FACTOR * ref:
        raise CheckpointError(
            f"{source}: model_config {dict(config)} asks for {n:,} parameters, "
            f"over {_SIZE_FACTOR} x the {ref:,} of preset {preset!r} at "
            f"{_REF_IMAGE_SIZE} px; refusing to build it"
        )
    return dict(config)


def read_torch_file(path, map_location="cpu", safe_globals=()):
    """torch.load with weights_only (plus the explicit `safe_globals` allow-list, e.g. the
    numpy scalars of released files), every failure of the file as one CheckpointError."""
    import pickle

    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError as exc:
        raise CheckpointError(f"{path}: no such checkpoint file") from exc
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: the file holds Python objects that safe "
            f"(weights_only) loading does not allow, or is corrupt ({_unpickling_reason(exc)})"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch reports a bad file in many ways
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CheckpointError(
            f"{path}: not a readable torch checkpoint (truncated or corrupt?): "
            f"{type(exc).__name__}: {first}"
        ) from exc


def _unpickling_reason(exc: Exception) -> str:
    """torch's specific reason ("Unsupported operand 103", "unsupported GLOBAL posix.system"),
    without its boilerplate: that suggests weights_only=False, which would run the file's code."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    keep = [
        re.sub(r"^Please file an issue .*? use case: ", "", ln)
        for ln in lines
        if not ln.startswith(("Weights only load failed", "Check the documentation"))
    ]
    return " ".join(keep) or type(exc).__name__


def load_checkpoint(path: str | os.PathLike, map_location="cpu") -> tuple[LipSimNet, dict]:
    """(net, checkpoint dict) from a lipsim-repro/1 file; net is in eval mode.

    The stored model config and the tensor shapes are checked before the network is built;
    every problem with the file raises CheckpointError naming it.
    """
    ckpt = read_torch_file(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        found = ckpt.get("format") if isinstance(ckpt, dict) else type(ckpt).__name__
        hint = (
            "; a released LipSim checkpoint? convert it with `lipsim import-checkpoint`"
            if isinstance(ckpt, dict) and "model_state_dict" in ckpt
            else ""
        )
        raise CheckpointError(f"{path}: not a {FORMAT} checkpoint (format: {found!r}){hint}")
    for key in ("model_config", "model_state_dict", "stage", "teacher"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} entry")
    config = check_model_config(ckpt["model_config"], str(path))
    state = ckpt["model_state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CheckpointError(f"{path}: model_state_dict is not a mapping of tensors")
    # Weights that are not finite floats load without a word and poison every distance.
    bad = [
        k
        for k, v in state.items()
        if not v.is_floating_point() or not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise CheckpointError(
            f"{path}: model_state_dict has non-finite or non-float tensors: "
            f"{', '.join(sorted(bad)[:10])}"
        )
    with torch.device("meta"):
        skeleton = build_model(**config)
    problems = _mismatch(skeleton.state_dict(), state)
    if problems:
        raise CheckpointError(f"{path} does not fit LipSimNet {config}: " + " | ".join(problems))
    net = build_model(**config)
    _load_strict(net, state, source=str(path))
    net.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")
    return net.eval(), ckpt


def _mismatch(expected: Mapping, state: Mapping) -> list[str]:
    """Missing and unexpected keys and shape mismatches of `state` against `expected`."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {', '.join(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {', '.join(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {'; '.join(shapes)}")
    return problems


def _load_strict(net: LipSimNet, state: Mapping, source: str) -> None:
    problems = _mismatch(net.state_dict(), state)
    if problems:
        raise CheckpointError(
            f"{source} does not fit LipSimNet {net.config}: " + " | ".join(problems)
        )
    net.load_state_dict(state, strict=True)
