"""The registry is the one place of every metric's and attack's facts: the schema's enums, CLI
choices and help, the rules, reporting and the cost model read it, and a new teacher or attack
is a card plus a registered builder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lipsim import registry
from lipsim.configcheck import SCHEMA_PATH, _from_registry, schema_node
from lipsim.errors import LipSimError
from lipsim.registry import (
    ATTACKS_TABLE,
    METRICS_TABLE,
    comparison_metrics,
    metric_card,
    names,
    needs_weights,
)

ROOT = Path(__file__).resolve().parents[1]


def _enum(key: str, schema=None) -> list:
    node = schema_node(key, schema)
    return node["items"]["enum"] if node.get("type") == "array" else node["enum"]


def test_schema_enums_are_filled_in_from_the_registry_not_restated():
    assert _enum("teacher.name") == names("teacher")
    assert schema_node("teachers")["items"] == {"$ref": "#/$defs/teacher_name"}
    assert _enum("baselines.metrics") == comparison_metrics()
    assert "demo" not in comparison_metrics() and "lipsim" not in comparison_metrics()
    text = (ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert "dreamsim_ensemble" not in text and "open_clip_vitb32" not in text


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
    for name, card in ATTACKS_TABLE.items():
        assert card.name == name and card.display and card.description
    with pytest.raises(LipSimError, match="unknown metric 'nope'; known: l2, "):
        metric_card("nope")
    with pytest.raises(LipSimError, match="unknown registry kind"):
        names("teachers")
    with pytest.raises(LipSimError, match="unknown attack 'nope'; known: autoattack, "):
        registry.builder("attack", "nope")


def test_every_teacher_baseline_and_attack_has_its_builder():
    import lipsim.attacks  # noqa: F401 (registers the attacks)
    import lipsim.factory  # noqa: F401 (registers the teachers and baselines)
    from lipsim.teachers import get_teacher

    for kind in ("teacher", "baseline", "attack"):
        for name in names(kind):
            assert registry.builder(kind, name) is not None
    for name in ("demo", "demo2"):  # a built teacher agrees with its card
        t = get_teacher(name)
        assert (t.name, t.emb_dim, t.image_size) == (
            name,
            METRICS_TABLE[name].emb_dim,
            METRICS_TABLE[name].image_size,
        )
    # the cards with downloads, and no other: l2 and the demo teachers build without files
    assert {"lpips", "dists", "dreamsim_ensemble", "dino_vitb16"} <= set(needs_weights())
    assert not {"l2", "demo", "demo2", "lipsim"} & set(needs_weights())


def test_register_refuses_a_name_without_a_card_or_registered_twice():
    with pytest.raises(LipSimError, match="teacher 'nope' has no card"):
        registry.register("teacher", "nope")
    import lipsim.teachers  # noqa: F401 (demo is registered)

    with pytest.raises(LipSimError, match="teacher 'demo' is registered twice"):
        registry.register("teacher", "demo")(lambda **kw: None)


@pytest.fixture
def scratch_registry(monkeypatch):
    """Adds a card to the registry; the card and any builder registered vanish after the test."""
    import lipsim.attacks  # noqa: F401
    import lipsim.factory  # noqa: F401

    monkeypatch.setattr(registry, "_BUILDERS", dict(registry._BUILDERS))

    def add_card(card):
        if isinstance(card, registry.AttackCard):
            monkeypatch.setitem(ATTACKS_TABLE, card.name, card)
        else:
            monkeypatch.setattr(registry, "_CARDS", (*registry._CARDS, card))
            monkeypatch.setitem(METRICS_TABLE, card.name, card)

    return add_card


def test_a_new_teacher_is_a_card_and_a_builder(scratch_registry):
    """Nothing else to edit: the schema accepts it and build_metric builds it."""
    from lipsim.factory import build_metric
    from lipsim.teachers.demo import DemoTeacher

    scratch_registry(
        registry.MetricCard("demo9", "teacher", "Demo 9", 64, 32, (), "test", in_paper=False)
    )

    @registry.register("teacher", "demo9")
    def build(*, weights_dir=None, device="cpu", random_weights=False):
        teacher = DemoTeacher(seed=9)
        teacher.name = "demo9"
        return teacher

    schema = _from_registry(yaml.safe_load(SCHEMA_PATH.read_text()))
    assert "demo9" in _enum("teacher.name", schema)
    metric = build_metric("demo9")
    assert isinstance(metric, DemoTeacher) and metric.name == "demo9" and not metric.training


def test_a_new_attack_is_a_card_and_a_registered_class(scratch_registry):
    """The schema gains its radius keys, AttackSpec and attack_batch run it, reporting labels
    it: no list of attacks to extend anywhere else."""
    from lipsim.attacks import AttackSpec, attack_batch
    from lipsim.reporting import attack_label
    from lipsim.teachers import get_teacher

    scratch_registry(registry.AttackCard("noop", "No-op", "returns the clean reference"))

    @registry.register("attack", "noop")
    class NoOp:
        @staticmethod
        def check(spec):
            if spec.eps > 1:
                raise ValueError("noop: eps > 1")

        @staticmethod
        def run(adapter, rows, ref, label, keys, spec, state):
            state["calls"] = state.get("calls", 0) + 1
            return ref[rows].clone(), [7] * len(rows), [0] * len(rows)

        @staticmethod
        def passes(spec, robust_share=1.0):
            return 0.0, 0.0

    schema = _from_registry(yaml.safe_load(SCHEMA_PATH.read_text()))
    assert schema_node("attacks.noop_l2_eps", schema)["default"] == []
    assert schema_node("attacks.noop_linf_eps_255", schema)["type"] == "array"
    with pytest.raises(ValueError, match="noop: eps > 1"):
        AttackSpec("noop", "L2", 2.0)
    teacher = get_teacher("demo")
    g = torch.Generator().manual_seed(0)
    ref, x0, x1 = (torch.rand(3, 3, 32, 32, generator=g) for _ in range(3))
    with torch.no_grad():  # p agreeing with the teacher: rows 0 and 1 are attacked
        p = np.where((teacher(ref, x1) < teacher(ref, x0)).numpy(), 1.0, 0.0)
    p[2] = 0.5
    state: dict = {}
    spec = AttackSpec("noop", "L2", 0.5)
    x_adv, cols = attack_batch(teacher, ref, x0, x1, p, list("abc"), spec, state=state)
    torch.testing.assert_close(x_adv, ref)
    np.testing.assert_array_equal(cols["score_adv"], cols["score_clean"])
    assert state["calls"] == 1
    assert cols["group"].tolist() == [0, 0, -1] and cols["seed"][:2].tolist() == [7, 7]
    assert attack_label("noop") == "No-op"


def test_attack_cards_are_the_cli_choices_the_wildcard_and_the_grid():
    from lipsim.cli import attack

    ap_help = _cli_help(attack)
    for card in ATTACKS_TABLE.values():
        assert card.name in ap_help and card.description.split(" (")[0] in ap_help
    from lipsim.reporting import attack_label

    assert [attack_label(n) for n in ATTACKS_TABLE] == [c.display for c in ATTACKS_TABLE.values()]
    assert (attack_label("pgd"), attack_label("autoattack")) == ("PGD", "AutoAttack")
    # The workflow spells no attack name list: the wildcard and the grid are the registry's.
    smk = (ROOT / "workflow" / "Snakefile").read_text()
    assert "attack=ATTACK_RE," in smk and "autoattack|pgd" not in smk
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert 'ATTACK_RE = "|".join(ATTACKS_TABLE)' in common
    assert '("pgd", "L2"' not in common
    # Every attack's radius keys are in the schema (written there or filled in).
    for card in ATTACKS_TABLE.values():
        for key in card.radius_keys.values():
            assert schema_node(f"attacks.{key}")["type"] == "array"


def _cli_help(module) -> str:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        module.main(["--help"])
    return " ".join(out.getvalue().split())


def test_metric_help_lists_the_registry_names():
    from lipsim.cli import evaluate

    text = _cli_help(evaluate)
    for name in (*names("teacher"), *names("baseline")):
        assert name in text


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
    assert '("l2",)' not in text and '{"dreamsim_ensemble", "dino_vitb16"' not in text


def test_cost_model_counts_each_attack_by_its_registry_entry():
    """bench_paper_cost prices an attack job with the passes its registered class counts."""
    from lipsim.attacks import AttackSpec, AutoAttackConfig

    aa = AutoAttackConfig.from_budget("demo", "L2", 0.5)
    spec = AttackSpec("autoattack", "L2", 0.5, autoattack=aa)
    grads, fwds = registry.builder("attack", "autoattack").passes(spec, 0.5)
    assert grads == aa.apgd_iters * aa.apgd_restarts + 0.5 * aa.fab_iters
    assert fwds == 0.5 * (aa.fab_iters + aa.square_queries)
    pgd = AttackSpec("pgd", "L2", 0.5, steps=7, restarts=3)
    assert registry.builder("attack", "pgd").passes(pgd, 0.5) == (21.0, 0.0)
    text = (ROOT / "benchmarks" / "bench_paper_cost.py").read_text()
    assert 'builder("attack", kind).passes(' in text and '== "autoattack"' not in text
