"""The package stands alone: built as a wheel (not editable), installed into a folder of its
own and imported from outside the checkout, every module imports, the CLI answers --help and
the metric scores a batch. Catches package data that is read from the checkout (the config
schema once was) and anything else that only works inside it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

# Run inside the installed copy: import every module, the CLI's help, one scored batch.
PROBE = r"""
import importlib, pkgutil, subprocess, sys, os
import lipsim
target = os.environ["LIPSIM_TARGET"]
assert lipsim.__file__.startswith(target), lipsim.__file__
names = [m.name for m in pkgutil.walk_packages(lipsim.__path__, "lipsim.")]
for name in names:
    mod = importlib.import_module(name)
    assert mod.__file__.startswith(target), (name, mod.__file__)
from lipsim.configcheck import schema_default
assert schema_default("night.min_votes") == 6
import torch
m = lipsim.load("tiny", pretrained=False)
g = torch.Generator().manual_seed(0)
a, b = torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 3, 32, 32, generator=g)
d = m(a, b)
assert d.shape == (4,) and torch.isfinite(d).all() and (d >= 0).all(), d
print("modules", len(names))
"""


def _checkout_copy(dst: Path) -> Path:
    """The files a wheel is built from, outside the checkout (no build/ or egg-info left in it)."""
    dst.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, dst / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "lipsim", dst / "lipsim", symlinks=True, ignore=ignore)
    # lipsim/resources/config.schema.yaml links here; the wheel must hold the file itself.
    shutil.copytree(ROOT / "workflow" / "schemas", dst / "workflow" / "schemas")
    return dst


def test_wheel_installed_outside_the_checkout_imports_and_scores(tmp_path):
    src = _checkout_copy(tmp_path / "src")
    dist, target, elsewhere = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, src],
        check=True,
    )
    (wheel,) = dist.glob("lipsim_repro-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        schema = zf.getinfo("lipsim/resources/config.schema.yaml")
        assert schema.file_size > 1000  # the schema itself, not a link
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", target, wheel], check=True
    )
    env = {**os.environ, "PYTHONPATH": str(target), "LIPSIM_TARGET": str(target)}
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert int(probe.stdout.split()[-1]) > 50  # every module of the package was imported
    cli = subprocess.run(
        [sys.executable, "-m", "lipsim", "--help"],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "certify" in cli.stdout and "finetune" in cli.stdout
