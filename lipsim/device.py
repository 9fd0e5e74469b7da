"""The --device option of every step: "auto" means CUDA when there is one, else the CPU."""

from __future__ import annotations

import torch


def resolve_device(name) -> torch.device:
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
