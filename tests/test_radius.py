"""Attack radii meant at the paper's 224 px, applied at the demo's size (lipsim.radius), and
the workflow's use of them (attacks.eps_reference_size -> the commands' --eps-scale)."""

from __future__ import annotations

import pytest

from lipsim.errors import LipSimError
from lipsim.radius import applied_eps, config_eps_scale, eps_divisor, reference_eps, scaled_note


def test_l2_radius_scales_with_the_image_side():
    # eps 2.0 at 224 px is the same share of the image norm as 2.0 x 32 / 224 at 32 px.
    assert eps_divisor("L2", 32, 224) == 7.0
    assert applied_eps(2.0, "l2", 32, 224) == pytest.approx(2 / 7)
    assert applied_eps(2.0, "L2", 64, 224) == pytest.approx(2 * 64 / 224)
    assert reference_eps(applied_eps(0.5, "L2", 32, 224), "L2", 32, 224) == pytest.approx(0.5)
    # The share of the image norm is what is kept: ||x|| of a constant 0.5 image ~ side.
    norm = lambda side: 0.5 * (3 * side * side) ** 0.5  # noqa: E731
    assert applied_eps(2.0, "L2", 32, 224) / norm(32) == pytest.approx(2.0 / norm(224))


def test_linf_and_unset_reference_are_not_scaled():
    assert eps_divisor("Linf", 32, 224) == 1.0
    assert applied_eps(4 / 255, "linf", 32, 224) == pytest.approx(4 / 255)
    assert eps_divisor("L2", 32, None) == 1.0 and applied_eps(2.0, "L2", 32, None) == 2.0
    assert eps_divisor("L2", 224, 224) == 1.0  # the paper's own size: unchanged
    assert scaled_note(224, 224) == "" and scaled_note(32, None) == ""
    assert "32/224" in scaled_note(32, 224)


def test_workflow_eps_scale_from_the_config():
    cfg = {"image_size": 32, "attacks": {"eps_reference_size": 224}}
    assert config_eps_scale(cfg, "L2") == 7.0 and config_eps_scale(cfg, "Linf") == 255
    cfg["attacks"]["eps_reference_size"] = None
    assert config_eps_scale(cfg, "L2") == 1.0


def test_bad_sizes_name_the_key():
    with pytest.raises(LipSimError, match="attacks.eps_reference_size"):
        eps_divisor("L2", 32, 0)
    with pytest.raises(LipSimError, match="image_size"):
        eps_divisor("L2", 0, 224)


def test_demo_config_attacks_at_scaled_radii(tmp_path):
    """The demo DAG (dry run) attacks, retrieves and draws figure 3b at radius x 32/224, keeps
    the paper's radius in file names, and labels table 2 / fig 3a / retrieval with both."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-n",
            "-p",
            "--config",
            f"results_dir={tmp_path}",
            "run=r",
        ],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "--eps 2 --eps-scale 7.0" in text  # fig 3a: the paper's 2.0 applied as 2/7
    assert "autoattack-L2-2.parquet" in text
    assert "--eps 4 --eps-scale 255" in text  # linf per pixel: only the /255 units
    retrieval = re.search(r"lipsim retrieval .*", text).group(0)
    assert "--eps 0 0.5 1.0 2.0 " in retrieval and "--eps-scale 7.0 " in retrieval
    distances = re.search(r"lipsim distances .*", text).group(0)  # figure 3b
    assert re.search(r"--eps 1(\.0)? ", distances) and "--eps-scale 7.0 " in distances
    assert text.count("--image-size 32 --eps-reference-size 224") >= 3  # table2, retrieval, fig3a
