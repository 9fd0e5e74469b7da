"""Certified scores at the radii a run applies, read from per-triplet certify files: the
radii (configured in /255 units, applied at the run's image size like the attacks', labelled
with both), a model's natural and certified test scores. Shared by the radii figure, the
margins figure and the objectives study (data only: no plotting here)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lipsim.eps import convert_eps
from lipsim.radius import applied_eps
from lipsim.reporting import ReportingError, read_table, test_rows

# The columns of a certify file this module reads (lipsim.certify.COLUMNS and the checkpoint's
# record that `lipsim certify` adds).
CERTIFY_COLUMNS = ("split", "metric", "radius", "radius_authors", "norm", "stage", "teacher")


def certify_radii(
    eps_255: list[float], image_size: int | None = None, reference_size: int | None = None
) -> list[tuple[float, float]]:
    """(radius applied, in image units; the configured radius, in /255 units) per eps: the
    configured radii are meant at reference_size px and applied at image_size (l2 scaling,
    lipsim.radius); without both, as written."""
    size, ref = (image_size, reference_size) if image_size else (1, None)
    return [(applied_eps(convert_eps(e, "image"), "l2", size, ref), float(e)) for e in eps_255]


def radius_label(applied: float, paper_255: float, tex: bool = True) -> str:
    """`ε=0.0202 (paper 36/255)` for a scaled radius, `ε=36/255` for one applied as written."""
    eps = r"$\epsilon$" if tex else "ε"
    if math.isclose(applied, convert_eps(paper_255, "image"), rel_tol=1e-9):
        return f"{eps}={paper_255:g}/255"
    return f"{eps}={applied:.3g} (paper {paper_255:g}/255)"


def read_test_rows(path: str | Path, what: str, required=CERTIFY_COLUMNS) -> pd.DataFrame:
    """The test-split rows of a per-triplet file, its columns checked."""
    return test_rows(read_table(path, required, what), path, what)


def one_value(df: pd.DataFrame, column: str, path) -> str:
    values = sorted(map(str, df[column].dropna().unique()))
    if len(values) != 1:
        raise ReportingError(f"{path}: expected one {column}, found {values}")
    return values[0]


def certified_row(
    path: str | Path, what: str, metric: str, radii: list[tuple[float, float]], scoring: str
) -> dict:
    """Test scores (%) of one model of a certify file under `metric`: natural and
    certified_{paper eps} with the sound radius at each applied radius of `radii`
    (certify_radii), plus its record (teacher, stage, margin) and the median ||f(ref)||."""
    from lipsim.certify import certified_scores
    from lipsim.scoring import Rule

    rule = Rule(scoring)  # every triplet kept: the study compares objectives, not filters
    df = read_test_rows(path, what, CERTIFY_COLUMNS + (rule.column,))
    part = df[df["metric"] == metric]
    if part.empty:
        raise ReportingError(f"{what}: {path} has no rows of metric {metric!r}")
    scores = certified_scores(part, [r for r, _ in radii], rule=rule)
    row = {
        "teacher": one_value(part, "teacher", path),
        "stage": one_value(part, "stage", path),
        "margin": float(part["margin"].iloc[0]) if "margin" in part else math.nan,
        "metric": metric,
        "natural": scores["natural"]["test"],
    }
    for r, paper in radii:
        row[f"certified_{paper:g}"] = scores["certified"][float(r)]["test"]
    row["norm_q50"] = float(part["norm"].median())
    row["n_test"] = len(part)
    return row
