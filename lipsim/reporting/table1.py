"""Table 1: natural and certified scores on NIGHT test of the LipSim models, their teachers and
the baselines, each column scored by one rule for every row.

Two rules, side by side, because the paper compares numbers computed by both:
- natural, certified_{e}: DreamSim's evaluation (lipsim.scoring.DREAMSIM: the 2AFC formula over
  every triplet) with the sound radius of the row's metric;
- natural_authors, certified_{e}_authors: the table's rule (--scoring, --half-votes; the
  authors' evaluation in paper.yaml: accuracy on round(p), p = 0.5 triplets dropped) with the
  authors' radius; unsound_{e} is over the same triplets.
Teacher and baseline rows (evaluate outputs) get both natural columns and no certificate.
The per-triplet files keep every triplet and both per-triplet scores, so each rule is applied
here, once, by lipsim.scoring.Rule.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lipsim.certify import certified_scores, unsound_share
from lipsim.eps import convert_eps
from lipsim.reporting import ReportingError, checkpoint_stage, fmt, read_table, test_rows
from lipsim.reporting.reference import lookup_table1
from lipsim.reporting.tables import latex_table, markdown_table, tex_escape
from lipsim.scoring import DREAMSIM, Rule

CERTIFY_COLUMNS = ("split", "metric", "p", "score", "radius", "radius_authors")
EVAL_COLUMNS = ("split", "p", "score")
KEYS = ["model", "teacher", "stage", "margin", "metric"]
STAGE_ORDER = {"pretrained": 0, "finetuned": 1, "reference": 2, "other": 3}
TAIL = [
    "paper_source",
    "n_test",
    "n_test_authors",
    "half_votes",
    "tie_radius",
    "scoring",
    "eps_scale",
]


class Columns:
    """Table 1's score column names for its radii (in /255, as written in the names)."""

    def __init__(self, eps: list[str], applied: list[float] | None = None):
        self.eps = eps
        # The radii certified at (image units): the /255 ones as written, or scaled to the
        # image size like the attacks' (lipsim.reporting.certified.certify_radii).
        self.applied = applied or [convert_eps(float(e), to="image") for e in eps]
        self.certified = [f"certified_{e}" for e in eps]
        self.authors = [f"{c}_authors" for c in self.certified]
        self.unsound = [f"unsound_{e}" for e in eps]

    @classmethod
    def of(cls, table: pd.DataFrame) -> Columns:
        """The columns of a built table (its radii read back from the certified_* names)."""
        return cls(
            [
                c[len("certified_") :]
                for c in table.columns
                if c.startswith("certified_") and not c.endswith(("_paper", "_diff", "_authors"))
            ]
        )

    @property
    def scores(self) -> list[str]:
        return ["natural", *self.certified, "natural_authors", *self.authors, *self.unsound]

    @property
    def paper(self) -> list[str]:
        """The columns with published values: natural, then certified (authors' radius)."""
        return ["natural", *self.certified]


# ----------------------------------------------------------------------------- rows


def split_teacher(key: str, teacher: str | None) -> tuple[str | None, str]:
    """`TEACHER/MODEL` -> (TEACHER, MODEL); a bare MODEL gets `teacher` (the default)."""
    t, sep, model = str(key).rpartition("/")
    if sep and (not t or not model):
        raise ReportingError(f"--certify expects [TEACHER/]MODEL=FILE, got {key!r}")
    return (t if sep else teacher), model


def _read(path, required: tuple[str, ...], rule: Rule, what: str, step: str) -> pd.DataFrame:
    """A per-triplet file's test rows, checked to hold what both rules need."""
    df = read_table(path, required, what)
    if rule.column not in df:
        raise ReportingError(
            f"{what}: {path} has no {rule.column!r} column (needed for --scoring "
            f"{rule.scoring}); rerun {step}"
        )
    if "half_votes" in df and (df["half_votes"] == "drop").any():
        # Written before files kept every triplet: natural (all triplets) cannot be computed.
        raise ReportingError(
            f"{what}: {path} was written without its p = 0.5 triplets (half_votes=drop); "
            f"rerun {step}"
        )
    return test_rows(df, path, what)


def _test_score(scores: dict) -> float:
    return scores.get("test", math.nan)  # every test row dropped by the rule: no score


def _scores(test: pd.DataFrame, cols: Columns, rule: Rule) -> dict:
    """The score columns of one row from its test triplets (one metric); certified columns
    only when the rows carry radii."""
    radii = cols.applied if "radius" in test else []
    plain = certified_scores(test, radii, "radius", DREAMSIM)
    theirs = certified_scores(test, radii, "radius_authors", rule)
    row = {
        "natural": _test_score(plain["natural"]),
        "natural_authors": _test_score(theirs["natural"]),
        "n_test": len(test),
        "n_test_authors": len(rule.rows(test)),
    }
    for i, r in enumerate(radii):
        row[cols.certified[i]] = _test_score(plain["certified"][r])
        row[cols.authors[i]] = _test_score(theirs["certified"][r])
        row[cols.unsound[i]] = _test_score(unsound_share(test, r, rule))
    return row


def _convention(df: pd.DataFrame, column: str) -> str | None:
    if column not in df:
        return None
    values = sorted(map(str, df[column].unique()))
    return values[0] if len(values) == 1 else ",".join(values)


def certify_rows(key: str, path, teacher, cols: Columns, rule: Rule) -> list[dict]:
    """One row per LipSim metric of one certify file."""
    row_teacher, model = split_teacher(key, teacher)
    if row_teacher is None:
        raise ReportingError(
            f"--certify {key}: no teacher (write TEACHER/{model}=FILE or give --teacher)"
        )
    what = f"--certify {key}"
    test = _read(path, CERTIFY_COLUMNS, rule, what, "certify")
    stage, margin = checkpoint_stage(model, test, path)
    return [
        {
            "model": model,
            "teacher": row_teacher,
            "stage": stage,
            "margin": margin,
            "metric": metric,
            **_scores(part, cols, rule),
            "tie_radius": _convention(part, "tie_radius"),
        }
        for metric, part in test.groupby("metric", sort=True)
    ]


def eval_row(metric: str, path, teachers: list[str], cols: Columns, rule: Rule) -> dict:
    """The natural scores of a teacher or baseline (no certificate: those cells stay NaN)."""
    test = _read(path, EVAL_COLUMNS, rule, f"--eval {metric}", "evaluate")
    return {
        "model": metric,
        # A teacher's own row belongs to its group; a baseline to none.
        "teacher": metric if metric in teachers else None,
        "stage": "reference",
        "margin": math.nan,
        "metric": None,
        **_scores(test, cols, rule),
        "tie_radius": None,
    }


def order_rows(lipsim: list[dict], refs: list[dict]) -> list[dict]:
    """Teacher by teacher in order of first appearance: its students (by stage, margin,
    metric), then its own reference row; baselines last."""
    teachers = list(dict.fromkeys(r["teacher"] for r in lipsim))

    def key(r):
        margin = 0.0 if math.isnan(r["margin"]) else r["margin"]
        return (teachers.index(r["teacher"]), STAGE_ORDER[r["stage"]], margin, r["model"])

    rows = sorted(lipsim, key=lambda r: (*key(r), r["metric"]))
    for ref in sorted((r for r in refs if r["teacher"] is not None), key=key):
        last = max(i for i, r in enumerate(rows) if r["teacher"] == ref["teacher"])
        rows.insert(last + 1, ref)
    return rows + [r for r in refs if r["teacher"] is None]


def paper_columns(table: pd.DataFrame, reference: pd.DataFrame | None, cols: Columns):
    """{col}_paper (published values), {col}_diff = ours - paper and paper_source. A certified
    value is published for the authors' radius, so its diff is against that column."""
    sources: list[list[str]] = [[] for _ in range(len(table))]
    for col in cols.paper:
        values = []
        for i, r in enumerate(table.itertuples(index=False)):
            # The paper's LipSim values are for its teacher; reference rows match by name.
            teacher = None if r.stage == "reference" else r.teacher
            value, source = (
                lookup_table1(reference, r.model, teacher, col)
                if reference is not None
                else (math.nan, None)
            )
            values.append(value)
            if source and source not in sources[i]:
                sources[i].append(source)
        table[f"{col}_paper"] = np.asarray(values, dtype=float)
    table["natural_diff"] = table["natural"] - table["natural_paper"]
    for c, a in zip(cols.certified, cols.authors, strict=True):
        table[f"{c}_diff"] = table[a] - table[f"{c}_paper"]
    table["paper_source"] = ["; ".join(s) if s else None for s in sources]
    return table


def table1(
    certify: dict[str, str | Path],
    evals: dict[str, str | Path],
    teacher: str | None,
    eps: list[float],
    reference: pd.DataFrame | None,
    rule: Rule = DREAMSIM,
    applied: list[float] | None = None,
) -> pd.DataFrame:
    """Table 1 from certify files (`TEACHER/MODEL` or `MODEL` keys; then `teacher` is its
    teacher) and evaluate files (a metric named like a teacher is that group's reference row).

    Columns: model, teacher, stage, margin, metric, natural, certified_{e}, natural_authors,
    certified_{e}_authors, unsound_{e} (see the module docstring), {col}_paper and
    {col}_diff for natural and certified_{e}, paper_source, n_test, n_test_authors (the test
    triplets each rule scores), half_votes, tie_radius, scoring (the rules' conventions),
    eps_scale (applied radius / configured radius: `applied` gives the radii certified at, in
    image units, when the configured /255 ones are scaled to the image size; the columns keep
    the configured names).
    """
    if not certify and not evals:
        raise ReportingError("table1 needs at least one --certify or --eval input")
    cols = Columns([f"{e:g}" for e in eps], applied)
    lipsim = [r for k, p in certify.items() for r in certify_rows(k, p, teacher, cols, rule)]
    teachers = list(dict.fromkeys(r["teacher"] for r in lipsim))
    refs = [eval_row(m, p, teachers, cols, rule) for m, p in evals.items()]
    table = pd.DataFrame(order_rows(lipsim, refs)).assign(
        half_votes=rule.half_votes,
        scoring=rule.scoring,
        eps_scale=cols.applied[0] / convert_eps(eps[0], to="image") if eps else 1.0,
    )
    table = paper_columns(table.reindex(columns=[*KEYS, *cols.scores, *TAIL]), reference, cols)
    diff = [f"{c}_paper" for c in cols.paper] + [f"{c}_diff" for c in cols.paper]
    return table[[*KEYS, *cols.scores, *diff, *TAIL]]


# ----------------------------------------------------------------------------- rendering

PLAIN_GROUP, AUTHORS_GROUP = "2AFC, all triplets", "Authors' evaluation"


def _headers(cols: Columns, paper: list[str], tex: bool) -> list:
    """Display headers: flat labels for markdown, (group, sub-header) pairs for LaTeX."""
    keys = ["Model", "Teacher", "Stage", "Margin", "Metric"]
    eps = [f"{e}/255" for e in cols.eps]
    paper_subs = ["Natural" if c == "natural" else c[len("certified_") :] + "/255" for c in paper]
    if tex:
        groups = [
            (PLAIN_GROUP, ["Natural", *eps]),
            (AUTHORS_GROUP, ["Natural", *eps]),
            ("Unsound", eps),
            ("Paper", paper_subs),
        ]
        return [(k, "") for k in keys] + [(tex_escape(g), s) for g, subs in groups for s in subs]
    return [
        *keys,
        "Natural",
        *[f"Cert. {e}" for e in eps],
        "Natural (authors')",
        *[f"Cert. {e} (authors')" for e in eps],
        *[f"Unsound {e}" for e in eps],
        *[f"Paper {s.lower() if s == 'Natural' else s}" for s in paper_subs],
    ]


def _display(table: pd.DataFrame, decimals: int, empty: str, tex: bool = False) -> pd.DataFrame:
    """Table 1 as display strings (rounded, paper columns only where a value is known)."""
    cols = Columns.of(table)
    paper = [c for c in cols.paper if table[f"{c}_paper"].notna().any()]
    text = tex_escape if tex else str

    def label(value) -> str:
        return "" if pd.isna(value) else text(value)

    rows = [
        [
            text(r["model"]),
            label(r["teacher"]),
            text(r["stage"]),
            "" if pd.isna(r["margin"]) else f"{float(r['margin']):g}",
            label(r["metric"]),
            *[fmt(r[c], decimals, empty) for c in [*cols.scores, *[f"{p}_paper" for p in paper]]],
        ]
        for _, r in table.iterrows()
    ]
    headers = _headers(cols, paper, tex)
    return pd.DataFrame(rows, columns=pd.MultiIndex.from_tuples(headers) if tex else headers)


def _rule(table: pd.DataFrame) -> Rule:
    return Rule(str(table["scoring"].iloc[0]), str(table["half_votes"].iloc[0]))


def table1_note(table: pd.DataFrame) -> str:
    """The rules, the radii and the reference values, in words."""
    ties = ", ".join(sorted(map(str, table["tie_radius"].dropna().unique()))) or "none"
    note = (
        f"Scores on NIGHT test, %. Natural and Cert.: {DREAMSIM.describe()}, every row; Cert. "
        "= certified with the sound radius of the row's metric. (authors'): "
        f"{_rule(table).describe()}, every row, with the authors' radius (their code, which "
        f"assumes ||f|| >= 1; exact ties: {ties}); Unsound = % of those triplets certified by "
        "the authors' radius only. Metric: cosine = the authors' 1 - cos(f(x), f(y)); ball = "
        "the unit-ball projection. Teacher and baseline rows have no certificate."
    )
    scale = float(table["eps_scale"].iloc[0]) if "eps_scale" in table else 1.0
    if not math.isclose(scale, 1.0):
        note += (
            f" Radii e/255 are the paper's, certified at e/255 x {scale:.4g} (scaled to the "
            "image size like the attack radii)."
        )
    sources = sorted({s for v in table["paper_source"].dropna() for s in str(v).split("; ")})
    if sources:
        note += (
            " Paper columns from lipsim/reference_values.csv (" + "; ".join(sources) + "); "
            "a published certified score is compared with the authors' columns."
        )
    return note


def table1_markdown(table: pd.DataFrame, decimals: int = 1) -> str:
    return markdown_table(_display(table, decimals, "–"), table1_note(table), text_columns=5)


def table1_latex(table: pd.DataFrame, decimals: int = 1) -> str:
    # The paper separates its LipSim variants from the reference rows with a rule.
    reference = (table["stage"] == "reference").to_numpy()
    breaks = [i for i in range(1, len(table)) if reference[i] != reference[i - 1]]
    return latex_table(
        _display(table, decimals, "--", tex=True),
        "Table 1: natural and certified scores (%) on NIGHT test; lipsim table1\n"
        + table1_note(table),
        text_columns=5,
        breaks=breaks,
    )
