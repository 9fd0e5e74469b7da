"""Import of the authors' released LipSim checkpoints, as their code saves them.

Their trainer (distillation) saves {epoch, global_step, model_state_dict,
optimizer_state_dict, scheduler}; their finetuner the same without `scheduler`, with an Adam
state whose learning rate is a numpy.float64 (it comes from np.interp). The model is
DistributedDataParallel or nn.DataParallel (`module.`) around a mean-0/std-1 NormalizedModel
(`model.`) around the network, whose state dict keys are
    convs.{i}.kernel (inner, C, 3, 3) | .bias (1, inner, 1, 1) | .q (inner,)
    linear.{j}.weight (inner, D) | .bias (1, inner) | .q (inner,)      (j from 1)
and again base.1.{i}.* / base.2.{j}.* (`base` is a Sequential holding the same modules).
Their loader also accepts `module.backbone.` (renamed to `module.`) and drops `alpha` keys.

The file is read with torch.load(weights_only=True) plus an explicit allow-list of the numpy
scalar and dtype globals such files carry (both numpy 1 and numpy 2 spellings) -- never full
unpickling, so a pickle that would run code is refused. The model weights are mapped onto a
LipSimNet and loaded strictly: each base.* duplicate must equal its twin, the conv `q` are
dropped (dead in their conv layer: the q factors cancel, see lipsim.models.sll), and every
key that is not imported is named with the reason. The Adam state, when present, is mapped
from their parameter order (registration order: convs, then linear, each layer's parameters
in their order, conv q included) onto ours, so finetuning can continue it (their recipe).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping

import torch

from lipsim.models.checkpoint import CheckpointError, _load_strict, read_torch_file
from lipsim.models.net import LipSimNet, build_model


@dataclasses.dataclass
class Imported:
    net: LipSimNet
    optimizer_state: dict | None  # Adam state in net.parameters() order, or None
    ignored: list[tuple[str, str]]  # (key, why it was not imported)
    info: dict  # plain entries of the file (epoch, global_step)


def _numpy_globals() -> list:
    """The numpy globals a checkpoint with numpy scalars needs: the scalar constructor (under
    its numpy 1 and numpy 2 module names), numpy.dtype and the dtype classes of numpy 2."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed = [
        scalar,
        (scalar, "numpy.core.multiarray.scalar"),
        (scalar, "numpy._core.multiarray.scalar"),
        np.dtype,
    ]
    for t in (
        np.float64,
        np.float32,
        np.float16,
        np.int64,
        np.int32,
        np.int16,
        np.int8,
        np.uint8,
        np.bool_,
    ):
        allowed.append(type(np.dtype(t)))
    return allowed


_PREFIX = re.compile(r"^(?:module\.|backbone\.|model\.)+")
_BASE = {"base.1.": "convs.", "base.2.": "linear."}


def _canonical(key: str) -> str:
    name = _PREFIX.sub("", key)
    for old, new in _BASE.items():
        if name.startswith(old):
            return new + name[len(old) :]
    return name


def import_released(path_or_state, preset: str, image_size: int, emb_dim: int) -> Imported:
    """A LipSimNet (and Adam state) from a released LipSim checkpoint file or state dict."""
    source, obj = "state dict", path_or_state
    if isinstance(path_or_state, (str, os.PathLike)):
        source = os.fspath(path_or_state)
        obj = read_torch_file(source, safe_globals=_numpy_globals())
    ignored: list[tuple[str, str]] = []
    info: dict = {}
    optimizer = None
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        for key, value in obj.items():
            if key == "model_state_dict":
                continue
            if key == "optimizer_state_dict":
                optimizer = value
            elif isinstance(value, (int, float, str)) and key in ("epoch", "global_step"):
                info[key] = value
                ignored.append((key, "training position, recorded in meta"))
            else:
                ignored.append((key, "not model weights"))
        raw = obj["model_state_dict"]
    else:
        raw = obj
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(
            f"{source}: expected a state dict of tensors or a dict with 'model_state_dict'"
        )
    net = build_model(preset, image_size, emb_dim)
    state, order = _model_state(raw, net, source, ignored)
    _load_strict(net, state, source)
    opt_state = None
    if optimizer is not None:
        opt_state, why = _map_optimizer(optimizer, order, net)
        if opt_state is None:
            ignored.append(("optimizer_state_dict", f"not imported: {why}"))
        else:
            ignored.append(
                (
                    "optimizer_state_dict",
                    "imported as the Adam state "
                    f"({len(order) - len(opt_state['state'])} dead conv q entries "
                    "dropped)"
                    if len(order) > len(opt_state["state"])
                    else "imported as the Adam state",
                )
            )
    return Imported(net=net.eval(), optimizer_state=opt_state, ignored=ignored, info=info)


def _model_state(raw: Mapping, net: LipSimNet, source: str, ignored: list):
    """(state dict for net, their parameter names in their registration order)."""
    conv_idx = {
        name.split(".")[1]
        for name, m in net.named_modules()
        if name.startswith("convs.") and hasattr(m, "kernel")
    }
    state: dict[str, torch.Tensor] = {}
    order: list[str] = []
    dead = 0
    for key, value in raw.items():
        name = _canonical(key)
        if "alpha" in name.split(".")[-1]:
            ignored.append((key, "alpha entries are dropped by the authors' loader too"))
            continue
        is_twin = _PREFIX.sub("", key).startswith(tuple(_BASE))
        if name not in order:
            order.append(name)
        parts = name.split(".")
        if parts[0] == "convs" and len(parts) == 3 and parts[2] == "q" and parts[1] in conv_idx:
            dead += 0 if is_twin else 1
            continue  # dead parameter in their conv layer (the q factors cancel)
        if name in state:
            if state[name].shape != value.shape or not torch.equal(state[name], value):
                raise CheckpointError(
                    f"{source}: {name} and its duplicate under base.* "
                    "differ; the released layout stores the same tensor twice"
                )
            continue
        state[name] = value
    if dead:
        ignored.append(
            ("convs.*.q", f"{dead} dead conv parameters (they cancel in the authors' conv layer)")
        )
    twins = sum(1 for k in raw if _PREFIX.sub("", k).startswith(tuple(_BASE)))
    if twins:
        ignored.append(
            ("base.1.* / base.2.*", f"{twins} duplicate names of the same tensors (checked equal)")
        )
    return state, order


def _map_optimizer(opt: Mapping, order: list[str], net: LipSimNet):
    """Their Adam state (indexed by their parameter order) in our parameter order, or
    (None, why) when it does not fit."""
    try:
        groups, per_param = opt["param_groups"], opt["state"]
        theirs = [i for g in groups for i in g["params"]]
    except (KeyError, TypeError):
        return None, "no param_groups/state entries"
    if len(theirs) != len(order):
        return None, f"{len(theirs)} optimizer parameters for {len(order)} model parameters"
    index = {name: theirs[k] for k, name in enumerate(order)}
    ours = list(net.named_parameters())
    state = {}
    for k, (name, param) in enumerate(ours):
        if name not in index:
            return None, f"no optimizer entry for {name}"
        entry = per_param.get(index[name])
        if entry is None:
            continue  # a parameter Adam never stepped
        for key in ("exp_avg", "exp_avg_sq"):
            if key in entry and tuple(entry[key].shape) != tuple(param.shape):
                return None, f"{name}.{key} has shape {tuple(entry[key].shape)}"
        state[k] = {
            key: (v.clone() if isinstance(v, torch.Tensor) else torch.tensor(float(v)))
            for key, v in entry.items()
        }
    group = {key: _plain(v) for key, v in groups[0].items() if key != "params"}
    group["params"] = list(range(len(ours)))
    return {"state": state, "param_groups": [group]}, None


def _plain(value):
    """numpy scalars (their lr) as Python numbers, so our files need no numpy globals."""
    if hasattr(value, "item") and not isinstance(value, torch.Tensor):
        return value.item()
    if isinstance(value, (tuple, list)):
        return type(value)(_plain(v) for v in value)
    return value
