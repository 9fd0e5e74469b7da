"""The threat model's norms: per-row l2 / linf norms and projection onto the eps-ball.

Shared by every attack, the 2AFC adapter and retrieval; depends on nothing else here.
"""

from __future__ import annotations

import torch

NORMS = ("L2", "Linf")


def check_norm(norm: str) -> str:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row norm of (B, ...) in float64 (reported values, ball checks)."""
    flat = delta.detach().reshape(delta.shape[0], -1).double()
    if check_norm(norm) == "L2":
        return torch.linalg.vector_norm(flat, dim=1)
    return flat.abs().amax(dim=1) if flat.shape[1] else torch.zeros(flat.shape[0], dtype=flat.dtype)


def project(x: torch.Tensor, x_adv: torch.Tensor, norm: str, eps: float) -> torch.Tensor:
    """Nearest-ish point of the eps-ball around x (radial for l2), clipped to [0, 1]."""
    delta = x_adv - x
    if check_norm(norm) == "L2":
        n = torch.linalg.vector_norm(delta.reshape(delta.shape[0], -1), dim=1)
        scale = torch.clamp(eps / n.clamp_min(1e-12), max=1.0)
        delta = delta * scale.view(-1, *([1] * (delta.dim() - 1)))
    else:
        delta = delta.clamp(-eps, eps)
    return (x + delta).clamp(0.0, 1.0)


__all__ = ["NORMS", "check_norm", "lp_norm", "project"]
