"""SLURM for real: a one-node cluster on this machine (tests/slurm/cluster.sh) and snakemake's
SLURM executor plugin driving the pipeline through it.

The session fixture starts munged, slurmctld and slurmd as root in a scratch folder and stops
them at the end. Without the SLURM packages it installs them (.ci/provision_slurm.sh, apt, as
root); only when that is impossible are the tests skipped, and under CI=true they fail instead.
Set LIPSIM_SLURM_DIR to run against (and keep) a cluster started by hand with cluster.sh.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SH = ROOT / "tests" / "slurm" / "cluster.sh"
PROVISION = ROOT / ".ci" / "provision_slurm.sh"
TEST_PROFILE = ROOT / "tests" / "slurm" / "profile"
SNAKEFILE = ROOT / "workflow" / "Snakefile"
RUN = "results/test"
MARGINS = ["0.1", "0.2", "0.5"]
BINARIES = (
    "munged",
    "munge",
    "slurmctld",
    "slurmd",
    "sinfo",
    "sbatch",
    "srun",
    "squeue",
    "scontrol",
    "scancel",
)
EXIT_BUSY = 3  # cluster.sh start: another test cluster is running on this machine
BUSY_WAIT_S = 1800
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

# a local SLURM cluster (.ci/provision_slurm.sh) and minutes per test: never in test-fast
pytestmark = [pytest.mark.slurm, pytest.mark.slow]

# "Job 12 has been submitted with SLURM jobid 34 (log: /x/.snakemake/slurm_logs/rule_r/w/34.log)."
SUBMITTED = re.compile(
    r"Job (?P<job>\d+) has been submitted with SLURM jobid (?P<slurm>\d+) \(log: (?P<log>\S+)\)"
)


class SlurmCluster:
    """A running one-node cluster: where its files are and the environment to reach it."""

    def __init__(self, state_dir: Path):
        self.state_dir = state_dir
        self.conf = state_dir / "slurm.conf"
        self.slurmd_log = state_dir / "log" / "slurmd.log"
        self.slurmctld_log = state_dir / "log" / "slurmctld.log"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        # Rules and jobs call `python -m lipsim` / `python -m snakemake`: this interpreter first.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), SBIN_PATH])
        env["SLURM_CONF"] = str(self.conf)
        for var in ("SLURM_JOB_ID", "SLURM_JOBID", "SLURM_ACCOUNT", "SLURM_PARTITION"):
            env.pop(var, None)  # a test run inside a SLURM job must not leak its allocation
        env.update(extra)
        return env

    def run(
        self, *cmd: str, timeout: int = 120, cwd: Path | None = None
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=self.env(), cwd=cwd
        )


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def _unavailable(reason: str) -> None:
    """Skip on a developer machine; under CI a missing cluster is a failure, never a skip."""
    if _in_ci():
        pytest.fail(f"SLURM test cluster unavailable under CI=true: {reason}", pytrace=False)
    print(f"\nSKIP SLURM tests: {reason}", file=sys.stderr)
    pytest.skip(reason)


def _missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b, path=SBIN_PATH) is None]


def _ensure_slurm_installed() -> None:
    missing = _missing_binaries()
    if not missing:
        return
    if os.geteuid() != 0:
        _unavailable(
            f"{', '.join(missing)} not installed and not root to install them "
            f"(as root: {PROVISION.relative_to(ROOT)})"
        )
    if shutil.which("apt-get") is None:
        _unavailable(f"{', '.join(missing)} not installed and no apt-get to install them")
    proc = subprocess.run(["bash", str(PROVISION)], capture_output=True, text=True, timeout=900)
    missing = _missing_binaries()
    if proc.returncode != 0 or missing:
        _unavailable(
            f"installing slurm-wlm/munge failed (exit {proc.returncode}); still missing: "
            f"{', '.join(missing) or 'none'}\n{(proc.stdout + proc.stderr)[-2000:]}"
        )


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    """Start the one-node cluster for the session (or reuse $LIPSIM_SLURM_DIR's) and stop it."""
    _ensure_slurm_installed()
    if os.geteuid() != 0:
        _unavailable("the test cluster runs its daemons as root (SlurmUser=root); not root")
    given = os.environ.get("LIPSIM_SLURM_DIR")
    state_dir = Path(given) if given else tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "PATH": SBIN_PATH}
    was_running = (
        given is not None
        and subprocess.run(
            ["bash", str(CLUSTER_SH), "status", str(state_dir)], capture_output=True, env=env
        ).returncode
        == 0
    )
    # One test cluster per machine (fixed ports, /etc/slurm/slurm.conf): if another session's
    # is running (exit 3), wait for it to stop.
    deadline = time.monotonic() + BUSY_WAIT_S
    while True:
        proc = subprocess.run(
            ["bash", str(CLUSTER_SH), "start", str(state_dir)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
        )
        if proc.returncode != EXIT_BUSY or time.monotonic() > deadline:
            break
        time.sleep(10)
    if proc.returncode != 0:
        pytest.fail(
            f"cluster.sh start failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}",
            pytrace=False,
        )
    cluster = SlurmCluster(state_dir)
    try:
        yield cluster
    finally:
        if not was_running:
            stop = subprocess.run(
                ["bash", str(CLUSTER_SH), "stop", str(state_dir)],
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
            )
            if stop.returncode != 0:
                print(f"cluster.sh stop failed:\n{stop.stdout}\n{stop.stderr}", file=sys.stderr)


# ---- the cluster itself -------------------------------------------------------------------
def test_sbatch_wait_runs_a_batch_job(slurm_cluster, tmp_path):
    out = tmp_path / "job.out"
    proc = slurm_cluster.run(
        "sbatch",
        "--wait",
        "--parsable",
        "-t",
        "2",
        "--mem",
        "100",
        "-o",
        str(out),
        "--wrap",
        "echo hello from job $SLURM_JOB_ID",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    job_id = proc.stdout.strip().split(";")[0]
    assert job_id.isdigit(), proc.stdout
    assert out.read_text().strip() == f"hello from job {job_id}"


def test_srun_starts_two_tasks_with_their_ranks(slurm_cluster, tmp_path):
    proc = slurm_cluster.run(
        "srun",
        "-n2",
        "-t",
        "2",
        "--mem",
        "100",
        "bash",
        "-c",
        'echo "$SLURM_PROCID $SLURM_NTASKS"',
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert sorted(proc.stdout.split("\n")[:2]) == ["0 2", "1 2"], proc.stdout


# ---- the pipeline through snakemake's SLURM executor --------------------------------------
def submitted_jobs(output: str) -> list[dict[str, str]]:
    """One dict per SLURM submission: snakemake job id, SLURM job id, rule, wildcards."""
    jobs = []
    for m in SUBMITTED.finditer(output):
        parts = Path(m["log"]).parts
        i = max(k for k, p in enumerate(parts) if p.startswith("rule_"))
        jobs.append(
            {
                "job": m["job"],
                "slurm": m["slurm"],
                "rule": parts[i][len("rule_") :],
                "wildcards": "/".join(parts[i + 1 : -1]),
            }
        )
    return jobs


def started_tasks(slurmd_log: str, slurm_id: str) -> list[int]:
    """Task counts of the job's srun steps, from slurmd's log ("[12.0] starting 2 tasks")."""
    return [int(n) for n in re.findall(rf"\[{slurm_id}\.\d+\] starting (\d+) tasks", slurmd_log)]


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster, tmp_path_factory):
    """The test config's DAG up to Tables 1 and 2, every job a SLURM job: a margin sweep given
    with --config, distillation as one 2-task job (srun, gloo)."""
    if not SNAKEFILE.exists():
        pytest.fail(f"{SNAKEFILE} is missing", pytrace=False)
    work = tmp_path_factory.mktemp("slurm-dag")
    shutil.copytree(ROOT / "config", work / "config")
    overlay = {
        "distill": {
            "launcher": "srun",
            "resources": {
                "nodes": 1,
                "tasks_per_node": 2,
                "cpus_per_task": 1,
                "mem_mb": 2000,
                "runtime": 30,
            },
        }
    }
    (work / "config" / "slurm-test.yaml").write_text(yaml.safe_dump(overlay))
    targets = [f"{RUN}/tables/table1.csv", f"{RUN}/tables/table2.csv"]
    # Targets first: --configfile and --config take every word that follows them.
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        *targets,
        "-s",
        str(SNAKEFILE),
        "-d",
        str(work),
        "--profile",
        str(TEST_PROFILE),
        "--configfile",
        str(work / "config" / "test.yaml"),
        str(work / "config" / "slurm-test.yaml"),
        "--config",
        f"margins=[{','.join(MARGINS)}]",
    ]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=2700, env=slurm_cluster.env(), cwd=work
    )
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        logs = []
        for p in [
            *(work / RUN / "logs").rglob("*.log"),
            *(work / ".snakemake" / "slurm_logs").rglob("*.log"),
        ]:
            text = p.read_text(errors="replace")
            if "Error" in text or "Traceback" in text or "error" in text:
                logs.append(f"--- {p}\n{text[-3000:]}")
        pytest.fail(
            f"snakemake through SLURM failed (exit {proc.returncode}):\n"
            f"{output[-8000:]}\n" + "\n".join(logs[-8:]),
            pytrace=False,
        )
    return work, output


@pytest.mark.slow
def test_slurm_run_writes_the_tables(slurm_run):
    work, _ = slurm_run
    for t in ("table1", "table2"):
        assert (work / RUN / "tables" / f"{t}.csv").stat().st_size > 0, t
    t1 = (work / RUN / "tables" / "table1.csv").read_text()
    for m in MARGINS:
        assert f"margin{m}" in t1, f"margin {m} missing from table1.csv:\n{t1}"


@pytest.mark.slow
def test_every_job_is_its_own_slurm_job(slurm_run):
    _, output = slurm_run
    jobs = submitted_jobs(output)
    assert jobs, f"no SLURM submissions in snakemake's output:\n{output[-4000:]}"
    ids = [j["slurm"] for j in jobs]
    assert len(set(ids)) == len(ids), f"a SLURM job id was reused: {ids}"
    rules = {j["rule"] for j in jobs}
    assert {"distill", "finetune", "certify"} <= rules, rules


@pytest.mark.slow
def test_margin_sweep_runs_one_finetune_job_per_teacher_and_margin(slurm_run):
    _, output = slurm_run
    finetunes = {
        j["wildcards"]: j["slurm"] for j in submitted_jobs(output) if j["rule"] == "finetune"
    }
    # config/test.yaml sweeps teachers demo (primary: model ids margin{m}) and demo2
    # (demo2/margin{m}; the plugin writes the slash of a wildcard as _).
    want = [f"{p}margin{m}" for p in ("", "demo2_") for m in MARGINS]
    assert sorted(finetunes) == sorted(want), finetunes
    assert len(set(finetunes.values())) == len(want), finetunes


@pytest.mark.slow
def test_distillation_runs_two_ranks_in_one_job(slurm_run, slurm_cluster):
    _, output = slurm_run
    distill = [j for j in submitted_jobs(output) if j["rule"] == "distill"]
    # One distillation per teacher of config/test.yaml (demo, demo2).
    assert sorted(j["wildcards"] for j in distill) == ["demo2_pretrained", "pretrained"], distill
    for job in distill:
        slurm_id = job["slurm"]
        tasks = started_tasks(slurm_cluster.slurmd_log.read_text(errors="replace"), slurm_id)
        # Step "batch" runs snakemake's jobstep; the rule's own srun must start 2 tasks.
        assert 2 in tasks, (
            f"SLURM job {slurm_id} (distill) started steps with {tasks} tasks, expected one "
            "with 2: inside an `mpi` job the plugin strips SLURM_NTASKS, so the rule's srun "
            "needs `-n {resources.tasks}` (or --ntasks-per-node)"
        )
