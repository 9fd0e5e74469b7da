"""Table 2 (2AFC under attack), the retrieval table, and the one renderer of every table.

Each table (these, Table 1 in lipsim.reporting.table1, BAPPS in lipsim.reporting.bapps) is
built as a DataFrame (written as csv and parquet: full precision, every column), turned into
display strings, and rendered by markdown_table (a pipe table) and latex_table (a booktabs
tabular, paper layout), both pandas-based. All files are written atomically, so a
half-written table never sits at a final path.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from lipsim import atomic
from lipsim.radius import reference_eps, scaled_note
from lipsim.reporting import (
    ReportingError,
    attack_label,
    attack_setting,
    eps_label,
    fmt,
    metric_sort_key,
    norm_label,
    read_table,
    test_rows,
)
from lipsim.reporting.reference import lookup_table2
from lipsim.scoring import TEST_SPLITS, split_scores

EVAL_COLUMNS = ("split", "score")
ATTACK_COLUMNS = ("id", "split", "score_clean", "score_adv")
RETRIEVAL_COLUMNS = ("metric", "eps", "k", "recall")
RETRIEVAL_EXTRA = ("neighbour_overlap", "n_queries", "gallery_size", "distractors")


# ----------------------------------------------------------------------------- scores


def natural_score(df: pd.DataFrame, column: str = "score") -> float:
    """Test 2AFC score in %: size-weighted over test_imagenet + test_no_imagenet."""
    return split_scores(df, column)["test"]


# ----------------------------------------------------------------------------- LaTeX text


_TEX_ESCAPE = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def tex_escape(text) -> str:
    return "".join(_TEX_ESCAPE.get(ch, ch) for ch in str(text))


# ----------------------------------------------------------------------------- table 2


def table2(
    attack_files: list[str | Path],
    reference: pd.DataFrame | None,
    teacher: str | None = None,
    image_size: int | None = None,
    eps_reference_size: int | None = None,
) -> pd.DataFrame:
    """Long form: model, attack, norm, eps, score, score_clean, n_test, eps_reference,
    score_paper, score_diff, paper_source. `model` is the {metric} folder name of each attack
    file; eps is the applied radius (image units), eps_reference the radius it stands for at
    eps_reference_size px (lipsim.radius; = eps when nothing is scaled)."""
    if not attack_files:
        raise ReportingError("table2 needs at least one --attacks file")
    scaling = _eps_scaling(image_size, eps_reference_size)
    rows, seen = [], {}
    for path in attack_files:
        df = read_table(path, ATTACK_COLUMNS, "--attacks")
        key = attack_setting(path, df)
        ident = (key["metric"], key["attack"], key["norm"], round(key["eps"], 6))
        if ident in seen:
            raise ReportingError(f"--attacks: {path} and {seen[ident]} are the same cell {ident}")
        seen[ident] = path
        test = test_rows(df, path, f"--attacks {key['metric']}")
        value, source = (
            lookup_table2(reference, key["metric"], key["attack"], key["norm"], key["eps"], teacher)
            if reference is not None
            else (math.nan, None)
        )
        score = natural_score(test, "score_adv")
        rows.append(
            {
                "model": key["metric"],
                "attack": key["attack"],
                "norm": key["norm"],
                "eps": key["eps"],
                "score": score,
                "score_clean": natural_score(test, "score_clean"),
                "n_test": len(test),
                "eps_reference": reference_eps(key["eps"], key["norm"], *scaling),
                "score_paper": value,
                "score_diff": score - value,
                "paper_source": source,
            }
        )
    table = pd.DataFrame(rows)
    table["_k"] = table["model"].map(metric_sort_key)
    table = table.sort_values(["_k", "norm", "attack", "eps"], kind="stable").drop(columns="_k")
    return table.reset_index(drop=True)


def _eps_scaling(image_size, eps_reference_size) -> tuple[int, int | None]:
    """(image_size, reference size) for lipsim.radius; no scaling without both."""
    if eps_reference_size is not None and image_size is None:
        raise ReportingError("--eps-reference-size needs --image-size (the size attacked)")
    return (int(image_size or 1), None if image_size is None else eps_reference_size)


def clean_by_model(attack_files: list[str | Path]) -> dict[str, float]:
    """Natural score per model on the test triplets its attacks ran on.

    Every attack file of a model must hold the same triplets (the workflow's attacks share
    attacks.max_triplets and the seed), so the Natural column is the unattacked score of
    exactly the triplets of the attacked columns; a mismatch is an error naming the files.
    """
    parts: dict[str, list[tuple[str, pd.DataFrame]]] = {}
    for path in attack_files:
        df = read_table(path, ATTACK_COLUMNS, "--attacks")
        metric = attack_setting(path, df)["metric"]
        parts.setdefault(metric, []).append((str(path), df[df["split"].isin(TEST_SPLITS)]))
    out = {}
    for m, files in parts.items():
        first_path, first = files[0]
        ids = set(first["id"])
        for path, df in files[1:]:
            if set(df["id"]) != ids:
                raise ReportingError(
                    f"--attacks {m}: {path} and {first_path} attacked different test triplets; "
                    "Table 2's natural column needs one set (same attacks.max_triplets and seed)"
                )
        out[m] = 100.0 * float(first["score_clean"].mean())
    return out


def _table2_columns(table: pd.DataFrame) -> list[tuple[str, str, float, float]]:
    if "eps_reference" not in table.columns:  # tables written before the column existed
        table = table.assign(eps_reference=table["eps"])
    cols = table[["attack", "norm", "eps", "eps_reference"]].drop_duplicates(
        ["attack", "norm", "eps"]
    )
    cols = cols.sort_values(["norm", "attack", "eps"], kind="stable")
    return [tuple(r) for r in cols.itertuples(index=False)]


def _eps_header(eps: float, norm: str, eps_ref: float, tex: bool = False) -> str:
    """ε=0.286 (paper 2) for a scaled l2 radius; ε=0.5 or ε=4/255 otherwise."""
    scaled = not np.isclose(eps, eps_ref)
    value = f"{float(eps):.3g}" if scaled else eps_label(eps, norm)
    text = rf"$\epsilon={value}$" if tex else f"ε={value}"
    return f"{text} (paper {eps_label(eps_ref, norm)})" if scaled else text


# The natural score of Table 2 is on the attacked subset, not Table 1's whole test set.
NATURAL_HEADER = "Natural (attacked triplets)"


def _table2_note(table: pd.DataFrame, image_size, eps_reference_size) -> str:
    n = sorted(set(int(v) for v in table["n_test"]))
    count = f"{n[0]}" if len(n) == 1 else f"{n[0]}–{n[-1]}"
    note = (
        "Scores: 2AFC on NIGHT test under attack on the reference image, %. Natural: the same "
        f"{count} test triplets as the attacks, unattacked (attacks.max_triplets, a seeded "
        "subset of the test set; Table 1's natural score is on the whole test set)."
    )
    if image_size is not None and eps_reference_size is not None:
        scaled = scaled_note(image_size, eps_reference_size)
        note += (" " + scaled) if scaled else ""
    return note


def _cell(table: pd.DataFrame, model, attack, norm, eps, decimals: int, empty: str) -> str:
    r = table[
        (table["model"] == model)
        & (table["attack"] == attack)
        & (table["norm"] == norm)
        & np.isclose(table["eps"], eps)
    ]
    if r.empty:
        return empty
    text = fmt(r["score"].iloc[0], decimals, empty)
    paper = r["score_paper"].iloc[0]
    # The paper value rides in parentheses: one column per attack keeps the wide layout.
    return text if pd.isna(paper) else f"{text} ({fmt(paper, decimals)})"


def table2_markdown(
    table: pd.DataFrame,
    clean: dict[str, float],
    decimals: int = 1,
    image_size: int | None = None,
    eps_reference_size: int | None = None,
) -> str:
    cols = _table2_columns(table)
    header = ["Model", NATURAL_HEADER] + [
        f"{attack_label(a)} {norm_label(n)} {_eps_header(e, n, r)}" for a, n, e, r in cols
    ]
    rows = [
        [str(model), fmt(clean.get(model), decimals)]
        + [_cell(table, model, a, n, e, decimals, "–") for a, n, e, _ in cols]
        for model in table["model"].drop_duplicates()
    ]
    note = _table2_note(table, image_size, eps_reference_size)
    if table["score_paper"].notna().any():
        sources = sorted(set(table["paper_source"].dropna()))
        note += " In parentheses: reference values (" + "; ".join(sources) + ")."
    return markdown_table(pd.DataFrame(rows, columns=header), note)


def table2_latex(
    table: pd.DataFrame,
    clean: dict[str, float],
    decimals: int = 1,
    image_size: int | None = None,
    eps_reference_size: int | None = None,
) -> str:
    cols = _table2_columns(table)
    header = pd.MultiIndex.from_tuples(
        [("Model", ""), (NATURAL_HEADER, "")]
        + [
            (f"{tex_escape(attack_label(a))} {norm_label(n, True)}", _eps_header(e, n, r, tex=True))
            for a, n, e, r in cols
        ]
    )
    rows = [
        [tex_escape(model), fmt(clean.get(model), decimals, "--")]
        + [_cell(table, model, a, n, e, decimals, "--") for a, n, e, _ in cols]
        for model in table["model"].drop_duplicates()
    ]
    note = _table2_note(table, image_size, eps_reference_size)
    return latex_table(
        pd.DataFrame(rows, columns=header),
        "Table 2: 2AFC scores (%) on NIGHT test under attack; lipsim table2;"
        " reference values in parentheses.\n" + note,
    )


# ----------------------------------------------------------------------------- retrieval


def retrieval_table(files: list[str | Path]) -> pd.DataFrame:
    if not files:
        raise ReportingError("table-retrieval needs at least one --inputs file")
    parts = [read_table(p, RETRIEVAL_COLUMNS, "--inputs") for p in files]
    # What the note describes, kept when every input has it.
    extra = [c for c in RETRIEVAL_EXTRA if all(c in df.columns for df in parts)]
    table = pd.concat(parts, ignore_index=True)[list(RETRIEVAL_COLUMNS) + extra]
    dup = table.duplicated(["metric", "eps", "k"], keep=False)
    if dup.any():
        raise ReportingError(f"--inputs: duplicate (metric, eps, k) rows:\n{table[dup]}")
    table["_k"] = table["metric"].map(metric_sort_key)
    table = table.sort_values(["_k", "eps", "k"], kind="stable").drop(columns="_k")
    return table.reset_index(drop=True)


def _recall_decimals(table: pd.DataFrame) -> int:
    # recall may come as a fraction or a percentage: keep 3 significant-ish digits either way.
    return 1 if table["recall"].max() > 1 else 3


def _retrieval_columns(table: pd.DataFrame):
    return [
        tuple(r)
        for r in table[["eps", "k"]]
        .drop_duplicates()
        .sort_values(["eps", "k"])
        .itertuples(index=False)
    ]


def _retrieval_display(table: pd.DataFrame, empty: str, metric_text=str) -> list[list[str]]:
    cols, d = _retrieval_columns(table), _recall_decimals(table)
    rows = []
    for metric, g in table.groupby("metric", sort=False):
        cells = [metric_text(metric)]
        for e, k in cols:
            r = g[(g["eps"] == e) & (g["k"] == k)]
            cells.append(fmt(r["recall"].iloc[0], d, empty) if len(r) else empty)
        rows.append(cells)
    return rows


def _retrieval_eps(e: float, scaling: tuple, tex: bool = False) -> str:
    return _eps_header(e, "l2", reference_eps(e, "l2", *scaling), tex)


def retrieval_markdown(
    table: pd.DataFrame, image_size: int | None = None, eps_reference_size: int | None = None
) -> str:
    scaling = _eps_scaling(image_size, eps_reference_size)
    header = ["Metric"] + [
        f"{_retrieval_eps(e, scaling)} R@{int(k)}" for e, k in _retrieval_columns(table)
    ]
    note = (
        "Recall@k: share of queries, attacked within an l2 ball of radius ε (pushing their "
        "embedding away), that still retrieve their own clean image among the k nearest "
        "gallery images."
    )
    if {"gallery_size", "distractors", "n_queries"} <= set(table.columns):
        note += (
            f" {int(table['n_queries'].max())} queries; gallery of "
            f"{int(table['gallery_size'].max())} images, including "
            f"{int(table['distractors'].max())} noisy copies of each query (hard negatives)."
        )
    scaled = scaled_note(*scaling) if scaling[1] is not None else ""
    return markdown_table(
        pd.DataFrame(_retrieval_display(table, "–"), columns=header),
        note + (" " + scaled if scaled else ""),
    )


def retrieval_latex(
    table: pd.DataFrame, image_size: int | None = None, eps_reference_size: int | None = None
) -> str:
    scaling = _eps_scaling(image_size, eps_reference_size)
    header = ["Metric"] + [
        f"{_retrieval_eps(e, scaling, tex=True)}, R@{int(k)}" for e, k in _retrieval_columns(table)
    ]
    return latex_table(
        pd.DataFrame(_retrieval_display(table, "--", tex_escape), columns=header),
        "Retrieval: recall@k under attack of size eps; lipsim table-retrieval",
    )


# ----------------------------------------------------------------------------- writers


def markdown_table(display: pd.DataFrame, note: str = "", text_columns: int = 1) -> str:
    """A GitHub pipe table (pandas' DataFrame.to_markdown, i.e. tabulate) of a frame whose
    cells are display strings; the first `text_columns` left-aligned, the others (scores)
    right."""
    align = ("left",) * text_columns + ("right",) * (display.shape[1] - text_columns)
    text = display.to_markdown(index=False, tablefmt="pipe", colalign=align, disable_numparse=True)
    return text + "\n" + (f"\n{note}\n" if note else "")


def latex_table(
    display: pd.DataFrame, comment: str = "", text_columns: int = 1, breaks: list[int] = ()
) -> str:
    """A booktabs tabular (pandas' Styler.to_latex) of display strings already escaped for
    LaTeX (tex_escape). Two-level columns become \\multicolumn groups with a \\cmidrule
    under each group that has sub-headers, as in the paper's tables; a \\midrule goes before
    each body row listed in `breaks` (0-based)."""
    n = display.shape[1]
    tex = display.style.hide(axis="index").to_latex(
        hrules=True,
        column_format="l" * text_columns + "r" * (n - text_columns),
        multicol_align="c",
    )
    if isinstance(display.columns, pd.MultiIndex):
        tex = _group_rules(tex, display.columns)
    if breaks:
        head, body = tex.split("\\midrule\n", 1)
        lines = body.split("\n")
        for i in sorted(breaks, reverse=True):
            lines.insert(i, "\\midrule")
        tex = head + "\\midrule\n" + "\n".join(lines)
    return "".join(f"% {line}\n" for line in comment.splitlines()) + tex


def _group_rules(tex: str, columns: pd.MultiIndex) -> str:
    """A \\cmidrule under each header group with sub-headers, before the sub-header line."""
    rules, start = [], 1
    for _, run in itertools.groupby(columns, key=lambda c: c[0]):
        run = list(run)
        if any(sub for _, sub in run):  # a group with sub-headers, even of one column
            rules.append(rf"\cmidrule(lr){{{start}-{start + len(run) - 1}}}")
        start += len(run)
    if not rules:
        return tex
    head_end = tex.index("\\toprule\n") + len("\\toprule\n")
    first = tex.index("\n", head_end) + 1
    return tex[:first] + " ".join(rules) + "\n" + tex[first:]


# ----------------------------------------------------------------------------- output


def html_table(table: pd.DataFrame, decimals: int = 1) -> str:
    """A standalone HTML page of the full table (pandas' Styler.to_html), the form the
    snakemake report shows inline (csv / md / tex are downloads there)."""
    # a fixed uuid: the same table gives the same bytes (manifest checksums)
    styler = table.style.set_uuid("table").hide(axis="index")
    styler = styler.format(precision=decimals, na_rep="")
    styler = styler.set_table_styles(
        [
            {"selector": "", "props": "border-collapse: collapse; font-family: sans-serif;"},
            {"selector": "th, td", "props": "padding: 2px 8px; border-bottom: 1px solid #ddd;"},
            {"selector": "td", "props": "text-align: right;"},
        ]
    )
    return styler.to_html(doctype_html=True)


def write_table(prefix: str | Path, table: pd.DataFrame, markdown: str, latex: str) -> list[Path]:
    """prefix.{csv,md,tex,parquet,html}, each atomically. Returns the paths."""
    prefix = Path(prefix)
    paths = [
        prefix.with_name(prefix.name + ext) for ext in (".csv", ".md", ".tex", ".parquet", ".html")
    ]
    atomic.write_csv(paths[0], table)
    atomic.write_text(paths[1], markdown)
    atomic.write_text(paths[2], latex)
    atomic.write_parquet(paths[3], table)
    atomic.write_text(paths[4], html_table(table))
    return paths
