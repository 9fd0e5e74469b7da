"""config/README.md, generated from workflow/schemas/config.schema.yaml (`lipsim config-doc`).

The schema is the one source of every key's type, default and description; this module only
lays them out as Markdown tables. tests/test_config.py fails when the committed README and
the schema drift apart.
"""

from __future__ import annotations

import json
from typing import Any

INTRO = """\
# Configuration keys

Validated by `workflow/schemas/config.schema.yaml` (the source of truth: types, defaults,
descriptions); this file is generated from it by `python -m lipsim config-doc`, do not edit it
by hand. `config.yaml` is the demo, `paper.yaml` the paper's scale, `test.yaml` the
integration tests (merged over config.yaml). Override any key on the command line:
`snakemake --config margins=[0.1,0.5]` or with `--configfile my.yaml`.
"""
HEAD = "| key | type | default | description |\n|---|---|---|---|\n"
RESOURCES = "#/$defs/resources"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _type(node: dict, root: dict) -> str:
    if node.get("$ref") == RESOURCES:
        return "resources"
    if "$ref" in node:
        node = {**_resolve(root, node["$ref"]), **node}
    if "enum" in node:
        return " | ".join(map(str, node["enum"]))
    kind = node.get("type", "")
    if isinstance(kind, list):
        return "/".join(kind)
    if kind == "array" and isinstance(node.get("items"), dict) and "type" in node["items"]:
        return f"array of {node['items']['type']}"
    return kind


def _resolve(root: dict, ref: str) -> dict:
    node = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _default(node: dict) -> str:
    if node.get("$ref") == RESOURCES:
        return "see below"
    if node.get("type") == "object" and "properties" in node:
        return ""  # its keys carry the defaults
    if "default" not in node:
        return ""
    return f"`{json.dumps(node['default'])}`"


def _rows(node: dict, root: dict, prefix: str = "") -> list[str]:
    rows = []
    for key, sub in node.get("properties", {}).items():
        desc = sub.get("description", "")
        if sub.get("$ref") == RESOURCES:
            desc = desc or "Cluster resources of this step (see below)."
        row = f"| `{prefix}{key}` | {_cell(_type(sub, root))} | {_default(sub)} | {_cell(desc)} |"
        rows.append(row.replace("|  |", "| |"))
        if "properties" in sub:
            rows += _rows(sub, root, f"{prefix}{key}.")
    return rows


def _resource_users(node: dict, prefix: str = "") -> list[str]:
    users = []
    for key, sub in node.get("properties", {}).items():
        if sub.get("$ref") == RESOURCES:
            users.append(f"`{prefix}{key}`")
        users += _resource_users(sub, f"{prefix}{key}.")
    return users


def render(schema: dict[str, Any]) -> str:
    """The whole of config/README.md for `schema` (the parsed config schema)."""
    res = schema["$defs"]["resources"]
    out = [
        INTRO,
        HEAD + "\n".join(_rows(schema, schema)) + "\n",
        f"## Resources ({', '.join(_resource_users(schema))})\n",
        _cell(res.get("description", "")) + "\n",
        HEAD + "\n".join(_rows(res, schema)) + "\n",
    ]
    return "\n".join(out)
