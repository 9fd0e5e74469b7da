"""benchmarks/device_check.py: the prepared GPU check, proven on the CPU so that it cannot rot.

The slow test runs the whole script on the CPU with a small budget and a stage forced to fail;
the others check its parts on real files: the run comparison of the smoke stage, the parsing
of bench_paper_cost.py's table, the time boxes and the Markdown report.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "device_check.py"
STATUSES = {"ok", "mismatch", "partial", "timeout", "failed"}


def _module():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _scratch_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("device_check_*")}


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd and int(proc.name) != os.getpid():
            found.append(cmd)
    return found


@pytest.mark.slow
def test_cpu_run_records_every_stage_and_survives_a_failing_one(tmp_path):
    out = tmp_path / "out"
    budget = 90
    before = _scratch_dirs()
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--budget-s", str(budget)]
        + ["--out", str(out), "--fail-stage", "numerics"],
        capture_output=True,
        text=True,
        timeout=budget + 60,
    )
    wall = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert wall < budget + 15, f"the run took {wall:.0f} s for a budget of {budget} s"

    report = json.loads((out / "device_check.json").read_text())
    stages = report["stages"]
    names = ["environment", "numerics", "smoke", "train", "attack", "cost"]
    assert [s["name"] for s in stages] == names
    assert report["finished"] is True and report["device"] == "cpu"
    for s in stages:
        assert s["status"] in STATUSES, (s["name"], s["status"])
        assert s["wall_s"] <= s["box_s"] + 8, s  # stopped at its box (plus the kill grace)
    numerics = stages[1]
    assert numerics["status"] == "failed"
    assert "forced failure" in numerics["error"]
    # the stages after the failed one still ran: each spent time, none is left unrecorded
    for s in stages[2:]:
        assert s["wall_s"] > 0, s["name"]
        assert s["status"] != "failed" or s.get("error"), s

    # one summary line per stage on stdout, in order, with its status
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("[")]
    assert len(lines) == len(names)
    for line, s in zip(lines, stages, strict=True):
        assert s["name"] in line and s["status"] in line

    md = (out / "device_check.md").read_text()
    for i, s in enumerate(stages, 1):
        assert f"| {i}. {s['name']} | {s['status']} |" in md
        assert f"## {i}. {s['title']}" in md
    assert "forced failure" in md
    assert (out / "device_check.log").stat().st_size > 0

    # nothing left behind: no scratch folder, no snakemake or stage process still running
    assert _scratch_dirs() <= before
    assert not _processes_mentioning("device_check_"), _processes_mentioning("device_check_")


def test_compare_runs_sees_a_missing_output_a_flipped_decision_and_a_score(tmp_path):
    dc = _module()
    ref, run = tmp_path / "ref", tmp_path / "run"
    for root in (ref, run):
        (root / "tables").mkdir(parents=True)
        (root / "certify").mkdir()
        pd.DataFrame({"model": ["a", "b"], "natural": [70.0, 60.0]}).to_csv(
            root / "tables" / "table1.csv", index=False
        )
        pd.DataFrame({"id": [1, 2, 3], "d0": [0.1, 0.5, 0.3], "d1": [0.2, 0.4, 0.3]}).to_parquet(
            root / "certify" / "m.parquet"
        )
        (root / "extra.txt").write_text("x")
    same = dc.compare_runs(run, ref)
    assert same == {
        "outputs": 3,
        "missing": [],
        "max_table_diff": 0.0,
        "decisions": 3,
        "decisions_differ": 0,
    }

    pd.DataFrame({"id": [1, 2, 3], "d0": [0.1, 0.3, 0.3], "d1": [0.2, 0.4, 0.3]}).to_parquet(
        run / "certify" / "m.parquet"
    )
    pd.DataFrame({"model": ["a", "b"], "natural": [70.0, 61.5]}).to_csv(
        run / "tables" / "table1.csv", index=False
    )
    (run / "extra.txt").unlink()
    diff = dc.compare_runs(run, ref)
    assert diff["missing"] == ["extra.txt"]
    assert diff["decisions_differ"] == 1
    assert diff["max_table_diff"] == pytest.approx(1.5)


def test_cost_table_is_read_from_bench_paper_cost_output():
    dc = _module()
    text = """bench_paper_cost: paper.yaml: 645 jobs; ...
  measured lipsim             img_fwd       batch 2                    1.00 ms per item

rule                jobs     device-h  longest job h  limit h
distill                4    159,977.0        2,500.0     48.0
certify               12          8.0          0.7      1.0
table1                 1            0              0
total                645    221,742.0
AutoAttack counted at its upper bound
"""
    rows = dc.parse_cost_table(text)
    assert [r["rule"] for r in rows] == ["distill", "certify", "table1", "total"]
    assert rows[0] == {
        "rule": "distill",
        "jobs": 4,
        "device_h": 159977.0,
        "longest_job_h": 2500.0,
        "limit_h": 48.0,
    }
    assert rows[-1] == {"rule": "total", "jobs": 645, "device_h": 221742.0}


def test_stage_deadlines_grow_and_end_at_the_budget():
    dc = _module()
    for device, shares in dc.SHARES.items():
        assert len(shares) == len(dc.STAGES), device
        ends = dc.deadlines(300, shares)
        assert all(b > a for a, b in itertools.pairwise(ends))
        assert ends[-1] == pytest.approx(300)


def test_markdown_report_has_a_row_and_a_section_per_stage():
    dc = _module()
    report = {
        "command": "benchmarks/device_check.py --device cpu",
        "device": "cpu",
        "budget_s": 60,
        "started_utc": "2026-01-01T00:00:00+00:00",
        "wall_s": 12.0,
        "finished": True,
        "stages": [
            {
                "name": "numerics",
                "title": "Numerics",
                "status": "mismatch",
                "wall_s": 3.0,
                "box_s": 9.0,
                "summary": "max rel err 2e-3",
                "rows": [{"quantity": "radius", "rel": 0.002, "unused": None, "ok": False}],
            },
            {
                "name": "cost",
                "title": "Cost",
                "status": "timeout",
                "wall_s": 9.0,
                "box_s": 9.0,
                "error": "stopped at its time box (9 s)",
                "rows": [],
            },
        ],
    }
    md = dc.markdown(report)
    assert "| 1. numerics | mismatch | 3 | 9 | max rel err 2e-3 |" in md
    assert "| 2. cost | timeout | 9 | 9 | stopped at its time box (9 s) |" in md
    assert "## 1. Numerics" in md and "## 2. Cost" in md
    # a column that is empty in every row is left out; booleans read as yes / no
    assert "| quantity | rel | ok |" in md and "| radius | 0.002 | no |" in md
    assert "unused" not in md


@pytest.mark.slow
def test_sigterm_stops_the_running_stage_and_its_snakemake(tmp_path):
    """Stopped from outside (a device command's limit), nothing runs on in its own session."""
    out = tmp_path / "out"
    before = _scratch_dirs()
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--budget-s", "300", "--out", str(out)]
        + ["--stages", "smoke"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    # wait until snakemake runs (the smoke stage's scratch folder has its log)
    while not list(Path(tempfile.gettempdir()).glob("device_check_*/smoke/cpu/work/snakemake.log")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(0.5)
    time.sleep(3)
    assert _processes_mentioning("device_check_")  # the stage and snakemake are running
    proc.terminate()
    proc.wait(timeout=30)
    assert proc.returncode != 0
    time.sleep(1)
    assert not _processes_mentioning("device_check_"), _processes_mentioning("device_check_")
    assert _scratch_dirs() <= before
