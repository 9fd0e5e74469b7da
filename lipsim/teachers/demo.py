"""The `demo` teacher: a seeded random-feature network (no download, fully deterministic).

It stands in for DreamSim in the demo pipeline. It is a real perceptual-ish metric, not a
placeholder: fixed random zero-mean conv filters at three scales (1, 1/2, 1/4 resolution),
rectified and pooled on a coarse spatial grid (texture / sharpness / noise energy where it
happens), plus a coarse colour layout, each group scaled to comparable weight, then a fixed
random rotation to `emb_dim`, scaled to unit norm. Blur, noise, JPEG, warps and colour shifts move these
features in proportion to their strength, so its 2AFC score on the demo NIGHT set is well
above chance (tests/test_teachers.py checks it), and a student can learn it by distillation.

Fragile like a ViT: added to those smooth features, with a share `fragile_weight` of the squared
norm, are `fragile_dim` random Fourier features cos(G <w_k, x> + b_k) (Rahimi & Recht;
w_k ~ N(0, I / n_pixels), G = `fragile_gain`), randomly rotated into the same `emb_dim`: the
feature map of a Gaussian kernel in pixel space whose l2 bandwidth, sqrt(3) * image_size / G
(0.14 at 32 px), is below the demo's attack radii (the paper's eps scaled to 32 px: 0.29 for
eps 2). Every natural distortion of the demo NIGHT set is larger than that, so this part
decorrelates for both distortions of a triplet alike and adds about the same offset to both
distances (a small weight keeps the leftover fluctuation, ~1/sqrt(emb_dim) of it, below most
2AFC margins); but a perturbation of the attack's size, steered by its gradient, points it
anywhere, so the teacher collapses under attack as the paper's ViTs do. A 1-Lipschitz student
cannot follow a change this steep and learns the smooth part. fragile_weight=0: smooth only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lipsim.errors import LipSimError
from lipsim.registry import register
from lipsim.teachers.base import Teacher


class DemoTeacher(Teacher):
    def __init__(
        self,
        emb_dim: int = 64,
        image_size: int = 32,
        seed: int = 0,
        filters: int = 12,
        grid: int = 4,
        colour_grid: int = 4,
        fragile_dim: int = 512,
        fragile_gain: float = 400.0,
        fragile_weight: float = 0.01,
    ):
        super().__init__()
        self.name = "demo"
        self.emb_dim = int(emb_dim)
        self.image_size = int(image_size)
        self.grid, self.colour_grid = int(grid), int(colour_grid)
        g = torch.Generator().manual_seed(int(seed))
        w = torch.randn(filters, 3, 5, 5, generator=g)
        # Zero-mean filters respond to structure, not to flat colour (colour has its own
        # features below); unit norm keeps the scales comparable.
        w = w - w.mean(dim=(1, 2, 3), keepdim=True)
        w = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        self.register_buffer("weight", w)
        n_feat = 3 * 2 * filters * grid * grid + 3 * colour_grid * colour_grid
        # A random orthonormal map keeps inner products (so cosine distances) when
        # emb_dim >= n_feat and approximately otherwise (Johnson-Lindenstrauss).
        proj = torch.linalg.qr(
            torch.randn(max(n_feat, self.emb_dim), max(n_feat, self.emb_dim), generator=g)
        )[0][:n_feat, : self.emb_dim]
        self.register_buffer("proj", proj * (max(n_feat, self.emb_dim) / self.emb_dim) ** 0.5)
        if not 0.0 <= fragile_weight < 1.0:
            raise LipSimError(
                f"demo teacher: fragile_weight must be in [0, 1), got {fragile_weight}"
            )
        self.fragile_weight = float(fragile_weight)
        n_pix = 3 * self.image_size**2
        # Drawn after the smooth part's weights, so fragile_* never change those.
        wf = torch.randn(int(fragile_dim), n_pix, generator=g) * (float(fragile_gain) / n_pix**0.5)
        self.register_buffer("fragile_w", wf)
        self.register_buffer("fragile_b", 2 * torch.pi * torch.rand(int(fragile_dim), generator=g))
        # Orthonormal columns scaled by sqrt(fragile_dim / emb_dim): ||r @ q|| ~ ||r||.
        q = torch.linalg.qr(torch.randn(int(fragile_dim), self.emb_dim, generator=g))[0]
        self.register_buffer("fragile_q", q * (int(fragile_dim) / self.emb_dim) ** 0.5)
        self.eval().requires_grad_(False)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        feats = []
        xc = x - 0.5
        for scale in (1, 2, 4):
            xs = F.avg_pool2d(xc, scale) if scale > 1 else xc
            r = F.conv2d(F.pad(xs, (2, 2, 2, 2), mode="reflect"), self.weight)
            # Positive and negative parts separately: a sign flip of an edge is a change.
            for part in (F.relu(r), F.relu(-r)):
                e = F.adaptive_avg_pool2d(part.square(), self.grid).clamp_min(1e-12).sqrt()
                feats.append(e.flatten(1))
        structure = torch.cat(feats, dim=1)
        colour = F.adaptive_avg_pool2d(xc, self.colour_grid).flatten(1)
        # Equalise the two groups' typical magnitudes so neither dominates the cosine.
        structure = structure / structure.shape[1] ** 0.5 * 4.0
        colour = colour / colour.shape[1] ** 0.5 * 2.0
        return torch.cat([structure, colour], dim=1)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        f = self._features(x.float())
        # Unit norm, like DreamSim's embeddings: the student then learns ||f|| ~ 1, where
        # LipSim's projected distance 1 - <P f(a), P f(b)> is the cosine distance. (The
        # teacher's own cosine distance is unchanged by the scaling.)
        e = F.normalize(f @ self.proj, dim=1)
        if self.fragile_weight == 0:
            return e
        k = self.fragile_w.shape[0]
        # sqrt(2 / k) cos(.) has squared norm ~1 (exactly 1 in expectation).
        # float64: the gain amplifies rounding, and float32 matmuls round differently with the
        # batch size -- the embedding of an image must not depend on its batch mates.
        phase = x.double().flatten(1) @ self.fragile_w.double().T + self.fragile_b.double()
        r = (torch.cos(phase) * (2 / k) ** 0.5).to(e.dtype)
        wgt = self.fragile_weight
        return F.normalize(e * (1 - wgt) ** 0.5 + (r @ self.fragile_q) * wgt**0.5, dim=1)


def _register(name: str, seed: int) -> None:
    @register("teacher", name)
    def build(*, weights_dir=None, device="cpu", random_weights=False) -> DemoTeacher:
        # Seeded by construction; weights_dir / random_weights do not apply.
        teacher = DemoTeacher(seed=seed)
        teacher.name = name
        return teacher.to(device)


# The registry's demo teachers: name -> seed (demo2, other filters and rotation, gives the
# demo a teacher sweep).
for _name, _seed in (("demo", 0), ("demo2", 1)):
    _register(_name, _seed)
