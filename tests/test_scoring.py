"""The scoring rule: one per-triplet formula each, one row filter, and their words."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lipsim.errors import LipSimError
from lipsim.scoring import DREAMSIM, Rule, accuracy, rule_scores, triplet_scores, twoafc


def test_triplet_scores_are_the_two_formulas():
    d0, d1, p = (
        np.array([0.1, 0.5, 0.3, 0.2]),
        np.array([0.2, 0.4, 0.3, 0.1]),
        np.array([0.25, 0.75, 0.5, 0.5]),
    )
    both = triplet_scores(d0, d1, p)
    np.testing.assert_allclose(both["score"], [0.75, 0.75, 0.5, 0.5])
    # round(0.5) = 0: a p = 0.5 row is right when the metric predicts x0 (or ties)
    np.testing.assert_array_equal(both["correct"], [1.0, 1.0, 1.0, 0.0])
    np.testing.assert_array_equal(both["score"], twoafc(d0, d1, p))
    np.testing.assert_array_equal(both["correct"], accuracy(d0, d1, p))


def test_rule_rows_column_and_scores():
    df = pd.DataFrame(
        {
            "split": ["test_imagenet", "test_imagenet", "test_no_imagenet", "val"],
            "p": [0.5, 1.0, 0.0, 0.5],
            "score": [0.5, 1.0, 0.0, 0.5],
            "correct": [1.0, 1.0, 0.0, 1.0],
        }
    )
    assert DREAMSIM == Rule("twoafc", "keep") and DREAMSIM.column == "score"
    assert len(DREAMSIM.rows(df)) == 4
    authors = Rule("accuracy", "drop")
    assert authors.column == "correct" and list(authors.rows(df).index) == [1, 2]
    assert rule_scores(df, DREAMSIM)["test"] == pytest.approx(100 * 1.5 / 3)
    assert rule_scores(df, authors) == pytest.approx(
        {"test_imagenet": 100.0, "test_no_imagenet": 0.0, "test": 50.0}
    )
    assert DREAMSIM.describe() == "2AFC score (DreamSim's formula), all triplets"
    assert authors.describe().endswith("(the authors' evaluation), p = 0.5 triplets dropped")


@pytest.mark.parametrize(
    ("kwargs", "option"), [({"scoring": "acc"}, "--scoring"), ({"half_votes": "x"}, "--half-votes")]
)
def test_bad_rule_names_the_option(kwargs, option):
    with pytest.raises(LipSimError, match=f"^{option} must be one of"):
        Rule(**kwargs)
