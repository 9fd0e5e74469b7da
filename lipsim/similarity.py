"""The interface every perceptual metric in this project implements.

LipSim models, teachers (DreamSim...) and baselines (L2, LPIPS, ...) all present as a
SimilarityMetric so that scoring, certification, attacks and figures treat them alike.
"""

from __future__ import annotations

import torch
from torch import nn


class SimilarityMetric(nn.Module):
    """d(a, b) for batches of RGB images in [0, 1], shape (B, 3, H, W) -> (B,).

    Embedding-based metrics (has_embedding = True) also expose embed() and
    distance_from_embeddings(), which lets attacks embed x0/x1 once per triplet.
    Subclasses resize inputs themselves when they need a fixed size (image_size).
    """

    name: str = "metric"
    has_embedding: bool = False
    image_size: int | None = None

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is not an embedding metric")

    def distance_from_embeddings(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} is not an embedding metric")

    def distance(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.has_embedding:
            return self.distance_from_embeddings(self.embed(a), self.embed(b))
        raise NotImplementedError

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.distance(a, b)


def cosine_distance(ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
    """1 - cos(ea, eb) row-wise (the DreamSim distance on raw embeddings)."""
    return 1.0 - nn.functional.cosine_similarity(ea, eb, dim=-1)
