"""The whole DAG for real on the small test config (config/test.yaml), in a scratch folder.

One run is shared by the module's tests: results layout and plausibility, nothing to do on a
second run, a margin change reruns only its chain, one deleted figure rebuilds alone, and the
HTML report builds.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "workflow" / "Snakefile"
RUN = "results/test"

pytestmark = pytest.mark.slow


def snakemake(workdir: Path, *args: str, timeout: int = 1500) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    # Rules call `python -m lipsim`: the interpreter running the tests must be first on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(SNAKEFILE),
        "-d",
        str(workdir),
        "--configfile",
        str(workdir / "config" / "test.yaml"),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def planned_jobs(proc: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run lists."""
    jobs, rule = [], None
    for line in proc.stdout.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
            jobs.append((rule, ""))
        elif rule and line.strip().startswith("wildcards:"):
            jobs[-1] = (rule, line.split(":", 1)[1].strip())
    return jobs


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("demo")
    shutil.copytree(ROOT / "config", work / "config")
    proc = snakemake(work, "--cores", "2")
    if proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}"
            for p in (work / RUN / "logs").rglob("*.log")
            if "Error" in p.read_text() or "Traceback" in p.read_text()
        )
        pytest.fail(f"demo DAG failed:\n{proc.stderr[-6000:]}\n{logs}")
    return work


def test_results_layout_is_complete(demo_run):
    r = demo_run / RUN
    for t in ("table1", "table2", "retrieval", "bapps"):
        for ext in ("csv", "md", "tex", "parquet"):
            assert (r / "tables" / f"{t}.{ext}").stat().st_size > 0, f"{t}.{ext}"
    for f in ("fig3a", "fig3b", "margins"):
        for ext in ("pdf", "png"):
            assert (r / "figures" / f"{f}.{ext}").stat().st_size > 0, f"{f}.{ext}"
    manifest = pd.read_parquet(r / "manifest.parquet")
    assert {"path", "sha256", "bytes", "rule"} <= set(manifest.columns)
    assert any(str(p).endswith("tables/table1.csv") for p in manifest["path"])
    # The Snakefile and `lipsim provenance` hash a config the same way.
    import json

    from lipsim.provenance import config_hash

    recorded = json.loads((r / "config.json").read_text())
    assert (manifest["config_hash"] == config_hash(recorded["config"])).all()
    assert recorded["config_hash"] == config_hash(recorded["config"])


def test_table1_numbers_are_plausible(demo_run):
    t1 = pd.read_parquet(demo_run / RUN / "tables" / "table1.parquet")
    lipsim_rows = t1[t1["model"].astype(str).isin(["pretrained", "margin0.2", "margin0.5"])]
    # One row per teacher, model and metric (config/test.yaml: teachers demo and demo2;
    # certify.metrics: cosine and ball), grouped by teacher, each group closed by the
    # teacher's own natural score.
    assert len(lipsim_rows) == 12, t1
    for teacher in ("demo", "demo2"):
        mine = lipsim_rows[lipsim_rows["teacher"] == teacher]
        assert sorted(mine["metric"]) == ["ball"] * 3 + ["cosine"] * 3
    assert list(t1["teacher"][:14]) == ["demo"] * 7 + ["demo2"] * 7
    assert list(t1.loc[[6, 13], "model"]) == ["demo", "demo2"]
    assert (t1.loc[[6, 13], "stage"] == "reference").all()
    ball = lipsim_rows[lipsim_rows["metric"] == "ball"]
    for e in (36, 72, 108):
        # For the ball metric the authors' formula is the sound radius: nothing unsound.
        assert (ball[f"certified_{e}"] == ball[f"certified_{e}_authors"]).all()
        assert (ball[f"unsound_{e}"] == 0).all()
        assert (lipsim_rows[f"unsound_{e}"] >= 0).all()
    for _, row in lipsim_rows.iterrows():
        vals = [row["natural"], row["certified_36"], row["certified_72"], row["certified_108"]]
        assert all(0 <= v <= 100 for v in vals), row
        assert vals[0] > vals[1] >= vals[2] >= vals[3], row
    assert lipsim_rows["natural"].min() > 50, "the student should beat chance on demo data"


def test_attacks_never_raise_the_score(demo_run):
    files = list((demo_run / RUN / "attacks").rglob("*.parquet"))
    assert files
    for f in files:
        df = pd.read_parquet(f)
        assert df["score_adv"].mean() <= df["score_clean"].mean() + 1e-9, f
    check = pd.read_csv(demo_run / RUN / "checks" / "consistency.csv")
    assert (check["broken_certified"] == 0).all()


def test_demo_tells_the_papers_story(demo_run):
    """Figure 3a's radius is the paper's scaled to the demo's images, and at it the fragile
    teacher collapses below LipSim; retrieval under attack is not saturated for the teacher;
    Table 2 says its natural column is on the attacked triplets."""
    import json

    r = demo_run / RUN
    cfg = json.loads((r / "config.json").read_text())["config"]
    a, teacher = cfg["attacks"], cfg["teacher"]["name"]
    eps = f"{float(a['fig3a_eps']):g}"
    primary = f"lipsim-margin{float(cfg['primary_margin']):g}"
    scores = {}
    for m in (teacher, primary):
        df = pd.read_parquet(r / "attacks" / m / f"autoattack-L2-{eps}.parquet")
        test = df[df["split"].str.startswith("test")]
        # the paper's radius (file name) applied at image_size / eps_reference_size
        scale = cfg["image_size"] / a["eps_reference_size"]
        assert test["eps"].iloc[0] == pytest.approx(float(eps) * scale)
        scores[m] = 100 * test["score_adv"].mean()
    assert scores[primary] > scores[teacher] + 10, scores
    ret = {m: pd.read_parquet(r / "retrieval" / f"{m}.parquet") for m in (teacher, primary)}
    attacked = {m: df[df["eps"] > 0] for m, df in ret.items()}
    assert (ret[teacher].loc[ret[teacher]["eps"] == 0, "recall"] == 1.0).all()
    assert attacked[teacher]["recall"].min() < 1.0, ret[teacher]
    assert attacked[primary]["recall"].mean() >= attacked[teacher]["recall"].mean(), ret
    md = (r / "tables" / "table2.md").read_text()
    assert "Natural (attacked triplets)" in md and f"(paper {eps})" in md
    assert "(paper" in (r / "tables" / "retrieval.md").read_text()


def test_second_run_has_nothing_to_do(demo_run):
    proc = snakemake(demo_run, "-n", "--cores", "2")
    assert proc.returncode == 0, proc.stderr
    assert planned_jobs(proc) == [], proc.stdout[-3000:]


def test_cluster_resources_are_not_rerun_triggers(demo_run):
    overlay = demo_run / "config" / "resources.yaml"
    overlay.write_text(
        "distill: {resources: {runtime: 999, mem_mb: 9000}}\n"
        "finetune: {resources: {runtime: 999}}\n"
        "attacks: {resources: {runtime: 999}}\n"
    )
    proc = snakemake(
        demo_run,
        "-n",
        "--cores",
        "2",
        "--configfile",
        str(demo_run / "config" / "test.yaml"),
        str(overlay),
    )
    assert proc.returncode == 0, proc.stderr
    # Only the record of the config (its hash changed) and the manifest are redone.
    assert {r for r, _ in planned_jobs(proc)} <= {"resolved_config", "manifest", "all"}


def test_changing_one_margin_reruns_only_its_chain(demo_run):
    proc = snakemake(demo_run, "-n", "--cores", "2", "--config", "margins=[0.3,0.5]")
    assert proc.returncode == 0, proc.stderr
    jobs = planned_jobs(proc)
    rules = {r for r, _ in jobs}
    # A finetune per teacher for the new margin (model ids: margin0.3, demo2/margin0.3).
    assert ("finetune", "model=margin0.3") in jobs and ("finetune", "model=demo2/margin0.3") in jobs
    assert not rules & {
        "distill",
        "cache_fill",
        "cache_index",
        "make_demo_night",
        "make_demo_imagenet",
        "verify_night",
    }, rules
    # Jobs of the unchanged models are not redone.
    for rule, wc in jobs:
        assert "margin0.5" not in wc and "pretrained" not in wc, (rule, wc)
        assert not (
            rule == "finetune" and wc not in ("model=margin0.3", "model=demo2/margin0.3")
        ), (
            rule,
            wc,
        )


def test_one_deleted_figure_rebuilds_alone(demo_run):
    target = demo_run / RUN / "figures" / "fig3b.pdf"
    target.unlink()
    proc = snakemake(demo_run, "-n", "--cores", "2", f"{RUN}/figures/fig3b.pdf")
    assert proc.returncode == 0, proc.stderr
    assert {r for r, _ in planned_jobs(proc)} == {"fig3b"}
    proc = snakemake(demo_run, "--cores", "2", f"{RUN}/figures/fig3b.pdf")
    assert proc.returncode == 0 and target.stat().st_size > 0


def test_html_report_builds(demo_run):
    out = demo_run / RUN / "report.html"
    proc = snakemake(demo_run, "--report", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.stat().st_size > 10_000
    assert "System Message" not in out.read_text()  # every caption is clean reStructuredText


def test_released_checkpoints_replace_training(tmp_path):
    """pretrained_checkpoint / finetuned_checkpoints import files instead of training them."""
    import torch
    from test_checkpoint import _released_state

    from lipsim.models import import_released, load_checkpoint

    shutil.copytree(ROOT / "config", tmp_path / "config")
    files = {}
    for name, seed in (("pretrained", 0), ("margin0.5", 1)):
        files[name] = tmp_path / f"released_{name}.pth"
        torch.save({"model_state_dict": _released_state(seed=seed)}, files[name])
    overlay = tmp_path / "config" / "released.yaml"
    overlay.write_text(
        f"pretrained_checkpoint: {files['pretrained']}\n"
        f"finetuned_checkpoints: {{'0.5': {files['margin0.5']}}}\n"
    )
    targets = [
        f"{RUN}/certify/pretrained.parquet",
        f"{RUN}/certify/margin0.5.parquet",
        f"{RUN}/certify/margin0.2.parquet",
    ]
    # Targets after an option with one value: right after the helper's --configfile they
    # would be read as config files (and dropped by the second --configfile).
    proc = snakemake(
        tmp_path,
        "-n",
        "--cores",
        "1",
        *targets,
        "--configfile",
        str(tmp_path / "config" / "test.yaml"),
        str(overlay),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = planned_jobs(proc)
    rules = {r for r, _ in jobs}
    assert {"import_pretrained", "import_finetuned"} <= rules
    assert ("finetune", "model=margin0.2") in jobs and ("import_finetuned", "margin=0.5") in jobs
    assert not rules & {"distill", "cache_fill", "cache_index", "make_demo_imagenet"}, rules

    ckpts = [f"{RUN}/checkpoints/pretrained.pt", f"{RUN}/checkpoints/margin0.5.pt"]
    proc = snakemake(
        tmp_path,
        "--cores",
        "1",
        *ckpts,
        "--configfile",
        str(tmp_path / "config" / "test.yaml"),
        str(overlay),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for name, seed in (("pretrained", 0), ("margin0.5", 1)):
        net, ckpt = load_checkpoint(tmp_path / RUN / "checkpoints" / f"{name}.pt")
        want = import_released(_released_state(seed=seed), "tiny", 32, 64).net
        assert ckpt["stage"] == ("pretrained" if name == "pretrained" else "finetuned")
        torch.testing.assert_close(net(x), want(x))
