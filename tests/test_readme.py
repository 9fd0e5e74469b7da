"""The README's metric example runs as written (on a tiny checkpoint and generated images)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lipsim.models import build_model, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_readme_metric_example_runs(tmp_path, make_night_dir):
    code = re.search(
        r"## Using the metric.*?```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S
    ).group(1)
    torch.manual_seed(0)
    net = build_model("tiny", image_size=32, emb_dim=64)
    save_checkpoint(
        tmp_path / "results/demo/checkpoints/margin0.5.pt",
        net,
        stage="finetuned",
        margin=0.5,
        teacher="demo",
    )
    night = make_night_dir(n_train=1, n_val=1, n_test=2)
    ref = next((night / "ref").rglob("*.png"))
    stem, folder = ref.stem, ref.parent.name
    for name, src in (
        ("ref.png", ref),
        ("a.png", night / "distort" / folder / f"{stem}_0.png"),
        ("b.png", night / "distort" / folder / f"{stem}_1.png"),
    ):
        (tmp_path / name).write_bytes(src.read_bytes())
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "tensor(" in proc.stdout
