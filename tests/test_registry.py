"""The registry of metrics and teachers is the one table of their facts: the schema's enums,
the teachers, the baselines, fetch-weights, the rules and reporting all read it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lipsim.configcheck import schema_node
from lipsim.errors import LipSimError
from lipsim.registry import (
    METRICS_TABLE,
    comparison_metrics,
    metric_card,
    names,
    needs_weights,
)

ROOT = Path(__file__).resolve().parents[1]


def _enum(key: str) -> list:
    node = schema_node(key)
    return node["items"]["enum"] if node.get("type") == "array" else node["enum"]


def test_schema_teacher_enum_is_the_registry_teachers():
    assert sorted(_enum("teacher.name")) == sorted(names("teacher"))


def test_schema_baselines_enum_is_the_registry_comparison_metrics():
    assert sorted(_enum("baselines.metrics")) == sorted(comparison_metrics())
    assert "demo" not in comparison_metrics() and "lipsim" not in comparison_metrics()


def test_schema_lipsim_metric_and_preset_enums_are_the_model_code_names():
    from lipsim.models.net import METRICS
    from lipsim.models.presets import PRESETS

    assert sorted(_enum("metric")) == sorted(METRICS)
    assert sorted(_enum("certify.metrics")) == sorted(METRICS)
    assert sorted(_enum("model.preset")) == sorted(PRESETS)


def test_every_card_is_complete_and_unknown_names_fail_in_one_line():
    for name, card in METRICS_TABLE.items():
        assert card.name == name and card.family in ("baseline", "teacher", "lipsim")
        assert card.display and card.description
        for dl in card.downloads:
            assert dl.kind in ("zip", "file") and dl.url.startswith("https://") and dl.name
    with pytest.raises(LipSimError, match="unknown metric 'nope'; known: l2, "):
        metric_card("nope")
    with pytest.raises(LipSimError, match="unknown metric family"):
        names("teachers")


def test_teachers_and_baselines_read_the_registry():
    from lipsim import baselines
    from lipsim.teachers import TEACHERS

    assert list(TEACHERS) == names("teacher")
    for name, spec in TEACHERS.items():
        card = METRICS_TABLE[name]
        assert (spec.emb_dim, spec.image_size, spec.downloads) == (
            card.emb_dim,
            card.image_size,
            card.downloads,
        )
    assert TEACHERS["dreamsim_ensemble"].emb_dim == 1792
    from lipsim.teachers import get_teacher

    demo = get_teacher("demo")  # the built teacher agrees with its card
    assert (demo.emb_dim, demo.image_size) == (
        METRICS_TABLE["demo"].emb_dim,
        METRICS_TABLE["demo"].image_size,
    )
    assert tuple(baselines.BASELINES) == tuple(names("baseline"))
    assert set(baselines.BASELINE_DOWNLOADS) == {"lpips", "dists"}
    assert set(needs_weights()) == {
        "lpips",
        "dists",
        "dreamsim_ensemble",
        "dino_vitb16",
        "clip_vitb32",
        "open_clip_vitb32",
    }


def test_weights_sources_match_the_upstream_packages():
    """The URLs and hash prefixes written in the table are the installed packages' own."""
    from dreamsim.config import dreamsim_weights
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    for name, weights in (
        ("lpips", AlexNet_Weights.IMAGENET1K_V1),
        ("dists", VGG16_Weights.IMAGENET1K_V1),
    ):
        (dl,) = METRICS_TABLE[name].downloads
        assert dl.url == weights.url and dl.name == weights.url.rsplit("/", 1)[-1]
        assert dl.name.rsplit("-", 1)[-1].startswith(dl.sha256)
    for key in ("dino_vitb16", "clip_vitb32", "open_clip_vitb32"):
        assert METRICS_TABLE[key].downloads[0].url == dreamsim_weights[key]


def test_reporting_labels_and_order_are_the_registry_ones():
    from lipsim.reporting import display_name, metric_sort_key

    for name in names():
        if METRICS_TABLE[name].family != "lipsim":
            assert display_name(name) == METRICS_TABLE[name].display
    ordered = sorted(
        ["demo", "dreamsim_ensemble", "lipsim-margin0.5", "l2", "lpips"], key=metric_sort_key
    )
    assert ordered == ["l2", "lpips", "dreamsim_ensemble", "demo", "lipsim-margin0.5"]


def test_rules_read_the_registry():
    """common.smk's NEEDS_WEIGHTS and teacher_emb_dim come from the registry, not a copy."""
    text = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert "NEEDS_WEIGHTS = set(needs_weights())" in text
    assert "METRICS_TABLE[TEACHER].emb_dim" in text
    # no metric name list restated in the rules
    assert not re.search(r'\{"dreamsim_ensemble", "dino_vitb16"', text)
