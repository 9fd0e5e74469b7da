"""Write envs/lipsim.yaml from envs/requirements.lock (`make envs/lipsim.yaml`).

Snakemake copies a rule's conda env file alone into .snakemake/conda/ before it creates the
env, so the file must not point at anything next to it: every pin is written inline, and the
package itself is installed by lipsim.post-deploy.sh from $LIPSIM_SOURCE (an absolute path set
by workflow/rules/common.smk).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
HEADER = """\
# Generated from requirements.lock by envs/make_conda_env.py; do not edit by hand.
# Conda environment for `snakemake --sdm conda`. Self-contained (snakemake copies this file
# alone); lipsim.post-deploy.sh then installs the package from $LIPSIM_SOURCE.
name: lipsim
channels:
  - conda-forge
dependencies:
  - python=3.11
  - pip
  - pip:
"""


def render(lock: Path = HERE / "requirements.lock") -> str:
    pins = [
        ln.strip()
        for ln in lock.read_text().splitlines()
        if ln.strip() and not ln.lstrip().startswith("#")
    ]
    # setuptools builds the package in the post-deploy step (pip freeze leaves it out).
    if not any(p.lower().startswith("setuptools") for p in pins):
        pins.append("setuptools>=68")
    return HEADER + "".join(f"      - {p}\n" for p in pins)


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "lipsim.yaml"
    out.write_text(render())
