"""Natural 2AFC evaluation of any metric on NIGHT triplets."""

from __future__ import annotations

import numpy as np
import torch

from lipsim.similarity import SimilarityMetric


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
    """Natural scores per triplet: DataFrame id, split, p, d0, d1, score (2AFC), correct (the
    authors' accuracy), in loader order; lipsim.scoring.triplet_scores."""
    from lipsim.scoring import triplet_scores, triplet_table

    metric.eval()

    def batch_columns(ref, x0, x1, p, index):
        d0, d1 = triplet_distances(metric, *(t.to(device) for t in (ref, x0, x1)))
        return {"p": p, "d0": d0, "d1": d1, **triplet_scores(d0, d1, p)}

    columns = ["id", "split", "p", "d0", "d1", "score", "correct"]
    return triplet_table(loader, ids, splits, columns, batch_columns)
