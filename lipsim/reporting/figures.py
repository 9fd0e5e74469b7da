"""Figures 3a (natural vs attacked 2AFC per metric), 3b (distribution of d(x, x + delta)) and
the margin trade-off, each written as PDF and PNG atomically.

PDFs are written without a creation date so that a rerun on the same inputs gives the same
bytes (the manifest's sha256 then only changes when the figure does).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: cluster nodes and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402

from lipsim import atomic  # noqa: E402
from lipsim.radius import applied_eps, reference_eps  # noqa: E402
from lipsim.reporting import (  # noqa: E402
    ReportingError,
    attack_label,
    attack_setting,
    display_name,
    eps_label,
    is_lipsim,
    metric_sort_key,
    read_table,
    test_rows,
)
from lipsim.reporting.tables import ATTACK_COLUMNS, EVAL_COLUMNS, natural_score  # noqa: E402

DISTANCE_COLUMNS = ("image", "eps", "distance")


def save_figure(fig, prefix: str | Path, dpi: int = 200) -> list[Path]:
    """prefix.pdf and prefix.png, each atomically; closes the figure."""
    prefix = Path(prefix)
    paths = []
    try:
        for ext, kwargs in ((".pdf", {"metadata": {"CreationDate": None}}), (".png", {"dpi": dpi})):
            path = prefix.with_name(prefix.name + ext)
            with atomic.atomic_path(path) as tmp:
                # The temporary name ends in .tmp: give the format explicitly.
                fig.savefig(tmp, format=ext[1:], bbox_inches="tight", **kwargs)
            paths.append(path)
    finally:
        plt.close(fig)
    return paths


def _labels(metrics: list[str]) -> dict[str, str]:
    several = sum(is_lipsim(m) for m in metrics) > 1
    labels = {m: display_name(m, several) for m in metrics}
    if len(set(labels.values())) < len(labels):  # two specs with one display name: keep specs
        labels = {m: f"{labels[m]} [{m}]" for m in metrics}
    return labels


# ----------------------------------------------------------------------------- figure 3a


def fig3a_data(
    evals: dict[str, str],
    attacks: dict[str, str],
    attack_name: str | None = None,
    norm: str | None = None,
    eps: float | None = None,
    image_size: int | None = None,
    eps_reference_size: int | None = None,
) -> tuple[pd.DataFrame, str]:
    """Long data (metric, label, kind, score) and the attacked bars' legend label.

    The label is `attack_name` if given, else built from the attack files' settings (their
    attack/norm/eps columns, or file names); `norm`/`eps` (eps as in file names: Linf in
    /255 units, l2 the configured radius) override those settings. With image_size and
    eps_reference_size, an l2 radius is shown as applied and as meant at the reference size
    (lipsim.radius): "ε=0.286 (paper 2)".
    """
    if not evals and not attacks:
        raise ReportingError("fig3a needs --eval and/or --attacks inputs")
    frames, settings = {}, set()
    for m, path in attacks.items():
        df = read_table(path, ATTACK_COLUMNS, f"--attacks {m}")
        frames[m] = test_rows(df, path, f"--attacks {m}")
        try:
            k = attack_setting(path, df)
            settings.add((k["attack"], k["norm"], k["eps"]))
        except ReportingError:
            settings.add(None)
    if attack_name is None:
        a, n, e = settings.pop() if len(settings) == 1 and None not in settings else (None,) * 3
        n = norm.lower() if norm else n
        if eps is not None and n is not None:  # a file-name radius: the configured one
            e = applied_eps(eps, n, image_size or 1, eps_reference_size if image_size else None)
        if n is not None and e is not None:
            sub = "2" if n == "l2" else r"\infty"
            ref = reference_eps(e, n, image_size or 1, eps_reference_size if image_size else None)
            radius = (
                eps_label(e, n) if math.isclose(e, ref) else f"{e:.3g} (paper {eps_label(ref, n)})"
            )
            attack_name = rf"$\ell_{sub}$-{attack_label(a or 'autoattack')} $\epsilon$={radius}"
        else:
            attack_name = "Attacked"
    rows = []
    metrics = sorted(set(evals) | set(attacks), key=metric_sort_key)
    labels = _labels(metrics)
    for m in metrics:
        natural, attacked = math.nan, None
        if m in evals:
            natural = natural_score(
                test_rows(
                    read_table(evals[m], EVAL_COLUMNS, f"--eval {m}"), evals[m], f"--eval {m}"
                )
            )
        if m in attacks:
            if m not in evals:  # the attack file carries the clean score of the same triplets
                natural = natural_score(frames[m], "score_clean")
            attacked = natural_score(frames[m], "score_adv")
        rows.append({"metric": m, "label": labels[m], "kind": "Natural", "score": natural})
        if attacked is not None:
            rows.append({"metric": m, "label": labels[m], "kind": attack_name, "score": attacked})
    return pd.DataFrame(rows), attack_name


def fig3a(
    evals: dict[str, str],
    attacks: dict[str, str],
    out_prefix: str | Path,
    attack_name: str | None = None,
    norm: str | None = None,
    eps: float | None = None,
    image_size: int | None = None,
    eps_reference_size: int | None = None,
) -> list[Path]:
    data, attack_name = fig3a_data(
        evals, attacks, attack_name, norm, eps, image_size, eps_reference_size
    )
    sns.set_theme(style="whitegrid", context="paper")
    order = list(dict.fromkeys(data["label"]))
    hue_order = ["Natural"] + ([attack_name] if attack_name in set(data["kind"]) else [])
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(order) + 1.5), 3.2))
    sns.barplot(
        data=data,
        x="label",
        y="score",
        hue="kind",
        order=order,
        hue_order=hue_order,
        palette=["#4c72b0", "#dd8452"][: len(hue_order)],
        ax=ax,
    )
    for container in ax.containers:
        ax.bar_label(container, fmt="%.1f", fontsize=6, padding=1)
    # Head room above 100 for the legend: scores of good metrics reach the high 90s.
    ax.set_ylim(0, 122)
    ax.set_yticks(range(0, 101, 20))
    ax.set_xlabel("")
    ax.set_ylabel("2AFC score (%)")
    title = "Alignment with human judgments on NIGHT"
    if image_size and eps_reference_size and image_size != eps_reference_size:
        # Say why the radius is not the paper's: it is the paper's, scaled to these images.
        title += f"\n{image_size} px images: $\\ell_2$ radius = paper's × {image_size}/{eps_reference_size}"
    ax.set_title(title)
    ax.legend(title=None, loc="upper center", ncol=2, fontsize=7, frameon=True)
    ax.tick_params(axis="x", labelrotation=30 if len(order) > 5 else 0)
    return save_figure(fig, out_prefix)


# ----------------------------------------------------------------------------- figure 3b


def fig3b(distances: dict[str, str], out_prefix: str | Path, norm: str = "l2") -> list[Path]:
    """Histogram + KDE of d(x, x + delta) per metric; one panel per attack size eps."""
    if not distances:
        raise ReportingError("fig3b needs --distances inputs")
    metrics = sorted(distances, key=metric_sort_key)
    labels = _labels(metrics)
    parts = []
    for m in metrics:
        df = read_table(distances[m], DISTANCE_COLUMNS, f"--distances {m}")
        if df.empty:
            raise ReportingError(f"--distances {m}: {distances[m]} has no rows")
        parts.append(df.assign(metric=labels[m]))
    data = pd.concat(parts, ignore_index=True)
    eps_values = sorted(data["eps"].unique())
    sns.set_theme(style="whitegrid", context="paper")
    fig, axes = plt.subplots(
        1, len(eps_values), figsize=(4.2 * len(eps_values), 3.0), squeeze=False
    )
    for ax, eps in zip(axes[0], eps_values, strict=True):
        sub = data[data["eps"] == eps]
        # A KDE of a constant sample is singular; draw it only where every group varies.
        kde = bool(sub.groupby("metric")["distance"].agg(lambda s: s.nunique() > 1).all())
        sns.histplot(
            data=sub,
            x="distance",
            hue="metric",
            hue_order=[labels[m] for m in metrics if labels[m] in set(sub["metric"])],
            stat="density",
            common_norm=False,
            kde=kde,
            element="step",
            alpha=0.35,
            bins=30,
            ax=ax,
        )
        ax.set_xlabel(r"$d(x, x + \delta)$")
        ax.set_ylabel("Density")
        sub_norm = "2" if norm == "l2" else r"\infty"
        ax.set_title(
            rf"Distance to the attacked image, $\|\delta\|_{sub_norm} \leq$ "
            f"{eps_label(eps, norm)}"
        )
        legend = ax.get_legend()
        if legend is not None:
            legend.set_title(None)
    return save_figure(fig, out_prefix)


# ----------------------------------------------------------------------------- margins


def margin_line_sets(table1: pd.DataFrame, metric: str | None = None) -> list[dict]:
    """The line sets of the margins figure: one per teacher of Table 1, in table order.

    Each is {teacher, finetuned (rows by margin), pretrained, references (the teacher's own
    reference row; for LipSim rows without a teacher, every reference row without one)}.
    `metric` selects the LipSim rows of that metric when Table 1 has several (the pipeline's
    primary metric).
    """
    need = ("model", "stage", "margin", "natural")
    missing = [c for c in need if c not in table1.columns]
    if missing:
        raise ReportingError(f"--table1 lacks columns {missing}")
    if metric is not None and "metric" in table1.columns:
        keep = (table1["metric"] == metric) | (table1["stage"] == "reference")
        if not (keep & (table1["stage"] != "reference")).any():
            raise ReportingError(f"--table1 has no LipSim rows of metric {metric!r}")
        table1 = table1[keep]
    # Tables without a teacher column (older files) are one set.
    teacher = (
        table1["teacher"]
        if "teacher" in table1.columns
        else pd.Series(None, index=table1.index, dtype=object)
    )
    lipsim = table1["stage"].isin(["pretrained", "finetuned"])
    if not lipsim.any():
        raise ReportingError("--table1 has no pretrained or finetuned rows")
    sets = []
    for t in dict.fromkeys(None if pd.isna(v) else v for v in teacher[lipsim]):
        mine = table1[teacher.isna() if t is None else teacher == t]
        sets.append(
            {
                "teacher": t,
                "finetuned": mine[mine["stage"] == "finetuned"].sort_values("margin"),
                "pretrained": mine[mine["stage"] == "pretrained"],
                "references": mine[mine["stage"] == "reference"],
            }
        )
    return sets


def margins_table(
    certify: dict[str, str | Path],
    evals: dict[str, str | Path],
    metric: str,
    radii: list[tuple[float, float]],
    scoring: str = "twoafc",
) -> pd.DataFrame:
    """The margins figure's rows, Table 1's columns at the radii it is drawn at: one per LipSim
    model of `certify` (MODEL -> certify file; teacher, stage and margin from the file) under
    `metric`, natural and certified_{paper eps} at the applied radii (lipsim.reporting.certified
    .certify_radii), and one reference row per --eval teacher (its natural score)."""
    from lipsim.reporting.certified import certified_row

    if not certify:
        raise ReportingError("fig-margins needs --certify inputs")
    rows = [
        {"model": m, **certified_row(path, f"--certify {m}", metric, radii, scoring)}
        for m, path in certify.items()
    ]
    for teacher, path in evals.items():
        df = read_table(path, EVAL_COLUMNS, f"--eval {teacher}")
        natural = natural_score(test_rows(df, path, f"--eval {teacher}"))
        rows.append(
            {"model": teacher, "teacher": teacher, "stage": "reference", "natural": natural}
        )
    return pd.DataFrame(rows)


_LINE_STYLES = ["-", "--", "-.", ":"]  # one per teacher
_MARKERS = ["o", "^", "D", "v", "P", "X"]


def _style(k: int) -> tuple[str, str]:
    """Teacher set k's (line style, marker)."""
    return _LINE_STYLES[k % len(_LINE_STYLES)], _MARKERS[k % len(_MARKERS)]


def _margin_score_names(
    table1: pd.DataFrame, radii: list[tuple[float, float]] | None
) -> dict[str, str]:
    """Score column -> legend label: natural, then each certified_{eps} column of `table1`
    (labelled with the radius it was scored at when `radii` is given)."""
    from lipsim.reporting.certified import radius_label

    score_cols = ["natural"] + [
        c
        for c in table1.columns
        if c.startswith("certified_") and not c.endswith(("_paper", "_diff", "_authors"))
    ]
    labels = {f"certified_{p:g}": radius_label(r, p) for r, p in radii or []}
    return {
        c: "Natural"
        if c == "natural"
        else "Certified " + labels.get(c, rf"$\epsilon$={c[len('certified_') :]}/255")
        for c in score_cols
    }


def _pretrained_x(margins: np.ndarray) -> float:
    """Where the pretrained markers go: at 0 or left of the smallest margin, further left when
    a finetuned margin-0 model sits there."""
    span = (margins.max() - margins.min()) if len(margins) > 1 else 0.5
    pre_x = min(0.0, margins.min() if len(margins) else 0.0)
    if len(margins) and np.isclose(margins, pre_x).any():  # a finetuned margin-0 model exists
        pre_x -= 0.25 * span
    return pre_x


def _plot_margin_sets(ax, sets: list[dict], score_cols: list[str], palette, pre_x: float):
    """Each set's finetuned lines over the margin and its pretrained open markers at `pre_x`,
    one colour per score column."""
    for k, lines in enumerate(sets):
        style, mark = _style(k)
        fin, pre = lines["finetuned"], lines["pretrained"]
        for color, col in zip(palette, score_cols, strict=True):
            if len(fin):
                ax.plot(
                    fin["margin"].astype(float),
                    fin[col].astype(float),
                    marker=mark,
                    linestyle=style,
                    color=color,
                )
            if len(pre):
                ax.scatter(
                    np.full(len(pre), pre_x),
                    pre[col].astype(float),
                    marker=mark,
                    facecolors="none",
                    edgecolors=color,
                    s=36,
                    zorder=3,
                )


def _teacher_handles(sets: list[dict], several: bool) -> list[Line2D]:
    """Legend entries naming each set's teacher by its line style and marker."""
    handles = []
    for k, lines in enumerate(sets):
        if several or lines["teacher"] is not None:
            style, mark = _style(k)
            name = display_name(lines["teacher"]) if lines["teacher"] else "LipSim"
            handles.append(
                Line2D(
                    [], [], color="0.2", marker=mark, linestyle=style, label=f"student of {name}"
                )
            )
    return handles


def _reference_lines(ax, sets: list[dict], others: pd.DataFrame) -> list[Line2D]:
    """Each reference's natural score as a grey horizontal line (its teacher's line style, dotted
    for references of no set); returns their legend entries."""
    refs = [(k, r) for k, lines in enumerate(sets) for _, r in lines["references"].iterrows()]
    refs += [(None, r) for _, r in others.iterrows()]
    handles = []
    for k, r in refs:
        if pd.notna(r["natural"]):
            style = (0, (1, 1.5)) if k is None else _style(k)[0]
            ax.axhline(float(r["natural"]), color="0.55", linestyle=style, linewidth=1)
            label = f"{display_name(r['model'])}: natural"
            handles.append(Line2D([], [], color="0.55", linestyle=style, linewidth=1, label=label))
    return handles


def _pretrained_handle() -> Line2D:
    """The legend entry of the pretrained models' open markers."""
    return Line2D(
        [],
        [],
        color="0.2",
        marker="o",
        markerfacecolor="none",
        linestyle="none",
        label="pretrained (no hinge loss)",
    )


def _margin_axes(ax, margins: np.ndarray, pre_x: float | None, several: bool, handles) -> None:
    """Ticks (the margins, and "pretrained" at `pre_x` when given), labels, title and the
    legend outside the axes."""
    ticks = list(margins)
    ticklabels = [f"{m:g}" for m in margins]
    if pre_x is not None:
        ticks.insert(0, pre_x)
        ticklabels.insert(0, "pretrained")
    ax.set_xticks(ticks)
    ax.set_xticklabels(ticklabels)
    ax.set_xlabel("hinge-loss margin (finetuning)")
    ax.set_ylabel("2AFC score (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Margin trade-off: natural vs certified" + (" per teacher" if several else ""))
    ax.legend(
        handles=handles,
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        frameon=False,
        borderaxespad=0,
    )


def fig_margins(
    table1: pd.DataFrame,
    out_prefix: str | Path,
    metric: str | None = None,
    radii: list[tuple[float, float]] | None = None,
) -> list[Path]:
    """Natural and certified scores (sound radius) against the hinge margin, one line set per
    teacher (colour = score, line style and marker = teacher).

    `table1` has Table 1's columns (margins_table, or Table 1 itself); `metric` selects the
    LipSim rows of that metric when it has several; reference rows are kept. `radii`
    ((applied, paper /255) per certified column, lipsim.reporting.certified.certify_radii) labels
    the certified lines with the radius they were scored at; without it, `certified_36` reads
    36/255. Finetuned models are lines over their margin. The pretrained model was never
    trained with a hinge loss, so it is not "margin 0": it gets its own open markers at the
    left, labelled "pretrained" on the x axis. Each teacher's own natural score is a grey
    horizontal line in its line style. Every label is in the legend, outside the axes.
    """
    sets = margin_line_sets(table1, metric)
    # Reference rows of no set (baselines, or teachers whose students are absent): drawn once.
    drawn = {i for lines in sets for i in lines["references"].index}
    others = table1[(table1["stage"] == "reference") & ~table1.index.isin(drawn)]
    names = _margin_score_names(table1, radii)
    score_cols = list(names)
    several = sum(s["teacher"] is not None for s in sets) > 1
    fin_all = pd.concat([s["finetuned"] for s in sets])
    margins = np.unique(fin_all["margin"].astype(float).to_numpy())
    has_pre = any(len(s["pretrained"]) for s in sets)
    pre_x = _pretrained_x(margins)
    sns.set_theme(style="whitegrid", context="paper")
    palette = sns.color_palette("deep", len(score_cols))
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    _plot_margin_sets(ax, sets, score_cols, palette, pre_x)
    # The legend: scores by colour, teachers by line style, reference lines by name.
    handles = [
        Line2D([], [], color=c, linewidth=2, label=names[col])
        for c, col in zip(palette, score_cols, strict=True)
    ]
    handles += _teacher_handles(sets, several)
    handles += _reference_lines(ax, sets, others)
    if has_pre:
        handles.append(_pretrained_handle())
    _margin_axes(ax, margins, pre_x if has_pre else None, several, handles)
    return save_figure(fig, out_prefix)
