"""Tables 1, 2 and retrieval from small hand-made inputs; values checked by hand."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lipsim.cli import table1 as table1_cli
from lipsim.cli import table2 as table2_cli
from lipsim.cli import table_retrieval as retrieval_cli
from lipsim.reporting import parse_attack_path, tables

REF_HEADER = "table,model,teacher,column,attack,norm,eps,value,source,note\n"


def _certify(path: Path, score, radius, split=None, radius_authors=None, metric="cosine") -> str:
    n = len(score)
    split = split or ["test_imagenet"] * (n - 1) + ["test_no_imagenet"]
    df = pd.DataFrame(
        {
            "id": [f"t{i}" for i in range(n)],
            "split": split,
            "p": 0.5,
            "d0": 0.1,
            "d1": 0.2,
            "score": score,
            "radius": radius,
            "radius_authors": radius if radius_authors is None else radius_authors,
            "metric": metric,
            "half_votes": "keep",
            "tie_radius": "zero",
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(path)
    return str(path)


@pytest.fixture
def ref_csv(tmp_path):
    p = tmp_path / "ref.csv"
    p.write_text(
        REF_HEADER
        + "table1,lipsim-margin0.5,dreamsim_ensemble,natural,,,,60.0,Paper X,\n"
        + "table1,lipsim-margin0.5,dreamsim_ensemble,certified_36,,,,40.0,Paper X,\n"
        + "table1,dreamsim_ensemble,,natural,,,,96.2,DreamSim README,\n"
        + "table2,lipsim-margin0.5,dreamsim_ensemble,score,apgd,linf,4/255,30.0,Croce,\n"
    )
    return str(p)


@pytest.fixture
def table1_inputs(tmp_path):
    # 4 test rows + 2 train rows (which must not count). Hand computation (eps/255):
    #   natural = (1 + .5 + .25 + 1) / 4 = 68.75
    #   36/255 = .141: radius > eps for rows 0,1,2 -> (1 + .5 + .25) / 4 = 43.75
    #   72/255 = .282: rows 1,2 -> .75 / 4 = 18.75;  108/255 = .424: row 2 -> 6.25
    # The authors' radius of row 3 is 0.3 (sound 0.1): it certifies rows 0-3 at 36/255
    # (68.75) and rows 1-3 at 72/255 (43.75); unsound = row 3 = 25% at 36 and 72, 0 at 108.
    split = ["test_imagenet"] * 3 + ["test_no_imagenet"] + ["train"] * 2
    m05 = _certify(
        tmp_path / "certify/margin0.5.parquet",
        [1, 0.5, 0.25, 1, 1, 1],
        [0.2, 0.4, 0.9, 0.1, 1, 1],
        split,
        radius_authors=[0.2, 0.4, 0.9, 0.3, 1, 1],
    )
    # radius exactly eps is not certified (strict inequality): certified_36 = 50.0, not 100.
    m02 = _certify(tmp_path / "certify/margin0.2.parquet", [1, 1], [36 / 255, 1.0])
    pre = _certify(tmp_path / "certify/pretrained.parquet", [0, 1], [1.0, 0.0])
    ev = tmp_path / "eval/dreamsim_ensemble.parquet"
    ev.parent.mkdir(parents=True)
    # test_imagenet mean 1.0 (3 rows), test_no_imagenet 0.0 (1 row): size-weighted 75.0
    pd.DataFrame(
        {
            "id": list("abcde"),
            "split": ["test_imagenet"] * 3 + ["test_no_imagenet", "val"],
            "p": 0.0,
            "d0": 0.0,
            "d1": 1.0,
            "score": [1, 1, 1, 0, 0],
        }
    ).to_parquet(ev)
    return {"margin0.5": m05, "margin0.2": m02, "pretrained": pre, "eval": str(ev)}


def _run_table1(tmp_path, inp, ref_csv, teacher="dreamsim_ensemble", extra=()):
    prefix = tmp_path / "out/table1"
    argv = [
        "--certify",
        f"margin0.5={inp['margin0.5']}",
        f"pretrained={inp['pretrained']}",
        f"margin0.2={inp['margin0.2']}",
        "--eval",
        f"dreamsim_ensemble={inp['eval']}",
        "--teacher",
        teacher,
        "--eps",
        "36",
        "72",
        "108",
        "--reference",
        ref_csv,
        "--out-prefix",
        str(prefix),
        *extra,
    ]
    return table1_cli.main(argv), prefix


def test_table1_values_order_and_formats(tmp_path, table1_inputs, ref_csv):
    rc, prefix = _run_table1(tmp_path, table1_inputs, ref_csv)
    assert rc == 0
    for ext in ("csv", "md", "tex", "parquet"):
        assert (prefix.parent / f"table1.{ext}").stat().st_size > 0
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in prefix.parent.iterdir()) == [
        "table1.csv",
        "table1.html",
        "table1.md",
        "table1.parquet",
        "table1.tex",
    ]
    t = pd.read_parquet(f"{prefix}.parquet")
    assert list(t.columns[:9]) == [
        "model",
        "teacher",
        "stage",
        "margin",
        "metric",
        "natural",
        "certified_36",
        "certified_72",
        "certified_108",
    ]
    assert list(t["model"]) == ["pretrained", "margin0.2", "margin0.5", "dreamsim_ensemble"]
    assert list(t["stage"]) == ["pretrained", "finetuned", "finetuned", "reference"]
    assert math.isnan(t["margin"][0]) and list(t["margin"][1:3]) == [0.2, 0.5]
    r = t.set_index("model")
    np.testing.assert_allclose(
        r.loc["margin0.5", ["natural", "certified_36", "certified_72", "certified_108"]].astype(
            float
        ),
        [68.75, 43.75, 18.75, 6.25],
    )
    assert r.loc["margin0.2", "certified_36"] == pytest.approx(50.0)
    assert r.loc["pretrained", "natural"] == pytest.approx(50.0)
    assert r.loc["pretrained", "certified_36"] == pytest.approx(0.0)
    assert r.loc["dreamsim_ensemble", "natural"] == pytest.approx(75.0)
    assert r.loc["dreamsim_ensemble", ["certified_36", "certified_72"]].isna().all()
    # The teacher's own natural score is its group's reference row: labelled with it.
    assert r.loc["dreamsim_ensemble", "teacher"] == "dreamsim_ensemble"
    assert (t["teacher"] == "dreamsim_ensemble").all()
    assert r.loc["margin0.5", "n_test"] == 4
    # reference columns: value and ours - paper
    assert r.loc["margin0.5", "natural_paper"] == 60.0
    assert r.loc["margin0.5", "natural_diff"] == pytest.approx(8.75)
    np.testing.assert_allclose(
        r.loc["margin0.5", ["certified_36_authors", "certified_72_authors"]].astype(float),
        [68.75, 43.75],
    )
    np.testing.assert_allclose(
        r.loc["margin0.5", ["unsound_36", "unsound_72", "unsound_108"]].astype(float),
        [25.0, 25.0, 0.0],
    )
    # the paper reports the authors' radius: the diff compares with that column
    assert r.loc["margin0.5", "certified_36_diff"] == pytest.approx(28.75)
    assert r.loc["margin0.5", "metric"] == "cosine" and r.loc["margin0.5", "half_votes"] == "keep"
    assert r.loc["dreamsim_ensemble", "natural_paper"] == 96.2
    assert pd.isna(r.loc["margin0.2", "natural_paper"])
    assert "Paper X" in r.loc["margin0.5", "paper_source"]
    # csv holds the same table
    c = pd.read_csv(f"{prefix}.csv")
    np.testing.assert_allclose(c["natural"], t["natural"])
    tex = Path(f"{prefix}.tex").read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}"):
        assert rule in tex
    assert r"dreamsim\_ensemble" in tex and "68.8" in tex
    rows = _md_rows(Path(f"{prefix}.md").read_text())
    assert rows[0][:7] == [
        "Model",
        "Teacher",
        "Stage",
        "Margin",
        "Metric",
        "Natural",
        "Cert. 36/255",
    ]
    assert "Natural (authors')" in rows[0] and "Cert. 36/255 (authors')" in rows[0]
    assert "Paper natural" in rows[0] and "Paper 36/255" in rows[0]
    assert all(c.endswith("-:") for c in rows[1][5:]) and rows[1][0].startswith(":-")
    assert len(rows) == 2 + 4  # header, alignment, 4 rows
    assert rows[4][:7] == [
        "margin0.5",
        "dreamsim_ensemble",
        "finetuned",
        "0.5",
        "cosine",
        "68.8",
        "43.8",
    ]
    # LipSim rows, then a rule, then the reference row (as in the paper)
    body = tex[tex.index(r"\midrule") :].splitlines()
    assert body[4] == r"\midrule" and body[5].startswith(r"dreamsim\_ensemble & ")


def test_table1_other_teacher_gets_no_paper_values(tmp_path, table1_inputs, ref_csv):
    # The paper's LipSim numbers are for the DreamSim teacher; a demo-teacher model must not
    # be compared with them (the teacher row itself still is).
    rc, prefix = _run_table1(tmp_path, table1_inputs, ref_csv, teacher="demo")
    assert rc == 0
    t = pd.read_parquet(f"{prefix}.parquet").set_index("model")
    assert pd.isna(t.loc["margin0.5", "natural_paper"])
    assert t.loc["dreamsim_ensemble", "natural_paper"] == 96.2


def test_table1_custom_eps_columns(tmp_path, table1_inputs, ref_csv):
    rc, prefix = _run_table1(
        tmp_path, table1_inputs, ref_csv, extra=["--eps", "18", "--no-reference"]
    )
    assert rc == 0
    t = pd.read_parquet(f"{prefix}.parquet")
    assert [c for c in t.columns if c.startswith("certified_") and c.count("_") == 1] == [
        "certified_18"
    ]
    assert t["natural_paper"].isna().all()


def test_table1_error_names_file_and_keeps_old_outputs(tmp_path, table1_inputs, ref_csv, capsys):
    bad = tmp_path / "certify/bad.parquet"
    pd.DataFrame({"split": ["test_imagenet"], "score": [1.0]}).to_parquet(bad)  # no radius
    out = tmp_path / "out"
    out.mkdir()
    (out / "table1.csv").write_text("old\n")
    rc = table1_cli.main(
        [
            "--certify",
            f"margin0.5={bad}",
            "--teacher",
            "t",
            "--out-prefix",
            str(out / "table1"),
            "--reference",
            ref_csv,
        ]
    )
    assert rc == 1
    err = capsys.readouterr().err
    assert "bad.parquet" in err and "radius" in err
    assert (out / "table1.csv").read_text() == "old\n"
    assert sorted(p.name for p in out.iterdir()) == ["table1.csv"]
    assert (
        table1_cli.main(["--certify", "nofile", "--teacher", "t", "--out-prefix", str(out / "t")])
        == 1
    )
    assert "NAME=FILE" in capsys.readouterr().err


def _attack(path: Path, clean, adv, split=None) -> str:
    n = len(clean)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "id": [f"t{i}" for i in range(n)],
            "split": split or ["test_imagenet"] * n,
            "p": 1.0,
            "score_clean": clean,
            "score_adv": adv,
            "d0_adv": 0.0,
            "d1_adv": 0.0,
            "delta_norm": 0.1,
        }
    ).to_parquet(path)
    return str(path)


def test_parse_attack_path():
    # the workflow's file names: Linf eps in /255 units, l2 in image units (lipsim.eps)
    k = parse_attack_path("R/attacks/lipsim-margin0.5/apgd-ce-linf-4.parquet")
    assert k == {"metric": "lipsim-margin0.5", "attack": "apgd-ce", "norm": "linf", "eps": 4 / 255}
    assert parse_attack_path("R/attacks/x/pgd-L2-0.5.parquet")["eps"] == 0.5
    with pytest.raises(ValueError, match="attack"):
        parse_attack_path("R/attacks/x/autoattack-l3-1.0.parquet")


def test_table2_long_wide_and_reference(tmp_path, ref_csv):
    a = tmp_path / "R/attacks"
    files = [
        # train rows are ignored: score = mean(1, 0, .5) = 50, clean = mean(1, 1, 0) = 66.67
        _attack(
            a / "lipsim-margin0.5/apgd-linf-4.parquet",
            [1, 1, 0, 0],
            [1, 0, 0.5, 1],
            ["test_imagenet", "test_imagenet", "test_no_imagenet", "train"],
        ),
        _attack(a / "lipsim-margin0.5/autoattack-l2-2.0.parquet", [1, 1, 0], [0, 0, 0]),
        _attack(a / "dreamsim_ensemble/autoattack-l2-2.0.parquet", [1, 1, 1, 1], [0, 0, 0, 1]),
    ]
    prefix = tmp_path / "tables/table2"
    rc = table2_cli.main(
        [
            "--attacks",
            *files,
            "--teacher",
            "dreamsim_ensemble",
            "--reference",
            ref_csv,
            "--out-prefix",
            str(prefix),
        ]
    )
    assert rc == 0
    t = pd.read_parquet(f"{prefix}.parquet")
    assert list(t.columns[:5]) == ["model", "attack", "norm", "eps", "score"]
    assert list(t["model"]) == ["dreamsim_ensemble", "lipsim-margin0.5", "lipsim-margin0.5"]
    row = t[(t["model"] == "lipsim-margin0.5") & (t["norm"] == "linf")].iloc[0]
    assert row["attack"] == "apgd" and row["eps"] == pytest.approx(4 / 255)
    assert row["score"] == pytest.approx(50.0)
    assert row["score_clean"] == pytest.approx(200 / 3)
    assert row["score_paper"] == 30.0 and row["score_diff"] == pytest.approx(20.0)
    assert t.loc[t["model"] == "dreamsim_ensemble", "score"].item() == pytest.approx(25.0)
    assert t.loc[t["model"] == "dreamsim_ensemble", "score_paper"].isna().all()
    md = Path(f"{prefix}.md").read_text()
    assert "AutoAttack ℓ2 ε=2" in md and "APGD ℓ∞ ε=4/255" in md
    assert ["lipsim-margin0.5", "66.7", "0.0", "50.0 (30.0)"] in _md_rows(md)
    tex = Path(f"{prefix}.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"\cmidrule" in tex
    assert r"$\epsilon=4/255$" in tex
    assert (prefix.parent / "table2.csv").is_file()


def test_table2_rejects_unparseable_path(tmp_path, capsys):
    f = _attack(tmp_path / "x/weird.parquet", [1], [1])
    assert table2_cli.main(["--attacks", f, "--out-prefix", str(tmp_path / "t2")]) == 1
    assert "weird.parquet" in capsys.readouterr().err


def _md_rows(md: str) -> list[list[str]]:
    """The cells of each row of a pipe table (columns are padded to a common width)."""
    return [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in md.splitlines()
        if line.startswith("|")
    ]


def test_generic_writers_markdown_and_booktabs():
    cols = pd.MultiIndex.from_tuples([("Model", ""), ("Natural", ""), ("PGD", "a"), ("PGD", "b")])
    display = pd.DataFrame([["x\\_y", "1.0", "2.0", "3.0"], ["z", "4.0", "–", "6.0"]], columns=cols)
    tex = tables.latex_table(display, "a comment").splitlines()
    assert tex[0] == "% a comment" and tex[1] == r"\begin{tabular}{lrrr}"
    assert tex[2] == r"\toprule" and r"\multicolumn{2}{c}{PGD}" in tex[3]
    assert tex[4] == r"\cmidrule(lr){3-4}"
    assert tex[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert r"x\_y & 1.0 & 2.0 & 3.0 \\" in tex
    flat = pd.DataFrame([["a", "1.0"], ["b", "–"]], columns=["Metric", "R@1"])
    md = tables.markdown_table(flat, "A note.")
    rows = _md_rows(md)
    assert rows[0] == ["Metric", "R@1"] and rows[2:] == [["a", "1.0"], ["b", "–"]]
    assert rows[1][0].startswith(":-") and rows[1][1].endswith("-:")  # left, right aligned
    assert md.endswith("\nA note.\n")


def test_retrieval_table(tmp_path):
    files = []
    for metric, rec in (("lipsim-margin0.5", [0.9, 0.8]), ("dreamsim_ensemble", [0.95, 0.3])):
        f = tmp_path / f"{metric}.parquet"
        pd.DataFrame({"metric": metric, "eps": [0.0, 1.0], "k": 1, "recall": rec}).to_parquet(f)
        files.append(str(f))
    prefix = tmp_path / "tables/retrieval"
    assert retrieval_cli.main(["--inputs", *files, "--out-prefix", str(prefix)]) == 0
    t = pd.read_parquet(f"{prefix}.parquet")
    assert list(t.columns) == ["metric", "eps", "k", "recall"]
    assert list(t["metric"]) == ["dreamsim_ensemble"] * 2 + ["lipsim-margin0.5"] * 2
    md = Path(f"{prefix}.md").read_text()
    assert ["dreamsim_ensemble", "0.950", "0.300"] in _md_rows(md)
    # the report shows the html inline: the whole table, one row per table row
    html = Path(f"{prefix}.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("<tr>") == 1 + len(t)
    assert "dreamsim_ensemble" in html and "lipsim-margin0.5" in html
    assert r"\toprule" in Path(f"{prefix}.tex").read_text()


def test_table2_workflow_file_names_and_columns(tmp_path, ref_csv):
    # The workflow writes Linf radii in /255 units in file names (autoattack-Linf-4) and
    # `lipsim attack` writes attack/norm/eps columns (eps in image units): both give 4/255.
    a = tmp_path / "R/attacks/lipsim-margin0.5"
    with_cols = _attack(a / "apgd-Linf-4.parquet", [1, 1], [1, 0])
    df = pd.read_parquet(with_cols).assign(attack="apgd", norm="Linf", eps=4 / 255)
    df.to_parquet(with_cols)
    no_cols = _attack(tmp_path / "R/attacks/lipsim-pretrained/apgd-Linf-4.parquet", [1], [1])
    prefix = tmp_path / "t2"
    rc = table2_cli.main(
        [
            "--attacks",
            with_cols,
            no_cols,
            "--reference",
            ref_csv,
            "--teacher",
            "dreamsim_ensemble",
            "--out-prefix",
            str(prefix),
        ]
    )
    assert rc == 0
    t = pd.read_parquet(f"{prefix}.parquet").set_index("model")
    np.testing.assert_allclose(t["eps"], [4 / 255, 4 / 255])
    assert list(t["norm"]) == ["linf", "linf"]
    assert t.loc["lipsim-margin0.5", "score_paper"] == 30.0  # matched at 4/255
    assert "ε=4/255" in Path(f"{prefix}.md").read_text()


def test_table1_one_row_per_model_and_metric(tmp_path, ref_csv):
    cos = pd.read_parquet(
        _certify(tmp_path / "a.parquet", [1, 1], [0.5, 0.5], radius_authors=[0.9, 0.9])
    )
    ball = pd.read_parquet(_certify(tmp_path / "b.parquet", [1, 0], [0.2, 0.2], metric="ball"))
    path = tmp_path / "certify/margin0.5.parquet"
    path.parent.mkdir()
    pd.concat([cos, ball]).to_parquet(path)
    prefix = tmp_path / "out/table1"
    assert (
        table1_cli.main(
            [
                "--certify",
                f"margin0.5={path}",
                "--teacher",
                "dreamsim_ensemble",
                "--eps",
                "108",
                "--reference",
                ref_csv,
                "--out-prefix",
                str(prefix),
            ]
        )
        == 0
    )
    t = pd.read_parquet(f"{prefix}.parquet").set_index("metric")
    assert list(t.index) == ["ball", "cosine"] and set(t["model"]) == {"margin0.5"}
    assert t.loc["ball", "natural"] == pytest.approx(50.0)
    assert t.loc["cosine", "natural"] == pytest.approx(100.0)
    assert t.loc["cosine", "unsound_108"] == pytest.approx(0.0)  # 0.5 > 108/255 = 0.42
    # Both rows carry the model's published values.
    assert (t["natural_paper"] == 60.0).all()
    assert "(authors'): 2AFC score (DreamSim's formula), all triplets" in (
        Path(f"{prefix}.md").read_text()
    )


def test_table1_accuracy_scoring_uses_the_authors_correct_column(tmp_path):
    path = Path(_certify(tmp_path / "certify/margin0.5.parquet", [0.8, 0.6], [0.5, 0.5]))
    pd.read_parquet(path).assign(p=0.2, correct=[1.0, 0.0]).to_parquet(path)
    prefix = tmp_path / "out/table1"
    # natural is always the 2AFC score; natural_authors follows --scoring.
    for scoring, authors in (("twoafc", 70.0), ("accuracy", 50.0)):
        assert (
            table1_cli.main(
                [
                    "--certify",
                    f"margin0.5={path}",
                    "--teacher",
                    "demo",
                    "--eps",
                    "36",
                    "--no-reference",
                    "--scoring",
                    scoring,
                    "--out-prefix",
                    str(prefix),
                ]
            )
            == 0
        )
        t = pd.read_parquet(f"{prefix}.parquet")
        assert t.loc[0, "natural"] == pytest.approx(70.0) and t.loc[0, "scoring"] == scoring
        assert t.loc[0, "natural_authors"] == pytest.approx(authors)


def _eval(path: Path, scores) -> str:
    """An evaluate output whose test score is mean(scores) (all test_imagenet but the last)."""
    n = len(scores)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "id": [f"e{i}" for i in range(n)],
            "split": ["test_imagenet"] * (n - 1) + ["test_no_imagenet"],
            "p": 0.0,
            "d0": 0.0,
            "d1": 1.0,
            "score": scores,
        }
    ).to_parquet(path)
    return str(path)


def test_table1_groups_rows_by_teacher_with_reference_rows(tmp_path):
    """A teacher sweep: rows teacher by teacher (its students by stage/margin/metric, then its
    own natural score), baselines last; each row's teacher from TEACHER/MODEL."""
    c = tmp_path / "certify"
    argv = ["--certify"]
    # Given out of order on purpose: the order of first appearance of teachers is kept
    # (demo2 first here), the order within a group is the table's own.
    for teacher, model, scores in (
        ("demo2", "margin0.5", [1, 0]),
        ("demo", "margin0.5", [1, 1]),
        ("demo2", "pretrained", [0, 0]),
        ("demo", "pretrained", [0, 1]),
    ):
        for metric in ("cosine", "ball"):
            _certify(c / teacher / metric / f"{model}.parquet", scores, [1.0, 1.0], metric=metric)
        f = tmp_path / "both" / teacher / f"{model}.parquet"
        f.parent.mkdir(parents=True, exist_ok=True)
        pd.concat(
            [pd.read_parquet(c / teacher / m / f"{model}.parquet") for m in ("cosine", "ball")]
        ).to_parquet(f)
        argv.append(f"{teacher}/{model}={f}")
    argv += [
        "--eval",
        f"l2={_eval(tmp_path / 'eval/l2.parquet', [1, 0, 0, 0])}",
        f"demo={_eval(tmp_path / 'eval/demo.parquet', [1, 1, 1, 0])}",
        f"demo2={_eval(tmp_path / 'eval/demo2.parquet', [1, 1, 0, 0])}",
        "--eps",
        "36",
        "--no-reference",
        "--out-prefix",
        str(tmp_path / "out/table1"),
    ]
    assert table1_cli.main(argv) == 0
    t = pd.read_parquet(tmp_path / "out/table1.parquet")
    got = [
        (
            None if pd.isna(r.teacher) else r.teacher,
            r.model,
            r.stage,
            None if pd.isna(r.metric) else r.metric,
        )
        for r in t.itertuples()
    ]
    assert got == [
        ("demo2", "pretrained", "pretrained", "ball"),
        ("demo2", "pretrained", "pretrained", "cosine"),
        ("demo2", "margin0.5", "finetuned", "ball"),
        ("demo2", "margin0.5", "finetuned", "cosine"),
        ("demo2", "demo2", "reference", None),
        ("demo", "pretrained", "pretrained", "ball"),
        ("demo", "pretrained", "pretrained", "cosine"),
        ("demo", "margin0.5", "finetuned", "ball"),
        ("demo", "margin0.5", "finetuned", "cosine"),
        ("demo", "demo", "reference", None),
        (None, "l2", "reference", None),
    ]
    r = t.set_index(["teacher", "model", "metric"], drop=False)
    # Each row's numbers come from its own teacher's file (same model names, other scores).
    assert r.loc[("demo2", "margin0.5", "ball"), "natural"] == pytest.approx(50.0)
    assert r.loc[("demo", "margin0.5", "ball"), "natural"] == pytest.approx(100.0)
    refs = t[t["stage"] == "reference"].set_index("model")["natural"]
    assert refs.to_dict() == pytest.approx({"demo2": 50.0, "demo": 75.0, "l2": 25.0})
    md = [row[:3] for row in _md_rows((tmp_path / "out/table1.md").read_text())]
    assert md.index(["demo2", "demo2", "reference"]) < md.index(
        ["pretrained", "demo", "pretrained"]
    )


def test_table1_model_without_teacher_is_an_error(tmp_path, table1_inputs, capsys):
    rc = table1_cli.main(
        [
            "--certify",
            f"margin0.5={table1_inputs['margin0.5']}",
            "--eps",
            "36",
            "--no-reference",
            "--out-prefix",
            str(tmp_path / "t"),
        ]
    )
    assert rc != 0
    err = capsys.readouterr().err
    assert "--certify margin0.5" in err and "TEACHER/margin0.5" in err
    assert not (tmp_path / "t.csv").exists()


def test_table2_natural_column_is_the_attacked_triplets(tmp_path):
    """Table 2's Natural is the unattacked score of exactly the attacked triplets (a subset of
    the test set, so it differs from Table 1's), and the table says so."""
    a = tmp_path / "R/attacks/lipsim-margin0.5"
    # 4 attacked triplets: clean 1, 1, 1, 0 -> 75.0 whatever the whole test set scores.
    files = [
        _attack(a / "autoattack-l2-2.parquet", [1, 1, 1, 0], [1, 0, 0, 0]),
        _attack(a / "pgd-l2-2.parquet", [1, 1, 1, 0], [1, 1, 0, 0]),
    ]
    assert tables.clean_by_model(files) == {"lipsim-margin0.5": pytest.approx(75.0)}
    prefix = tmp_path / "tables/table2"
    assert table2_cli.main(["--attacks", *files, "--out-prefix", str(prefix)]) == 0
    md = Path(f"{prefix}.md").read_text()
    rows = _md_rows(md)
    assert rows[0][1] == "Natural (attacked triplets)"
    assert rows[2][:2] == ["lipsim-margin0.5", "75.0"]
    assert "the same 4 test triplets as the attacks" in md and "Table 1" in md
    tex = Path(f"{prefix}.tex").read_text()
    assert "Natural (attacked triplets)" in tex and "% Scores:" in tex
    assert "the same 4 test triplets" in tex
    t = pd.read_parquet(f"{prefix}.parquet")
    assert set(t["score_clean"]) == {75.0} and set(t["n_test"]) == {4}


def test_table2_natural_refuses_attacks_on_different_triplets(tmp_path, capsys):
    a = tmp_path / "R/attacks/lipsim-margin0.5"
    f1 = _attack(a / "autoattack-l2-2.parquet", [1, 1], [1, 0])
    f2 = _attack(a / "pgd-l2-2.parquet", [1, 1, 0], [1, 0, 0])  # one more triplet
    assert table2_cli.main(["--attacks", f1, f2, "--out-prefix", str(tmp_path / "t2")]) == 1
    err = capsys.readouterr().err
    assert "different test triplets" in err and "pgd-l2-2.parquet" in err
    assert not (tmp_path / "t2.md").exists()


def test_table2_scaled_radii_are_labelled_with_the_papers(tmp_path):
    """Demo radii are the paper's x 32/224 (attacks.eps_reference_size): headers show both."""
    a = tmp_path / "R/attacks/lipsim-margin0.5"
    l2 = _attack(a / "autoattack-L2-2.parquet", [1, 1], [1, 0])
    pd.read_parquet(l2).assign(attack="autoattack", norm="L2", eps=2 / 7).to_parquet(l2)
    linf = _attack(a / "autoattack-Linf-4.parquet", [1, 1], [1, 1])
    pd.read_parquet(linf).assign(attack="autoattack", norm="Linf", eps=4 / 255).to_parquet(linf)
    prefix = tmp_path / "tables/table2"
    argv = [
        "--attacks",
        l2,
        linf,
        "--image-size",
        "32",
        "--eps-reference-size",
        "224",
        "--out-prefix",
        str(prefix),
    ]
    assert table2_cli.main(argv) == 0
    md = Path(f"{prefix}.md").read_text()
    header = _md_rows(md)[0]
    assert "AutoAttack ℓ2 ε=0.286 (paper 2)" in header
    assert "AutoAttack ℓ∞ ε=4/255" in header  # per pixel: not scaled
    assert "× 32/224" in md
    assert r"$\epsilon=0.286$ (paper 2)" in Path(f"{prefix}.tex").read_text()
    t = pd.read_parquet(f"{prefix}.parquet").set_index("norm")
    assert t.loc["l2", "eps"] == pytest.approx(2 / 7) and t.loc["l2", "eps_reference"] == 2.0
    assert t.loc["linf", "eps_reference"] == pytest.approx(4 / 255)
    # Without a size the reference size means nothing: one line naming the option.
    bad = ["--attacks", l2, "--eps-reference-size", "224", "--out-prefix", str(prefix)]
    assert table2_cli.main(bad) == 1


def test_table1_certifies_at_radii_scaled_to_the_image_size(tmp_path, table1_inputs, ref_csv):
    # At 32 px the paper's 36/255 and 108/255 (meant at 224 px) are applied x 32/224: 0.0202 and
    # 0.0605 in image units. margin0.5's test radii (0.2, 0.4, 0.9, 0.1) all exceed both, so
    # every correct triplet is certified (68.75, the natural score), where the unscaled radii
    # certify 43.75 and 6.25 (table1_inputs).
    scaled = ["--image-size", "32", "--eps-reference-size", "224"]
    rc, prefix = _run_table1(tmp_path, table1_inputs, ref_csv, extra=scaled)
    assert rc == 0
    t = pd.read_parquet(f"{prefix}.parquet").set_index("model")
    assert t.loc["margin0.5", "certified_36"] == pytest.approx(68.75)
    assert t.loc["margin0.5", "certified_108"] == pytest.approx(68.75)
    assert t["eps_scale"].to_numpy() == pytest.approx([32 / 224] * len(t))
    assert "scaled to the image size" in Path(f"{prefix}.md").read_text()
    rc, prefix = _run_table1(tmp_path / "plain", table1_inputs, ref_csv)
    t = pd.read_parquet(f"{prefix}.parquet").set_index("model")
    assert t.loc["margin0.5", "certified_36"] == pytest.approx(43.75)
    assert (t["eps_scale"] == 1.0).all()
