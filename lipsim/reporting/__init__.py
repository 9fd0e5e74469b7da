"""Tables (1, 2, retrieval) and figures (3a, 3b, margins) from the pipeline's result files.

Input formats are the contract in docs/pipeline.md; every reader here checks the columns it
needs and names the file in its error, because a table step is where a mismatch between two
other steps first shows up.
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pandas as pd

from lipsim.eps import eps_from_file_token, eps_label
from lipsim.errors import LipSimError
from lipsim.registry import ATTACKS_TABLE, METRICS_TABLE, names
from lipsim.reporting.reference import canonical_model

__all__ = [
    "ReportingError",
    "attack_label",
    "attack_setting",
    "canonical_model",
    "checkpoint_stage",
    "display_name",
    "eps_label",
    "fmt",
    "is_lipsim",
    "lipsim_margin",
    "metric_sort_key",
    "norm_label",
    "parse_assignments",
    "parse_attack_path",
    "read_table",
    "report_errors",
]


class ReportingError(LipSimError, ValueError):
    """Bad input for a table or figure; the message names the file or option."""


def parse_assignments(items: list[str] | None, option: str) -> dict[str, str]:
    """['NAME=FILE', ...] -> {NAME: FILE}, keeping order; errors name the option."""
    out: dict[str, str] = {}
    for item in items or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ReportingError(f"{option} expects NAME=FILE, got {item!r}")
        if name in out:
            raise ReportingError(f"{option}: {name!r} given twice ({out[name]}, {path})")
        out[name] = path
    return out


def read_table(path: str | Path, required: tuple[str, ...], what: str) -> pd.DataFrame:
    """Read a parquet (or csv) input and check its columns."""
    path = Path(path)
    if not path.is_file():
        raise ReportingError(f"{what}: file not found: {path}")
    try:
        df = pd.read_csv(path) if path.suffix == ".csv" else pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types; the file name is what matters
        raise ReportingError(f"{what}: cannot read {path}: {exc}") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ReportingError(f"{what}: {path} lacks columns {missing} (has {list(df.columns)})")
    return df


def test_rows(df: pd.DataFrame, path, what: str) -> pd.DataFrame:
    """The test-split rows of a per-triplet table (an error naming the file when none)."""
    from lipsim.scoring import TEST_SPLITS

    test = df[df["split"].isin(TEST_SPLITS)]
    if test.empty:
        raise ReportingError(
            f"{what}: {path} has no test rows (split in {list(TEST_SPLITS)}; "
            f"found {sorted(map(str, df['split'].unique()))})"
        )
    return test


# Labels and the paper's order (Figure 3a: pixel, CNN, single ViTs, the ensemble, then LipSim)
# are the registry's (lipsim.registry.METRICS_TABLE).
_METRIC_ORDER = [n for n in names() if METRICS_TABLE[n].family != "lipsim"]
_MARGIN = re.compile(r"^margin(.+)$")


def is_lipsim(metric: str) -> bool:
    return (
        str(metric).startswith("lipsim-")
        or canonical_model(metric) == "pretrained"
        or bool(_MARGIN.match(canonical_model(metric)))
    )


def lipsim_margin(metric: str) -> float:
    """margin of a LipSim model name (`lipsim-margin0.5` -> 0.5); NaN for pretrained/other.
    For labels and order only: a certify file's own margin is checkpoint_stage's."""
    m = _MARGIN.match(canonical_model(metric))
    try:
        return float(m.group(1)) if m else math.nan
    except ValueError:
        return math.nan


def checkpoint_stage(
    model: str, df: pd.DataFrame | None = None, path: str | Path | None = None
) -> tuple[str, float]:
    """(stage, margin) of a LipSim model: pretrained | finetuned | other, margin NaN unless
    finetuned. Read from the `stage` / `margin` columns `lipsim certify` copies from the
    checkpoint; a file without them (written before they existed) falls back to the model's
    name (`pretrained`, `margin0.5`)."""
    if df is not None and "stage" in df.columns:
        stages = sorted(map(str, df["stage"].dropna().unique()))
        if len(stages) > 1:
            raise ReportingError(
                f"{path or model}: several checkpoint stages in one file: {stages}"
            )
        stage = stages[0] if stages else "other"
        if stage not in ("pretrained", "finetuned"):
            return "other", math.nan
        margins = df["margin"].dropna().unique() if "margin" in df.columns else []
        if len(margins) > 1:
            raise ReportingError(
                f"{path or model}: several margins in one file: {sorted(map(float, margins))}"
            )
        if stage == "finetuned" and len(margins) == 1:
            return stage, float(margins[0])
        return stage, math.nan
    if canonical_model(model) == "pretrained":
        return "pretrained", math.nan
    margin = lipsim_margin(model)
    return ("finetuned", margin) if not math.isnan(margin) else ("other", math.nan)


def metric_sort_key(metric: str) -> tuple:
    """Sort key: known baselines/teachers in paper order, others by name, then LipSim models
    (pretrained first, then by margin)."""
    if is_lipsim(metric):
        key = canonical_model(metric)
        margin = lipsim_margin(metric)
        return (2, 0 if key == "pretrained" else 1, 0.0 if math.isnan(margin) else margin, key)
    if metric in _METRIC_ORDER:
        return (0, _METRIC_ORDER.index(metric), 0.0, metric)
    return (1, 0, 0.0, str(metric))


def display_name(metric: str, several_lipsim: bool = True) -> str:
    """Paper-style label: `dreamsim_ensemble` -> DreamSim, `lipsim-margin0.5` -> LipSim (m=0.5)."""
    if is_lipsim(metric):
        if not several_lipsim:
            return "LipSim"
        key = canonical_model(metric)
        if key == "pretrained":
            return "LipSim (pretrained)"
        margin = lipsim_margin(metric)
        return f"LipSim (margin {margin:g})" if not math.isnan(margin) else f"LipSim ({key})"
    card = METRICS_TABLE.get(str(metric))
    return card.display if card is not None else str(metric)


def norm_label(norm: str, tex: bool = False) -> str:
    n = str(norm).lower()
    if n in ("l2", "linf"):
        sub = "2" if n == "l2" else r"\infty"
        return f"$\\ell_{{{sub}}}$" if tex else ("ℓ2" if n == "l2" else "ℓ∞")
    return str(norm)


# Labels of attack names that are not the registry's attacks (lipsim.registry.ATTACKS_TABLE)
# but that attack files written by other tools carry: AutoAttack and its components.
_OTHER_ATTACKS = {
    "aa": "AutoAttack",
    "apgd": "APGD",
    "apgd-ce": "APGD-CE",
    "fab": "FAB",
    "square": "Square",
}


def attack_label(attack: str) -> str:
    """Paper-style label of an attack name: the registry's display name (`pgd` -> PGD)."""
    key = str(attack).lower()
    card = ATTACKS_TABLE.get(key)
    return card.display if card is not None else _OTHER_ATTACKS.get(key, str(attack))


_ATTACK_FILE = re.compile(r"^(?P<attack>.+)-(?P<norm>l2|linf)-(?P<eps>[^-].*)$", re.IGNORECASE)


def parse_attack_path(path: str | Path) -> dict:
    """`R/attacks/{metric}/{attack}-{norm}-{eps}.parquet` -> metric, attack, norm, eps.

    The norm (l2 | linf, any case) anchors the split, so attack names may contain '-'
    (apgd-ce). eps is returned in image units, read with the file-name convention of
    lipsim.eps.eps_from_file_token (Linf in /255 units: `autoattack-Linf-4` is 4/255).
    """
    path = Path(path)
    m = _ATTACK_FILE.match(path.stem)
    if not m or not path.parent.name:
        raise ReportingError(
            f"cannot read metric/attack/norm/eps from {path}: expected "
            ".../attacks/{metric}/{attack}-{norm}-{eps}.parquet with norm l2 or linf"
        )
    norm = m.group("norm").lower()
    try:
        eps = eps_from_file_token(m.group("eps"), norm)
    except LipSimError as exc:
        raise ReportingError(f"{path}: {exc}") from None
    return {
        "metric": path.parent.name,
        "attack": m.group("attack").lower(),
        "norm": norm,
        "eps": eps,
    }


def attack_setting(path: str | Path, df: pd.DataFrame) -> dict:
    """metric (from the folder name) and attack, norm, eps (image units) of an attack file.

    The `attack`, `norm`, `eps` columns written by `lipsim attack` are authoritative (the
    file's own record, eps in image units); the file name is the fallback for files without
    them.
    """
    cols = [c for c in ("attack", "norm", "eps") if c in df.columns]
    try:
        key = parse_attack_path(path)
    except ReportingError:
        if len(cols) < 3:
            raise
        key = {"metric": Path(path).parent.name}
    for c in cols:
        values = df[c].dropna().unique()
        if len(values) > 1:
            raise ReportingError(f"{path}: several {c} values in one attack file: {values}")
        if len(values) == 1:
            key[c] = float(values[0]) if c == "eps" else str(values[0]).lower()
    return key


def fmt(value, decimals: int = 1, empty: str = "–") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)) or pd.isna(value):
        return empty
    return f"{float(value):.{decimals}f}"


def report_errors(prog: str, func, *args) -> int:
    """Run a command body; print an expected error (LipSimError: ReportingError,
    ReferenceError...) as the dispatcher does, one line naming the file, exit status 1."""
    import sys

    try:
        func(*args)
    except LipSimError as exc:
        print(f"lipsim {prog}: error: {exc}", file=sys.stderr)
        return 1
    return 0
