"""The public LipSim metric: d(x, y) = ||P f(x) - P f(y)||^2 / 2 with a certificate.

Projection (why the unit ball): f is 1-Lipschitz, and the public LipSim code normalises
f(x) / ||f(x)||, which is 1-Lipschitz only where ||f|| >= 1 -- near the origin it can
stretch distances arbitrarily, so its certificates are not sound in general. We use
P(z) = z / max(1, ||z||), the projection onto the closed unit ball: non-expansive everywhere,
so phi = P o f is 1-Lipschitz, and d0 - d1 = <phi(x), phi(x1) - phi(x0)> + a term free of x
yields the radius of lipsim.certify. Where ||f|| >= 1 P is exactly the public normalisation
and d equals the public 1 - cos; inside the ball d stays a distance (d(x, x) = 0), which
1 - <phi(x), phi(y)> is not (it gives 1 - ||phi(x)||^2 > 0 for d(x, x)). The alternative fix of the public code
(appending a constant coordinate before normalising) would change every distance of the
released checkpoints; the projection leaves them unchanged wherever they were sound.
This distance is used everywhere LipSim is evaluated (natural, certified, attacked).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lipsim.certify import radius_from_embeddings
from lipsim.device import resolve_device
from lipsim.models import (
    PRESETS,
    LipSimNet,
    ball_distance,
    build_model,
    load_checkpoint,
    project_to_ball,
)
from lipsim.similarity import SimilarityMetric

# Default input size / embedding width when a preset is loaded with random weights.
_PRESET_IO = {"tiny": (32, 128)}
_PAPER_IO = (224, 1792)


class LipSim(SimilarityMetric):
    """A LipSimNet as a SimilarityMetric: embed = P(f(x)), distance = ||a - b||^2 / 2.

    Inputs are RGB in [0, 1], (B, 3, H, W); other sizes are resized (bicubic, antialiased)
    to the net's image size for embed/distance. certified_radius requires the net's size,
    because a resize is not 1-Lipschitz and the radius holds in the net's input space.
    """

    has_embedding = True

    def __init__(self, net: LipSimNet, name: str = "lipsim", info: dict | None = None) -> None:
        super().__init__()
        self.net = net.eval()
        self.name = name
        self.image_size = net.image_size
        self.info = dict(info or {})  # stage, margin, teacher, source of a loaded checkpoint

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (self.image_size, self.image_size):
            return x
        x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic",
                          antialias=True, align_corners=False)
        return x.clamp(0.0, 1.0)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return project_to_ball(self.net(self._resize(x)))

    def distance_from_embeddings(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        return ball_distance(ea, eb)

    def certified_radius(self, ref: torch.Tensor, x0: torch.Tensor,
                         x1: torch.Tensor) -> torch.Tensor:
        """(B,) l2 radius around `ref` within which sign(d0 - d1) cannot change (float64)."""
        for name, t in (("ref", ref), ("x0", x0), ("x1", x1)):
            if tuple(t.shape[-2:]) != (self.image_size, self.image_size):
                raise ValueError(f"certified_radius: {name} is {tuple(t.shape[-2:])}, the net "
                                 f"takes {self.image_size}x{self.image_size}; resize first "
                                 "(preprocess) -- the radius holds in the net's input space")
        with torch.no_grad():
            return radius_from_embeddings(self.embed(ref), self.embed(x0), self.embed(x1))[2]

    def preprocess(self, image) -> torch.Tensor:
        """A PIL image -> (1, 3, S, S) float tensor in [0, 1], S = image_size (PIL bicubic)."""
        from PIL import Image

        image = image.convert("RGB")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.BICUBIC)
        arr = np.asarray(image, dtype=np.uint8).copy()
        return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0).unsqueeze(0)


def load(path_or_preset, device="cpu", image_size: int | None = None,
         emb_dim: int | None = None, seed: int = 0) -> LipSim:
    """A LipSim metric from a lipsim-repro checkpoint file or a preset name.

    A preset name (an existing file of that name wins) builds the architecture with weights
    seeded by `seed` (tests, demos); image_size / emb_dim default to 224 / 1792 (tiny:
    32 / 128). For a checkpoint they come from the file (passing different ones is an error).
    The returned metric is in eval mode with frozen weights, so the SLL rescaling vectors
    are computed once and cached even when attacks differentiate w.r.t. the input.
    device: "cpu", "cuda", "cuda:N" or "auto".
    """
    dev = resolve_device(device)
    key = str(path_or_preset)
    if key in PRESETS and not Path(key).is_file():
        size, dim = _PRESET_IO.get(key, _PAPER_IO)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_model(key, image_size or size, emb_dim or dim)
        info = {"source": f"preset:{key}", "seed": seed}
        name = f"lipsim-{key}"
    elif Path(key).is_file():
        net, ckpt = load_checkpoint(key, map_location="cpu")
        for opt, val in (("image_size", image_size), ("emb_dim", emb_dim)):
            if val is not None and val != net.config[opt]:
                raise ValueError(f"{key}: checkpoint has {opt}={net.config[opt]}, asked {val}")
        info = {"source": os.fspath(key), "stage": ckpt["stage"], "margin": ckpt.get("margin"),
                "teacher": ckpt["teacher"], "model_config": dict(net.config)}
        name = "lipsim-" + Path(key).stem
    else:
        raise FileNotFoundError(f"lipsim.load: {key!r} is neither a checkpoint file nor a "
                                f"preset ({', '.join(PRESETS)})")
    net.requires_grad_(False)
    return LipSim(net.to(dev), name=name, info=info).eval()
