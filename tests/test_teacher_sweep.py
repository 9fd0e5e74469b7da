"""The teacher sweep (`teachers: [...]`): one cache, distillation and finetune per margin for
every teacher, as separate jobs; Table 1 fed by all of them; one teacher's settings rerun only
its chain. Dry runs of the real Snakefile (fast) and one real run of the test DAG's
checkpoints (slow)."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import helpers
import pytest
import torch
from helpers import dry_run_jobs

from lipsim.configcheck import (
    SCHEMA_PATH,
    ConfigError,
    load_schema,
    sweep_teachers,
    validate_config,
)

ROOT = Path(__file__).resolve().parents[1]
T = "results/test"


def snakemake(workdir: Path, *args: str, configfiles=("config/test.yaml",), timeout=600):
    cfg = ["--configfile", *[str(workdir / c) for c in configfiles]] if configfiles else []
    return helpers.snakemake(workdir, *cfg, *args, timeout=timeout, cwd=workdir)


def planned(proc: subprocess.CompletedProcess) -> list[tuple[str, str]]:
    """(rule, first output) of every job a dry run lists."""
    return [(j["rule"], j["output"]) for j in dry_run_jobs(proc)]


def outputs(jobs, rule):
    return sorted(out for r, out in jobs if r == rule)


@pytest.fixture
def work(tmp_path):
    shutil.copytree(ROOT / "config", tmp_path / "config")
    return tmp_path


def test_test_dag_has_a_chain_per_teacher_and_margin(work):
    jobs = planned(snakemake(work, "-n", "-p"))
    assert outputs(jobs, "cache_list") == [
        f"{T}/cache/demo/images.parquet",
        f"{T}/cache/demo2/images.parquet",
    ]
    assert outputs(jobs, "cache_index") == [
        f"{T}/cache/demo/index.parquet",
        f"{T}/cache/demo2/index.parquet",
    ]
    assert outputs(jobs, "cache_fill") == [
        f"{T}/cache/{t}/part-{k}.json" for t in ("demo", "demo2") for k in (0, 1)
    ]
    # The primary teacher's models keep their paths; the other teacher's sit in its folder.
    assert outputs(jobs, "distill") == [
        f"{T}/checkpoints/demo2/pretrained.pt",
        f"{T}/checkpoints/pretrained.pt",
    ]
    assert outputs(jobs, "finetune") == sorted(
        f"{T}/checkpoints/{p}margin{m}.pt" for p in ("", "demo2/") for m in ("0.2", "0.5")
    )
    assert len(outputs(jobs, "certify")) == 6
    # Both teachers' natural scores are evaluated: their Table 1 reference rows.
    assert {f"{T}/eval/demo.parquet", f"{T}/eval/demo2.parquet"} <= set(outputs(jobs, "evaluate"))
    # Attacks, figures and Table 2 stay on the primary teacher's models.
    assert not [
        o
        for r, o in jobs
        if "demo2" in o
        and r
        not in {
            "cache_list",
            "cache_fill",
            "cache_index",
            "distill",
            "finetune",
            "certify",
            "evaluate",
        }
    ]


def test_test_dag_jobs_use_their_own_teacher(work):
    proc = snakemake(work, "-n", "-p")
    shell = proc.stdout
    fill = [ln for ln in shell.splitlines() if "lipsim cache-fill" in ln]
    assert sum("--teacher demo2 " in ln and "cache/demo2" in ln for ln in fill) == 2
    assert sum("--teacher demo " in ln and "cache/demo " in ln + " " for ln in fill) == 2
    distill = [ln for ln in shell.splitlines() if "lipsim distill" in ln]
    assert any(
        "--cache-dir results/test/cache/demo2 " in ln
        and "--teacher demo2 " in ln
        and "--out results/test/checkpoints/demo2/pretrained.pt" in ln
        for ln in distill
    )
    ft = [ln for ln in shell.splitlines() if "lipsim finetune" in ln]
    assert any(
        "--init results/test/checkpoints/demo2/pretrained.pt" in ln
        and "--margin 0.2 " in ln
        and "--out results/test/checkpoints/demo2/margin0.2.pt" in ln
        for ln in ft
    )
    t1 = next(ln for ln in shell.splitlines() if "lipsim table1" in ln)
    assert f"demo2/margin0.5={T}/certify/demo2/margin0.5.parquet" in t1
    assert f"demo/margin0.5={T}/certify/margin0.5.parquet" in t1
    assert f"demo={T}/eval/demo.parquet demo2={T}/eval/demo2.parquet" in t1


def test_one_teacher_form_is_unchanged(work):
    jobs = planned(snakemake(work, "-n", "--config", "teachers=[]"))
    assert outputs(jobs, "distill") == [f"{T}/checkpoints/pretrained.pt"]
    assert outputs(jobs, "finetune") == [
        f"{T}/checkpoints/margin0.2.pt",
        f"{T}/checkpoints/margin0.5.pt",
    ]
    assert outputs(jobs, "cache_list") == [f"{T}/cache/demo/images.parquet"]


@pytest.mark.slow
def test_paper_profile_lists_teacher_x_margin_chains(work):
    # The cluster profile reads config/paper.yaml relative to the working directory.
    proc = snakemake(work, "-n", "--profile", str(ROOT / "workflow/profiles/slurm"), configfiles=())
    jobs = planned(proc)
    teachers = ["dino_vitb16", "clip_vitb32", "open_clip_vitb32", "dreamsim_ensemble"]
    counts = Counter(r for r, _ in jobs)
    # teacher_view flipped: a cache and its mirror per teacher, 64 parts each.
    assert counts["cache_list"] == 4 and counts["cache_index"] == 8
    assert counts["cache_fill"] == 4 * 2 * 64
    assert counts["distill"] == 4 and counts["finetune"] == 8 and counts["certify"] == 12
    R = "results/paper/checkpoints"
    want = {
        f"{R}/{'' if t == 'dreamsim_ensemble' else t + '/'}{m}.pt"
        for t in teachers
        for m in ("pretrained", "margin0.2", "margin0.5")
    }
    assert set(outputs(jobs, "distill") + outputs(jobs, "finetune")) == want


def test_released_config_plans_no_training(work):
    jobs = planned(snakemake(work, "-n", configfiles=("config/released.yaml",)))
    rules = {r for r, _ in jobs}
    assert {"import_pretrained", "import_finetuned"} <= rules
    assert not rules & {"distill", "finetune", "cache_list", "cache_fill", "cache_index"}


# ---- configuration ----------------------------------------------------------------------
def _config(**over):
    cfg = {"teacher": {"name": "demo"}, **over}
    return validate_config(cfg, SCHEMA_PATH)


def test_teachers_default_to_the_primary_teacher():
    assert sweep_teachers(_config()) == ["demo"]
    assert sweep_teachers(_config(teachers=["demo2", "demo"])) == ["demo2", "demo"]
    assert load_schema()["properties"]["teachers"]["default"] == []


@pytest.mark.parametrize(
    "over, key",
    [
        ({"teachers": ["demo2"]}, "teachers: must include teacher.name"),
        ({"teachers": ["demo", "demo"]}, "teachers: duplicated"),
        ({"teachers": ["demo", "nope"]}, "teachers.1"),
        ({"teacher_settings": {"demo2": {"distill": {"lr": 0.1}}}}, "teacher_settings.demo2:"),
        (
            {"teachers": ["demo", "demo2"], "teacher_settings": {"demo2": {"distill": {"lr": -1}}}},
            "teacher_settings.demo2.distill.lr",
        ),
        (
            {"teachers": ["demo", "demo2"], "teacher_settings": {"demo2": {"distill": {"lrr": 1}}}},
            "teacher_settings.demo2.distill.(top): unknown key",
        ),
        (
            {"teachers": ["demo", "demo2"], "teacher_settings": {"demo2": {"attacks": {}}}},
            "teacher_settings.demo2",
        ),
        (
            {
                "teachers": ["demo", "demo2"],
                "teacher_settings": {"demo2": {"distill": {"resources": {"gpu": 1}}}},
            },
            "teacher_settings.demo2.distill.resources: shared by all teachers",
        ),
    ],
)
def test_bad_sweep_config_names_the_key(over, key):
    with pytest.raises(ConfigError) as err:
        _config(**over)
    assert key in str(err.value)


def test_second_demo_teacher_is_another_seeded_network():
    from lipsim.registry import metric_card
    from lipsim.teachers import get_teacher

    a, b, b2 = get_teacher("demo"), get_teacher("demo2"), get_teacher("demo2")
    assert (a.name, b.name) == ("demo", "demo2")
    assert metric_card("demo2").emb_dim == metric_card("demo").emb_dim
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(b.embed(x), b2.embed(x))  # seeded: the same every time
    assert (a.embed(x) - b.embed(x)).abs().max() > 0.1


# ---- a real run: one teacher's settings rerun only its chain -------------------------------
@pytest.mark.slow
def test_one_teachers_settings_rerun_only_its_chain(work):
    targets = [f"{T}/certify/{p}margin{m}.parquet" for p in ("", "demo2/") for m in ("0.2", "0.5")]
    proc = snakemake(work, "--cores", "2", *targets, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    from lipsim.models import load_checkpoint

    for path, teacher in (("pretrained", "demo"), ("demo2/margin0.5", "demo2")):
        _, ckpt = load_checkpoint(work / T / "checkpoints" / f"{path}.pt")
        assert ckpt["teacher"] == teacher
    assert planned(snakemake(work, "-n", *targets)) == []

    overlay = work / "config" / "demo2.yaml"
    overlay.write_text("teacher_settings: {demo2: {finetune: {lr: 0.002}}}\n")
    jobs = planned(
        snakemake(work, "-n", *targets, configfiles=("config/test.yaml", "config/demo2.yaml"))
    )
    assert sorted(jobs) == sorted(
        [("finetune", f"{T}/checkpoints/demo2/margin{m}.pt") for m in ("0.2", "0.5")]
        + [("certify", f"{T}/certify/demo2/margin{m}.parquet") for m in ("0.2", "0.5")]
    )

    overlay.write_text("teacher_settings: {demo2: {distill: {lr: 0.005}}}\n")
    jobs = planned(
        snakemake(work, "-n", *targets, configfiles=("config/test.yaml", "config/demo2.yaml"))
    )
    assert {r for r, _ in jobs} == {"distill", "finetune", "certify"}
    assert all("/demo2/" in out for _, out in jobs), jobs
    assert ("distill", f"{T}/checkpoints/demo2/pretrained.pt") in jobs
