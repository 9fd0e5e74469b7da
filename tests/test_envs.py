"""envs/lipsim.yaml works as snakemake uses it: copied alone into .snakemake/conda/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "envs"
sys.path.insert(0, str(ENVS))
import make_conda_env  # noqa: E402

PIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?(==|>=)[A-Za-z0-9.+!_-]+$")


def test_env_file_is_generated_from_the_lock():
    assert (ENVS / "lipsim.yaml").read_text() == make_conda_env.render(), (
        "envs/lipsim.yaml is out of date with envs/requirements.lock: "
        "run `python envs/make_conda_env.py`"
    )


def test_env_file_copied_alone_refers_to_no_file(tmp_path):
    # snakemake copies the env file into .snakemake/conda/<hash>.yaml and creates the env
    # there: a `-r file`, `-e path` or relative path would then point at nothing.
    copy = tmp_path / "0123abcd.yaml"
    shutil.copy(ENVS / "lipsim.yaml", copy)
    env = yaml.safe_load(copy.read_text())
    deps = env["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    conda = [d for d in deps if isinstance(d, str)]
    bad = [p for p in pip if not PIN.match(p)]
    assert not bad, f"pip entries that are not plain pins: {bad}"
    assert all(re.match(r"^[A-Za-z0-9_.-]+(=[0-9.]+)?$", d) for d in conda), conda
    lock = {ln.split("==")[0].lower() for ln in (ENVS / "requirements.lock").read_text().split()}
    assert lock <= {p.split("==")[0].split(">=")[0].lower() for p in pip}


def _post_deploy(tmp_path, env):
    # a stand-in `python` records what the script would install
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "python"
    fake.write_text('#!/bin/sh\necho "$@" > "$RECORD"\n')
    fake.chmod(0o755)
    script = tmp_path / "0123abcd.post-deploy.sh"  # where snakemake copies it
    shutil.copy(ENVS / "lipsim.post-deploy.sh", script)
    env = {
        "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}",
        "RECORD": str(tmp_path / "record"),
        **env,
    }
    return subprocess.run(
        ["bash", str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )


def test_post_deploy_installs_the_package_from_lipsim_source(tmp_path):
    proc = _post_deploy(tmp_path, {"LIPSIM_SOURCE": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "record").read_text().split()[-1] == str(ROOT)


def test_post_deploy_without_lipsim_source_says_so(tmp_path):
    proc = _post_deploy(tmp_path, {})
    assert proc.returncode != 0
    assert "LIPSIM_SOURCE" in proc.stderr
    assert not (tmp_path / "record").exists()


def test_workflow_exports_lipsim_source():
    # post-deploy reads it from snakemake's own environment, set while the workflow is parsed
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert re.search(r"os\.environ\.update\(LIPSIM_SOURCE=.*workflow\.basedir", common)
