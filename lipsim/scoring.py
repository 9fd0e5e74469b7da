"""Scores on NIGHT-style triplets (reference, x0, x1, p): the per-triplet formulas and the rule
that turns them into one number.

p is the share of human votes for x1 (NIGHT's right_vote). A metric predicts x1 when
d1 < d0. Two per-triplet scores, one function each:
- twoafc (DreamSim's formula, LPIPS's for BAPPS):
      (d0 < d1) (1 - p) + (d1 < d0) p + 0.5 [d0 == d1]
  so a tie scores 0.5 whatever p is, and a p = 0.5 row scores 0.5 whatever the metric says;
- accuracy (the LipSim authors' evaluation): 1 when the decision matches round(p), else 0
  (torch.round: p = 0.5 -> 0; a tie takes argmax index 0, i.e. predicts x0).
A Rule names one of them and the row filter (half_votes: keep or drop the p = 0.5 rows);
every per-triplet file keeps every row and both scores, so any rule can be applied later.
Scores are reported as percentages in [0, 100].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lipsim.errors import LipSimError

TEST_SPLITS = ("test_imagenet", "test_no_imagenet")
# Per-triplet score column of each scoring rule (the column names of every per-triplet file).
SCORE_COLUMNS = {"twoafc": "score", "accuracy": "correct"}
SCORING = tuple(SCORE_COLUMNS)
HALF_VOTES = ("keep", "drop")


def twoafc(d0, d1, p) -> np.ndarray:
    """Per-triplet 2AFC score in [0, 1] (arrays or tensors of equal length)."""
    d0, d1, p = (np.asarray(_np(v), dtype=np.float64) for v in (d0, d1, p))
    return (d0 < d1) * (1.0 - p) + (d1 < d0) * p + 0.5 * (d0 == d1)


def accuracy(d0, d1, p) -> np.ndarray:
    """The authors' per-triplet score: 1.0 when argmax(d1, d0) equals round(p), else 0.0."""
    d0, d1, p = (np.asarray(_np(v), dtype=np.float64) for v in (d0, d1, p))
    predicted = (d0 > d1).astype(np.float64)  # 1 = x1 closer
    return (predicted == np.round(p)).astype(np.float64)


def triplet_scores(d0, d1, p) -> dict[str, np.ndarray]:
    """Both per-triplet scores, under their column names: what every per-triplet file holds."""
    return {"score": twoafc(d0, d1, p), "correct": accuracy(d0, d1, p)}


def hard_label(p) -> np.ndarray:
    """Majority label: 1 when x1 got more votes; p = 0.5 rows get 0 (their score is 0.5 anyway)."""
    return (np.asarray(_np(p), dtype=np.float64) > 0.5).astype(np.int64)


@dataclass(frozen=True)
class Rule:
    """How a table turns per-triplet rows into a score: which per-triplet score (scoring) over
    which rows (half_votes). The default is DreamSim's evaluation (and LPIPS's on BAPPS)."""

    scoring: str = "twoafc"
    half_votes: str = "keep"

    def __post_init__(self):
        if self.scoring not in SCORING:
            raise LipSimError(f"--scoring must be one of {list(SCORING)}, got {self.scoring!r}")
        if self.half_votes not in HALF_VOTES:
            raise LipSimError(
                f"--half-votes must be one of {list(HALF_VOTES)}, got {self.half_votes!r}"
            )

    @property
    def column(self) -> str:
        """The per-triplet score column this rule averages."""
        return SCORE_COLUMNS[self.scoring]

    def rows(self, df: pd.DataFrame) -> pd.DataFrame:
        """keep: every row (p = 0.5 rows score 0.5 under twoafc); drop: without the p = 0.5
        rows, as the authors' evaluation does."""
        if self.half_votes == "keep":
            return df
        return df[df["p"].to_numpy(np.float64) != 0.5]

    def describe(self) -> str:
        """The rule in words, for captions and notes."""
        how = {
            "twoafc": "2AFC score (DreamSim's formula)",
            "accuracy": "hard-label accuracy on round(p) (the authors' evaluation)",
        }[self.scoring]
        rows = {"keep": "all triplets", "drop": "p = 0.5 triplets dropped"}[self.half_votes]
        return f"{how}, {rows}"


# DreamSim's and LPIPS's evaluation: the 2AFC formula over every triplet.
DREAMSIM = Rule()


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


def rule_scores(df: pd.DataFrame, rule: Rule = DREAMSIM) -> dict[str, float]:
    """split_scores of the rows `rule` keeps, averaging its per-triplet score."""
    return split_scores(rule.rows(df), rule.column)


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
