"""Config validation: every key typed and defaulted; mistakes named by key before any job."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lipsim.configcheck import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


def _validate(cfg):
    return validate_config(cfg, SCHEMA)


def test_empty_config_gets_every_default():
    cfg = _validate({})
    assert cfg["margins"] == [0.2, 0.5]
    assert cfg["certify"]["eps_255"] == [36, 72, 108]
    assert cfg["distill"]["resources"]["nodes"] == 1
    assert cfg["night"]["generate"]["n_test"] == 128


SHIPPED = ("config.yaml", "paper.yaml", "test.yaml", "released.yaml")


def test_shipped_configs_are_valid():
    for name in SHIPPED:
        _validate(yaml.safe_load((ROOT / "config" / name).read_text()))


def _restated(config, schema, prefix="", base=None):
    """Keys of `config` set to the schema's default. An overlay (`base`: the Snakefile's
    config/config.yaml, which --configfile is merged over) must restate a default where the
    base changes it, so those keys are not counted."""
    base = base or {}
    for key, value in config.items():
        node = schema.get("properties", {}).get(key, {})
        under = base.get(key, {}) if isinstance(base, dict) else {}
        if isinstance(value, dict) and "properties" in node:
            yield from _restated(value, node, f"{prefix}{key}.", under)
        elif "default" in node and node["default"] == value and key not in (base or {}):
            yield f"{prefix}{key}: {value!r}"


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_state_only_what_differs_from_the_defaults(name):
    # A restated default would not follow a change of the schema's (the demo would keep the
    # old value); config/README.md lists every default.
    schema = yaml.safe_load(SCHEMA.read_text())
    config = yaml.safe_load((ROOT / "config" / name).read_text())
    base = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    restated = list(_restated(config, schema, base=None if name == "config.yaml" else base))
    assert not restated, f"config/{name} restates schema defaults: {restated}"


def test_restated_defaults_are_found():
    schema = yaml.safe_load(SCHEMA.read_text())
    found = list(_restated({"distill": {"lr": 0.01, "epochs": 40}, "metric": "ball"}, schema))
    assert found == ["distill.lr: 0.01", "metric: 'ball'"]
    # An overlay may restate a default that the base config changes, and only that one.
    base = {"distill": {"epochs": 3, "lr": 0.5}}
    found = list(_restated({"distill": {"lr": 0.01, "beta1": 0.5}}, schema, base=base))
    assert found == ["distill.beta1: 0.5"]


def test_every_schema_key_has_a_description_and_default():
    schema = yaml.safe_load(SCHEMA.read_text())
    missing = []

    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            if "$ref" in sub:
                continue
            if "description" not in sub or "default" not in sub:
                missing.append(".".join(path + [key]))
            walk(sub, path + [key])

    walk(schema, [])
    walk(schema["$defs"]["resources"], ["resources"])
    assert not missing, f"keys without description/default: {missing}"


@pytest.mark.parametrize(
    "cfg, expected",
    [
        ({"distill": {"epoch": 3}}, "distill.epoch: unknown key"),
        ({"distill": {"lr": "fast"}}, "distill.lr: 'fast' is not of type 'number'"),
        ({"margins": [-0.2]}, "margins.0"),
        ({"device": "tpu"}, "device: 'tpu' does not match"),
        ({"night": {"source": "path"}}, "night.path: required when night.source is 'path'"),
        ({"margins": [0.2], "primary_margin": 0.5}, "primary_margin: 0.5 is not one of margins"),
        ({"finetuned_checkpoints": {"0.3": "x.pt"}}, "finetuned_checkpoints.0.3: margin 0.3"),
        ({"distill": {"resources": {"nodes": 2}}}, "distill.launcher"),
    ],
)
def test_errors_name_the_key(cfg, expected):
    with pytest.raises(ConfigError) as err:
        _validate(cfg)
    assert expected in str(err.value)


def test_all_errors_are_listed_at_once():
    with pytest.raises(ConfigError) as err:
        _validate({"distill": {"epoch": 3, "lr": "x"}, "device": "tpu"})
    msg = str(err.value)
    assert "distill.epoch" in msg and "distill.lr" in msg and "device" in msg


def test_snakemake_stops_before_any_job_on_a_bad_config(tmp_path):
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text((ROOT / "config" / "config.yaml").read_text())
    bad = tmp_path / "bad.yaml"
    bad.write_text("distill:\n  epochs: many\n")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(ROOT / "workflow" / "Snakefile"),
            "-d",
            str(tmp_path),
            "--configfile",
            str(bad),
            "--cores",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "distill.epochs: 'many' is not of type 'integer'" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_cli_dispatcher_lists_and_rejects():
    out = subprocess.run(
        [sys.executable, "-m", "lipsim", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "evaluation:" in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "lipsim", "no-such-step"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "unknown command 'no-such-step'" in bad.stderr


# The JSON Schema keywords the schema uses; any other key in a schema node is a mistake (e.g.
# the tail of a description cut at a comma inside a YAML flow mapping).
KEYWORDS = {
    "$schema",
    "$defs",
    "$ref",
    "type",
    "description",
    "default",
    "enum",
    "items",
    "properties",
    "additionalProperties",
    "pattern",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "minItems",
    "uniqueItems",
    # ours: the commands that take a key as an option (lipsim.cli._args), and the training
    # keys a resume need not match (lipsim.train.trainer.config_from_args)
    "x-cli",
    "x-resume",
}


def _schema_nodes(node, path="(top)"):
    yield path, node
    for key, sub in node.get("properties", {}).items():
        yield from _schema_nodes(sub, f"{path}.{key}" if path != "(top)" else key)
    for key, sub in node.get("$defs", {}).items():
        yield from _schema_nodes(sub, f"$defs.{key}")
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _schema_nodes(node[key], f"{path}[{key}]")


def test_schema_has_no_stray_keys_and_whole_descriptions():
    schema = yaml.safe_load(SCHEMA.read_text())
    stray, cut = [], []
    for path, node in _schema_nodes(schema):
        stray += [f"{path}: {k!r}" for k in node if k not in KEYWORDS]
        desc = node.get("description")
        if desc is not None and not (isinstance(desc, str) and desc.rstrip().endswith((".", ")"))):
            cut.append(f"{path}: {desc!r}")
    assert not stray, f"keys the schema does not define (quote descriptions with commas): {stray}"
    assert not cut, f"descriptions that do not end in a full stop (cut short?): {cut}"


def test_stray_key_check_catches_a_comma_in_a_flow_mapping():
    node = yaml.safe_load("n: {type: integer, description: Half True, half False.}")["n"]
    assert set(node) - KEYWORDS == {"half False."}


def test_config_readme_is_generated_from_the_schema():
    from lipsim.configcheck import load_schema
    from lipsim.configdoc import render

    committed = (ROOT / "config" / "README.md").read_text()
    assert committed == render(load_schema(SCHEMA)), (
        "config/README.md is out of date: run `python -m lipsim config-doc`"
    )


def test_schema_default_reads_nested_and_referenced_keys():
    from lipsim.configcheck import schema_default

    assert schema_default("finetune.lr") == 0.001
    assert schema_default("distill.resources.mem_mb") == 4000  # through $ref
    assert schema_default("attacks.autoattack_l2_eps") == [0.5, 2.0]
    with pytest.raises(ConfigError, match="'finetune.nope' is not in the schema"):
        schema_default("finetune.nope")


def test_config_readme_documents_every_key():
    schema = yaml.safe_load(SCHEMA.read_text())
    doc = (ROOT / "config" / "README.md").read_text()
    keys = []

    def walk(node, prefix):
        for key, sub in node.get("properties", {}).items():
            keys.append(prefix + key)
            if "properties" in sub:
                walk(sub, prefix + key + ".")

    walk(schema, "")
    missing = [k for k in keys if f"`{k}`" not in doc]
    assert not missing, f"config/README.md misses {missing}"


def test_command_line_strings_take_the_schema_types():
    # snakemake --config margins=[0.1,0.5] hands over ['0.1', '0.5'].
    cfg = _validate(
        {
            "margins": ["0.1", "0.5"],
            "distill": {"epochs": "4", "amp": "none"},
            "baselines": {"random_weights": "false"},
        }
    )
    assert cfg["margins"] == [0.1, 0.5]
    assert cfg["distill"]["epochs"] == 4
    assert cfg["baselines"]["random_weights"] is False
    with pytest.raises(ConfigError, match="distill.epochs"):
        _validate({"distill": {"epochs": "four"}})
