"""Baseline metrics of figure 3a: pixel l2, LPIPS and DISTS, behind SimilarityMetric.

- `l2`: Euclidean pixel distance ||a - b||_2 (images in [0, 1]);
- `lpips`: LPIPS v0.1 with the AlexNet trunk (lpips.LPIPS(net='alex')); its linear layers
  ship with the lpips package, the AlexNet trunk is torchvision's ImageNet checkpoint read
  from weights_dir/lpips/ (lpips itself would download it at build time);
- `dists`: DISTS (Ding et al., TPAMI 2020) from the authors' `DISTS_pytorch` package, with the
  alpha / beta weights that ship in its wheel; its VGG16 trunk is torchvision's ImageNet
  checkpoint read from weights_dir/dists/ (DISTS_pytorch would download it at build time).

Each is registered into lipsim.registry (`@register("baseline", name)`), where its card holds
its display name and the files fetch-weights downloads; lipsim.factory.build_metric builds it.
Nothing here downloads. Missing weights raise FileNotFoundError naming the file and the
command that fetches it (`python -m lipsim fetch-weights --teacher NAME --weights-dir DIR`).
`random_weights=True` builds the real architecture with seeded random weights (tests, demo).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.resources
import os
import types
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from lipsim.checksum import sha256_file
from lipsim.registry import metric_card, register
from lipsim.similarity import SimilarityMetric

_SEED = 0  # random_weights: the architecture's weights are drawn from this seed


def _weights_file(name: str, weights_dir) -> Path:
    """The baseline's one downloaded file (its card's), in weights_dir/<name>/."""
    (download,) = metric_card(name).downloads
    file = download.name
    fetch = f"`python -m lipsim fetch-weights --teacher {name} --weights-dir DIR`"
    if weights_dir is None:
        raise FileNotFoundError(
            f"{name}: pretrained weights needed but no weights_dir given "
            f"(--weights-dir); fetch them with {fetch}, or use "
            "--random-weights for a test build"
        )
    path = Path(weights_dir) / name / file
    if not path.is_file():
        raise FileNotFoundError(
            f"{name}: missing weights file {path}; fetch it with "
            f"{fetch.replace('DIR', os.fspath(weights_dir))}"
        )
    return path


def _check_hash_prefix(path: Path) -> None:
    """torchvision names its checkpoints NAME-<first 8 hex of sha256>.pth: verify it."""
    stem = path.stem.rsplit("-", 1)[-1]
    if len(stem) != 8 or any(c not in "0123456789abcdef" for c in stem):
        return
    digest = sha256_file(path)
    if not digest.startswith(stem):
        raise ValueError(
            f"{path}: sha256 {digest[:8]}... does not match the prefix "
            f"{stem} in its name (corrupt or partial download); fetch it again"
        )


def _load_torchvision_checkpoint(path: Path) -> dict:
    _check_hash_prefix(path)
    return torch.load(path, map_location="cpu", weights_only=True)


class _Resizing(SimilarityMetric):
    """Shared: optional resize to image_size (bicubic, antialiased, clamped)."""

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if s is None or tuple(x.shape[-2:]) == (s, s):
            return x
        return F.interpolate(
            x, size=(s, s), mode="bicubic", align_corners=False, antialias=True
        ).clamp(0.0, 1.0)


class PixelL2(_Resizing):
    """d(a, b) = ||a - b||_2 over all pixels and channels ([0, 1] units)."""

    name = "l2"
    has_embedding = True

    def __init__(self, image_size: int | None = None) -> None:
        super().__init__()
        self.image_size = image_size

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._resize(x).flatten(1)

    def distance_from_embeddings(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        return torch.linalg.vector_norm(ea - eb, dim=-1)


class LPIPSMetric(_Resizing):
    """LPIPS v0.1, AlexNet trunk, inputs in [0, 1] (rescaled to [-1, 1] inside)."""

    name = "lpips"

    def __init__(
        self, *, weights_dir=None, random_weights: bool = False, image_size: int | None = None
    ) -> None:
        super().__init__()
        import lpips

        self.image_size = image_size
        # Fail on missing weights before building anything.
        trunk = None if random_weights else _weights_file("lpips", weights_dir)
        # pnet_rand=True: never let lpips/torchvision download the trunk; we load it below.
        # The linear layers (pretrained=True) are read from the lpips package itself.
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            # lpips calls torchvision's deprecated `pretrained=` argument
            warnings.simplefilter("ignore", UserWarning)
            torch.manual_seed(_SEED)
            self.net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
        if trunk is not None:
            sd = _load_torchvision_checkpoint(trunk)
            own = {}
            for key in self.net.net.state_dict():  # slice{k}.{i}.{weight,bias}
                _, idx, param = key.split(".")
                own[key] = sd[f"features.{idx}.{param}"]
            self.net.net.load_state_dict(own)
        self.net.eval().requires_grad_(False)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.net(self._resize(a), self._resize(b), normalize=True).reshape(a.shape[0])


@contextlib.contextmanager
def _vgg16_without_download(features_state: dict | None):
    """DISTS_pytorch builds its trunk with `torchvision.models.vgg16(pretrained=True)`, which
    downloads; while this is active its module sees a vgg16 that loads `features_state`
    (torchvision's checkpoint, read from weights_dir) or keeps the seeded random init."""
    from torchvision import models as tv_models
    from torchvision.models import vgg16

    def build(*args, **kwargs):
        net = vgg16(weights=None)
        if features_state is not None:
            net.features.load_state_dict(features_state)
        return net

    module = importlib.import_module("DISTS_pytorch.DISTS_pt")
    module.models = types.SimpleNamespace(vgg16=build)
    try:
        yield
    finally:
        module.models = tv_models


def _dists_alpha_beta() -> dict[str, torch.Tensor]:
    """The learned alpha / beta shipped inside the DISTS_pytorch package."""
    path = importlib.resources.files("DISTS_pytorch") / "weights.pt"
    with importlib.resources.as_file(path) as file:
        return torch.load(file, map_location="cpu", weights_only=True)


class DISTS(_Resizing):
    """DISTS (DISTS_pytorch.DISTS): 1 - sum_k (alpha_k S1_k + beta_k S2_k) over the input and
    the 5 VGG16 stages (l2 pooling in place of max pooling), inputs in [0, 1]."""

    name = "dists"

    def __init__(
        self, *, weights_dir=None, random_weights: bool = False, image_size: int | None = None
    ) -> None:
        super().__init__()
        from DISTS_pytorch import DISTS as _DISTS

        self.image_size = image_size
        features = None
        if not random_weights:  # fail on missing weights before building anything
            sd = _load_torchvision_checkpoint(_weights_file("dists", weights_dir))
            features = {
                k[len("features.") :]: v for k, v in sd.items() if k.startswith("features.")
            }
        with torch.random.fork_rng(devices=[]), _vgg16_without_download(features):
            torch.manual_seed(_SEED)
            self.net = _DISTS(load_weights=False)  # its loader reads sys.prefix/weights.pt
        ab = _dists_alpha_beta()
        self.net.alpha.data = ab["alpha"].float().reshape(self.net.alpha.shape)
        self.net.beta.data = ab["beta"].float().reshape(self.net.beta.shape)
        self.eval().requires_grad_(False)

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # require_grad=True: DISTS_pytorch would otherwise wrap its features in no_grad, and
        # attacks need gradients; this module's parameters are frozen either way.
        d = self.net(self._resize(a), self._resize(b), require_grad=True)
        return d.reshape(a.shape[0])


# The builders (lipsim.factory.build_metric passes every keyword; l2 has no weights).
@register("baseline", "l2")
def _build_l2(*, weights_dir=None, random_weights=False, image_size=None) -> PixelL2:
    return PixelL2(image_size)


@register("baseline", "lpips")
def _build_lpips(*, weights_dir=None, random_weights=False, image_size=None) -> LPIPSMetric:
    return LPIPSMetric(
        weights_dir=weights_dir, random_weights=random_weights, image_size=image_size
    )


@register("baseline", "dists")
def _build_dists(*, weights_dir=None, random_weights=False, image_size=None) -> DISTS:
    return DISTS(weights_dir=weights_dir, random_weights=random_weights, image_size=image_size)


__all__ = ["DISTS", "LPIPSMetric", "PixelL2"]
