"""benchmarks/bench_paper_cost.py on the demo DAG: every job priced from measured costs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import yaml

from lipsim.configcheck import validate_config

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_paper_cost", ROOT / "benchmarks" / "bench_paper_cost.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_cost_table_of_the_demo_dag(capsys):
    bench = _bench()
    jobs = bench.dag_jobs(ROOT / "config" / "config.yaml")
    steps = [s for s, _, _ in jobs]
    # the demo config with the schema's defaults filled in (it states only what differs)
    cfg = validate_config(
        yaml.safe_load((ROOT / "config" / "config.yaml").read_text()),
        ROOT / "workflow" / "schemas" / "config.schema.yaml",
    )
    # one certification per LipSim model: each teacher's distilled student and its finetunes
    models = len(cfg["teachers"]) * (1 + len(cfg["margins"]))
    # plus one per margin for each study objective other than the run's own (loss-metric)
    own = f"{cfg['finetune']['loss']}-{cfg['metric']}"
    study = sum(o != own for o in cfg["study"]["objectives"]) * len(cfg["margins"])
    assert steps.count("certify") == models + study
    # each model is attacked at least by AutoAttack (l2, linf) and PGD, plus the fig3a metrics
    assert steps.count("attack") >= 3 * models
    attack = next(o for s, o, _ in jobs if s == "attack" and o["attack"] == ["autoattack"])
    assert attack["budget"] == ["demo"] and int(attack["batch-size"][0]) >= 1
    assert bench.main(["--config", str(ROOT / "config" / "config.yaml"), "--iters", "1"]) == 0
    out = capsys.readouterr().out
    rows = {
        ln.split()[0]: ln.split()
        for ln in out.splitlines()
        if ln and ln.split()[0] in ("attack", "distill", "finetune", "certify", "total")
    }
    assert int(rows["attack"][1]) == steps.count("attack")
    assert int(rows["total"][1]) == len(jobs)
    for rule in ("attack", "distill", "finetune", "certify", "total"):
        assert float(rows[rule][2].replace(",", "")) > 0


def test_autoattack_work_follows_the_budget_and_the_robust_share():
    bench = _bench()

    class Unit:
        """One second per item for every model and unit: the work itself."""

        device = __import__("torch").device("cpu")

        def get(self, *_args, **_kw):
            return 1.0

        def model(self, name):
            return type("M", (), {"has_embedding": True})()

    opts = {
        "metric": ["lipsim:x.pt"],
        "attack": ["autoattack"],
        "budget": ["standard"],
        "norm": ["L2"],
        "eps": ["2"],
        "eps-scale": ["1"],
        "max-triplets": ["0"],
        "batch-size": ["64"],
    }
    sizes = {"night_test": 10}
    full = bench.job_seconds(
        "attack", opts, "", Unit(), sizes, type("A", (), {"robust_share": 1.0})
    )
    half = bench.job_seconds(
        "attack", opts, "", Unit(), sizes, type("A", (), {"robust_share": 0.5})
    )
    # per triplet: 2 pair embeddings + 2 clean rows + APGD 100 + (FAB 100 x 2 + Square 5000)
    assert full == 10 * (2 + 2 + 100 + 200 + 5000)
    assert half == 10 * (2 + 2 + 100 + 0.5 * 5200)
