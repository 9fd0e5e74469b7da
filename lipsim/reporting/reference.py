"""The paper's reference numbers: one CSV (`lipsim/reference_values.csv`), every value with its source.

The file is data, not code, so a user can fill in or correct a number (for instance the
paper's certified Table 1 values, left empty with source "LipSim paper Table 1 (fill in)")
without touching Python. Columns:

  table    table1 | table2
  model    pipeline name: `lipsim-pretrained`, `lipsim-margin0.5`, or a teacher/baseline name
           (`dreamsim_ensemble`, ...). The `lipsim-` prefix is optional and margins are
           compared as numbers, so `margin0.5`, `lipsim-margin0.50` all match.
  teacher  LipSim rows: the teacher the student was distilled from (a LipSim distilled from
           the demo teacher must not be compared with the paper's LipSim-DreamSim numbers).
           Empty for teacher/baseline rows.
  column   table1: natural | certified_{eps in /255}; table2: score
  attack, norm, eps
           table2 only. eps in image units, a number or a fraction such as `4/255`.
  value    percentage in [0, 100]; empty = not known yet (ignored when matching)
  source   where the number comes from (required)
  note     free text
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd

from lipsim.errors import LipSimError

REFERENCE_CSV = Path(__file__).resolve().parent.parent / "reference_values.csv"
COLUMNS = (
    "table",
    "model",
    "teacher",
    "column",
    "attack",
    "norm",
    "eps",
    "value",
    "source",
    "note",
)
TABLES = ("table1", "table2")
# eps in file names are decimals (4/255 may be written 0.0157 or 0.016); this is tight
# enough to tell 1/255 steps apart (0.0039) and loose enough for such roundings.
EPS_ATOL = 5e-4

_MARGIN = re.compile(r"^margin(?P<m>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)$")


class ReferenceError(LipSimError, ValueError):
    """A malformed reference-values file; the message names the file and row."""


def canonical_model(name: str) -> str:
    """Compare model names across tables: drop `lipsim-`, write margins as floats."""
    name = str(name).strip()
    if name.startswith("lipsim-"):
        name = name[len("lipsim-") :]
    m = _MARGIN.match(name)
    if m:
        return f"margin{float(m.group('m'))!r}"
    return name


def parse_eps(text) -> float:
    """`3`, `0.5`, `4/255` -> float; NaN for empty cells."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return math.nan
    text = str(text).strip()
    if not text:
        return math.nan
    return float(Fraction(text)) if "/" in text else float(text)


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    """Read and validate the reference CSV (default: the packaged one).

    Returns the rows with `eps` parsed to float, `value` to float (NaN when empty) and an
    extra `model_key` column (canonical_model) used for matching.
    """
    path = Path(path) if path is not None else REFERENCE_CSV
    if not path.is_file():
        raise ReferenceError(f"reference values file not found: {path}")
    # Read everything as text so that empty cells stay empty (not 'nan') and `4/255` survives.
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise ReferenceError(f"{path}: missing columns {missing} (expected {list(COLUMNS)})")
    df = df.apply(lambda col: col.str.strip())
    out = df[list(COLUMNS)].copy()
    values, eps = [], []
    for i, row in df.iterrows():
        where = f"{path}: row {int(i) + 2}"  # +2: header line and 1-based numbering
        if row["table"] not in TABLES:
            raise ReferenceError(f"{where}: table must be one of {TABLES}, got {row['table']!r}")
        if not row["model"] or not row["column"]:
            raise ReferenceError(f"{where}: model and column are required")
        if not row["source"]:
            raise ReferenceError(f"{where}: every reference value needs a source")
        try:
            values.append(float(row["value"]) if row["value"] else math.nan)
        except ValueError:
            raise ReferenceError(f"{where}: value {row['value']!r} is not a number") from None
        try:
            eps.append(parse_eps(row["eps"]))
        except (ValueError, ZeroDivisionError):
            raise ReferenceError(f"{where}: eps {row['eps']!r} is not a number") from None
        if row["table"] == "table2" and (
            not row["attack"] or not row["norm"] or math.isnan(eps[-1])
        ):
            raise ReferenceError(f"{where}: table2 rows need attack, norm and eps")
    out["value"] = np.asarray(values, dtype=float)
    out["eps"] = np.asarray(eps, dtype=float)
    out["model_key"] = [canonical_model(m) for m in out["model"]]
    out["norm"] = out["norm"].str.lower()
    out["attack"] = out["attack"].str.lower()
    _check_unique(out, path)
    return out


def _check_unique(df: pd.DataFrame, path: Path) -> None:
    # Two rows for one cell would make the comparison depend on row order: refuse.
    key = df.assign(eps_r=df["eps"].round(4))[
        ["table", "model_key", "teacher", "column", "attack", "norm", "eps_r"]
    ]
    dup = key.duplicated(keep=False)
    if dup.any():
        rows = [int(i) + 2 for i in df.index[dup]]
        raise ReferenceError(f"{path}: rows {rows} give the same cell more than once")


def _teacher_ok(ref_teacher: pd.Series, teacher: str | None) -> pd.Series:
    # A reference row without teacher (a teacher/baseline metric) matches any caller; a row
    # with one (a LipSim student) only a caller that names the same teacher. teacher=None
    # (unknown, e.g. table2 without --teacher) therefore never matches a LipSim row: comparing
    # a demo-teacher student with the paper's LipSim-DreamSim would be meaningless.
    if teacher is None:
        return ref_teacher == ""
    return (ref_teacher == "") | (ref_teacher == teacher)


def lookup_table1(ref: pd.DataFrame, model: str, teacher: str | None, column: str):
    """(value, source) for one Table 1 cell, (NaN, None) when the file has no value."""
    rows = ref[
        (ref["table"] == "table1")
        & (ref["model_key"] == canonical_model(model))
        & (ref["column"] == column)
        & _teacher_ok(ref["teacher"], teacher)
        & ref["value"].notna()
    ]
    if rows.empty:
        return math.nan, None
    return float(rows["value"].iloc[0]), str(rows["source"].iloc[0])


def lookup_table2(
    ref: pd.DataFrame, model: str, attack: str, norm: str, eps: float, teacher: str | None = None
):
    """(value, source) for one Table 2 cell, (NaN, None) when the file has no value."""
    rows = ref[
        (ref["table"] == "table2")
        & (ref["model_key"] == canonical_model(model))
        & (ref["attack"] == str(attack).lower())
        & (ref["norm"] == str(norm).lower())
        & np.isclose(ref["eps"], float(eps), rtol=0, atol=EPS_ATOL)
        & _teacher_ok(ref["teacher"], teacher)
        & ref["value"].notna()
    ]
    if rows.empty:
        return math.nan, None
    return float(rows["value"].iloc[0]), str(rows["source"].iloc[0])


def add_reference_options(parser) -> None:
    """--reference / --no-reference / --decimals, shared by the table commands."""
    parser.add_argument(
        "--reference",
        default=None,
        help="reference values CSV (default: the packaged lipsim/reference_values.csv)",
    )
    parser.add_argument("--no-reference", action="store_true", help="leave the paper columns empty")
    parser.add_argument("--decimals", type=int, default=1, help="decimals in md/tex (default 1)")


def reference_from_args(args) -> pd.DataFrame | None:
    return None if args.no_reference else load_reference(args.reference)
