"""Validate a pipeline config against the config schema (package data:
lipsim/resources/config.schema.yaml; workflow/schemas/config.schema.yaml is the same file).

snakemake.utils.validate stops at the first error and prints a schema dump; users of a long
pipeline want every mistake at once, each named by its key path, before any job starts.
Defaults from the schema are filled in, as snakemake's validate does.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import inspect
import math
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import Draft202012Validator, validators

from lipsim.errors import LipSimError
from lipsim.registry import ATTACKS_TABLE, comparison_metrics, names


class ConfigError(LipSimError, ValueError):
    """The configuration is invalid; the message lists every problem by key path."""


# The schema ships inside the package (in the checkout, lipsim/resources/ links to the
# workflow's copy; a wheel holds the file itself), so an installed lipsim finds it anywhere.
# Nothing reads it at import time: defaults are looked up when a caller asks.
SCHEMA_PATH = Path(str(importlib.resources.files("lipsim") / "resources" / "config.schema.yaml"))


@functools.cache
def _schema(path: str) -> dict[str, Any]:
    if not Path(path).is_file():
        raise ConfigError(f"config schema not found: {path}")
    return _from_registry(yaml.safe_load(Path(path).read_text()))


def _from_registry(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with what lipsim.registry declares filled in: the enums of teacher names
    and of figure 3a's comparison metrics, and per attack the attacks.<attack>_l2_eps /
    <attack>_linf_eps_255 radius lists the schema file does not declare (default: none)."""
    schema["$defs"]["teacher_name"]["enum"] = names("teacher")
    baselines = schema["properties"]["baselines"]["properties"]
    baselines["metrics"]["items"]["enum"] = comparison_metrics()
    attacks = schema["properties"]["attacks"]["properties"]
    for card in ATTACKS_TABLE.values():
        for norm, key in card.radius_keys.items():
            unit = "image units" if norm == "L2" else "/255 units"
            attacks.setdefault(
                key,
                {
                    "$ref": "#/$defs/eps_list",
                    "default": [],
                    "description": f"{card.display} {norm} radii ({unit}).",
                },
            )
    return schema


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """The parsed config schema (a fresh copy: callers may change it)."""
    return copy.deepcopy(_schema(str(path)))


def schema_node(key: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """The schema of a dotted config key ("finetune.lr"), with $ref resolved."""
    root = schema if schema is not None else _schema(str(SCHEMA_PATH))
    node = root
    for part in key.split("."):
        props = node.get("properties", {})
        if part not in props:
            raise ConfigError(
                f"config key {key!r} is not in the schema "
                f"({part!r} not among {', '.join(props) or 'no keys'})"
            )
        node = props[part]
        if "$ref" in node:
            node = {
                **_resolve(root, node["$ref"]),
                **{k: v for k, v in node.items() if k != "$ref"},
            }
    return node


def schema_default(key: str, schema: dict[str, Any] | None = None) -> Any:
    """The pipeline's default of a dotted config key, read from the schema: the one source of
    defaults for CLIs (`default=schema_default("finetune.lr")`) and tests."""
    node = schema_node(key, schema)
    if "default" not in node:
        raise ConfigError(f"config key {key!r} has no default in the schema")
    return copy.deepcopy(node["default"])


class FromSchema:
    """A parameter default that stands for the schema's default of `key`, looked up when the
    function is called (`with_schema_defaults`), so importing a module reads no schema."""

    def __init__(self, key: str):
        self.key = key

    def __repr__(self) -> str:  # shows in help() and inspect.signature
        return f"<schema default of {self.key}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FromSchema) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)


def resolve(value: Any) -> Any:
    """A FromSchema default's value (anything else as it is)."""
    return schema_default(value.key) if isinstance(value, FromSchema) else value


def with_schema_defaults(func):
    """Resolve the FromSchema defaults of `func` at call time (arguments passed win)."""
    sig = inspect.signature(func)
    lazy = {n: p.default for n, p in sig.parameters.items() if isinstance(p.default, FromSchema)}

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        bound = sig.bind_partial(*args, **kwargs)
        for name, default in lazy.items():
            if name not in bound.arguments:
                kwargs[name] = schema_default(default.key)
        return func(*args, **kwargs)

    return wrapper


def _with_defaults(cls):
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


def key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        # The offending key is in the message, not the path: name it.
        extra = [k for k in error.instance if k not in error.schema.get("properties", {})]
        parts.append(",".join(map(str, extra)))
    return ".".join(parts) or "(top level)"


def validate_config(config: dict[str, Any], schema_path: str | Path) -> dict[str, Any]:
    """Fill defaults into `config` in place and raise ConfigError listing every problem."""
    schema = load_schema(schema_path)
    _coerce_cli_strings(config, schema, schema)
    cls = _with_defaults(Draft202012Validator)
    errors = sorted(cls(schema).iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  {key_path(e)}: {_message(e)}" for e in errors]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    _cross_checks(config)
    _check_teacher_settings(config, schema, cls)
    return config


def sweep_teachers(config: dict[str, Any]) -> list[str]:
    """The teachers of the sweep, primary (teacher.name) included: `teachers`, or the
    primary alone when that list is empty."""
    return list(config.get("teachers") or [config["teacher"]["name"]])


def teacher_section(config: dict[str, Any], section: str, teacher: str) -> dict[str, Any]:
    """config[section] (distill or finetune) with teacher_settings[teacher] applied."""
    override = config.get("teacher_settings", {}).get(teacher, {}).get(section, {})
    return {**config[section], **override}


def split_objective(name: str) -> tuple[str, str]:
    """(loss, metric) of a finetuning objective named LOSS-METRIC (study.objectives)."""
    loss, _, metric = str(name).rpartition("-")
    return loss, metric


def _check_teacher_settings(config: dict[str, Any], schema: dict, cls) -> None:
    # An override is checked as the section it ends up in, so a bad type or an unknown key
    # is named as in the section itself.
    problems = []
    for teacher, sections in config.get("teacher_settings", {}).items():
        for section in sections:
            # How jobs are launched and sized is the cluster's, shared by every teacher.
            for key in set(sections[section]) & {"resources", "launcher"}:
                problems.append(
                    f"  teacher_settings.{teacher}.{section}.{key}: shared by all "
                    f"teachers; set {section}.{key} instead"
                )
            node = {**schema["properties"][section], "$defs": schema.get("$defs", {})}
            merged = copy.deepcopy(teacher_section(config, section, teacher))
            for err in cls(node).iter_errors(merged):
                where = ".".join(map(str, err.absolute_path))
                problems.append(
                    f"  teacher_settings.{teacher}.{section}.{where or '(top)'}: {_message(err)}"
                )
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(problems))


def _coerce_cli_strings(value: Any, node: dict, root: dict) -> Any:
    """Turn strings into the numbers/booleans the schema asks for, in place.

    `snakemake --config margins=[0.1,0.5]` parses lists with YAML's BaseLoader, which keeps
    every element a string; a value typed on the command line should mean what the same
    value means in a config file.
    """
    if "$ref" in node:
        node = {**_resolve(root, node["$ref"]), **{k: v for k, v in node.items() if k != "$ref"}}
    types = node.get("type", [])
    types = [types] if isinstance(types, str) else types
    if isinstance(value, str):
        if "integer" in types and value.lstrip("-").isdigit():
            return int(value)
        if "number" in types:
            try:
                return float(value)
            except ValueError:
                return value
        if "boolean" in types and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if "null" in types and value.lower() in ("null", "none"):
            return None
        return value
    if isinstance(value, list) and "items" in node:
        value[:] = [_coerce_cli_strings(v, node["items"], root) for v in value]
    elif isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key in list(value):
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                value[key] = _coerce_cli_strings(value[key], sub, root)
    return value


def _resolve(root: dict, ref: str) -> dict:
    node = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _message(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"unknown key (allowed here: {', '.join(allowed)})"
    return error.message


def _as_float(text):
    try:
        return float(text)
    except ValueError:
        return text


def _cross_checks(config: dict[str, Any]) -> None:
    """Rules a JSON schema cannot say clearly; each message names the keys involved."""
    problems = []
    for section in ("night", "imagenet", "natural_images", "bapps"):
        sec = config.get(section, {})
        if sec.get("source") == "path" and not sec.get("path"):
            problems.append(f"  {section}.path: required when {section}.source is 'path'")
    margins = [float(m) for m in config.get("margins", [])]
    if len(set(margins)) != len(margins):
        problems.append(f"  margins: duplicated values in {config['margins']}")
    if "primary_margin" in config and float(config["primary_margin"]) not in margins:
        problems.append(
            f"  primary_margin: {config['primary_margin']} is not one of margins {margins}"
        )
    for key in config.get("finetuned_checkpoints", {}):
        try:
            m = float(key)
        except ValueError:
            problems.append(f"  finetuned_checkpoints.{key}: keys must be margins (numbers)")
            continue
        if m not in margins:
            problems.append(
                f"  finetuned_checkpoints.{key}: margin {m} is not in margins {margins}"
            )
    released = [("pretrained_checkpoint", "pretrained")] * (
        config.get("pretrained_checkpoint") == "released"
    )
    released += [
        (f"finetuned_checkpoints.{k}", k)
        for k, v in config.get("finetuned_checkpoints", {}).items()
        if v == "released"
    ]
    ids = config.get("released", {}).get("ids", {})
    known = {"pretrained" if k == "pretrained" else _as_float(k) for k in ids}
    for key, name in released:
        if ("pretrained" if name == "pretrained" else _as_float(name)) not in known:
            problems.append(
                f"  {key}: 'released' but released.ids has no {name!r} "
                f"(has {', '.join(ids) or 'none'})"
            )
    teachers = config.get("teachers") or []
    primary = config.get("teacher", {}).get("name")
    if len(set(teachers)) != len(teachers):
        problems.append(f"  teachers: duplicated names in {teachers}")
    if teachers and primary not in teachers:
        problems.append(
            f"  teachers: must include teacher.name ({primary!r}, the primary "
            f"teacher), got {teachers}; a config that sets teacher.name sets "
            f"teachers too (e.g. teachers: [{primary}])"
        )
    for name in config.get("teacher_settings", {}):
        if name not in (teachers or [primary]):
            problems.append(
                f"  teacher_settings.{name}: not a teacher of the sweep "
                f"({', '.join(teachers or [primary])})"
            )
    if config.get("distill", {}).get("launcher") == "none":
        res = config["distill"].get("resources", {})
        if res.get("nodes", 1) * res.get("tasks_per_node", 1) > 1:
            problems.append(
                "  distill.launcher: 'none' runs one process but distill.resources asks for "
                "several tasks; use torchrun (one node) or srun (SLURM)"
            )
    problems += _number_checks(config)
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(problems))


# Numbers that become parts of file names (and command-line values) are written by
# `file_number`; the rules' wildcards (workflow/Snakefile) accept plain decimals only.
_PLAIN_DECIMAL = re.compile(r"\d+(\.\d+)?")
# key -> what the number names (for the message).
_ATTACK = "the attack rule's output (attacks/<metric>/{}-<eps>.parquet)"
_FILE_NUMBERS = {
    "margins": "the finetune/certify/attack chain of that margin (checkpoints/margin<m>.pt)",
    "primary_margin": "the primary model (checkpoints/margin<m>.pt)",
    "finetuned_checkpoints": "the imported model (checkpoints/margin<m>.pt)",
    "attacks.autoattack_l2_eps": _ATTACK.format("autoattack-L2"),
    "attacks.autoattack_linf_eps_255": _ATTACK.format("autoattack-Linf"),
    "attacks.pgd_l2_eps": _ATTACK.format("pgd-L2"),
    "attacks.pgd_linf_eps_255": _ATTACK.format("pgd-Linf"),
    "attacks.fig3a_eps": _ATTACK.format("autoattack-L2") + " for figure 3a",
    "certify.eps_255": "the certify rule's --eps and Table 1's certified_<eps> columns",
    "retrieval.eps": "the retrieval rule's --eps",
}
_LINF_KEYS = ("attacks.autoattack_linf_eps_255", "attacks.pgd_linf_eps_255")


def file_number(x: Any) -> str:
    """One spelling per number in file names and rule options: 0.5, 2, 0.25 (never 0.50, 2.0)."""
    return f"{float(x):g}"


def _number_checks(config: dict[str, Any]) -> list[str]:
    """Every number finite; numbers that name files round-trip through `file_number` and stay
    distinct; l-inf radii within the pixel range; folders of outputs named."""
    problems = [
        f"  {key}: {value!r} is not a finite number"
        for key, value in _numbers(config)
        if not math.isfinite(value)
    ]
    for key in ("results_dir", "weights_dir"):
        if isinstance(config.get(key), str) and not config[key].strip():
            problems.append(
                f"  {key}: empty; every path under it would start at the filesystem root "
                "(use '.' for the working directory)"
            )
    for key, what in _FILE_NUMBERS.items():
        values = _get(config, key)
        if values is None:
            continue
        values = list(values) if isinstance(values, (list, dict)) else [values]
        seen: dict[str, Any] = {}
        for value in values:
            try:
                number = float(value)
            except (TypeError, ValueError):
                continue  # named by the schema or by the checks above
            if not math.isfinite(number):
                continue
            name = file_number(number)
            if not _PLAIN_DECIMAL.fullmatch(name) or float(name) != number:
                why = "another number" if _PLAIN_DECIMAL.fullmatch(name) else "not a plain decimal"
                problems.append(
                    f"  {key}: {value!r} cannot name {what}: it would be spelled {name!r}, "
                    f"{why}; use a plain decimal of at most 6 significant digits, "
                    "from 0.0001 to 999999"
                )
            elif name in seen and key != "margins":  # margins: named above
                problems.append(f"  {key}: {seen[name]!r} and {value!r} are the same {name}")
            seen.setdefault(name, value)
    for key in _LINF_KEYS:
        for value in _get(config, key) or []:
            if isinstance(value, (int, float)) and value > 255:
                problems.append(
                    f"  {key}: {value!r} is over 255: l-inf radii are in /255 units, and 255 "
                    "already lets an attack reach any image"
                )
    return problems


def _numbers(value: Any, path: str = "") -> list[tuple[str, float]]:
    """(key path, value) of every float in a config (integers are always finite)."""
    if isinstance(value, float):
        return [(path, value)]
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return []
    return [n for k, v in items for n in _numbers(v, f"{path}.{k}" if path else str(k))]


def _get(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node
