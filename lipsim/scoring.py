"""2AFC scores on NIGHT-style triplets (reference, x0, x1, p).

p is the share of human votes for x1 (NIGHT's right_vote). A metric predicts x1 when
d1 < d0. Per-triplet score (DreamSim's formula):
    (d0 < d1) (1 - p) + (d1 < d0) p + 0.5 [d0 == d1]
so a tie scores 0.5 whatever p is, and a p = 0.5 row scores 0.5 whatever the metric says.
Scores are reported as percentages in [0, 100].
"""

from __future__ import annotations

import numpy as np
import pandas as pd

TEST_SPLITS = ("test_imagenet", "test_no_imagenet")


def twoafc(d0, d1, p) -> np.ndarray:
    """Per-triplet 2AFC score in [0, 1] (arrays or tensors of equal length)."""
    d0, d1, p = (np.asarray(_np(v), dtype=np.float64) for v in (d0, d1, p))
    return (d0 < d1) * (1.0 - p) + (d1 < d0) * p + 0.5 * (d0 == d1)


def hard_label(p) -> np.ndarray:
    """Majority label: 1 when x1 got more votes; p = 0.5 rows get 0 (their score is 0.5 anyway)."""
    return (np.asarray(_np(p), dtype=np.float64) > 0.5).astype(np.int64)


def split_scores(df: pd.DataFrame, column: str = "score") -> dict[str, float]:
    """Mean of `column` (per-triplet scores in [0, 1]) per split, as percentages.

    'test' is the size-weighted mean of test_imagenet and test_no_imagenet, which is the
    mean over all test rows (NIGHT's convention, as in DreamSim's evaluation).
    """
    out = {str(s): 100.0 * float(g[column].mean()) for s, g in df.groupby("split")}
    test = df[df["split"].isin(TEST_SPLITS)]
    if len(test):
        out["test"] = 100.0 * float(test[column].mean())
    return out


def triplet_table(loader, ids, splits, columns, batch_columns, on_part=None) -> pd.DataFrame:
    """One row per triplet of a loader of (ref, x0, x1, p, index) batches, in loader order.

    id and split are looked up at `index`; the other columns come from
    batch_columns(ref, x0, x1, p, index) -> {name: array}, with p as float64 and index as an
    array. on_part(frame) sees each batch's rows as they come (progress logs).
    """
    ids, splits = np.asarray(ids), np.asarray(splits)
    parts = []
    for ref, x0, x1, p, index in loader:
        index = np.asarray(index)
        cols = batch_columns(ref, x0, x1, np.asarray(p, dtype=np.float64), index)
        parts.append(pd.DataFrame({"id": ids[index], "split": splits[index], **cols}))
        if on_part is not None:
            on_part(parts[-1])
    if not parts:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in columns})
    return pd.concat(parts, ignore_index=True)[list(columns)]


def _np(v):
    if hasattr(v, "detach"):
        return v.detach().cpu().numpy()
    return v
