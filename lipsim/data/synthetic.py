"""Demo data: a NIGHT-format 2AFC set and natural-ish image folders, generated from a seed.

Everything is a pure function of the seed and the sizes: the same call writes byte-identical
files (each item draws from its own generator `default_rng([seed, tag, i])`, so an item does
not depend on how many came before it, and PNGs are written without timestamps).

Reference images are procedural "natural-ish" pictures: a smooth colour field (a few low
frequency sinusoids per channel), some soft-edged shapes and an optional texture. Each triplet
distorts its reference twice with distortions of known strength s in (0, 1] (blur, noise,
colour shift, JPEG, warp, contrast, pixelation). A simulated observer panel votes for the less
distorted image with logistic noise, so the demo labels are learnable but not clean; some
rows get fewer than 6 votes (to exercise NIGHT's votes >= 6 filter) and some are exact ties.

The written data.csv follows NIGHT: columns id, left_vote, right_vote, votes, ref_path,
left_path, right_path, split (train / val / test), is_imagenet (True / False), prompt, with
left_vote / right_vote the *shares* of votes (right_vote = p, the share for x1 = distort _1),
and paths relative to the folder holding data.csv.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from lipsim.data import atomic_dir
from lipsim.data.night import COLUMNS as NIGHT_COLUMNS

__all__ = ["DISTORTIONS", "make_image_folder", "make_night", "procedural_image"]

# Observer model: P(vote for x1) = sigmoid((s0 - s1) / _OBSERVER_TEMPERATURE).
_OBSERVER_TEMPERATURE = 0.12
# Panel sizes and their probabilities; sizes below 6 are dropped by the NIGHT loader.
_PANEL_SIZES = np.array([4, 5, 6, 6, 6, 6, 7, 7, 8, 9, 10, 12])
_PER_FOLDER = 100  # NIGHT groups files into numbered folders: ref/XXX/YYY.png

_COLOURS = {
    "red": (0.85, 0.15, 0.1),
    "green": (0.15, 0.7, 0.2),
    "blue": (0.15, 0.3, 0.85),
    "yellow": (0.95, 0.85, 0.15),
    "purple": (0.55, 0.2, 0.7),
    "orange": (0.95, 0.55, 0.1),
    "white": (0.95, 0.95, 0.95),
    "black": (0.06, 0.06, 0.06),
}
_SHAPES = ("circle", "square", "triangle", "ring")
_TEXTURES = ("smooth", "striped", "checkered", "speckled")


# --------------------------------------------------------------------------- images
def procedural_image(
    rng: np.random.Generator, size: int, *, palette=None
) -> tuple[np.ndarray, str]:
    """A natural-ish float image (size, size, 3) in [0, 1] and a caption describing it.

    `palette` (an (r, g, b) tuple) biases the colours, which is how class-conditional images
    for the ImageNet-like folder differ between classes.
    """
    v, u = np.mgrid[0:size, 0:size].astype(np.float64) / max(size - 1, 1)
    base = np.asarray(palette if palette is not None else rng.uniform(0.2, 0.8, 3))
    img = np.empty((size, size, 3))
    for c in range(3):
        field = np.full((size, size), base[c])
        for _ in range(3):  # low-frequency colour variation, like lighting / sky / ground
            fx, fy = rng.uniform(-2.5, 2.5, 2)
            field += rng.uniform(0.03, 0.15) * np.sin(
                2 * np.pi * (fx * u + fy * v) + rng.uniform(0, 2 * np.pi)
            )
        img[..., c] = field
    texture = _TEXTURES[rng.integers(len(_TEXTURES))]
    amp = rng.uniform(0.05, 0.15)
    if texture == "striped":
        freq, angle = rng.uniform(3, 8), rng.uniform(0, np.pi)
        img += amp * np.sin(2 * np.pi * freq * (np.cos(angle) * u + np.sin(angle) * v))[..., None]
    elif texture == "checkered":
        k = rng.uniform(3, 6)
        img += amp * (np.sign(np.sin(2 * np.pi * k * u) * np.sin(2 * np.pi * k * v)))[..., None]
    elif texture == "speckled":
        img += amp * rng.standard_normal((size, size, 1))
    names = list(_COLOURS)
    caption_shape, caption_colour = None, None
    for _ in range(int(rng.integers(1, 4))):
        shape = _SHAPES[rng.integers(len(_SHAPES))]
        cname = names[rng.integers(len(names))]
        colour = np.asarray(_COLOURS[cname]) + rng.uniform(-0.08, 0.08, 3)
        cx, cy = rng.uniform(0.2, 0.8, 2)
        r = rng.uniform(0.1, 0.3)
        if shape == "circle":
            dist = np.hypot(u - cx, v - cy) - r
        elif shape == "square":
            dist = np.maximum(np.abs(u - cx), np.abs(v - cy)) - r
        elif shape == "ring":
            dist = np.abs(np.hypot(u - cx, v - cy) - r) - r / 3
        else:  # triangle: intersection of three half-planes
            angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2, 4]) * np.pi / 3
            dist = (
                np.max([(u - cx) * np.cos(a) + (v - cy) * np.sin(a) for a in angles], axis=0)
                - r / 2
            )
        # Soft edge (about one pixel) so shapes are not aliased at small sizes.
        alpha = np.clip(0.5 - dist * size, 0.0, 1.0)[..., None]
        img = img * (1 - alpha) + colour * alpha
        caption_shape, caption_colour = shape, cname
    article = "an" if caption_colour[0] in "aeiou" else "a"
    caption = f"{article} {caption_colour} {caption_shape} on a {texture} background"
    return np.clip(img, 0.0, 1.0), caption


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _blur(img, s, rng):
    radius = (0.3 + 2.5 * s) * img.shape[0] / 32
    out = Image.fromarray(_to_uint8(img)).filter(ImageFilter.GaussianBlur(radius))
    return np.asarray(out, dtype=np.float64) / 255.0


def _noise(img, s, rng):
    return img + rng.normal(0.0, 0.02 + 0.2 * s, img.shape)


def _colour(img, s, rng):
    direction = rng.standard_normal(3)
    return img + 0.35 * s * direction / np.linalg.norm(direction)


def _jpeg(img, s, rng):
    buf = io.BytesIO()
    Image.fromarray(_to_uint8(img)).save(buf, format="JPEG", quality=int(round(95 - 90 * s)))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB"), dtype=np.float64) / 255.0


def _warp(img, s, rng):
    n = img.shape[0]
    y, x = np.mgrid[0:n, 0:n].astype(np.float64)
    amp = 0.08 * s * n
    f1, f2 = rng.uniform(0.5, 2.0, 2)
    p1, p2 = rng.uniform(0, 2 * np.pi, 2)
    xs = np.clip(x + amp * np.sin(2 * np.pi * f1 * y / n + p1), 0, n - 1)
    ys = np.clip(y + amp * np.sin(2 * np.pi * f2 * x / n + p2), 0, n - 1)
    # Bilinear resampling at the displaced coordinates.
    x0, y0 = np.floor(xs).astype(int), np.floor(ys).astype(int)
    x1, y1 = np.minimum(x0 + 1, n - 1), np.minimum(y0 + 1, n - 1)
    wx, wy = (xs - x0)[..., None], (ys - y0)[..., None]
    top = img[y0, x0] * (1 - wx) + img[y0, x1] * wx
    bottom = img[y1, x0] * (1 - wx) + img[y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def _contrast(img, s, rng):
    mean = img.mean(axis=(0, 1), keepdims=True)
    return mean + (img - mean) * (1.0 - 0.8 * s)


def _pixelate(img, s, rng):
    n = img.shape[0]
    factor = 1 + int(round(s * 5))
    small = Image.fromarray(_to_uint8(img)).resize((max(1, n // factor),) * 2, Image.BOX)
    return np.asarray(small.resize((n, n), Image.NEAREST), dtype=np.float64) / 255.0


# name -> f(img, strength, rng); the strength scale of each is tuned so s = 1 is "very visible".
DISTORTIONS = {
    "blur": _blur,
    "noise": _noise,
    "colour": _colour,
    "jpeg": _jpeg,
    "warp": _warp,
    "contrast": _contrast,
    "pixelate": _pixelate,
}


def _save_png(img_u8: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # No metadata chunks and a fixed compression level: identical pixels -> identical bytes.
    Image.fromarray(img_u8).save(path, format="PNG", compress_level=6)


# --------------------------------------------------------------------------- NIGHT
def _triplet(seed: int, i: int, size: int):
    rng = np.random.default_rng([seed, 1, i])
    ref, caption = procedural_image(rng, size)
    names = list(DISTORTIONS)
    kind0 = names[rng.integers(len(names))]
    # Half the triplets compare two strengths of the same distortion (an easy, clean signal),
    # half compare different distortions (harder, as in NIGHT where both vary freely).
    kind1 = kind0 if rng.random() < 0.5 else names[rng.integers(len(names))]
    s0 = rng.uniform(0.05, 1.0)
    s1 = rng.uniform(0.05, 1.0)
    if abs(s0 - s1) < 0.05:  # "two distortions of different strengths"
        s1 = s0 + 0.05 if s0 < 0.9 else s0 - 0.05
    x0 = np.clip(DISTORTIONS[kind0](ref, s0, rng), 0, 1)
    x1 = np.clip(DISTORTIONS[kind1](ref, s1, rng), 0, 1)
    votes = int(_PANEL_SIZES[rng.integers(len(_PANEL_SIZES))])
    if i % 16 == 5:  # a guaranteed exact tie every 16 rows (p = 0.5 rows score 0.5 always)
        votes, right = 6, 3
    else:
        p_right = 1.0 / (1.0 + np.exp(-(s0 - s1) / _OBSERVER_TEMPERATURE))
        right = int(rng.binomial(votes, p_right))
    return ref, x0, x1, votes, right, caption, (kind0, s0, kind1, s1)


def _share(k: int, n: int) -> str:
    return f"{k / n:.6g}"


def make_night(
    out: str | os.PathLike,
    *,
    seed: int = 0,
    n_train: int = 256,
    n_val: int = 32,
    n_test: int = 128,
    image_size: int = 32,
) -> Path:
    """Write a NIGHT-layout demo set to `out` (replacing it atomically) and return its path.

    Rows are ids 0..N-1: train first, then val, then test; test rows alternate is_imagenet
    True / False so both test splits exist; train/val rows draw is_imagenet at random.
    """
    if min(n_train, n_val, n_test) < 0 or n_train + n_val + n_test == 0:
        raise ValueError("make_night: n_train, n_val, n_test must be >= 0 and not all 0")
    if image_size < 8:
        raise ValueError(f"make_night: image_size must be >= 8, got {image_size}")
    out = Path(out)
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    with atomic_dir(out) as tmp:
        rows = []
        for i, split in enumerate(splits):
            ref, x0, x1, votes, right, caption, _ = _triplet(seed, i, image_size)
            folder, name = f"{i // _PER_FOLDER:03d}", f"{i % _PER_FOLDER:03d}"
            paths = (
                f"ref/{folder}/{name}.png",
                f"distort/{folder}/{name}_0.png",
                f"distort/{folder}/{name}_1.png",
            )
            for img, rel in zip((ref, x0, x1), paths, strict=True):
                _save_png(_to_uint8(img), tmp / rel)
            if split == "test":
                is_imagenet = i % 2 == 0
            else:
                is_imagenet = bool(np.random.default_rng([seed, 2, i]).random() < 0.5)
            rows.append(
                [
                    i,
                    _share(votes - right, votes),
                    _share(right, votes),
                    votes,
                    *paths,
                    split,
                    str(is_imagenet),
                    caption,
                ]
            )
        with open(tmp / "data.csv", "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(NIGHT_COLUMNS)  # the header NIGHT's data.csv has
            writer.writerows(rows)
    return out


# --------------------------------------------------------------------------- image folders
def make_image_folder(
    out: str | os.PathLike,
    *,
    layout: str = "imagenet",
    seed: int = 1,
    classes: int = 8,
    per_class: int = 40,
    n: int = 64,
    image_size: int = 32,
) -> Path:
    """Write a demo image folder to `out` (replacing it atomically) and return its path.

    layout "imagenet": out/train/n{k:08d}/n{k:08d}_{j:05d}.png, `classes` x `per_class`
    images whose colours depend on the class (so classes are distinguishable).
    layout "flat": out/img_{j:05d}.png, `n` images (stands in for COCO / natural images).
    """
    out = Path(out)
    if layout not in ("imagenet", "flat"):
        raise ValueError(f"make_image_folder: layout must be 'imagenet' or 'flat', got {layout!r}")
    with atomic_dir(out) as tmp:
        if layout == "imagenet":
            if classes < 1 or per_class < 1:
                raise ValueError("make_image_folder: classes and per_class must be >= 1")
            for k in range(classes):
                palette = np.random.default_rng([seed, 3, k]).uniform(0.15, 0.85, 3)
                cls = f"n{k:08d}"
                for j in range(per_class):
                    rng = np.random.default_rng([seed, 4, k, j])
                    img, _ = procedural_image(rng, image_size, palette=palette)
                    _save_png(_to_uint8(img), tmp / "train" / cls / f"{cls}_{j:05d}.png")
        else:
            if n < 1:
                raise ValueError("make_image_folder: n must be >= 1")
            tmp.mkdir(exist_ok=True)
            for j in range(n):
                img, _ = procedural_image(np.random.default_rng([seed, 5, j]), image_size)
                _save_png(_to_uint8(img), tmp / f"img_{j:05d}.png")
    return out
