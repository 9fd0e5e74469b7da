"""Certified 2AFC: the l2 radius around the reference within which a decision cannot flip.

With phi = P o f 1-Lipschitz (P the unit-ball projection), d(x, y) = ||phi(x) - phi(y)||^2 / 2
(= 1 - cos(f(x), f(y)) where ||f|| >= 1) and only the reference x perturbed:

    d0 - d1 = <phi(x), phi(x1) - phi(x0)> + (||phi(x0)||^2 - ||phi(x1)||^2) / 2,

a function of x that is ||phi(x1) - phi(x0)||-Lipschitz (Cauchy-Schwarz + phi 1-Lipschitz;
the second term does not depend on x).
Its sign, hence the decision, cannot change while ||delta||_2 < R with

    R = |d0 - d1| / ||phi(x0) - phi(x1)||_2 .

Since ||phi(x)|| <= 1, R <= 1 always. Edge cases (documented conventions):
- phi(x0) == phi(x1): then d0 == d1 for every reference (a tie, scoring 0.5 whatever p is,
  and no attack on x can change it). We set R = 0: a tie is never counted as certified.
- d0 == d1 with phi(x0) != phi(x1): R = 0 (the decision is a tie; any perturbation may move
  it either way), so the triplet is not certified.
- p = 0.5 rows: every decision scores 0.5; such a row is certified (contributing 0.5) exactly
  when R > eps, like any other row: the certified score stays a lower bound of the attacked
  score because a certified row keeps its score and every score is >= 0.

Floating point: embeddings are float32 and R is formed in float64 from them, so R carries a
relative error of order 1e-6 -- far below the spacing of the eps values (1/255 steps).

Certified score at eps: mean over triplets of score * [R > eps], in percent -- equal to the
natural score as eps -> 0 (except ties, which have R = 0) and a lower bound of the 2AFC
score under any l2 perturbation of the reference of norm <= eps.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
import torch

from lipsim.models.net import ball_distance
from lipsim.scoring import TEST_SPLITS, split_scores, triplet_table, twoafc

COLUMNS = ("id", "split", "p", "d0", "d1", "score", "radius")


def radius_from_embeddings(e_ref: torch.Tensor, e0: torch.Tensor,
                           e1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d0, d1, R) for projected embeddings (B, k); computed in float64.

    With d = ||a - b||^2 / 2 (lipsim.models.ball_distance),
    d0 - d1 = <e_ref, e1 - e0> + (||e0||^2 - ||e1||^2) / 2; the margin is computed in that form
    rather than as a difference of two distances close to each other, which keeps it
    accurate for near-ties. Only the first term depends on the reference.
    """
    e_ref, e0, e1 = (e.detach().double() for e in (e_ref, e0, e1))
    d0 = ball_distance(e_ref, e0)
    d1 = ball_distance(e_ref, e1)
    diff = e1 - e0
    margin = ((e_ref * diff).sum(-1) + 0.5 * (e0.square().sum(-1) - e1.square().sum(-1))).abs()
    gap = torch.linalg.vector_norm(diff, dim=-1)
    radius = torch.where(gap > 0, margin / torch.where(gap > 0, gap, 1.0),
                         torch.zeros_like(gap))
    radius = torch.where(d0 == d1, torch.zeros_like(radius), radius)
    return d0, d1, radius


@torch.no_grad()
def certify_triplets(metric, loader, device="cpu", ids=None, splits=None) -> pd.DataFrame:
    """Per-triplet d0, d1, 2AFC score and certified radius over a triplet loader.

    `loader` yields (ref, x0, x1, p, index) batches (lipsim.data.night.NightTriplets); ids and
    splits are read from `loader.dataset.df` at `index` unless given as sequences indexed by
    `index` (for in-memory loaders). `metric` is a lipsim.metric.LipSim.
    Columns: id, split, p, d0, d1, score, radius (one row per triplet, in loader order).
    """
    device = torch.device(device)
    if ids is None or splits is None:
        df = getattr(getattr(loader, "dataset", None), "df", None)
        if df is None:
            raise ValueError("certify_triplets: pass ids= and splits= for a loader whose "
                             "dataset has no `df` table")
        ids = df["id"].to_numpy() if ids is None else ids
        splits = df["split"].to_numpy() if splits is None else splits
    metric = metric.to(device).eval()

    def batch_columns(ref, x0, x1, p, index):
        e_ref, e0, e1 = (metric.embed(t.to(device)) for t in (ref, x0, x1))
        d0, d1, radius = (t.cpu().numpy() for t in radius_from_embeddings(e_ref, e0, e1))
        return {"p": p, "d0": d0, "d1": d1, "score": twoafc(d0, d1, p), "radius": radius}

    return triplet_table(loader, ids, splits, COLUMNS, batch_columns)


def certified_scores(df: pd.DataFrame, eps_list: Iterable[float]) -> dict:
    """Natural and certified scores (percent) per split and for 'test'.

    Returns {"natural": {split: score, ..., "test": ...},
             "certified": {eps: {split: score, ..., "test": ...}, ...}}
    where 'test' is the size-weighted mean over test_imagenet + test_no_imagenet
    (lipsim.scoring.split_scores) and eps are l2 radii in input units ([0, 1] pixels).
    A triplet counts at eps when radius > eps (strictly).
    """
    out = {"natural": split_scores(df, "score"), "certified": {}}
    radius = df["radius"].to_numpy(np.float64)
    for eps in eps_list:
        cert = df.assign(_cert=df["score"].to_numpy(np.float64) * (radius > float(eps)))
        out["certified"][float(eps)] = split_scores(cert, "_cert")
    return out


__all__ = ["COLUMNS", "TEST_SPLITS", "certified_scores", "certify_triplets",
           "radius_from_embeddings"]
