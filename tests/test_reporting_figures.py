"""Figures 3a, 3b and margins are produced as non-empty PDF + readable PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from lipsim.cli import fig3a as fig3a_cli
from lipsim.cli import fig3b as fig3b_cli
from lipsim.reporting.figures import fig3a_data, fig_margins


def _check(prefix: Path):
    pdf, png = Path(f"{prefix}.pdf"), Path(f"{prefix}.png")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    img = imread(png)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert (
        sorted(p.name for p in prefix.parent.iterdir() if p.name.startswith(".")) == []
    )  # no temp files left


@pytest.fixture
def inputs(tmp_path):
    rng = np.random.default_rng(0)
    evals, attacks, dists = {}, {}, {}
    for m in ("dreamsim_ensemble", "l2", "lipsim-margin0.5"):
        e = tmp_path / f"eval/{m}.parquet"
        e.parent.mkdir(exist_ok=True)
        pd.DataFrame(
            {
                "id": range(6),
                "split": ["test_imagenet"] * 3 + ["test_no_imagenet"] * 3,
                "p": 0.0,
                "d0": 0.0,
                "d1": 1.0,
                "score": [1, 1, 1, 1, 0, 0],
            }
        ).to_parquet(e)
        evals[m] = str(e)
        a = tmp_path / f"attacks/{m}/autoattack-l2-2.0.parquet"
        a.parent.mkdir(parents=True)
        pd.DataFrame(
            {
                "id": range(4),
                "split": "test_imagenet",
                "p": 0.0,
                "score_clean": [1, 1, 1, 0],
                "score_adv": [1, 0, 0, 0],
                "d0_adv": 0.0,
                "d1_adv": 0.0,
                "delta_norm": 2.0,
            }
        ).to_parquet(a)
        attacks[m] = str(a)
        d = tmp_path / f"distances/{m}.parquet"
        d.parent.mkdir(exist_ok=True)
        pd.DataFrame(
            {"image": [f"i{i}" for i in range(40)], "eps": 1.0, "distance": rng.random(40)}
        ).to_parquet(d)
        dists[m] = str(d)
    return evals, attacks, dists


def test_fig3a(tmp_path, inputs):
    evals, attacks, _ = inputs
    data, label = fig3a_data({"l2": evals["l2"]}, attacks)
    assert "AutoAttack" in label and "2" in label
    # paper order: L2 before DreamSim before LipSim; natural from eval where given, else from
    # the attack file's score_clean (75.0)
    assert list(dict.fromkeys(data["label"])) == ["L2", "DreamSim", "LipSim"]
    nat = data[data["kind"] == "Natural"].set_index("metric")["score"]
    assert nat["l2"] == pytest.approx(400 / 6) and nat["dreamsim_ensemble"] == pytest.approx(75)
    assert (data[data["kind"] == label]["score"] == 25.0).all()
    prefix = tmp_path / "figures/fig3a"
    argv = (
        ["--eval"]
        + [f"{k}={v}" for k, v in evals.items()]
        + ["--attacks"]
        + [f"{k}={v}" for k, v in attacks.items()]
        + ["--out-prefix", str(prefix)]
    )
    assert fig3a_cli.main(argv) == 0
    _check(prefix)
    # the workflow's invocation names the attack setting explicitly
    assert fig3a_cli.main([*argv, "--norm", "L2", "--eps", "2"]) == 0
    _check(prefix)
    _, label = fig3a_data({}, attacks, norm="linf", eps=4 / 255)  # image units
    assert "4/255" in label and "infty" in label


def test_fig3b(tmp_path, inputs):
    _, _, dists = inputs
    prefix = tmp_path / "figures/fig3b"
    assert (
        fig3b_cli.main(
            ["--distances", *[f"{k}={v}" for k, v in dists.items()], "--out-prefix", str(prefix)]
        )
        == 0
    )
    _check(prefix)


def test_fig_margins(tmp_path):
    t = pd.DataFrame(
        {
            "model": ["pretrained", "margin0.2", "margin0.5", "dreamsim_ensemble"],
            "teacher": ["t", "t", "t", None],
            "stage": ["pretrained", "finetuned", "finetuned", "reference"],
            "margin": [np.nan, 0.2, 0.5, np.nan],
            "natural": [86.6, 88.5, 85.1, 96.2],
            "certified_36": [70.0, 75.0, 80.0, np.nan],
            "certified_72": [50.0, 60.0, 65.0, np.nan],
            "natural_paper": np.nan,
            "certified_36_paper": np.nan,
        }
    )
    prefix = tmp_path / "figures/margins"
    prefix.parent.mkdir()
    fig_margins(t, prefix)  # Table 1's columns; the CLI scores certify files (test_radii.py)
    _check(prefix)


def test_figure_input_errors(tmp_path, capsys):
    bad = tmp_path / "d.parquet"
    pd.DataFrame({"image": ["a"], "distance": [0.1]}).to_parquet(bad)  # no eps column
    assert fig3b_cli.main(["--distances", f"x={bad}", "--out-prefix", str(tmp_path / "f")]) == 1
    assert "d.parquet" in capsys.readouterr().err
    assert not list(tmp_path.glob("f.*"))


def test_fig_margins_one_line_set_per_teacher(tmp_path):
    from lipsim.reporting.figures import margin_line_sets

    rows = []
    for teacher, shift in (("demo", 0.0), ("demo2", -5.0)):
        rows += [
            {
                "model": "pretrained",
                "teacher": teacher,
                "stage": "pretrained",
                "margin": np.nan,
                "metric": "ball",
                "natural": 80 + shift,
                "certified_36": 40 + shift,
            },
            *[
                {
                    "model": f"margin{m:g}",
                    "teacher": teacher,
                    "stage": "finetuned",
                    "margin": m,
                    "metric": metric,
                    "natural": 78 + shift - m,
                    "certified_36": 50 + shift + m,
                }
                for m in (0.2, 0.5)
                for metric in ("ball", "cosine")
            ],
            {
                "model": teacher,
                "teacher": teacher,
                "stage": "reference",
                "margin": np.nan,
                "metric": None,
                "natural": 90 + shift,
                "certified_36": np.nan,
            },
        ]
    rows.append(
        {
            "model": "l2",
            "teacher": None,
            "stage": "reference",
            "margin": np.nan,
            "metric": None,
            "natural": 60.0,
            "certified_36": np.nan,
        }
    )
    t = pd.DataFrame(rows)
    sets = margin_line_sets(t, metric="ball")
    assert [s["teacher"] for s in sets] == ["demo", "demo2"]
    for s, shift in zip(sets, (0.0, -5.0), strict=True):
        assert list(s["finetuned"]["margin"]) == [0.2, 0.5]
        assert (s["finetuned"]["metric"] == "ball").all()
        assert list(s["pretrained"]["natural"]) == [80 + shift]
        assert list(s["references"]["model"]) == [s["teacher"]]  # its own natural score
    prefix = tmp_path / "figures/margins"
    prefix.parent.mkdir()
    fig_margins(t, prefix, metric="ball")
    _check(prefix)


def test_fig3a_scaled_radius_label(tmp_path, inputs):
    """At 32 px the demo attacks at the paper's eps x 32/224: the legend gives both radii,
    whether read from the attack files (applied eps) or given as the configured --eps."""
    _, attacks, _ = inputs
    for path in attacks.values():
        pd.read_parquet(path).assign(attack="autoattack", norm="L2", eps=2 / 7).to_parquet(path)
    _, label = fig3a_data({}, attacks, image_size=32, eps_reference_size=224)
    assert "0.286 (paper 2)" in label
    _, label2 = fig3a_data({}, attacks, norm="L2", eps=2.0, image_size=32, eps_reference_size=224)
    assert label2 == label
    _, plain = fig3a_data({}, attacks, norm="L2", eps=2.0)  # nothing scaled: as configured
    assert "=2" in plain and "paper" not in plain
    prefix = tmp_path / "figures/fig3a"
    argv = [
        "--attacks",
        *[f"{k}={v}" for k, v in attacks.items()],
        "--norm",
        "L2",
        "--eps",
        "2",
        "--image-size",
        "32",
        "--eps-reference-size",
        "224",
        "--out-prefix",
        str(prefix),
    ]
    assert fig3a_cli.main(argv) == 0
    _check(prefix)
