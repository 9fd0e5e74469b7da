"""The Teacher interface: an embedding metric whose embeddings the student regresses.

A teacher takes RGB images in [0, 1] of any size, applies its own resize / normalisation and
returns (B, emb_dim) embeddings; its distance is the cosine distance (DreamSim's). Teachers
are frozen: embed() runs without gradients unless the caller asks for them (attacks do).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lipsim.similarity import SimilarityMetric, cosine_distance


class Teacher(SimilarityMetric):
    """Base class of every registry entry; subclasses implement `_embed(x at image_size)`."""

    has_embedding = True
    emb_dim: int = 0
    image_size: int | None = None

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if self.image_size is None or tuple(x.shape[-2:]) == (self.image_size, self.image_size):
            return x
        # Bicubic + antialias matches PIL's bicubic resize (DreamSim's preprocessing); the
        # clamp undoes bicubic overshoot so normalisation sees values in [0, 1].
        return F.interpolate(
            x,
            size=(self.image_size, self.image_size),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        ).clamp_(0.0, 1.0)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(
                f"teacher {self.name}: expected images (B, 3, H, W), got {tuple(x.shape)}"
            )
        return self._embed(self._resize(x))

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def distance_from_embeddings(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        return cosine_distance(ea, eb)
