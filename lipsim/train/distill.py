"""Distillation (LipSim step 1): regress cached teacher embeddings with the 1-Lipschitz
student f (no projection).

Each item is one cached image seen in two views at the preset's image size (shorter side
resized, centre crop): view 0 = random horizontal flip; view 1 = flip + ColorJitter(0.4,
0.4, 0.2, 0.1) with p 0.8 + grayscale with p 0.2. The target is the teacher embedding of the
original (un-augmented) view, read from the memory-mapped cache. Loss: per-image RMSE
||f(view) - t||_2 / sqrt(emb_dim), averaged over the batch and the two views (a mean over
images, so DDP's gradient averaging equals one big batch). Images whose cache row is not ok
(undecodable at cache time) are never used.

Augmentation randomness comes from a generator seeded by (seed, epoch, image index), not from
worker or global RNG state, so the views of an image do not depend on the number of workers
or processes, and a resumed run sees exactly the views the interrupted one would have.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torchvision import transforms

from lipsim.embcache import EmbeddingCache, load_train_image


def _item_seed(seed: int, epoch: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0]
               % (2**63 - 1))


class DistillDataset(torch.utils.data.Dataset):
    """(view0, view1, target, index) over the ok rows of an embedding cache."""

    def __init__(self, cache: EmbeddingCache, images: str | os.PathLike, image_size: int,
                 *, seed: int = 0, augment: bool = True, preload: bool | None = None):
        self.cache, self.images, self.image_size = cache, Path(images), int(image_size)
        self.items = np.flatnonzero(cache.ok)  # cache rows usable for training
        self.seed, self.augment, self.epoch = int(seed), bool(augment), 0
        self.flip = transforms.RandomHorizontalFlip(0.5)
        self.colour = transforms.Compose([
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
        ])
        # Small sets (the demo) are decoded once: decoding PNGs would dominate the step.
        self._decoded = None
        if preload or (preload is None and len(self.items) * 3 * self.image_size ** 2 <= 16e6):
            self._decoded = torch.stack([self._load(int(i)) for i in self.items])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, row: int) -> torch.Tensor:
        return load_train_image(self.images / self.cache.paths[row], self.image_size)

    def __getitem__(self, i: int):
        row = int(self.items[i])
        img = self._decoded[i] if self._decoded is not None else self._load(row)
        target = torch.from_numpy(self.cache[row])
        if not self.augment:
            return img, img, target, row
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_item_seed(self.seed, self.epoch, row))
            v0 = self.flip(img)
            v1 = self.colour(self.flip(img))
        return v0, v1, target, row


def rmse_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # The epsilon keeps the sqrt differentiable at an exact fit.
    return (pred - target).square().mean(dim=1).add(1e-12).sqrt()


class DistillTask:
    def __init__(self, dataset: DistillDataset):
        self.dataset = dataset

    def loss(self, model: nn.Module, batch, device: torch.device):
        v0, v1, target, _ = batch
        b = v0.shape[0]
        # One forward over both views (one DDP forward per step).
        out = model(torch.cat([v0, v1]).to(device, non_blocking=True)).float()
        target = target.to(device, non_blocking=True).float()
        loss = 0.5 * (rmse_per_image(out[:b], target).mean() + rmse_per_image(out[b:], target).mean())
        return loss, 2 * b
