"""Certified 2AFC: the l2 radius around the reference within which a decision cannot flip.

Only the reference x is perturbed; f is the 1-Lipschitz net, r = ||f(x)||, and the two
LipSim metrics (lipsim.models.project) compare
    ball:    phi = P o f, P(z) = z / max(1, ||z||)   d = ||phi(x) - phi(y)||^2 / 2
    cosine:  u = N o f,  N(z) = z / ||z||           d = 1 - cos(f(x), f(y)) = ||u - u'||^2 / 2

Sound radius, ball. P is non-expansive, so phi is 1-Lipschitz, and
    d0 - d1 = <phi(x), phi(x1) - phi(x0)> + (||phi(x0)||^2 - ||phi(x1)||^2) / 2
is ||phi(x1) - phi(x0)||-Lipschitz in x (the second term does not depend on x). The sign,
hence the decision, holds while ||delta||_2 < R = |d0 - d1| / ||phi(x1) - phi(x0)||.

Sound radius, cosine. With e_i = N f(x_i) (unit vectors) and g = e1 - e0,
d0 - d1 = <N f(x), g> exactly, and its sign is the sign of <f(x), g> (N divides by a
positive number). Let H = {v : <v, g> = 0}, a hyperplane through the origin, and
m = |d0 - d1| / ||g|| (the distance of N f(x) to H; m <= 1 by Cauchy-Schwarz).
Proof that R = r m is sound: the distance of f(x) = r N f(x) to H is r m. If
||delta|| < r m then ||f(x + delta) - f(x)|| < r m (f 1-Lipschitz), so f(x + delta) lies
strictly on the same side of H as f(x): it is not 0 and <f(x + delta), g> has the sign of
<f(x), g>, so the decision is unchanged. It is also the largest radius that this argument
(Lipschitz f, nothing else) can give: the point f(x) - r m sign(<f(x), g>) g/||g|| is at
distance r m and lies on H (a tie).
The same result by angles: an eps-ball around f(x) (eps < r) tilts the direction by at most
arcsin(eps / r), and N f(x) is arcsin(m) away from H in angle, so the decision holds for
eps < r m. (A proposed variant, r m sqrt(1 - m^2/4) for m < sqrt 2 and r otherwise, reads m
as a chord on the sphere: it is sound, being <= r m, but loose by up to 13%, and its
m >= sqrt 2 branch never occurs since m <= 1.)

The authors' radius (their code, kept as `radius_authors`): m itself for the cosine metric,
i.e. it assumes N is 1-Lipschitz, which holds only outside the unit ball: it is sound where
r >= 1 and too large, by the factor 1 / r, where r < 1. For the ball metric their formula
applied to phi is the sound radius above.

Edge cases (documented conventions):
- d0 == d1 (a tie; includes phi(x0) == phi(x1)): the sound radius is 0, never certified.
  The authors' code gives a tie an infinite radius; `tie_radius="infinite"` reproduces that
  for `radius_authors` only (the sound radius of a tie stays 0).
- p = 0.5 rows score 0.5 whatever the metric says; kept (`half_votes="keep"`) such a row is
  certified like any other row, so the certified score stays a lower bound of the attacked
  score. The authors drop them (`half_votes="drop"`). Per-triplet files keep every row; the
  rule (lipsim.scoring.Rule) is applied when scores are computed.

Floating point: embeddings are float32 and R is formed in float64 from them, so R carries a
relative error of order 1e-6 -- far below the spacing of the eps values (1/255 steps).

Certified score at eps: mean over the rule's triplets of score * [R > eps], in percent -- with
the 2AFC score over every triplet, a lower bound of the 2AFC score under any l2 perturbation
of the reference of norm <= eps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from lipsim.errors import LipSimError
from lipsim.models.net import METRICS, ball_distance, project
from lipsim.scoring import (
    DREAMSIM,
    TEST_SPLITS,
    Rule,
    rule_scores,
    split_scores,
    triplet_scores,
    triplet_table,
)

COLUMNS = (
    "id",
    "split",
    "metric",
    "p",
    "d0",
    "d1",
    "score",
    "correct",
    "radius",
    "radius_authors",
    "norm",
)
# score = the 2AFC score, correct = the authors' accuracy (lipsim.scoring.triplet_scores).
TIE_RADIUS = ("zero", "infinite")


def distance_gap(
    e_ref: torch.Tensor, e0: torch.Tensor, e1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(d0 - d1, ||e1 - e0||) of projected embeddings e, differentiable, in their dtype.

    d0 - d1 is formed as <e_ref, e1 - e0> + (||e0||^2 - ||e1||^2) / 2 rather than as a
    difference of two close distances, which keeps near-ties accurate; |d0 - d1| divided by
    the chord ||e1 - e0|| is the authors' radius m.
    """
    g = e1 - e0
    gap = (e_ref * g).sum(-1) + 0.5 * (e0.square().sum(-1) - e1.square().sum(-1))
    return gap, torch.linalg.vector_norm(g, dim=-1)


def sound_factor(f_ref: torch.Tensor, metric: str) -> torch.Tensor:
    """R / m, the sound radius over the authors': ||f(ref)|| for cosine (the proof above), 1
    for ball (its formula is already sound). Differentiable, in f_ref's dtype."""
    if metric == "cosine":
        return torch.linalg.vector_norm(f_ref, dim=-1)
    return torch.ones_like(f_ref[..., 0])


def radii(
    f_ref: torch.Tensor, f0: torch.Tensor, f1: torch.Tensor, metric: str, tie_radius: str = "zero"
) -> dict[str, torch.Tensor]:
    """d0, d1, the sound radius, the authors' radius and ||f(ref)|| from raw embeddings f,
    float64 throughout."""
    if tie_radius not in TIE_RADIUS:
        raise ValueError(f"tie_radius must be one of {TIE_RADIUS}, got {tie_radius!r}")
    f_ref, f0, f1 = (f.detach().double() for f in (f_ref, f0, f1))
    e_ref, e0, e1 = (project(f, metric) for f in (f_ref, f0, f1))
    d0, d1 = ball_distance(e_ref, e0), ball_distance(e_ref, e1)
    margin, gap = distance_gap(e_ref, e0, e1)
    margin = margin.abs()
    tie = (d0 == d1) | (gap == 0)
    m = torch.where(tie, torch.zeros_like(gap), margin / torch.where(gap > 0, gap, 1.0))
    norm = torch.linalg.vector_norm(f_ref, dim=-1)
    sound = m * sound_factor(f_ref, metric)
    authors = m
    if tie_radius == "infinite":
        authors = torch.where(tie, torch.full_like(m, float("inf")), m)
    return {"d0": d0, "d1": d1, "radius": sound, "radius_authors": authors, "norm": norm}


def radius_from_embeddings(
    e_ref: torch.Tensor, e0: torch.Tensor, e1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d0, d1, R) for ball-projected embeddings phi (B, k): the ball metric's sound radius.

    Projected embeddings are their own projection, so this is radii(..., "ball").
    """
    r = radii(e_ref, e0, e1, "ball")
    return r["d0"], r["d1"], r["radius"]


@torch.no_grad()
def certify_triplets(
    metric,
    loader,
    device="cpu",
    ids=None,
    splits=None,
    metrics: Sequence[str] | None = None,
    tie_radius: str = "zero",
    on_part=None,
) -> pd.DataFrame:
    """Per-triplet distances, 2AFC score and radii over a triplet loader, per LipSim metric.

    `loader` yields (ref, x0, x1, p, index) batches (lipsim.data.night.NightTriplets); ids and
    splits are read from `loader.dataset.df` at `index` unless given as sequences indexed by
    `index`. `metric` is a lipsim.metric.LipSim; the raw embeddings f are computed once per
    batch and scored under each of `metrics` (default: the metric's own), long format.
    Columns: COLUMNS, one row per triplet and metric (metric-major order).
    """
    device = torch.device(device)
    metrics = tuple(metrics or (metric.metric,))
    for name in metrics:
        if name not in METRICS:
            raise LipSimError(f"certify: unknown metric {name!r}; choose from {METRICS}")
    if ids is None or splits is None:
        df = getattr(getattr(loader, "dataset", None), "df", None)
        if df is None:
            raise ValueError(
                "certify_triplets: pass ids= and splits= for a loader whose "
                "dataset has no `df` table"
            )
        ids = df["id"].to_numpy() if ids is None else ids
        splits = df["split"].to_numpy() if splits is None else splits
    metric = metric.to(device).eval()
    per_metric: dict[str, list[pd.DataFrame]] = {m: [] for m in metrics}

    def batch_columns(ref, x0, x1, p, index):
        f_ref, f0, f1 = (metric.raw_embed(t.to(device)) for t in (ref, x0, x1))
        first = None
        for name in metrics:
            cols = {k: v.cpu().numpy() for k, v in radii(f_ref, f0, f1, name, tie_radius).items()}
            cols = {
                "metric": name,
                "p": p,
                "d0": cols["d0"],
                "d1": cols["d1"],
                **triplet_scores(cols["d0"], cols["d1"], p),
                "radius": cols["radius"],
                "radius_authors": cols["radius_authors"],
                "norm": cols["norm"],
            }
            if first is None:
                first = cols
            else:
                per_metric[name].append(
                    pd.DataFrame(
                        {"id": np.asarray(ids)[index], "split": np.asarray(splits)[index], **cols}
                    )
                )
        return first

    head = triplet_table(loader, ids, splits, COLUMNS, batch_columns, on_part=on_part)
    parts = [head] + [
        pd.concat(per_metric[m], ignore_index=True)[list(COLUMNS)]
        for m in metrics[1:]
        if per_metric[m]
    ]
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else head


def certified_mask(radius, eps: float) -> np.ndarray:
    """A triplet is certified at eps when its radius is strictly larger (at R == eps a
    perturbation of norm eps may already tie the distances)."""
    return np.asarray(radius, dtype=np.float64) > float(eps)


def certified_scores(
    df: pd.DataFrame, eps_list: Iterable[float], radius: str = "radius", rule: Rule = DREAMSIM
) -> dict:
    """Natural and certified scores (percent) per split and for 'test', under `rule`.

    Returns {"natural": {split: score, ..., "test": ...},
             "certified": {eps: {split: score, ..., "test": ...}, ...}}
    where 'test' is the size-weighted mean over test_imagenet + test_no_imagenet
    (lipsim.scoring.split_scores) and eps are l2 radii in input units ([0, 1] pixels).
    `radius` names the radius column (radius = sound, radius_authors = the authors'); `rule`
    the per-triplet score and the rows it averages (default: 2AFC over every row).
    One metric's rows only: a long table with several metrics is an error.
    """
    if "metric" in df and df["metric"].nunique() > 1:
        raise ValueError("certified_scores: rows of several metrics; select one first")
    rows = rule.rows(df)
    score = rows[rule.column].to_numpy(np.float64)
    out = {"natural": rule_scores(df, rule), "certified": {}}
    for eps in eps_list:
        cert = rows.assign(_cert=score * certified_mask(rows[radius], eps))
        out["certified"][float(eps)] = split_scores(cert, "_cert")
    return out


def unsound_share(df: pd.DataFrame, eps: float, rule: Rule = DREAMSIM) -> dict[str, float]:
    """Share of the rule's triplets (percent, per split and 'test') that the authors' radius
    certifies at eps and the sound radius does not."""
    rows = rule.rows(df)
    flag = certified_mask(rows["radius_authors"], eps) & ~certified_mask(rows["radius"], eps)
    return split_scores(rows.assign(_unsound=flag.astype(np.float64)), "_unsound")


__all__ = [
    "COLUMNS",
    "TEST_SPLITS",
    "TIE_RADIUS",
    "certified_mask",
    "certified_scores",
    "certify_triplets",
    "distance_gap",
    "radii",
    "radius_from_embeddings",
    "sound_factor",
    "unsound_share",
]
