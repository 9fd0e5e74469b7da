"""The BAPPS table: natural 2AFC per category and overall for every metric, and the certified
scores of the LipSim models (from `lipsim evaluate-bapps` outputs).

Long form, one row per (model, category), then the aggregates: the LPIPS paper's groups
(`distortions` = traditional + cnn, `real_algorithms` = the other four; lipsim.data.bapps.GROUPS)
and `all`, each the mean over its triplets (size-weighted over its categories): model,
category, n, natural, certified_{eps}... (empty for metrics without a certificate). The
markdown and LaTeX renderings put the categories in columns, one line per model and score
(natural, certified at each eps).
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lipsim.data.bapps import CATEGORIES, GROUPS
from lipsim.reporting import ReportingError, fmt, metric_sort_key, read_table
from lipsim.reporting.tables import _tex_row, tex_escape

EVAL_COLUMNS = ("id", "split", "score")
ALL = "all"


def category_scores(df: pd.DataFrame, radii: list[float]) -> dict:
    """{"natural": {category: %, ..., "all": %}, "certified": {radius: {...}}} of one
    per-triplet table; certified only when it has a `radius` column (radii in [0, 1] units)."""
    from lipsim.certify import certified_scores
    from lipsim.scoring import split_scores

    # Every row once more under each aggregate it belongs to: one pass scores them all.
    parts = [df]
    for group, cats in GROUPS.items():
        members = df[df["split"].isin(cats)]
        if len(members):
            parts.append(members.assign(split=group))
    both = pd.concat([*parts, df.assign(split=ALL)], ignore_index=True)
    if "radius" in df.columns:
        return certified_scores(both, radii)
    return {"natural": split_scores(both, "score"), "certified": {}}


def bapps_table(inputs: dict[str, str | Path], eps: list[float]) -> pd.DataFrame:
    """Rows per model (input order sorted as the other tables) and category; eps in /255."""
    if not inputs:
        raise ReportingError("table-bapps needs at least one --inputs METRIC=FILE")
    cert_cols = [f"certified_{e:g}" for e in eps]
    rows = []
    for model in sorted(inputs, key=metric_sort_key):
        path = inputs[model]
        df = read_table(path, EVAL_COLUMNS, f"--inputs {model}")
        if df.empty:
            raise ReportingError(f"--inputs {model}: {path} has no rows")
        has_radius = "radius" in df.columns
        radii = [e / 255 for e in eps] if has_radius else []
        s = category_scores(df, radii)
        cats = [c for c in CATEGORIES if c in set(df["split"])]
        unknown = sorted(set(df["split"].astype(str)) - set(cats))
        if unknown:
            raise ReportingError(f"--inputs {model}: {path} has unknown categories {unknown}")
        sizes = df["split"].value_counts()
        groups = [g for g, members in GROUPS.items() if set(members) & set(cats)]
        for cat in [*cats, *groups, ALL]:
            members = GROUPS.get(cat, cats if cat == ALL else (cat,))
            row = {
                "model": model,
                "category": cat,
                "n": int(sum(sizes.get(c, 0) for c in members)),
                "natural": s["natural"][cat],
            }
            for col, r in zip(cert_cols, radii or [None] * len(eps), strict=True):
                row[col] = s["certified"][r][cat] if r is not None else math.nan
            rows.append(row)
    return pd.DataFrame(rows, columns=["model", "category", "n", "natural", *cert_cols])


def _categories(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table["category"]))  # categories, then groups, then all


def _score_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c == "natural" or c.startswith("certified_")]


def _lines(table: pd.DataFrame):
    """(model, score label, column, {category: value}) for every line of the rendering."""
    for model, g in table.groupby("model", sort=False):
        by_cat = g.set_index("category")
        for col in _score_columns(table):
            if by_cat[col].isna().all():
                continue  # no certificate for this metric
            label = "natural" if col == "natural" else f"certified {col[len('certified_') :]}/255"
            yield str(model), label, col, by_cat[col].to_dict()


def bapps_markdown(table: pd.DataFrame, decimals: int = 1) -> str:
    cats = _categories(table)
    header = ["Metric", "Score", *cats]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * len(cats)]
    for model, label, _, values in _lines(table):
        lines.append(
            "| " + " | ".join([model, label, *[fmt(values.get(c), decimals) for c in cats]]) + " |"
        )
    sizes = table[table["model"] == table["model"].iloc[0]].set_index("category")["n"]
    note = (
        "\nScores: 2AFC on BAPPS (validation), %; `distortions` = traditional + cnn, "
        "`real_algorithms` = superres + deblur + color + frameinterp (the LPIPS paper's "
        "groups), `all` = every triplet, each size-weighted ("
        + ", ".join(f"{c} {int(sizes[c])}" for c in cats)
        + " triplets). "
        "Certified: l2 radius of the reference image, LipSim models only.\n"
    )
    return "\n".join(lines) + "\n" + note


def bapps_latex(table: pd.DataFrame, decimals: int = 1) -> str:
    cats = _categories(table)
    lines = [
        "% BAPPS 2AFC scores (%) per category, natural and certified; lipsim table-bapps",
        rf"\begin{{tabular}}{{ll{'r' * len(cats)}}}",
        r"\toprule",
        _tex_row(["Metric", "Score", *[tex_escape(c) for c in cats]]),
        r"\midrule",
    ]
    for model, label, _, values in _lines(table):
        lines.append(
            _tex_row(
                [
                    tex_escape(model),
                    tex_escape(label),
                    *[fmt(values.get(c), decimals, "--") for c in cats],
                ]
            )
        )
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
