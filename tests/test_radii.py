"""Sound vs authors' radius: table and figure (lipsim radii), the scaled certification radii,
and the margins figure scored at them (lipsim fig-margins), on certify files written here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from lipsim.cli import fig_margins as margins_cli
from lipsim.cli import radii as radii_cli
from lipsim.reporting.certified import certify_radii, radius_label
from lipsim.reporting.figures import margins_table
from lipsim.reporting.radii import radii_table

SPLITS = ["test_imagenet", "test_no_imagenet"]


def certify_file(path: Path, *, seed=0, n=40, stage="finetuned", margin=0.5, teacher="demo"):
    """Rows as `lipsim certify` writes them: cosine rows with R = ||f(ref)|| m, ball rows with
    R = m (and other m), norms on both sides of 1, one exact tie, a train row to ignore."""
    rng = np.random.default_rng(seed)
    norm = np.exp(rng.normal(0.0, 0.5, n))
    parts = []
    for metric in ("cosine", "ball"):
        m = rng.uniform(0.005, 0.1, n)
        m[0] = 0.0  # a tie: no ratio, not drawable
        parts.append(
            pd.DataFrame(
                {
                    "id": range(n),
                    "split": [SPLITS[i % 2] for i in range(n - 1)] + ["train"],
                    "metric": metric,
                    "p": rng.uniform(0, 1, n),
                    "score": rng.uniform(0.5, 1, n),
                    "correct": 1.0,
                    "radius": norm * m if metric == "cosine" else m,
                    "radius_authors": m,
                    "norm": norm,
                    "stage": stage,
                    "margin": margin if stage == "finetuned" else np.nan,
                    "teacher": teacher,
                }
            )
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.concat(parts, ignore_index=True).to_parquet(path)
    return path


def _png_ok(prefix: Path):
    assert Path(f"{prefix}.pdf").read_bytes()[:5] == b"%PDF-"
    img = imread(f"{prefix}.png")
    assert img.ndim == 3 and img.shape[0] > 200 and img.shape[1] > 200


def test_certify_radii_are_scaled_like_the_attacks_and_labelled_with_the_papers():
    scaled = certify_radii([36, 72, 108], image_size=32, reference_size=224)
    assert [p for _, p in scaled] == [36, 72, 108]
    assert [r for r, _ in scaled] == pytest.approx([e / 255 * 32 / 224 for e in (36, 72, 108)])
    assert certify_radii([36], image_size=224, reference_size=224) == [(36 / 255, 36.0)]
    assert certify_radii([36]) == [(36 / 255, 36.0)]  # no image size: as written
    assert radius_label(*scaled[0], tex=False) == "ε=0.0202 (paper 36/255)"
    assert radius_label(36 / 255, 36.0, tex=False) == "ε=36/255"


def test_radii_table_quantiles_and_unsound_share(tmp_path):
    files = {
        "margin0.5": certify_file(tmp_path / "a.parquet", seed=0),
        "pretrained": certify_file(tmp_path / "p.parquet", seed=1, stage="pretrained"),
    }
    table = radii_table({k: str(v) for k, v in files.items()})
    assert list(table["model"]) == ["margin0.5", "margin0.5", "pretrained", "pretrained"]
    assert list(table["metric"]) == ["ball", "cosine"] * 2
    df = pd.read_parquet(files["margin0.5"])
    test = df[df["split"] != "train"]
    cos = test[test["metric"] == "cosine"]
    row = table[(table["model"] == "margin0.5") & (table["metric"] == "cosine")].iloc[0]
    assert row["n"] == len(cos) == 39 and row["stage"] == "finetuned" and row["margin"] == 0.5
    assert row["norm_q50"] == pytest.approx(np.median(cos["norm"]))
    usable = cos[cos["radius_authors"] > 0]  # the tie has no ratio
    # For cosine R / m is ||f(ref)||: the ratio quantiles are those of the norms (tie left out).
    assert row["ratio_q05"] == pytest.approx(np.quantile(usable["norm"], 0.05))
    assert row["ratio_q95"] == pytest.approx(np.quantile(usable["norm"], 0.95))
    assert row["below"] == pytest.approx(100 * np.mean(usable["norm"] < 1))
    ball = table[table["metric"] == "ball"]
    assert (ball[["ratio_q05", "ratio_q50", "ratio_q95"]] == 1.0).all().all()
    assert (ball["below"] == 0).all()


def test_radii_cli_writes_table_and_figure(tmp_path):
    certify = []
    for i, model in enumerate(["pretrained", "margin0.2", "margin0.5", "demo2/margin0.5"]):
        stage = "pretrained" if model == "pretrained" else "finetuned"
        path = certify_file(tmp_path / f"certify/{model}.parquet", seed=i, stage=stage)
        certify.append(f"{model}={path}")
    table, figure = tmp_path / "tables/radii", tmp_path / "figures/radii"
    args = ["--certify", *certify, "--eps", "36", "72", "108", "--image-size", "32"]
    args += ["--eps-reference-size", "224", "--table-prefix", str(table)]
    assert radii_cli.main([*args, "--figure-prefix", str(figure)]) == 0
    for ext in ("csv", "md", "tex", "parquet", "html"):
        assert Path(f"{table}.{ext}").stat().st_size > 0
    md = Path(f"{table}.md").read_text()
    assert "R/m median" in md and "‖f(ref)‖ 5%" in md and "R < m (%)" in md
    assert len(pd.read_parquet(f"{table}.parquet")) == 8  # 4 models x 2 metrics
    _png_ok(figure)


def test_radii_cli_errors_name_the_input(tmp_path, capsys):
    pre = certify_file(tmp_path / "p.parquet", stage="pretrained")
    out = ["--table-prefix", str(tmp_path / "t"), "--figure-prefix", str(tmp_path / "f")]
    assert radii_cli.main(["--certify", f"pretrained={pre}", "--eps", "36", *out]) == 1
    err = capsys.readouterr().err
    assert err.startswith("lipsim radii: error: ") and "no finetuned model" in err
    bad = tmp_path / "bad.parquet"
    pd.read_parquet(pre).drop(columns="norm").to_parquet(bad)
    assert radii_cli.main(["--certify", f"m={bad}", "--eps", "36", *out]) == 1
    err = capsys.readouterr().err
    assert "bad.parquet" in err and "'norm'" in err and len(err.strip().splitlines()) == 1


def test_margins_are_scored_at_the_scaled_radii(tmp_path):
    files = {}
    for i, model in enumerate(["pretrained", "margin0.2", "margin0.5"]):
        stage = "pretrained" if model == "pretrained" else "finetuned"
        margin = float(model[6:]) if stage == "finetuned" else None
        files[model] = certify_file(
            tmp_path / f"{model}.parquet", seed=i, stage=stage, margin=margin
        )
    ev = tmp_path / "demo.parquet"
    pd.DataFrame({"split": SPLITS * 5, "score": [1.0, 0.0] * 5}).to_parquet(ev)
    radii = certify_radii([36, 72], image_size=32, reference_size=224)
    table = margins_table({k: str(v) for k, v in files.items()}, {"demo": str(ev)}, "cosine", radii)
    assert list(table["stage"]) == ["pretrained", "finetuned", "finetuned", "reference"]
    assert table["natural"].iloc[-1] == pytest.approx(50.0)
    df = pd.read_parquet(files["margin0.5"])
    cos = df[(df["metric"] == "cosine") & (df["split"] != "train")]
    row = table[table["model"] == "margin0.5"].iloc[0]
    for (r, _), col in zip(radii, ("certified_36", "certified_72"), strict=True):
        want = 100 * np.mean(cos["score"] * (cos["radius"] > r))
        assert row[col] == pytest.approx(want)
        assert 0 < row[col] < row["natural"]  # the scaled radii certify some, not all
    prefix = tmp_path / "figures/margins"
    args = ["--certify", *[f"{k}={v}" for k, v in files.items()], "--eval", f"demo={ev}"]
    args += ["--metric", "cosine", "--eps", "36", "72", "--image-size", "32"]
    args += ["--eps-reference-size", "224", "--out-prefix", str(prefix)]
    assert margins_cli.main(args) == 0
    _png_ok(prefix)
