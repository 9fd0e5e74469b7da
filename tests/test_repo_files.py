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


def _tracked_text_files() -> dict[str, str]:
    import subprocess

    names = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    texts = {}
    for name in filter(None, (n.decode() for n in names)):
        path = ROOT / name
        if path.is_file() and not path.is_symlink():
            try:
                texts[name] = path.read_text()
            except UnicodeDecodeError:
                continue  # binary
    return texts


def test_nothing_tracked_points_outside_the_repository():
    """Docs the code, configs and README cite live in the repository (docs/), not in a
    sibling folder of the checkout a user does not have."""
    texts = _tracked_text_files()
    assert "README.md" in texts and "docs/method.md" in texts
    needle = "../" + "shared/"  # spelled in two pieces so that this file does not match
    outside = [name for name, text in texts.items() if needle in text]
    assert outside == []


def test_method_citations_name_a_section_of_docs_method():
    """Every `method.md section N` cited is docs/method.md, and section N exists there."""
    texts = _tracked_text_files()
    sections = set(re.findall(r"^## (\d+)\. ", texts["docs/method.md"], re.M))
    assert len(sections) >= 12
    cites = [
        (name, m.group(1), m.group(2))
        for name, text in texts.items()
        for m in re.finditer(r"([\w./]*method\.md)`? section (\d+)", text)
    ]
    assert len(cites) >= 5  # README, paper.yaml, hub.py, finetune.smk, ...
    for name, path, section in cites:
        assert path == "docs/method.md" and section in sections, (name, path, section)
