"""`snakemake --lint`, snakefmt and ruff stay clean (the repository's own standards, checked in
CI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("configfile", [None, "config/paper.yaml", "config/released.yaml"])
def test_snakemake_lint_is_clean(configfile):
    cmd = [sys.executable, "-m", "snakemake", "--lint"]
    if configfile:
        cmd += ["--configfile", configfile]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Lints for" not in out, out[-3000:]
    assert "Congratulations" in out


def test_ruff_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff, "ruff is pinned in envs/requirements.lock and installed by `make`"
    proc = subprocess.run(
        [ruff, "check", "lipsim", "tests", "benchmarks", "envs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]


# FORMAT CHECK: `ruff format` is applied to the whole tree in one commit (so that parallel
# branches merge first); until then this test fails and lists the files it would reformat.
def test_ruff_format_is_clean():
    ruff = shutil.which("ruff", path=str(Path(sys.executable).parent))
    assert ruff, "ruff is pinned in envs/requirements.lock and installed by `make`"
    proc = subprocess.run(
        [ruff, "format", "--check", "lipsim", "tests", "benchmarks", "envs"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, (
        f"run `ruff format lipsim tests benchmarks envs`:\n{proc.stdout[-3000:]}"
    )


def test_snakefmt_is_clean():
    # The workflow catalog's formatting (line length 100 as ruff: pyproject.toml [tool.snakefmt]).
    snakefmt = shutil.which("snakefmt", path=str(Path(sys.executable).parent))
    assert snakefmt, "snakefmt is pinned in envs/requirements.lock and installed by `make`"
    proc = subprocess.run(
        [snakefmt, "--check", "workflow/"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"run `snakefmt workflow/`:\n{(proc.stdout + proc.stderr)[-3000:]}"
