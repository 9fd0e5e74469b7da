"""Distillation (LipSim step 1): regress cached teacher embeddings with the 1-Lipschitz
student f (no projection).

Each item is one cached image seen in two views at the preset's image size, cropped the way
`crop` says (lipsim.embcache.load_train_image: `resize_center` = shorter side resized, then
centre crop; `center` = the authors' centre crop of the full-resolution image, no resize):
view 0 = random horizontal flip; view 1 = flip + ColorJitter(0.4, 0.4, 0.2, 0.1) with p 0.8
+ grayscale with p 0.2 (its own flip draw), applied as `jitter_input` says:
  float   to the float image (no rounding between the colour operations)
  uint8   to the 8-bit PIL image, each operation rounding to 8 bits, then back to [0, 1]
          (the authors' pipeline: the same random draws, pixels up to ~0.05 apart). The target of both views is a teacher embedding
read from the memory-mapped cache, of
  teacher_view = original   the un-augmented image, or
  teacher_view = flipped    view 0 itself (the authors' trainer embeds view 0 online): the
                            embedding of the mirrored image, from a second cache filled with
                            `cache-fill --mirror`, when view 0 was flipped.
Loss: RMSE between f(view) and the target, averaged over the two views, reduced over the
batch as `rmse_reduction` says (see batch_rmse). Images whose cache row is not ok
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
from torchvision.transforms import functional as TF

from lipsim.embcache import EmbeddingCache, load_train_image

TEACHER_VIEWS = ("original", "flipped")
RMSE_REDUCTIONS = ("image", "batch")
JITTER_INPUTS = ("float", "uint8")


def _item_seed(seed: int, epoch: int, index: int) -> int:
    return int(
        np.random.SeedSequence([seed, epoch, index]).generate_state(1, np.uint64)[0] % (2**63 - 1)
    )


class DistillDataset(torch.utils.data.Dataset):
    """(view0, view1, target, index) over the ok rows of an embedding cache.

    teacher_view "flipped" needs `mirror`: the cache of the same image list filled with
    `cache-fill --mirror` (teacher embeddings of the horizontally mirrored crops).
    """

    def __init__(
        self,
        cache: EmbeddingCache,
        images: str | os.PathLike,
        image_size: int,
        *,
        crop: str,
        teacher_view: str,
        jitter_input: str,
        mirror: EmbeddingCache | None = None,
        seed: int = 0,
        augment: bool = True,
        preload: bool | None = None,
    ):
        if teacher_view not in TEACHER_VIEWS:
            raise ValueError(
                f"--teacher-view must be one of {', '.join(TEACHER_VIEWS)}, got {teacher_view!r}"
            )
        if (teacher_view == "flipped") != (mirror is not None):
            raise ValueError(
                "--teacher-view flipped needs the mirrored cache (--mirror-cache-dir)"
                " and --teacher-view original must not be given one"
            )
        if jitter_input not in JITTER_INPUTS:
            raise ValueError(
                f"--jitter-input must be one of {', '.join(JITTER_INPUTS)}, got {jitter_input!r}"
            )
        if mirror is not None and mirror.paths != cache.paths:
            raise ValueError(
                f"the mirrored cache {mirror.cache_dir} lists other images than {cache.cache_dir}"
            )
        self.cache, self.images, self.image_size = cache, Path(images), int(image_size)
        self.crop, self.teacher_view, self.mirror = crop, teacher_view, mirror
        self.jitter_input = jitter_input
        ok = cache.ok if mirror is None else cache.ok & mirror.ok
        self.items = np.flatnonzero(ok)  # cache rows usable for training
        self.seed, self.augment, self.epoch = int(seed), bool(augment), 0
        self.flip = transforms.RandomHorizontalFlip(0.5)
        self.colour = transforms.Compose(
            [
                transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
                transforms.RandomGrayscale(p=0.2),
            ]
        )
        # Small sets (the demo) are decoded once: decoding PNGs would dominate the step.
        self._decoded = None
        if preload or (preload is None and len(self.items) * 3 * self.image_size**2 <= 16e6):
            self._decoded = torch.stack([self._load(int(i)) for i in self.items])

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, row: int) -> torch.Tensor:
        return load_train_image(
            self.images / self.cache.paths[row], self.image_size, crop=self.crop
        )

    def _view1(self, img: torch.Tensor) -> torch.Tensor:
        if self.jitter_input == "float":
            return self.colour(self.flip(img))
        # img holds k / 255 exactly (load_train_image): rounding recovers the 8-bit pixels.
        pil = TF.to_pil_image(img.mul(255).round().to(torch.uint8))
        return TF.to_tensor(self.colour(self.flip(pil)))

    def __getitem__(self, i: int):
        row = int(self.items[i])
        img = self._decoded[i] if self._decoded is not None else self._load(row)
        if not self.augment:
            return img, img, torch.tensor(self.cache[row]), row
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_item_seed(self.seed, self.epoch, row))
            # The draw RandomHorizontalFlip(0.5) makes, done here to know its outcome.
            flipped = bool(torch.rand(1) < self.flip.p)
            v0 = img.flip(-1) if flipped else img
            v1 = self._view1(img)
        source = self.mirror if flipped and self.teacher_view == "flipped" else self.cache
        return v0, v1, torch.tensor(source[row]), row


def rmse_per_image(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    # The epsilon keeps the sqrt differentiable at an exact fit.
    return (pred - target).square().mean(dim=1).add(1e-12).sqrt()


def batch_rmse(pred: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """RMSE of a batch of embeddings (B, D) against their targets, reduced over the batch:

      image  mean over images of sqrt(mean over dims of (pred - target)^2)
      batch  sqrt(mean over images and dims of (pred - target)^2) -- the authors'
             (torch.sqrt(nn.MSELoss()(pred, target)))

    With DDP the gradients are averaged over ranks, i.e. the loss is the mean over ranks of
    each rank's value. For `image` that is the image mean of the global batch (N processes with
    batch b train as one with batch N b). For `batch` it is the mean of per-rank RMSEs, which
    is not the RMSE of the global batch (sqrt does not commute with the mean): the authors ran
    that way too (4 nodes x 4 GPUs, batch 32 each), so a run on another process count follows
    a slightly different loss.
    """
    if reduction == "image":
        return rmse_per_image(pred, target).mean()
    if reduction == "batch":
        return (pred - target).square().mean().add(1e-12).sqrt()
    raise ValueError(
        f"--rmse-reduction must be one of {', '.join(RMSE_REDUCTIONS)}, got {reduction!r}"
    )


class DistillTask:
    def __init__(self, dataset: DistillDataset, *, rmse_reduction: str):
        if rmse_reduction not in RMSE_REDUCTIONS:
            raise ValueError(
                f"--rmse-reduction must be one of {', '.join(RMSE_REDUCTIONS)}, "
                f"got {rmse_reduction!r}"
            )
        self.dataset, self.rmse_reduction = dataset, rmse_reduction

    def loss(self, model: nn.Module, batch, device: torch.device):
        v0, v1, target, _ = batch
        b = v0.shape[0]
        # One forward over both views (one DDP forward per step).
        out = model(torch.cat([v0, v1]).to(device, non_blocking=True)).float()
        target = target.to(device, non_blocking=True).float()
        r = self.rmse_reduction
        loss = 0.5 * (batch_rmse(out[:b], target, r) + batch_rmse(out[b:], target, r))
        return loss, 2 * b
