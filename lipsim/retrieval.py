"""Metric change under attack on single images: figure 3b distances and image retrieval.

Embedding-change attack (`push_away`): for an image x, l2 PGD finds delta with
||delta||_2 <= eps (and x + delta in [0, 1]) maximising d(x, x + delta) -- for embedding
metrics d is computed from x's embedding, cached, and the embedding of x + delta, i.e. the
attack maximises the metric's embedding change; for other metrics (LPIPS, DISTS) d(x, .)
directly. Every start is random (d(x, .) is minimal at x, where its gradient vanishes), seeded
per image from the run seed and the image's path (lipsim.attacks.pgd.row_seed).

Figure 3b (`attacked_distances`): the distribution of d(x, x + delta) over natural images.

Retrieval (`retrieval_recall`), defined here (the paper shows it qualitatively and the
public code has none):
- gallery G = every image of the folder; queries Q = n_queries gallery images drawn with the
  seed; for each eps the query is the attacked copy q' = push_away(q, eps) (eps = 0: q itself);
- distractors: `distractors` near-duplicates of each query join the gallery, q plus Gaussian
  noise of per-pixel std `distractor_noise` (seeded from the run seed and q's path) --
  visibly noisier copies (l2 norm ~ distractor_noise x sqrt(3 S^2), 1.7 at 32 px for 0.03)
  that are not the original. Other images are far apart in any decent metric, so without them
  recall saturates; with them an attack of radius eps (far below the noise's norm) that moves
  q' further from q than the noise does shows up as a miss;
- gallery images are ranked by d(q', g) (ascending; ties by gallery order);
- recall@k = share of queries whose own clean image q is among the k first -- whether the
  attacked copy still retrieves its original (1.0 at eps = 0 for a metric with d(x, x)
  minimal; LipSim's d(x, x) = 1 - ||phi(x)||^2 can exceed d(x, y) when ||phi(x)|| < 1, and
  that shows here);
- neighbour_overlap@k = mean |N_k(q') ∩ N_k(q)| / k with N_k the k nearest folder images
  (distractors left out) other than q itself -- whether the attacked copy retrieves the same
  neighbours.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lipsim.attacks.norms import lp_norm
from lipsim.attacks.pgd import pgd_maximize, row_seed
from lipsim.data.folders import IMAGE_SUFFIXES
from lipsim.errors import LipSimError


def list_images(root: str | os.PathLike) -> list[str]:
    """Image files under root (recursive), as sorted paths relative to root."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {root}")
    return files


def pick(items: Sequence[str], n: int, seed: int) -> list[str]:
    """n items drawn with `seed`, in their original order (all when n <= 0 or n >= len)."""
    if n <= 0 or n >= len(items):
        return list(items)
    keep = np.sort(np.random.default_rng(seed).choice(len(items), size=n, replace=False))
    return [items[i] for i in keep]


def load_images(root, rel_paths: Sequence[str], image_size: int) -> torch.Tensor:
    from lipsim.data.night import load_image

    return torch.stack([load_image(Path(root) / r, image_size) for r in rel_paths])


def _batches(n: int, size: int):
    for lo in range(0, n, max(size, 1)):
        yield slice(lo, min(n, lo + size))


def push_away(
    metric,
    x: torch.Tensor,
    *,
    eps: float,
    steps: int,
    seeds: Sequence[int],
    step_size: float | None = None,
    restarts: int = 1,
) -> torch.Tensor:
    """x + delta maximising d(x, x + delta) over the l2 eps-ball (see the module docstring)."""
    if eps == 0:
        return x.detach().clone()
    with torch.no_grad():
        e_clean = metric.embed(x).detach() if getattr(metric, "has_embedding", False) else None

    def objective(z: torch.Tensor) -> torch.Tensor:
        if e_clean is not None:
            return metric.distance_from_embeddings(e_clean, metric.embed(z)).reshape(-1)
        return metric(x, z).reshape(-1)

    x_adv, _ = pgd_maximize(
        objective,
        x,
        norm="L2",
        eps=eps,
        steps=steps,
        step_size=step_size,
        restarts=restarts,
        seeds=seeds,
        random_start="always",
    )
    return x_adv


@torch.no_grad()
def _pair_distance(metric, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    if getattr(metric, "has_embedding", False):
        ea, eb = metric.embed(a).double(), metric.embed(b).double()
        d = metric.distance_from_embeddings(ea, eb)
    else:
        d = metric(a, b)
    return d.reshape(-1).double().cpu().numpy()


def attacked_distances(
    metric,
    root,
    rel_paths: Sequence[str],
    *,
    image_size: int,
    eps: float,
    steps: int,
    seed: int,
    batch_size: int,
    device,
    step_size: float | None = None,
    restarts: int = 1,
) -> pd.DataFrame:
    """Figure 3b: per image, d(x, x + delta) after push_away. Columns image, eps, distance,
    delta_norm (l2)."""
    from lipsim.attacks.adapter import frozen

    parts = []
    with frozen(metric):
        for sl in _batches(len(rel_paths), batch_size):
            names = list(rel_paths[sl])
            x = load_images(root, names, image_size).to(device)
            x_adv = push_away(
                metric,
                x,
                eps=eps,
                steps=steps,
                step_size=step_size,
                restarts=restarts,
                seeds=[row_seed(seed, n) for n in names],
            )
            parts.append(
                pd.DataFrame(
                    {
                        "image": names,
                        "eps": float(eps),
                        "distance": _pair_distance(metric, x, x_adv),
                        "delta_norm": lp_norm(x_adv - x, "L2").cpu().numpy(),
                    }
                )
            )
    return pd.concat(parts, ignore_index=True)


@torch.no_grad()
def _gallery_distances(
    metric,
    queries: torch.Tensor,
    gallery: torch.Tensor,
    gallery_emb: torch.Tensor | None,
    batch_size: int,
) -> np.ndarray:
    """(Q, G) matrix of d(query, gallery image)."""
    out = np.empty((queries.shape[0], gallery.shape[0]))
    if gallery_emb is not None:
        # distance_from_embeddings is row-wise over the last dim, so it broadcasts over a
        # (queries, gallery chunk, dim) grid; chunks keep that grid ~2^24 numbers.
        eq = torch.cat(
            [metric.embed(queries[sl]).double() for sl in _batches(queries.shape[0], batch_size)]
        )
        chunk = max(1, (1 << 24) // max(1, eq.shape[0] * eq.shape[1]))
        for sl in _batches(gallery_emb.shape[0], chunk):
            eg = gallery_emb[sl]
            d = metric.distance_from_embeddings(
                eq[:, None, :].expand(-1, eg.shape[0], -1),
                eg[None, :, :].expand(eq.shape[0], -1, -1),
            )
            out[:, sl] = d.cpu().numpy()
        return out
    for i in range(queries.shape[0]):
        for sl in _batches(gallery.shape[0], batch_size):
            g = gallery[sl]
            out[i, sl] = (
                metric(queries[i : i + 1].expand(g.shape[0], *g.shape[1:]), g).cpu().numpy()
            )
    return out


def _ranking(dist: np.ndarray) -> np.ndarray:
    # stable: ties keep gallery order, so results do not depend on sort internals
    return np.argsort(dist, axis=1, kind="stable")


def noisy_copies(
    x: torch.Tensor, names: Sequence[str], *, n: int, noise: float, seed: int
) -> torch.Tensor:
    """n copies of each image with Gaussian noise of per-pixel std `noise`, clipped to [0, 1],
    seeded per image path: (len(x) * n, ...) in image-major order."""
    out = []
    for img, name in zip(x, names, strict=True):
        for j in range(n):
            g = torch.Generator().manual_seed(row_seed(seed, f"{name}#distractor{j}"))
            z = torch.randn(img.shape, generator=g).to(img.device, img.dtype)
            out.append((img + noise * z).clamp(0.0, 1.0))
    return torch.stack(out) if out else x[:0]


def retrieval_recall(
    metric,
    root,
    *,
    image_size: int,
    n_queries: int,
    eps_list: Sequence[float],
    ks: Sequence[int],
    steps: int,
    seed: int,
    batch_size: int,
    device,
    distractors: int = 0,
    distractor_noise: float = 0.0,
) -> pd.DataFrame:
    """Rows (eps, k, recall, neighbour_overlap, n_queries, gallery_size, distractors); see
    module doc."""
    from lipsim.attacks.adapter import frozen

    if distractors < 0 or distractor_noise < 0:
        raise LipSimError(
            f"retrieval: distractors ({distractors}) and distractor_noise "
            f"({distractor_noise}) must be >= 0"
        )
    names = list_images(root)
    query_names = pick(names, n_queries, seed)
    qidx = np.asarray([names.index(q) for q in query_names])
    n_folder = len(names)
    if max(ks) >= n_folder:
        raise ValueError(
            f"k={max(ks)} needs a gallery of more than {max(ks)} images; {root} has {n_folder}"
        )
    rows = []
    with frozen(metric):
        folder = load_images(root, names, image_size).to(device)
        clean = folder[torch.as_tensor(qidx, device=folder.device)]
        gallery = torch.cat(
            [
                folder,
                noisy_copies(clean, query_names, n=distractors, noise=distractor_noise, seed=seed),
            ]
        )
        gallery_emb = None
        if getattr(metric, "has_embedding", False):
            gallery_emb = torch.cat(
                [metric.embed(gallery[sl]).double() for sl in _batches(len(gallery), batch_size)]
            )
        d_clean = _gallery_distances(metric, clean, gallery, gallery_emb, batch_size)
        d_clean[np.arange(len(qidx)), qidx] = np.inf  # neighbours other than the query itself
        d_clean[:, n_folder:] = np.inf  # and other than the distractors
        clean_rank = _ranking(d_clean)
        for eps in eps_list:
            attacked = torch.cat(
                [
                    push_away(
                        metric,
                        clean[sl],
                        eps=float(eps),
                        steps=steps,
                        seeds=[row_seed(seed, n) for n in query_names[sl]],
                    )
                    for sl in _batches(len(qidx), batch_size)
                ]
            )
            d = _gallery_distances(metric, attacked, gallery, gallery_emb, batch_size)
            rank = _ranking(d)
            d_other = d.copy()
            d_other[np.arange(len(qidx)), qidx] = np.inf
            d_other[:, n_folder:] = np.inf
            other_rank = _ranking(d_other)
            for k in ks:
                hit = (rank[:, :k] == qidx[:, None]).any(axis=1)
                overlap = [
                    len(set(other_rank[i, :k]) & set(clean_rank[i, :k])) / k
                    for i in range(len(qidx))
                ]
                rows.append(
                    {
                        "eps": float(eps),
                        "k": int(k),
                        "recall": float(hit.mean()),
                        "neighbour_overlap": float(np.mean(overlap)),
                        "n_queries": len(qidx),
                        "gallery_size": len(gallery),
                        "distractors": int(distractors),
                    }
                )
    return pd.DataFrame(rows)


__all__ = [
    "attacked_distances",
    "list_images",
    "load_images",
    "noisy_copies",
    "pick",
    "push_away",
    "retrieval_recall",
]
