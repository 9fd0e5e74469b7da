"""LipSimNet: the 1-Lipschitz (l2) embedding network f, and the projection P.

    x in [0, 1]^(3, H, W) -> zero-pad channels 3 -> C -> conv SLL x conv_depth
      -> SumPool4 -> SumPool4 (H -> H/4 -> H/16) -> flatten (D = C * (H/16)^2)
      -> linear SLL x linear_depth -> keep the first emb_dim coordinates

Every stage is 1-Lipschitz, so f is. The network returns the raw embedding f(x) (what
distillation regresses); the metric uses P(f(x)) with P the unit-ball projection.

Module names mirror the public code (`convs.N.*`, `linear.N.*`, linear layers from index 1
after the Flatten), so a released state dict maps onto this one by stripping prefixes.
"""

from __future__ import annotations

import torch
from torch import nn

from lipsim.models.presets import PRESETS
from lipsim.models.sll import PadChannels, SLLConv2d, SLLLinear, SumPool4, Truncate

_ARCH_KEYS = ("conv_depth", "channels", "conv_inner", "linear_depth", "linear_inner")


class LipSimNet(nn.Module):
    """f: (B, 3, H, W) in [0, 1] -> (B, emb_dim), 1-Lipschitz in l2. `config` rebuilds it."""

    def __init__(
        self,
        *,
        preset: str,
        image_size: int,
        emb_dim: int,
        conv_depth: int,
        channels: int,
        conv_inner: int,
        linear_depth: int,
        linear_inner: int,
    ) -> None:
        super().__init__()
        if image_size % 16:
            raise ValueError(
                f"image_size must be a multiple of 16 (two 4x4 poolings), got {image_size}"
            )
        if channels < 3:
            raise ValueError(f"channels must be >= 3 (zero-padding of RGB), got {channels}")
        side = image_size // 16
        features = channels * side * side
        if emb_dim > features:
            raise ValueError(
                f"emb_dim={emb_dim} exceeds the flattened width D={features} "
                f"(= {channels} x {side} x {side}) of preset {preset!r} at "
                f"image_size={image_size}"
            )
        self.config = dict(
            preset=preset,
            image_size=int(image_size),
            emb_dim=int(emb_dim),
            conv_depth=int(conv_depth),
            channels=int(channels),
            conv_inner=int(conv_inner),
            linear_depth=int(linear_depth),
            linear_inner=int(linear_inner),
        )
        self.image_size = int(image_size)
        self.emb_dim = int(emb_dim)
        self.features = features
        self.pad = PadChannels(channels)
        self.convs = nn.Sequential(
            *[SLLConv2d(channels, conv_inner) for _ in range(conv_depth)], SumPool4(), SumPool4()
        )
        self.linear = nn.Sequential(
            nn.Flatten(), *[SLLLinear(features, linear_inner) for _ in range(linear_depth)]
        )
        self.last = Truncate(emb_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3 or tuple(x.shape[-2:]) != (self.image_size,) * 2:
            raise ValueError(
                f"LipSimNet expects (B, 3, {self.image_size}, {self.image_size}) "
                f"images, got {tuple(x.shape)}"
            )
        return self.last(self.linear(self.convs(self.pad(x))))


def build_model(preset: str, image_size: int, emb_dim: int, **overrides) -> LipSimNet:
    """A LipSimNet from a preset name, with any architecture key overridden.

    `build_model(**net.config)` rebuilds `net` (with fresh weights).
    """
    if preset not in PRESETS:
        raise KeyError(f"unknown LipSim preset {preset!r}; known: {', '.join(PRESETS)}")
    unknown = set(overrides) - set(_ARCH_KEYS)
    if unknown:
        raise TypeError(f"unknown model option(s) {sorted(unknown)}; allowed: {list(_ARCH_KEYS)}")
    return LipSimNet(
        preset=preset, image_size=image_size, emb_dim=emb_dim, **{**PRESETS[preset], **overrides}
    )


def project_to_ball(z: torch.Tensor) -> torch.Tensor:
    """P(z) = z / max(1, ||z||) row-wise: the projection onto the closed unit l2 ball.

    Non-expansive (a projection onto a convex set), so P o f stays 1-Lipschitz; on
    ||z|| >= 1 it equals z / ||z||, the public code's normalisation.
    """
    norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
    return z / norm.clamp(min=1.0)


# The two LipSim metrics (config key `metric`): how the raw embedding f(x) is mapped before
# d = 1/2 ||a - b||^2 is taken.
#   cosine  z / ||z||           the authors' code: d = 1 - cos(f(x), f(y)) exactly
#   ball    z / max(1, ||z||)   the unit-ball projection: 1-Lipschitz everywhere (sound)
# They coincide where ||f|| >= 1.
METRICS = ("cosine", "ball")


def project(z: torch.Tensor, metric: str) -> torch.Tensor:
    """The embedding a LipSim metric compares: N(z) = z/||z|| (cosine) or P(z) (ball)."""
    if metric == "ball":
        return project_to_ball(z)
    if metric == "cosine":
        # A zero embedding has no direction; the tiny floor keeps it finite (distance 1/2 to
        # any unit vector) rather than NaN.
        norm = torch.linalg.vector_norm(z, dim=-1, keepdim=True)
        return z / norm.clamp(min=torch.finfo(z.dtype).tiny)
    raise ValueError(f"unknown LipSim metric {metric!r}; choose one of {', '.join(METRICS)}")


def ball_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """LipSim's distance between projected embeddings: d = 1/2 ||a - b||^2, row-wise.

    On the unit sphere (||f|| >= 1, the public code's sound regime) this is exactly
    1 - cos(f(x), f(y)). Unlike 1 - <a, b>, it is also a distance inside the ball:
    d(x, x) = 0 and d >= 0 whatever ||f(x)||. The certificate is unaffected:
    d0 - d1 = <a_ref, b1 - b0> + (||b0||^2 - ||b1||^2) / 2, and the second term does not
    depend on the reference, so a change of the reference moves d0 - d1 by at most
    ||phi(ref') - phi(ref)|| ||b1 - b0|| <= ||delta|| ||b1 - b0||  (see lipsim.certify).
    With unit vectors (the cosine metric's N(z)) the same formula is 1 - <a, b> = 1 - cos.
    """
    return 0.5 * (a - b).square().sum(dim=-1)
