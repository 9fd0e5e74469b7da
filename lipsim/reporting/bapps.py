"""The BAPPS table: natural 2AFC per category and overall for every metric, and the certified
scores of the LipSim models (from `lipsim evaluate-bapps` outputs).

Long form, one row per (model, category), then the aggregates: the LPIPS paper's groups
(`distortions` = traditional + cnn, `real_algorithms` = the other four; lipsim.data.bapps.GROUPS)
and `all`, each the mean over its triplets (triplet-weighted: on the real set the categories
differ in size, so a plain mean of the category scores would differ). Two rules, each the same
for every row: natural and certified_{eps} are LPIPS's (the 2AFC formula over every triplet,
the sound radius); natural_authors and certified_{eps}_authors follow the table's rule
(--scoring, --half-votes: the authors' evaluation in paper.yaml) with the authors' radius.
Certified cells are empty for metrics without a certificate. The markdown and LaTeX renderings
put the categories in columns, one line per model and score.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from lipsim.data.bapps import CATEGORIES, GROUPS
from lipsim.eps import convert_eps
from lipsim.reporting import ReportingError, fmt, metric_sort_key, read_table
from lipsim.reporting.tables import latex_table, markdown_table, tex_escape
from lipsim.scoring import DREAMSIM, Rule

EVAL_COLUMNS = ("id", "split", "p", "score")
ALL = "all"


def _with_aggregates(df: pd.DataFrame) -> pd.DataFrame:
    """Every row once more under each aggregate it belongs to: one pass scores them all."""
    parts = [df]
    for group, cats in GROUPS.items():
        members = df[df["split"].isin(cats)]
        if len(members):
            parts.append(members.assign(split=group))
    return pd.concat([*parts, df.assign(split=ALL)], ignore_index=True)


def category_scores(
    df: pd.DataFrame, radii: list[float], rule: Rule = DREAMSIM, radius: str = "radius"
) -> dict:
    """{"natural": {category: %, ..., "all": %}, "certified": {radius: {...}}} of one
    per-triplet table under `rule`; certified only when it has the `radius` column (radii in
    [0, 1] units)."""
    from lipsim.certify import certified_scores

    return certified_scores(
        _with_aggregates(df), radii if radius in df.columns else [], radius, rule
    )


def _model_rows(model: str, df: pd.DataFrame, eps: list[float], rule: Rule) -> list[dict]:
    """The rows of one model: its categories, the groups present, then `all`."""
    cats = [c for c in CATEGORIES if c in set(df["split"])]
    radii = [convert_eps(e, "image") for e in eps] if "radius" in df.columns else []
    plain = category_scores(df, radii, DREAMSIM, "radius")
    theirs = category_scores(df, radii, rule, "radius_authors")
    sizes, kept = df["split"].value_counts(), rule.rows(df)["split"].value_counts()
    groups = [g for g, members in GROUPS.items() if set(members) & set(cats)]
    rows = []
    for cat in [*cats, *groups, ALL]:
        members = GROUPS.get(cat, cats if cat == ALL else (cat,))
        row = {
            "model": model,
            "category": cat,
            "n": int(sum(sizes.get(c, 0) for c in members)),
            "natural": plain["natural"][cat],
        }
        for e, r in zip(eps, radii or [None] * len(eps), strict=True):
            row[f"certified_{e:g}"] = math.nan if r is None else plain["certified"][r][cat]
        row["natural_authors"] = theirs["natural"].get(cat, math.nan)
        for e, r in zip(eps, radii or [None] * len(eps), strict=True):
            cert = math.nan if r is None else theirs["certified"][r].get(cat, math.nan)
            row[f"certified_{e:g}_authors"] = cert
        row.update(
            n_authors=int(sum(kept.get(c, 0) for c in members)),
            scoring=rule.scoring,
            half_votes=rule.half_votes,
        )
        rows.append(row)
    return rows


def bapps_table(
    inputs: dict[str, str | Path], eps: list[float], rule: Rule = DREAMSIM
) -> pd.DataFrame:
    """Rows per model (input order sorted as the other tables) and category; eps in /255."""
    if not inputs:
        raise ReportingError("table-bapps needs at least one --inputs METRIC=FILE")
    rows = []
    for model in sorted(inputs, key=metric_sort_key):
        path = inputs[model]
        df = read_table(path, (*EVAL_COLUMNS, rule.column), f"--inputs {model}")
        if df.empty:
            raise ReportingError(f"--inputs {model}: {path} has no rows")
        unknown = sorted(set(df["split"].astype(str)) - set(CATEGORIES))
        if unknown:
            raise ReportingError(f"--inputs {model}: {path} has unknown categories {unknown}")
        rows += _model_rows(model, df, eps, rule)
    cert = [f"certified_{e:g}" for e in eps]
    columns = ["model", "category", "n", "natural", *cert, "natural_authors"]
    columns += [f"{c}_authors" for c in cert] + ["n_authors", "scoring", "half_votes"]
    return pd.DataFrame(rows, columns=columns)


def _categories(table: pd.DataFrame) -> list[str]:
    return list(dict.fromkeys(table["category"]))  # categories, then groups, then all


def _score_label(col: str) -> str:
    authors = col.endswith("_authors")
    base = col.removesuffix("_authors")
    label = "natural" if base == "natural" else f"certified {base[len('certified_') :]}/255"
    return label + (" (authors')" if authors else "")


def _display(table: pd.DataFrame, decimals: int, empty: str, text=str) -> pd.DataFrame:
    """One line per model and score: the LPIPS-rule lines, then the authors' lines where they
    differ from them (with the default rule and the ball metric they are the same numbers)."""
    cats = _categories(table)
    plain = [c for c in table.columns if c == "natural" or _is_certified(c, authors=False)]
    lines = []
    for model, g in table.groupby("model", sort=False):
        by_cat = g.set_index("category")
        for col in plain + [f"{c}_authors" for c in plain]:
            values = by_cat[col]
            if values.isna().all():
                continue  # no certificate for this metric
            base = col.removesuffix("_authors")
            if col != base and values.equals(by_cat[base]):
                continue
            cells = [fmt(values.get(c), decimals, empty) for c in cats]
            lines.append([text(model), text(_score_label(col)), *cells])
    return pd.DataFrame(lines, columns=["Metric", "Score", *[text(c) for c in cats]])


def _is_certified(col: str, authors: bool) -> bool:
    return col.startswith("certified_") and col.endswith("_authors") == authors


def bapps_note(table: pd.DataFrame) -> str:
    """The rule, the groups and their sizes, in words (the markdown note, the LaTeX comment)."""
    sizes = table[table["model"] == table["model"].iloc[0]].set_index("category")["n"]
    rule = Rule(str(table["scoring"].iloc[0]), str(table["half_votes"].iloc[0]))
    return (
        f"Scores: BAPPS (validation), %; {DREAMSIM.describe()} (LPIPS's evaluation). "
        f"Lines marked (authors'): {rule.describe()}, the authors' radius; shown where they "
        "differ from the line above. `distortions` = traditional + cnn, `real_algorithms` = "
        "superres + deblur + color + frameinterp (the LPIPS paper's groups), `all` = every "
        "triplet; groups are triplet-weighted means, not means of the category scores ("
        + ", ".join(f"{c} {int(sizes[c])}" for c in _categories(table))
        + " triplets). Certified: l2 radius of the reference image, LipSim models only."
    )


def bapps_markdown(table: pd.DataFrame, decimals: int = 1) -> str:
    return markdown_table(_display(table, decimals, "–"), bapps_note(table), text_columns=2)


def bapps_latex(table: pd.DataFrame, decimals: int = 1) -> str:
    return latex_table(
        _display(table, decimals, "--", tex_escape),
        "BAPPS 2AFC scores (%) per category, natural and certified; lipsim table-bapps\n"
        + bapps_note(table),
        text_columns=2,
    )
