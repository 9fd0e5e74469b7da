"""Files a user or the Snakemake workflow catalog looks for at the top of the repository."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_license_is_the_one_pyproject_declares():
    # (tomllib is 3.11+; the package supports 3.10)
    declared = re.search(
        r'^license = \{ text = "([^"]+)" \}', (ROOT / "pyproject.toml").read_text(), re.M
    ).group(1)
    text = (ROOT / "LICENSE").read_text()
    assert declared == "MIT" and text.startswith("MIT License")
    assert "lipsim-repro contributors" in text


def test_workflow_catalog_file():
    usage = yaml.safe_load((ROOT / ".snakemake-workflow-catalog.yml").read_text())["usage"]
    assert set(usage) >= {"mandatory-flags", "software-stack-deployment", "report"}
    assert usage["report"] is True
    assert usage["software-stack-deployment"]["conda"] is True  # envs/lipsim.yaml works
    # the catalog's standardized usage also needs these two
    assert (ROOT / "workflow" / "Snakefile").is_file() and (ROOT / "config" / "README.md").is_file()
