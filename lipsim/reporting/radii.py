"""Where the authors' cosine certificate is unsound and where it is loose: per test triplet,
their radius m against the sound radius R = ||f(ref)|| m (lipsim.certify), and per model the
spread of ||f(ref)|| and of R / m.

Below the diagonal (R < m, i.e. ||f(ref)|| < 1) the authors' radius claims more than the
Lipschitz bound proves; above it (||f(ref)|| > 1) it proves less than it could. For the ball
metric R = m on every triplet (its formula is already sound), which the table shows as R / m = 1.

Radii to certify at are the configured ones in /255 units, applied at the run's image size
the way attack radii are (lipsim.radius: x image_size / eps_reference_size) and labelled with
both values, as figure 3a labels its attack.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lipsim.reporting import ReportingError
from lipsim.reporting.certified import one_value, radius_label, read_test_rows

QUANTILES = (0.05, 0.5, 0.95)
_QNAME = {0.05: "5%", 0.5: "median", 0.95: "95%"}


# ----------------------------------------------------------------------------- table


def radii_table(certify: dict[str, str | Path]) -> pd.DataFrame:
    """One row per model (key of `certify`) and metric: n (test triplets), quantiles of
    ||f(ref)|| (norm_*) and of R / m (ratio_*, over triplets with 0 < m < inf), and below =
    % of triplets whose sound radius is below the authors' (where their certificate claims
    too much)."""
    if not certify:
        raise ReportingError("radii needs --certify inputs")
    rows = []
    for model, path in certify.items():
        df = read_test_rows(path, f"--certify {model}")
        for metric, part in df.groupby("metric", sort=True):
            sound = part["radius"].to_numpy(np.float64)
            authors = part["radius_authors"].to_numpy(np.float64)
            usable = (authors > 0) & np.isfinite(authors)
            ratio = sound[usable] / authors[usable]
            row = {
                "model": model,
                "teacher": one_value(part, "teacher", path),
                "stage": one_value(part, "stage", path),
                "margin": float(part["margin"].iloc[0]) if "margin" in part else math.nan,
                "metric": metric,
                "n": len(part),
            }
            for q in QUANTILES:
                row[f"norm_q{round(100 * q):02d}"] = float(np.quantile(part["norm"], q))
            for q in QUANTILES:
                row[f"ratio_q{round(100 * q):02d}"] = (
                    float(np.quantile(ratio, q)) if len(ratio) else math.nan
                )
            row["below"] = 100.0 * float(np.mean(sound[usable] < authors[usable]))
            rows.append(row)
    return pd.DataFrame(rows)


def _display(table: pd.DataFrame, decimals: int, tex: bool) -> pd.DataFrame:
    from lipsim.reporting import fmt
    from lipsim.reporting.tables import tex_escape

    norm = r"$\|f(\mathrm{ref})\|$" if tex else "‖f(ref)‖"
    cols = {"model": "Model", "teacher": "Teacher", "metric": "Metric", "n": "n"}
    out = pd.DataFrame({v: table[k].astype(str) for k, v in cols.items()})
    if tex:
        out = out.map(tex_escape)
    for q in QUANTILES:
        c = f"norm_q{round(100 * q):02d}"
        out[f"{norm} {_QNAME[q]}"] = [fmt(v, decimals + 1) for v in table[c]]
    for q in QUANTILES:
        c = f"ratio_q{round(100 * q):02d}"
        out[f"R/m {_QNAME[q]}"] = [fmt(v, decimals + 1) for v in table[c]]
    below = r"R $<$ m (\%)" if tex else "R < m (%)"
    out[below] = [fmt(v, decimals) for v in table["below"]]
    return out


RADII_NOTE = (
    "R = the sound radius, m = the authors' (their code's) radius, per test triplet; "
    "R / m over triplets with 0 < m < ∞. For cosine R / m = ‖f(ref)‖ (the sound radius is "
    "‖f(ref)‖ m); for ball R = m. R < m: % of triplets on which the authors' radius claims "
    "more than the Lipschitz bound proves."
)


def radii_markdown(table: pd.DataFrame, decimals: int = 1) -> str:
    from lipsim.reporting.tables import markdown_table

    return markdown_table(_display(table, decimals, tex=False), RADII_NOTE)


def radii_latex(table: pd.DataFrame, decimals: int = 1) -> str:
    from lipsim.reporting.tables import latex_table

    return latex_table(_display(table, decimals, tex=True), RADII_NOTE)


# ----------------------------------------------------------------------------- figure


def fig_radii(
    certify: dict[str, str | Path],
    out_prefix: str | Path,
    radii: list[tuple[float, float]],
    metric: str = "cosine",
) -> list[Path]:
    """Authors' radius (x) against the sound radius (y), log-log, one panel per finetuned
    model of `certify`, points coloured by ||f(ref)||; the diagonal, the unsound region below
    it shaded, and the certification radii (certify_radii) as dotted lines on both axes.
    Triplets with a zero or infinite radius (ties, p = 0.5 rows kept) cannot be drawn on log
    axes; their count is in the panel's legend."""
    # pyplot as figures.py set it up (the headless Agg backend)
    from lipsim.reporting.figures import plt, save_figure, sns

    panels = _finetuned_panels(certify, metric)
    lo, hi, cnorm = _radii_scales(pd.concat([p for _, p in panels]), radii)
    sns.set_theme(style="whitegrid", context="paper")
    ncols = min(4, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.1 * ncols + 0.9, 3.1 * nrows + 0.4),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    points = None
    for ax, (model, part) in zip(axes.flat, panels, strict=False):
        points = _radii_panel(ax, model, part, (lo, hi), radii, cnorm)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("authors' radius m")
    for ax in axes[:, 0]:
        ax.set_ylabel(r"sound radius $R = \|f(\mathrm{ref})\|\, m$")
    bar = fig.colorbar(points, ax=axes, shrink=0.8, pad=0.01)
    bar.set_label(r"$\|f(\mathrm{ref})\|$")
    fig.suptitle(_radii_title(radii, metric), fontsize=9)
    return save_figure(fig, out_prefix)


def _finetuned_panels(
    certify: dict[str, str | Path], metric: str
) -> list[tuple[str, pd.DataFrame]]:
    """(model, its test rows of `metric`) per finetuned model of `certify`, in order."""
    panels = []
    for model, path in certify.items():
        df = read_test_rows(path, f"--certify {model}")
        if one_value(df, "stage", path) != "finetuned":
            continue
        part = df[df["metric"] == metric]
        if part.empty:
            raise ReportingError(f"--certify {model}: {path} has no rows of metric {metric!r}")
        panels.append((model, part))
    if not panels:
        raise ReportingError("radii: no finetuned model among the --certify inputs")
    return panels


def _radii_scales(data: pd.DataFrame, radii: list[tuple[float, float]]):
    """The axes' shared (lo, hi), covering every drawable radius and the certification radii,
    and the colour scale of ||f(ref)||, centred on 1."""
    from matplotlib.colors import TwoSlopeNorm

    drawable = _drawable(data)
    if not drawable.any():
        raise ReportingError("radii: no triplet with a finite positive radius to draw")
    values = data.loc[drawable, ["radius", "radius_authors"]].to_numpy(np.float64)
    values = np.concatenate([values.ravel(), [r for r, _ in radii]])
    lo, hi = values.min() / 1.5, values.max() * 1.5
    norms = data["norm"].to_numpy(np.float64)
    cnorm = TwoSlopeNorm(vcenter=1.0, vmin=min(norms.min(), 0.99), vmax=max(norms.max(), 1.01))
    return lo, hi, cnorm


def _radii_panel(ax, model: str, part: pd.DataFrame, limits, radii, cnorm):
    """One model's panel: the shaded unsound region, the diagonal, the certification radii and
    the drawable triplets; returns the scatter (for the colour bar)."""
    lo, hi = limits
    ok = _drawable(part)
    x, y = part["radius_authors"][ok], part["radius"][ok]
    ax.set_xscale("log")
    ax.set_yscale("log")
    grid = np.geomspace(lo, hi, 64)
    ax.fill_between(grid, lo, grid, color="#d62728", alpha=0.08, linewidth=0)
    ax.plot(grid, grid, color="0.2", linewidth=0.8)
    for r, _ in radii:
        ax.axvline(r, color="0.45", linestyle=":", linewidth=0.8)
        ax.axhline(r, color="0.45", linestyle=":", linewidth=0.8)
    points = ax.scatter(
        x,
        y,
        c=part["norm"][ok],
        cmap="RdBu",
        norm=cnorm,
        s=10,
        edgecolors="0.4",  # ||f(ref)|| near 1 is white in this map
        linewidths=0.2,
        zorder=3,
    )
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_title(model, fontsize=8)
    _radii_legend(ax, x, y, dropped=int((~ok).sum()))
    return points


def _radii_legend(ax, x: pd.Series, y: pd.Series, dropped: int) -> None:
    """The panel's shares of unsound (R < m) and loose triplets, and how many were not drawn."""
    from matplotlib.patches import Patch

    below = float(np.mean(y < x)) * 100
    handles = [
        Patch(color="#d62728", alpha=0.25, label=f"R < m, unsound: {below:.0f}%"),
        Patch(facecolor="white", edgecolor="0.6", label=f"R ≥ m, loose: {100 - below:.0f}%"),
    ]
    if dropped:
        handles.append(Patch(color="none", label=f"{dropped} with R or m 0 / ∞ not drawn"))
    # Lower right, far below the diagonal: empty unless some ||f(ref)|| is tiny.
    ax.legend(handles=handles, fontsize=6, loc="lower right", frameon=True, framealpha=0.9)


def _radii_title(radii: list[tuple[float, float]], metric: str) -> str:
    """The suptitle: the metric and the certification radii (and the paper's, when scaled)."""
    applied = ", ".join(f"{r:.3g}" for r, _ in radii)
    paper = ", ".join(f"{p:g}" for _, p in radii)
    scaled = any("paper" in radius_label(r, p) for r, p in radii)
    return (
        f"Sound vs authors' certified radius per test triplet ({metric} metric); dotted: the "
        f"certification radii ε = {applied}" + (f" (paper {paper}/255)" if scaled else "")
    )


def _drawable(df: pd.DataFrame) -> np.ndarray:
    r = df[["radius", "radius_authors"]].to_numpy(np.float64)
    return ((r > 0) & np.isfinite(r)).all(axis=1)


__all__ = ["QUANTILES", "fig_radii", "radii_latex", "radii_markdown", "radii_table"]
