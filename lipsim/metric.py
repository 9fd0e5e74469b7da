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
The switch `metric` (config key of the same name) selects it or the authors' metric,
d = 1 - cos(f(x), f(y)) (`cosine`), everywhere LipSim is evaluated (natural, certified,
attacked, retrieval); lipsim.certify gives each its sound radius.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lipsim.certify import radii
from lipsim.device import resolve_device
from lipsim.errors import LipSimError
from lipsim.models import (
    METRICS,
    PRESETS,
    LipSimNet,
    ball_distance,
    build_model,
    load_checkpoint,
    project,
)
from lipsim.similarity import SimilarityMetric

# Default input size / embedding width when a preset is loaded with random weights.
_PRESET_IO = {"tiny": (32, 128)}
_PAPER_IO = (224, 1792)


class LipSim(SimilarityMetric):
    """A LipSimNet as a SimilarityMetric: embed = project(f(x), metric), d = ||a - b||^2 / 2.

    metric: "ball" (P, the unit-ball projection: sound certificates) or "cosine" (N = z/||z||,
    the authors' 1 - cos); see lipsim.models.project and lipsim.certify.
    Inputs are float RGB in [0, 1], (B, 3, H, W) tensors (float64 is converted to float32;
    uint8, 0..255 floats, numpy arrays and paths are refused with a hint). Other sizes are
    resized (bicubic, antialiased) to the net's image size for embed/distance.
    certified_radius requires the net's size, because a resize is not 1-Lipschitz and the
    radius holds in the net's input space.
    """

    has_embedding = True

    def __init__(
        self, net: LipSimNet, name: str = "lipsim", info: dict | None = None, metric: str = "ball"
    ) -> None:
        super().__init__()
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
        self.net = net.eval()
        self.name = name
        self.metric = metric
        self.image_size = net.image_size
        self.info = dict(info or {}, metric=metric)  # stage, margin, teacher, source, metric

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == (self.image_size, self.image_size):
            return x
        x = F.interpolate(
            x,
            size=(self.image_size, self.image_size),
            mode="bicubic",
            antialias=True,
            align_corners=False,
        )
        return x.clamp(0.0, 1.0)

    def raw_embed(self, x: torch.Tensor) -> torch.Tensor:
        """f(x): the 1-Lipschitz net's embedding before the metric's map (certificates)."""
        return self.net(self._resize(check_images(x)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return project(self.raw_embed(x), self.metric)

    def distance_from_embeddings(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        return ball_distance(ea, eb)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        a, b = check_images(a, "a"), check_images(b, "b")
        if a.shape[0] != b.shape[0]:
            raise ValueError(
                f"distance: batches of {a.shape[0]} and {b.shape[0]} images; "
                "pass equal batch sizes (no silent broadcasting)"
            )
        return super().distance(a, b)

    def certified_radius(
        self, ref: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor
    ) -> torch.Tensor:
        """(B,) sound l2 radius around `ref` within which sign(d0 - d1) cannot change
        (float64; lipsim.certify.radii for this metric)."""
        for name, t in (("ref", ref), ("x0", x0), ("x1", x1)):
            t = check_images(t, name)
            if tuple(t.shape[-2:]) != (self.image_size, self.image_size):
                raise ValueError(
                    f"certified_radius: {name} is {tuple(t.shape[-2:])}, the net "
                    f"takes {self.image_size}x{self.image_size}; resize first "
                    "(preprocess) -- the radius holds in the net's input space"
                )
        with torch.no_grad():
            f = [self.raw_embed(t) for t in (ref, x0, x1)]
            return radii(*f, self.metric)["radius"]

    def preprocess(self, image) -> torch.Tensor:
        """A PIL image -> (1, 3, S, S) float tensor in [0, 1], S = image_size (PIL bicubic)."""
        from PIL import Image

        image = image.convert("RGB")
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), Image.BICUBIC)
        arr = np.asarray(image, dtype=np.uint8).copy()
        return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0).unsqueeze(0)


class MissingCheckpoint(LipSimError, FileNotFoundError):
    """lipsim.load was given a path that does not exist (one error line in the CLIs)."""


def check_images(x, name: str = "x") -> torch.Tensor:
    """The metric's input contract: a float (B, 3, H, W) tensor in [0, 1].

    float64 is converted to float32 (the net's dtype); everything else that is not the
    contract is an error with the fix in its message, rather than a wrong distance.
    """
    if isinstance(x, (str, os.PathLike)):
        raise TypeError(
            f"{name}: got a path ({x!r}); open it with PIL and use metric.preprocess(image)"
        )
    if isinstance(x, np.ndarray):
        raise TypeError(
            f"{name}: got a numpy array; pass a torch tensor "
            "(torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255 for an "
            "HxWx3 uint8 image) or use metric.preprocess(PIL image)"
        )
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor (B, 3, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"{name}: expected shape (B, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name}: {x.dtype} tensor; LipSim takes floats in [0, 1] "
            "(e.g. x.float() / 255 for uint8 images)"
        )
    if x.dtype == torch.float64:
        x = x.float()
    if x.numel():
        rows = x.detach().flatten(1)
        nan = torch.isnan(rows).any(1)
        if nan.any():  # NaN compares false with any bound: refused by name, not by range
            raise ValueError(
                f"{name}: {_rows(nan)} hold{'s' if int(nan.sum()) == 1 else ''} NaN; "
                "LipSim takes images in [0, 1]"
            )
        lo, hi = rows.amin(1), rows.amax(1)
        bad = (lo < -1e-4) | (hi > 1.0 + 1e-4)
        if bad.any():
            i = int(bad.nonzero()[0])
            top = float(hi[bad].max())
            hint = " (0..255 values? divide by 255)" if 1.5 < top < float("inf") else ""
            raise ValueError(
                f"{name}: values in [{float(lo[i]):.3g}, {float(hi[i]):.3g}] in "
                f"{_rows(bad)}; LipSim takes images in [0, 1]{hint}"
            )
    return x


def _rows(mask: torch.Tensor) -> str:
    """ "row 3" / "rows 3, 5, 9 (and 2 more)" for a boolean mask over a batch."""
    idx = mask.nonzero().flatten().tolist()
    shown = ", ".join(map(str, idx[:3])) + (f" (and {len(idx) - 3} more)" if len(idx) > 3 else "")
    return f"row{'s' if len(idx) > 1 else ''} {shown}"


def load(
    path_or_preset,
    device="cpu",
    image_size: int | None = None,
    emb_dim: int | None = None,
    seed: int = 0,
    *,
    metric: str | None = None,
    pretrained: bool = True,
) -> LipSim:
    """A LipSim metric from a lipsim-repro checkpoint file, or a preset with random weights.

    `released:pretrained`, `released:margin0.2`, `released:margin0.5` are the authors'
    released checkpoints, downloaded once into a cache folder (lipsim.hub).
    A checkpoint gives image_size / emb_dim (passing different ones is an error) and the
    metric it was finetuned with; `metric` ("cosine" | "ball") overrides it, and a checkpoint
    that records none (pretrained) uses "ball", the sound one.
    A preset name builds the architecture with weights seeded by `seed` (tests, demos); it
    must be asked for with pretrained=False, so that random weights are never a surprise;
    image_size / emb_dim default to 224 / 1792 (tiny: 32 / 128).
    The returned metric is in eval mode with frozen weights, so the SLL rescaling vectors
    are computed once and cached even when attacks differentiate w.r.t. the input.
    device: "cpu", "cuda", "cuda:N" or "auto".
    """
    if metric is not None and metric not in METRICS:
        raise ValueError(f"lipsim.load: metric must be one of {METRICS}, got {metric!r}")
    dev = resolve_device(device)
    key = os.fspath(path_or_preset)
    if key.startswith("released:") and not Path(key).is_file():
        from lipsim.hub import released_checkpoint

        key = os.fspath(released_checkpoint(key))
    if key in PRESETS and not Path(key).is_file():
        if pretrained:
            raise ValueError(
                f"lipsim.load({key!r}): a preset has no trained weights; pass "
                "pretrained=False for seeded random weights, or a checkpoint file"
            )
        size, dim = _PRESET_IO.get(key, _PAPER_IO)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = build_model(key, image_size or size, emb_dim or dim)
        info = {"source": f"preset:{key}", "seed": seed, "pretrained": False}
        name = f"lipsim-{key}"
        stored = None
    elif Path(key).is_file():
        net, ckpt = load_checkpoint(key, map_location="cpu")
        for opt, val in (("image_size", image_size), ("emb_dim", emb_dim)):
            if val is not None and val != net.config[opt]:
                raise ValueError(f"{key}: checkpoint has {opt}={net.config[opt]}, asked {val}")
        info = {
            "source": key,
            "stage": ckpt["stage"],
            "margin": ckpt.get("margin"),
            "teacher": ckpt["teacher"],
            "model_config": dict(net.config),
        }
        name = "lipsim-" + Path(key).stem
        stored = ckpt.get("metric")
    else:
        raise MissingCheckpoint(
            f"lipsim.load: {key!r} is neither a checkpoint file nor a preset ({', '.join(PRESETS)})"
        )
    net.requires_grad_(False)
    return LipSim(net.to(dev), name=name, info=info, metric=metric or stored or "ball").eval()
