"""Metric registry: every metric a command can name, behind the SimilarityMetric interface.

    build_metric(spec, *, weights_dir=None, device="cpu", random_weights=False, image_size=None)

Specs (docs/pipeline.md):
- `lipsim:<checkpoint>`: a LipSim model (lipsim.metric.load; a preset name such as
  `lipsim:tiny` builds seeded random weights) with the metric its checkpoint records;
  `lipsim-cosine:<checkpoint>` / `lipsim-ball:<checkpoint>` choose the LipSim metric;
- a teacher name (`demo`, `dreamsim_ensemble`, `dino_vitb16`, `clip_vitb32`,
  `open_clip_vitb32`): lipsim.teachers.get_teacher;
- `l2`: Euclidean pixel distance ||a - b||_2 (images in [0, 1]);
- `lpips`: LPIPS v0.1 with the AlexNet trunk (lpips.LPIPS(net='alex')); its linear layers
  ship with the lpips package, the AlexNet trunk is torchvision's ImageNet checkpoint read
  from weights_dir/lpips/ (lpips itself would download it at build time);
- `dists`: DISTS (Ding et al., TPAMI 2020), implemented here: VGG16 features with l2 pooling
  in place of max pooling, and learned per-channel weights alpha / beta of the structure and
  texture terms; VGG16 from torchvision's ImageNet checkpoint and alpha / beta from the DISTS
  release, both read from weights_dir/dists/.

Nothing here downloads. Missing weights raise FileNotFoundError naming the file and the
command that fetches it (`python -m lipsim fetch-weights --teacher NAME --weights-dir DIR`;
`BASELINE_DOWNLOADS` lists what it must fetch, in the teachers' Download format).
`random_weights=True` builds the real architecture with seeded random weights (tests, demo).

image_size: for l2 / lpips / dists it becomes the metric's image_size (inputs of another
size are resized, bicubic); teachers and LipSim models have their own and ignore it.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lipsim.checksum import sha256_file
from lipsim.device import resolve_device
from lipsim.models.presets import PRESETS
from lipsim.similarity import SimilarityMetric

BASELINES = ("l2", "lpips", "dists")
TEACHER_NAMES = ("demo", "dreamsim_ensemble", "dino_vitb16", "clip_vitb32", "open_clip_vitb32")

# torchvision's file names carry the first 8 hex digits of the file's sha256.
_ALEXNET = ("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            "alexnet-owt-7be5be79.pth")
_VGG16 = ("https://download.pytorch.org/models/vgg16-397923af.pth", "vgg16-397923af.pth")
_DISTS_AB = ("https://github.com/dingkeyan93/DISTS/raw/master/DISTS_pytorch/weights.pt",
             "weights.pt")
# name -> ((url, file name in weights_dir/<name>/), ...): what fetch-weights must download.
BASELINE_DOWNLOADS: dict[str, tuple[tuple[str, str], ...]] = {
    "lpips": (_ALEXNET,),
    "dists": (_VGG16, _DISTS_AB),
}
_SEED = 0  # random_weights: the architecture's weights are drawn from this seed


def _weights_file(name: str, file: str, weights_dir) -> Path:
    fetch = f"`python -m lipsim fetch-weights --teacher {name} --weights-dir DIR`"
    if weights_dir is None:
        raise FileNotFoundError(f"{name}: pretrained weights needed but no weights_dir given "
                                f"(--weights-dir); fetch them with {fetch}, or use "
                                "--random-weights for a test build")
    path = Path(weights_dir) / name / file
    if not path.is_file():
        raise FileNotFoundError(f"{name}: missing weights file {path}; fetch it with "
                                f"{fetch.replace('DIR', os.fspath(weights_dir))}")
    return path


def _check_hash_prefix(path: Path) -> None:
    """torchvision names its checkpoints NAME-<first 8 hex of sha256>.pth: verify it."""
    stem = path.stem.rsplit("-", 1)[-1]
    if len(stem) != 8 or any(c not in "0123456789abcdef" for c in stem):
        return
    digest = sha256_file(path)
    if not digest.startswith(stem):
        raise ValueError(f"{path}: sha256 {digest[:8]}... does not match the prefix "
                         f"{stem} in its name (corrupt or partial download); fetch it again")


def _load_torchvision_checkpoint(path: Path) -> dict:
    _check_hash_prefix(path)
    return torch.load(path, map_location="cpu", weights_only=True)


class _Resizing(SimilarityMetric):
    """Shared: optional resize to image_size (bicubic, antialiased, clamped)."""

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if s is None or tuple(x.shape[-2:]) == (s, s):
            return x
        return F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False,
                             antialias=True).clamp(0.0, 1.0)


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

    def __init__(self, *, weights_dir=None, random_weights: bool = False,
                 image_size: int | None = None) -> None:
        super().__init__()
        import lpips

        self.image_size = image_size
        # Fail on missing weights before building anything.
        trunk = None if random_weights else _weights_file("lpips", _ALEXNET[1], weights_dir)
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


class _L2Pooling(nn.Module):
    """DISTS's l2 pooling: sqrt(hanning-window blur of x^2), stride 2 (anti-aliased pooling)."""

    def __init__(self, channels: int, filter_size: int = 5, stride: int = 2) -> None:
        super().__init__()
        self.padding = (filter_size - 2) // 2
        self.stride = stride
        a = np.hanning(filter_size)[1:-1]
        g = torch.tensor(a[:, None] * a[None, :], dtype=torch.float32)
        g = g / g.sum()
        self.register_buffer("filter", g[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv2d(x ** 2, self.filter, stride=self.stride, padding=self.padding,
                       groups=x.shape[1])
        return (out + 1e-12).sqrt()


class DISTS(_Resizing):
    """DISTS: 1 - sum_k (alpha_k S1_k + beta_k S2_k) over the input and 5 VGG16 stages.

    Per channel: texture term S1 = (2 mu_x mu_y + c) / (mu_x^2 + mu_y^2 + c) (global means)
    and structure term S2 = (2 cov_xy + c) / (var_x + var_y + c), c = 1e-6; alpha / beta are
    learned and normalised by their total, as in the authors' DISTS_pytorch.
    """

    name = "dists"
    chns = (3, 64, 128, 256, 512, 512)
    # VGG16 `features` indices of each stage (max-pool layers 4, 9, 16, 23 -> l2 pooling).
    _STAGES = ((0, 4), (5, 9), (10, 16), (17, 23), (24, 30))

    def __init__(self, *, weights_dir=None, random_weights: bool = False,
                 image_size: int | None = None) -> None:
        super().__init__()
        from torchvision.models import vgg16

        self.image_size = image_size
        if not random_weights:  # fail on missing weights before building anything
            vgg_file = _weights_file("dists", _VGG16[1], weights_dir)
            ab_file = _weights_file("dists", _DISTS_AB[1], weights_dir)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_SEED)
            features = vgg16(weights=None).features
            # the authors' initialisation of alpha / beta (used as is with random_weights)
            alpha = torch.randn(1, sum(self.chns), 1, 1) * 0.01 + 0.1
            beta = torch.randn(1, sum(self.chns), 1, 1) * 0.01 + 0.1
        if not random_weights:
            sd = _load_torchvision_checkpoint(vgg_file)
            features.load_state_dict({k[len("features."):]: v for k, v in sd.items()
                                      if k.startswith("features.")})
            ab = torch.load(ab_file, map_location="cpu", weights_only=True)
            alpha, beta = ab["alpha"].reshape(alpha.shape), ab["beta"].reshape(beta.shape)
        stages = []
        for k, (lo, hi) in enumerate(self._STAGES):
            mods = [] if k == 0 else [_L2Pooling(self.chns[k])]
            mods += [features[i] for i in range(lo, hi)]
            stages.append(nn.Sequential(*mods))
        self.stages = nn.ModuleList(stages)
        self.alpha = nn.Parameter(alpha.float())
        self.beta = nn.Parameter(beta.float())
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, -1, 1, 1))
        self.eval().requires_grad_(False)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self._resize(x)
        feats, h = [x], (x - self.mean) / self.std
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        return feats

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self.features(a), self.features(b)
        c1 = c2 = 1e-6
        w_sum = self.alpha.sum() + self.beta.sum()
        alpha = torch.split(self.alpha / w_sum, list(self.chns), dim=1)
        beta = torch.split(self.beta / w_sum, list(self.chns), dim=1)
        dist1 = dist2 = 0.0
        for k in range(len(self.chns)):
            xm, ym = fa[k].mean([2, 3], keepdim=True), fb[k].mean([2, 3], keepdim=True)
            s1 = (2 * xm * ym + c1) / (xm ** 2 + ym ** 2 + c1)
            dist1 = dist1 + (alpha[k] * s1).sum(1, keepdim=True)
            xv = ((fa[k] - xm) ** 2).mean([2, 3], keepdim=True)
            yv = ((fb[k] - ym) ** 2).mean([2, 3], keepdim=True)
            cov = (fa[k] * fb[k]).mean([2, 3], keepdim=True) - xm * ym
            s2 = (2 * cov + c2) / (xv + yv + c2)
            dist2 = dist2 + (beta[k] * s2).sum(1, keepdim=True)
        return (1 - (dist1 + dist2)).reshape(a.shape[0])


def metric_names() -> list[str]:
    return [*BASELINES, *TEACHER_NAMES, "lipsim:<checkpoint>", "lipsim-cosine:<checkpoint>",
            "lipsim-ball:<checkpoint>"]


def build_metric(spec: str, *, weights_dir: str | os.PathLike | None = None, device="cpu",
                 random_weights: bool = False, image_size: int | None = None) -> SimilarityMetric:
    """The metric named by `spec` (see the module docstring), frozen, in eval mode, on device."""
    dev = resolve_device(device)
    lipsim_metric = None
    for name in ("cosine", "ball"):  # lipsim-cosine:PATH / lipsim-ball:PATH pick the metric
        if spec.startswith(f"lipsim-{name}:"):
            lipsim_metric, spec = name, "lipsim:" + spec[len(f"lipsim-{name}:"):]
    if spec.startswith("lipsim:"):
        from lipsim.metric import load

        path = spec[len("lipsim:"):]
        if not path:
            raise ValueError("metric spec 'lipsim:' needs a checkpoint path (lipsim:PATH)")
        # `lipsim:<preset>` is the documented spelling of seeded random weights.
        metric = load(path, device=dev, pretrained=not (random_weights or path in PRESETS),
                      metric=lipsim_metric)
    elif spec in TEACHER_NAMES:
        from lipsim.teachers import get_teacher

        metric = get_teacher(spec, weights_dir=weights_dir, device=str(dev),
                             random_weights=random_weights)
    elif spec == "l2":
        metric = PixelL2(image_size)
    elif spec == "lpips":
        metric = LPIPSMetric(weights_dir=weights_dir, random_weights=random_weights,
                             image_size=image_size)
    elif spec == "dists":
        metric = DISTS(weights_dir=weights_dir, random_weights=random_weights,
                       image_size=image_size)
    else:
        raise ValueError(f"unknown metric {spec!r}; known: {', '.join(metric_names())}")
    metric = metric.to(dev).eval()
    metric.requires_grad_(False)
    if not getattr(metric, "name", None) or metric.name == "metric":
        metric.name = spec
    return metric


# --------------------------------------------------------------------------- CLI helpers
DEFAULT_IMAGE_SIZE = 224  # NIGHT / DreamSim preprocessing


def add_metric_args(ap) -> None:
    """The metric options shared by evaluate / attack / distances / retrieval."""
    ap.add_argument("--metric", required=True,
                    help="metric spec: lipsim:CKPT, a teacher (demo, dreamsim_ensemble, "
                         "dino_vitb16, clip_vitb32, open_clip_vitb32) or l2 / lpips / dists")
    ap.add_argument("--weights-dir", default=None, help="folder of fetched pretrained weights")
    ap.add_argument("--random-weights", action="store_true",
                    help="real architecture with seeded random weights (tests, demo)")
    ap.add_argument("--image-size", type=int, default=None,
                    help="input size for metrics without their own (l2, lpips, dists; "
                         f"default {DEFAULT_IMAGE_SIZE}); LipSim and teachers use their own")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")


def metric_from_args(args) -> tuple[SimilarityMetric, torch.device, int]:
    """(metric, device, image size to load images at) from add_metric_args options.

    Images are loaded at the metric's own size when it has one (LipSim's certificate holds
    in its input space; teachers resize anyway), else at --image-size, else 224.
    """
    device = resolve_device(args.device)
    metric = build_metric(args.metric, weights_dir=args.weights_dir, device=device,
                          random_weights=args.random_weights, image_size=args.image_size)
    size = getattr(metric, "image_size", None) or args.image_size or DEFAULT_IMAGE_SIZE
    return metric, device, int(size)


@torch.no_grad()
def triplet_distances(metric: SimilarityMetric, ref, x0, x1) -> tuple[np.ndarray, np.ndarray]:
    """(d(ref, x0), d(ref, x1)) as float64 arrays. Embedding metrics compute the distance
    from float64 embeddings, so near-ties are decided as lipsim.certify decides them."""
    if getattr(metric, "has_embedding", False):
        e, e0, e1 = (metric.embed(t).double() for t in (ref, x0, x1))
        d0, d1 = metric.distance_from_embeddings(e, e0), metric.distance_from_embeddings(e, e1)
    else:
        d0, d1 = metric(ref, x0), metric(ref, x1)
    return (d0.reshape(-1).double().cpu().numpy(), d1.reshape(-1).double().cpu().numpy())


def evaluate_triplets(metric: SimilarityMetric, loader, device, ids, splits):
    """Natural 2AFC per triplet: DataFrame id, split, p, d0, d1, score (loader order)."""
    from lipsim.scoring import triplet_table, twoafc

    metric.eval()

    def batch_columns(ref, x0, x1, p, index):
        d0, d1 = triplet_distances(metric, *(t.to(device) for t in (ref, x0, x1)))
        return {"p": p, "d0": d0, "d1": d1, "score": twoafc(d0, d1, p)}

    return triplet_table(loader, ids, splits, ["id", "split", "p", "d0", "d1", "score"],
                         batch_columns)


__all__ = ["BASELINES", "BASELINE_DOWNLOADS", "DEFAULT_IMAGE_SIZE", "DISTS", "LPIPSMetric",
           "PixelL2", "TEACHER_NAMES", "add_metric_args", "build_metric", "evaluate_triplets",
           "metric_from_args", "metric_names", "resolve_device", "triplet_distances"]
