"""The objectives study (config study.objectives): its table and figure from certify and
attack files written here, and the DAG it adds (dry runs of the real workflow)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import dry_run_jobs, snakemake
from test_radii import SPLITS, certify_file

from lipsim.cli import study as study_cli
from lipsim.reporting.certified import certify_radii
from lipsim.reporting.study import study_table

ROOT = Path(__file__).resolve().parents[1]


def attack_file(path: Path, metric: str, *, seed=0, n=16, eps=2 / 7):
    rng = np.random.default_rng(seed)
    clean = rng.uniform(0.5, 1, n)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(
        {
            "id": range(n),
            "split": [SPLITS[i % 2] for i in range(n)],
            "score_clean": clean,
            "score_adv": clean * rng.uniform(0, 1, n),
            "attack": "autoattack",
            "norm": "L2",
            "eps": eps,
            "lipsim_metric": metric,
        }
    ).to_parquet(path)
    return path


@pytest.fixture
def arms(tmp_path):
    """Two objectives x two margins: keys OBJECTIVE/MODEL -> (certify, attack) files."""
    certify, attacks = {}, {}
    for i, (objective, metric) in enumerate(
        (("hinge_sound-cosine", "cosine"), ("hinge-ball", "ball"))
    ):
        for j, margin in enumerate((0.5, 0.2)):
            model = f"margin{margin:g}" + ("" if metric == "ball" else f"-{objective}")
            key = f"{objective}/{model}"
            certify[key] = str(
                certify_file(tmp_path / f"c/{model}.parquet", seed=2 * i + j, margin=margin)
            )
            attacks[key] = str(attack_file(tmp_path / f"a/{model}.parquet", metric, seed=2 * i + j))
    return certify, attacks


def test_study_table_scores_each_arm_under_its_metric(arms):
    certify, attacks = arms
    radii = certify_radii([36, 72, 108], image_size=32, reference_size=224)
    table = study_table(certify, attacks, radii, image_size=32, eps_reference_size=224)
    assert list(table["objective"]) == ["hinge_sound-cosine"] * 2 + ["hinge-ball"] * 2
    assert list(table["margin"]) == [0.2, 0.5, 0.2, 0.5]  # by margin within an objective
    assert list(table["metric"]) == ["cosine", "cosine", "ball", "ball"]
    for _, row in table.iterrows():
        key = f"{row['objective']}/{row['model']}"
        df = pd.read_parquet(certify[key])
        # its own metric's rows (cosine and ball radii differ in these files)
        mine = df[(df["metric"] == row["metric"]) & (df["split"] != "train")]
        assert row["natural"] == pytest.approx(100 * mine["score"].mean())
        for r, p in radii:
            want = 100 * np.mean(mine["score"] * (mine["radius"] > r))
            assert row[f"certified_{p:g}"] == pytest.approx(want)
        att = pd.read_parquet(attacks[key])
        assert row["attacked"] == pytest.approx(100 * att["score_adv"].mean())
        assert row["natural_attacked"] == pytest.approx(100 * att["score_clean"].mean())
        assert row["eps"] == pytest.approx(2 / 7) and row["eps_reference"] == pytest.approx(2.0)
        assert row["norm_q50"] == pytest.approx(mine["norm"].median())


def test_study_cli_writes_table_and_figure(tmp_path, arms):
    certify, attacks = arms
    table, figure = tmp_path / "tables/study", tmp_path / "figures/study"
    args = ["--certify", *[f"{k}={v}" for k, v in certify.items()]]
    args += ["--attacks", *[f"{k}={v}" for k, v in attacks.items()]]
    args += ["--eps", "36", "72", "108", "--image-size", "32", "--eps-reference-size", "224"]
    args += ["--table-prefix", str(table), "--figure-prefix", str(figure)]
    assert study_cli.main(args) == 0
    md = Path(f"{table}.md").read_text()
    assert "Certified ε=0.0202 (paper 36/255)" in md and "AutoAttack ε=0.286 (paper 2)" in md
    assert "hinge_sound-cosine" in md
    assert Path(f"{figure}.png").stat().st_size > 10_000
    assert Path(f"{figure}.pdf").read_bytes()[:5] == b"%PDF-"


def test_study_errors_are_one_line_naming_the_input(tmp_path, arms, capsys):
    certify, attacks = arms
    out = [
        "--eps",
        "36",
        "--table-prefix",
        str(tmp_path / "t"),
        "--figure-prefix",
        str(tmp_path / "f"),
    ]
    key, path = next(iter(certify.items()))
    assert study_cli.main(["--certify", f"rmse-cosine/m={path}", *out]) == 1
    err = capsys.readouterr().err
    assert "rmse-cosine/m" in err and "LOSS-METRIC" in err
    # an attack run under another metric than the objective's
    wrong = attack_file(tmp_path / "wrong.parquet", "ball")
    assert study_cli.main(["--certify", f"{key}={path}", "--attacks", f"{key}={wrong}", *out]) == 1
    err = capsys.readouterr().err
    assert "wrong.parquet" in err and "'cosine'" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.glob("t.*")) and not list(tmp_path.glob("f.*"))


# ----------------------------------------------------------------------------- the DAG
def _dry_run(tmp_path: Path, overlay: str) -> list[tuple[str, str, str]]:
    """(rule, wildcards, shell command) of every job a dry run of the demo config plans."""
    work = tmp_path / f"w{len(list(tmp_path.iterdir()))}"
    shutil.copytree(ROOT / "config", work / "config")
    (work / "config" / "overlay.yaml").write_text(overlay)
    cfg = ["--configfile", str(work / "config/overlay.yaml")]
    proc = snakemake(work, "-n", "-p", "--cores", "1", *cfg)
    return [(j["rule"], j["wildcards"], j["shell"]) for j in dry_run_jobs(proc)]


@pytest.mark.slow
def test_study_adds_only_its_chains_and_keeps_the_run_own_models(tmp_path):
    off = _dry_run(tmp_path, "study: {objectives: []}\n")
    on = _dry_run(tmp_path, "study: {objectives: [hinge-cosine, hinge_sound-cosine, hinge-ball]}\n")
    assert not [j for j in off if j[0] == "study" or "-hinge" in j[1]]
    # Study off: every job of the run, with the same command, is planned with it on too,
    # except those that gather the models (the consistency check, the radii, the manifest).
    gathered = {"check_consistency", "radii", "manifest", "all"}
    assert {j for j in off if j[0] not in gathered} <= set(on)
    extra = {(r, w) for r, w, _ in set(on) - set(off) if r not in gathered}
    models = [f"margin{m}-{o}" for o in ("hinge-cosine", "hinge_sound-cosine") for m in (0.2, 0.5)]
    want = {("finetune", f"model={m}") for m in models}
    want |= {("certify", f"model={m}") for m in models}
    want |= {("attack", f"metric=lipsim-{m}, attack=autoattack, norm=L2, eps=2") for m in models}
    assert extra == want | {("study", "")}
    # hinge-ball is the run's own objective (finetune.loss hinge, metric ball): no retraining.
    shell = {w: s for r, w, s in on if r == "finetune"}
    for model, flags in (
        ("margin0.5-hinge_sound-cosine", ("--metric cosine", "--loss hinge_sound")),
        ("margin0.2-hinge-cosine", ("--metric cosine", "--loss hinge")),
        ("margin0.5", ("--metric ball", "--loss hinge")),
    ):
        assert all(f" {flag} " in shell[f"model={model}"] for flag in flags), model
    attack = {w: s for r, w, s in on if r == "attack"}
    key = "metric=lipsim-margin0.5-hinge_sound-cosine, attack=autoattack, norm=L2, eps=2"
    assert "--metric lipsim-cosine:" in attack[key]
    (study,) = [s for r, _, s in on if r == "study"]
    assert "hinge-ball/margin0.5=" in study and "hinge_sound-cosine/margin0.2-hinge_sound" in study


@pytest.mark.slow
def test_a_study_chain_runs_through_the_workflow(tmp_path):
    """hinge_sound under cosine: finetuned, certified and attacked for real (config/test.yaml,
    one objective, the primary margin); the reporting on such files is tested above."""
    import torch

    from lipsim.models import load_checkpoint

    work = tmp_path / "w"
    shutil.copytree(ROOT / "config", work / "config")
    (work / "config" / "study.yaml").write_text("study: {objectives: [hinge_sound-cosine]}\n")
    model = "margin0.5-hinge_sound-cosine"
    run = work / "results" / "test"
    targets = [f"results/test/certify/{model}.parquet"]
    targets += [f"results/test/attacks/lipsim-{model}/autoattack-L2-2.parquet"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", *targets, "-s", str(ROOT / "workflow/Snakefile")]
    cmd += ["-d", str(work), "--cores", "2", "--configfile"]
    cmd += [str(work / "config/test.yaml"), str(work / "config/study.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    net, ck = load_checkpoint(run / "checkpoints" / f"{model}.pt")
    assert ck["meta"]["loss"] == "hinge_sound" and ck["metric"] == "cosine"
    assert not (run / "checkpoints" / "margin0.5.pt").exists()  # only what the chain needs
    pre, _ = load_checkpoint(run / "checkpoints" / "pretrained.pt")
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(net(x), pre(x))
    cert = pd.read_parquet(run / "certify" / f"{model}.parquet")
    assert set(cert["metric"]) == {"cosine", "ball"} and (cert["stage"] == "finetuned").all()
    att = pd.read_parquet(run / "attacks" / f"lipsim-{model}" / "autoattack-L2-2.parquet")
    assert set(att["lipsim_metric"]) == {"cosine"}
    assert att["score_adv"].mean() <= att["score_clean"].mean()
