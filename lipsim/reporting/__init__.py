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

from lipsim.errors import LipSimError
from lipsim.reporting.reference import canonical_model


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


# The paper's order (Figure 3a): pixel, CNN, single ViTs, the ensemble, then LipSim.
_METRIC_ORDER = [
    "l2",
    "lpips",
    "dists",
    "clip_vitb32",
    "dino_vitb16",
    "open_clip_vitb32",
    "dreamsim_ensemble",
    "demo",
    "demo2",
]
_DISPLAY = {
    "l2": "L2",
    "lpips": "LPIPS",
    "dists": "DISTS",
    "clip_vitb32": "CLIP",
    "dino_vitb16": "DINO",
    "open_clip_vitb32": "OpenCLIP",
    "dreamsim_ensemble": "DreamSim",
    "demo": "Demo teacher",
    "demo2": "Demo teacher 2",
}
_MARGIN = re.compile(r"^margin(.+)$")


def is_lipsim(metric: str) -> bool:
    return (
        str(metric).startswith("lipsim-")
        or canonical_model(metric) == "pretrained"
        or bool(_MARGIN.match(canonical_model(metric)))
    )


def lipsim_margin(metric: str) -> float:
    """margin of a LipSim model name (`lipsim-margin0.5` -> 0.5); NaN for pretrained/other."""
    m = _MARGIN.match(canonical_model(metric))
    try:
        return float(m.group(1)) if m else math.nan
    except ValueError:
        return math.nan


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
    return _DISPLAY.get(metric, str(metric))


def norm_label(norm: str, tex: bool = False) -> str:
    n = str(norm).lower()
    if n in ("l2", "linf"):
        sub = "2" if n == "l2" else r"\infty"
        return f"$\\ell_{{{sub}}}$" if tex else ("ℓ2" if n == "l2" else "ℓ∞")
    return str(norm)


def eps_label(eps: float, norm: str) -> str:
    """linf budgets read best as k/255 (the paper's convention); l2 ones as decimals."""
    if str(norm).lower() == "linf" and float(eps) >= 1:  # already in /255 units (file names)
        eps = float(eps) / 255
    k = round(float(eps) * 255)
    # Same tolerance as reference matching: 4/255 is often written 0.0157 in file names.
    if str(norm).lower() == "linf" and k > 0 and abs(float(eps) - k / 255) < 5e-4:
        return f"{k}/255"
    return f"{float(eps):g}"


_ATTACK_NAMES = {
    "autoattack": "AutoAttack",
    "aa": "AutoAttack",
    "apgd": "APGD",
    "apgd-ce": "APGD-CE",
    "pgd": "PGD",
    "fab": "FAB",
    "square": "Square",
}


def attack_label(attack: str) -> str:
    return _ATTACK_NAMES.get(str(attack).lower(), str(attack))


_ATTACK_FILE = re.compile(r"^(?P<attack>.+)-(?P<norm>l2|linf)-(?P<eps>[^-].*)$", re.IGNORECASE)


def parse_attack_path(path: str | Path) -> dict:
    """`R/attacks/{metric}/{attack}-{norm}-{eps}.parquet` -> metric, attack, norm, eps.

    The norm (l2 | linf, any case) anchors the split, so attack names may contain '-'
    (apgd-ce). eps is returned in image units: the workflow writes Linf radii in /255 units
    in file names (`autoattack-Linf-4`), and a Linf radius >= 1 in image units would allow
    any image, so a Linf eps >= 1 is read as k/255.
    """
    path = Path(path)
    m = _ATTACK_FILE.match(path.stem)
    if not m or not path.parent.name:
        raise ReportingError(
            f"cannot read metric/attack/norm/eps from {path}: expected "
            ".../attacks/{metric}/{attack}-{norm}-{eps}.parquet with norm l2 or linf"
        )
    try:
        eps = float(m.group("eps"))
    except ValueError:
        raise ReportingError(f"{path}: eps {m.group('eps')!r} is not a number") from None
    norm = m.group("norm").lower()
    if norm == "linf" and eps >= 1:
        eps /= 255
    return {
        "metric": path.parent.name,
        "attack": m.group("attack").lower(),
        "norm": norm,
        "eps": eps,
    }


def attack_setting(path: str | Path, df: pd.DataFrame) -> dict:
    """metric (from the folder name) and attack, norm, eps (image units) of an attack file.

    The `attack`, `norm`, `eps` columns written by `lipsim attack` are authoritative (eps in
    image units there); the file name is the fallback for files without them.
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
