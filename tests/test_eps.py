"""eps: image units everywhere; /255 only for labels and file names, through one conversion
(lipsim.eps.convert_eps); reporting takes a file's own recorded eps and guesses nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from lipsim.eps import convert_eps, eps_file_token, eps_from_file_token, eps_label
from lipsim.errors import LipSimError
from lipsim.reporting import attack_setting, parse_attack_path

ROOT = Path(__file__).resolve().parents[1]


def test_convert_eps_both_directions():
    assert convert_eps(36, "image") == 36 / 255
    assert convert_eps(36 / 255, "255") == pytest.approx(36)
    for k in (0, 1, 4, 8, 36, 72, 108):
        assert convert_eps(convert_eps(k, "image"), "255") == pytest.approx(k)
    with pytest.raises(LipSimError, match="eps units must be one of"):
        convert_eps(1, "pixels")


def test_file_tokens_round_trip_in_the_workflow_convention():
    # Linf in /255 units, l2 in image units; one spelling per number
    assert eps_file_token(4 / 255, "Linf") == "4"
    assert eps_file_token(0.5, "L2") == "0.5" and eps_file_token(2.0, "l2") == "2"
    assert eps_from_file_token("4", "Linf") == 4 / 255
    assert eps_from_file_token("0.5", "L2") == 0.5
    for eps, norm in ((4 / 255, "linf"), (8 / 255, "Linf"), (0.5, "l2"), (2.0, "L2")):
        assert eps_from_file_token(eps_file_token(eps, norm), norm) == pytest.approx(eps)
    # no guess from the size: a Linf token below 1 is still /255 units
    assert eps_from_file_token("0.5", "Linf") == 0.5 / 255
    with pytest.raises(LipSimError, match="not a number"):
        eps_from_file_token("four", "Linf")
    with pytest.raises(LipSimError, match="l2 or linf"):
        eps_file_token(1.0, "l3")


def test_labels_read_image_units_only():
    assert eps_label(4 / 255, "Linf") == "4/255"
    assert eps_label(0.0157, "linf") == "4/255"  # a rounded 4/255
    assert eps_label(0.5, "L2") == "0.5"
    # a Linf radius of 4 image units is not re-read as 4/255
    assert eps_label(4, "Linf") == "1020/255"


def test_attack_setting_prefers_the_files_recorded_eps(tmp_path):
    path = tmp_path / "R" / "attacks" / "lipsim-pretrained" / "apgd-Linf-4.parquet"
    assert parse_attack_path(path)["eps"] == 4 / 255
    recorded = pd.DataFrame({"attack": ["apgd"], "norm": ["Linf"], "eps": [8 / 255]})
    assert attack_setting(path, recorded)["eps"] == 8 / 255  # the file's own record wins
    assert attack_setting(path, pd.DataFrame({"x": [1]}))["eps"] == 4 / 255  # name: fallback


def test_no_unit_guess_or_hand_conversion_left_in_reporting():
    """The `eps >= 1 means /255` guess is gone and the reporting modules this change owns
    convert through lipsim.eps (tables.py's Table 1 radii: see the report)."""
    for rel in (
        "lipsim/reporting/__init__.py",
        "lipsim/reporting/figures.py",
        "lipsim/reporting/bapps.py",
        "lipsim/cli/evaluate_bapps.py",
    ):
        text = (ROOT / rel).read_text()
        assert not re.search(r"eps\)?\s*>=\s*1", text), rel
        assert not re.search(r"[/*] 255\b", text), rel
