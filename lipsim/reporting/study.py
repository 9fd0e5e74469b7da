"""Finetuning objectives compared at equal margins (config study.objectives): per objective
and margin, the natural score, the certified scores with the sound radius of the objective's
metric, and the score under AutoAttack at the paper's radius, as a table and a figure.

An objective is LOSS-METRIC (finetune.loss, metric: lipsim.configcheck.split_objective); its
models are certified and attacked under that metric. The attack runs on a subset of the test
triplets (attacks.max_triplets), so the table gives that subset's clean score beside it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from lipsim.configcheck import split_objective
from lipsim.models.net import METRICS
from lipsim.reporting import ReportingError, attack_setting
from lipsim.reporting.certified import certified_row, radius_label, read_test_rows
from lipsim.reporting.tables import ATTACK_COLUMNS, natural_score
from lipsim.train.finetune import LOSSES


def objective_key(key: str, option: str) -> tuple[str, str, str]:
    """`OBJECTIVE/MODEL` -> (objective, loss, metric), the objective checked."""
    objective, sep, model = key.partition("/")
    loss, metric = split_objective(objective)
    if not sep or not model or loss not in LOSSES or metric not in METRICS:
        raise ReportingError(
            f"{option} {key!r}: expected OBJECTIVE/MODEL with OBJECTIVE = LOSS-METRIC, "
            f"LOSS in {list(LOSSES)} and METRIC in {list(METRICS)}"
        )
    return objective, loss, metric


def study_table(
    certify: dict[str, str | Path],
    attacks: dict[str, str | Path],
    radii: list[tuple[float, float]],
    scoring: str = "twoafc",
    image_size: int | None = None,
    eps_reference_size: int | None = None,
) -> pd.DataFrame:
    """One row per OBJECTIVE/MODEL key of `certify` (and of `attacks`, the same keys):
    objective, loss, metric, model, teacher, margin, natural, certified_{paper eps} (sound
    radius, at the applied radii of `radii`), norm_q50 (median ||f(ref)||), n_test, then from
    the attack file natural_attacked (clean score of the attacked triplets), attacked, eps
    (applied, image units), eps_reference (the paper's radius it stands for), n_attacked.
    Rows by objective (in order of appearance), then margin."""
    from lipsim.radius import reference_eps

    if not certify:
        raise ReportingError("study needs --certify inputs")
    extra = sorted(set(attacks) - set(certify))
    if extra:
        raise ReportingError(f"--attacks {extra}: no --certify file under the same key")
    rows = []
    for key, path in certify.items():
        objective, loss, metric = objective_key(key, "--certify")
        row = certified_row(path, f"--certify {key}", metric, radii, scoring)
        if row["stage"] != "finetuned":
            raise ReportingError(f"--certify {key}: {path} is not a finetuned model")
        row = {"objective": objective, "loss": loss, "model": key.partition("/")[2], **row}
        if key in attacks:
            att = read_test_rows(attacks[key], f"--attacks {key}", ATTACK_COLUMNS)
            setting = attack_setting(attacks[key], att)
            if "lipsim_metric" in att and set(att["lipsim_metric"].astype(str)) != {metric}:
                raise ReportingError(
                    f"--attacks {key}: {attacks[key]} attacked under "
                    f"{sorted(set(att['lipsim_metric'].astype(str)))}, not {metric!r}"
                )
            size, ref = (image_size, eps_reference_size) if image_size else (1, None)
            row.update(
                natural_attacked=natural_score(att, "score_clean"),
                attacked=natural_score(att, "score_adv"),
                eps=setting["eps"],
                eps_reference=reference_eps(setting["eps"], setting["norm"], size, ref),
                n_attacked=len(att),
            )
        rows.append(row)
    table = pd.DataFrame(rows)
    order = {o: i for i, o in enumerate(dict.fromkeys(table["objective"]))}
    table = table.sort_values(
        ["objective", "margin"], key=lambda c: c.map(order) if c.name == "objective" else c
    )
    return table.reset_index(drop=True)


def _certified_columns(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c.startswith("certified_")]


def _display(
    table: pd.DataFrame, radii: list[tuple[float, float]], decimals: int, tex: bool
) -> pd.DataFrame:
    from lipsim.reporting import fmt
    from lipsim.reporting.tables import tex_escape

    esc = tex_escape if tex else str
    out = pd.DataFrame(
        {
            "Objective": [esc(o) for o in table["objective"]],
            "Margin": [f"{m:g}" for m in table["margin"]],
            "Natural": [fmt(v, decimals) for v in table["natural"]],
        }
    )
    for r, p in radii:
        label = radius_label(r, p, tex=tex)
        out[f"Certified {label}"] = [fmt(v, decimals) for v in table[f"certified_{p:g}"]]
    if "attacked" in table:
        eps = table["eps"].dropna().unique()
        ref = table["eps_reference"].dropna().unique()
        e = r"$\epsilon$" if tex else "ε"
        head = f"AutoAttack {e}={eps[0]:.3g}" if len(eps) == 1 else "AutoAttack"
        if len(eps) == 1 and len(ref) == 1 and not math.isclose(eps[0], ref[0]):
            head += f" (paper {ref[0]:g})"
        out["Natural (attacked triplets)"] = [fmt(v, decimals) for v in table["natural_attacked"]]
        out[head] = [fmt(v, decimals) for v in table["attacked"]]
    norm = r"median $\|f(\mathrm{ref})\|$" if tex else "median ‖f(ref)‖"
    out[norm] = [fmt(v, 2) for v in table["norm_q50"]]
    return out


STUDY_NOTE = (
    "Objective = LOSS-METRIC: hinge is the paper's hinge on d0 - d1, hinge_sound the same hinge "
    "on the sound certified radius (lipsim/train/finetune.py); each row is finetuned, "
    "certified (sound radius) and attacked under its metric, from the same pretrained model "
    "with the same recipe. Scores: 2AFC %, NIGHT test; the attack runs on a subset of it."
)


def study_markdown(table: pd.DataFrame, radii, decimals: int = 1) -> str:
    from lipsim.reporting.tables import markdown_table

    return markdown_table(_display(table, radii, decimals, tex=False), STUDY_NOTE)


def study_latex(table: pd.DataFrame, radii, decimals: int = 1) -> str:
    from lipsim.reporting.tables import latex_table

    return latex_table(_display(table, radii, decimals, tex=True), STUDY_NOTE)


def fig_study(
    table: pd.DataFrame, out_prefix: str | Path, radii: list[tuple[float, float]]
) -> list[Path]:
    """One panel per score (natural, certified at each radius, attacked), the margin on x,
    one line per objective; the legend below the panels."""
    # pyplot as figures.py set it up (the headless Agg backend)
    from lipsim.reporting.figures import plt, save_figure, sns

    panels = [("natural", "Natural")]
    panels += [(f"certified_{p:g}", "Certified " + radius_label(r, p)) for r, p in radii]
    if "attacked" in table and table["attacked"].notna().any():
        eps, ref = (
            float(table["eps"].dropna().iloc[0]),
            float(table["eps_reference"].dropna().iloc[0]),
        )
        label = f"{eps:.3g}" + ("" if math.isclose(eps, ref) else f" (paper {ref:g})")
        panels.append(("attacked", rf"$\ell_2$-AutoAttack $\epsilon$={label}"))
    objectives = list(dict.fromkeys(table["objective"]))
    sns.set_theme(style="whitegrid", context="paper")
    palette = sns.color_palette("deep", len(objectives))
    marks = ["o", "s", "^", "D"]
    fig, axes = plt.subplots(
        1,
        len(panels),
        figsize=(2.3 * len(panels) + 0.4, 3.0),
        squeeze=False,
        layout="constrained",
    )
    margins = np.unique(table["margin"].astype(float))
    for ax, (col, title) in zip(axes[0], panels, strict=True):
        for k, objective in enumerate(objectives):
            part = table[table["objective"] == objective]
            ax.plot(
                part["margin"].astype(float),
                part[col].astype(float),
                marker=marks[k % len(marks)],
                color=palette[k],
                label=objective,
            )
        ax.set_title(title, fontsize=7)
        ax.set_xticks(margins, [f"{m:g}" for m in margins])
        ax.set_xlabel("hinge margin")
        ax.set_ylim(0, 100)
    axes[0, 0].set_ylabel("2AFC score (%)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles,
        labels,
        loc="outside lower center",
        ncol=len(objectives),
        fontsize=7,
        frameon=False,
        title="finetuning objective (loss-metric)",
        title_fontsize=7,
    )
    fig.suptitle("Finetuning objectives at equal margins", fontsize=9)
    return save_figure(fig, out_prefix)


__all__ = ["fig_study", "objective_key", "study_latex", "study_markdown", "study_table"]
