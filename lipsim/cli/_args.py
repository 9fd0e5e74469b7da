"""The one CLI skeleton: every command builds its parser with `parser(__name__, __doc__)`.

Help shows each option's default (unless it has none to show: required options, flags and
None), the module docstring is the description, and `prog` is `lipsim <command>`, so every
command's --help looks the same. Expected errors are LipSimError, turned into one `error:`
line and exit 1 by the dispatcher; argparse's usage errors exit 2.
"""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import re
import shlex
from pathlib import Path

from lipsim.errors import LipSimError

SUMMARY_WIDTH = 76  # one line of `lipsim --help`


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the docstring's layout and appends "(default: X)" where X says something."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or action.required
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        if isinstance(default, (list, tuple)):
            return f"{text} (default: {' '.join(map(str, default))})"
        return f"{text} (default: %(default)s)"


def command_name(module: str) -> str:
    """'lipsim.cli.fetch_weights' -> 'fetch-weights'."""
    return module.rsplit(".", 1)[-1].replace("_", "-")


def parser(module: str, doc: str | None, **kwargs) -> argparse.ArgumentParser:
    """The ArgumentParser of the command defined in `module` (pass __name__, __doc__)."""
    prog = "lipsim" if module == "__main__" else f"lipsim {command_name(module)}"
    return argparse.ArgumentParser(
        prog=prog, description=doc, formatter_class=HelpFormatter, **kwargs
    )


def summary(doc: str | None) -> str:
    """The one-line description of a command, read from its module docstring.

    Docstrings start with either a sentence, "`python -m lipsim x`: a sentence", or a usage
    line in backticks followed by a paragraph: the first sentence of the first prose is used.
    """
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc or "") if p.strip()]
    for text in paragraphs:
        text = re.sub(r"^`python -m lipsim [^`]*`:?\s*", "", text)
        if text and not text.startswith(("`", "python -m")):
            break
    else:
        return ""
    sentence = re.split(r"\.(?:\s+(?=[A-Z`])|$)", text, maxsplit=1)[0].rstrip(".:")
    if len(sentence) > SUMMARY_WIDTH:
        sentence = sentence[: SUMMARY_WIDTH - 3].rsplit(" ", 1)[0].rstrip(",;(") + "..."
    # "natural 2AFC ..." -> "Natural 2AFC ..."; a formula such as "d(x, ...)" keeps its case
    return sentence[:1].upper() + sentence[1:] if sentence[1:2].isalpha() else sentence


def module_doc(path: str | Path) -> str | None:
    """A module's docstring without importing it (`lipsim --help` stays fast: no torch)."""
    return ast.get_docstring(ast.parse(Path(path).read_text()))


def add_scaled_radius_options(p: argparse.ArgumentParser) -> None:
    """--image-size / --eps-reference-size: label radii scaled to the image size with the
    radius they stand for at the reference size (lipsim.radius)."""
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="image size the attacks ran at (needed by --eps-reference-size)",
    )
    p.add_argument(
        "--eps-reference-size",
        type=int,
        default=None,
        help="image size the configured l2 radii are meant at "
        "(attacks.eps_reference_size; labels show both radii)",
    )


# ---- options from the config schema -------------------------------------------------------
# The schema declares every config key once (type, enum, default, description). A key that a
# command takes says so with `x-cli`: a list of commands (the option is --KEY with - for _),
# or a mapping command -> option name where the command spells it otherwise. `x-cli` on a
# section applies to each of its keys that does not set its own (`x-cli: []`: none), so a new
# key of the section reaches its command's parser (add_config_options) and the rule's option
# string (config_argv) with no other edit.


@dataclasses.dataclass(frozen=True)
class ConfigOption:
    key: str  # dotted config key, e.g. "distill.lr"
    option: str  # "--lr"
    node: dict  # its schema node, $ref resolved

    @property
    def dest(self) -> str:
        return self.option.lstrip("-").replace("-", "_")


def _resolved(node: dict, root: dict) -> dict:
    if "$ref" not in node:
        return node
    target = root
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _commands_of(node: dict, inherited) -> dict[str, str | None]:
    """command -> option name (None: the key's own) of one schema node."""
    spec = node.get("x-cli", inherited)
    if spec is None:
        return {}
    if isinstance(spec, dict):
        return dict(spec)
    return {command: None for command in spec}


def config_options(command: str, schema: dict | None = None) -> list[ConfigOption]:
    """Every config key the schema gives `command`, in schema order."""
    from lipsim.configcheck import load_schema

    root = schema if schema is not None else load_schema()
    found: list[ConfigOption] = []

    def walk(node: dict, prefix: str) -> None:
        inherited = node.get("x-cli")
        for key, sub in node.get("properties", {}).items():
            sub = _resolved(sub, root)
            if sub.get("type") == "object":
                walk(sub, f"{prefix}{key}.")  # a sub-section names its own commands
                continue
            option = _commands_of(sub, inherited).get(command, False)
            if option is not False:
                name = option or "--" + key.replace("_", "-")
                found.append(ConfigOption(prefix + key, name, sub))

    walk(root, "")
    return found


def _bounded(cast, node: dict, opt: ConfigOption):
    """argparse type: `cast` plus the schema's bounds. A value out of bounds is a LipSimError
    (argparse lets it through: the dispatcher's one error line names option and key)."""

    def convert(text: str):
        value = cast(text)
        for word, ok, says in (
            ("minimum", lambda v, b: v >= b, ">="),
            ("maximum", lambda v, b: v <= b, "<="),
            ("exclusiveMinimum", lambda v, b: v > b, ">"),
        ):
            if word in node and not ok(value, node[word]):
                raise LipSimError(
                    f"{opt.option} must be {says} {node[word]} ({opt.key}), got {text}"
                )
        if "pattern" in node and not re.search(node["pattern"], str(value)):
            raise LipSimError(f"{opt.option} must match {node['pattern']} ({opt.key}), got {text}")
        return value

    convert.__name__ = cast.__name__  # argparse names the type in "invalid int value"
    return convert


_CASTS = {"integer": int, "number": float, "string": str}


def _argument(opt: ConfigOption) -> dict:
    """add_argument keywords of one schema key: type, bounds, choices, nargs, default, help."""
    node = opt.node
    types = node.get("type", "string")
    kind = next(t for t in ([types] if isinstance(types, str) else types) if t != "null")
    # "%" would be read as a format by argparse's help
    text = " ".join(node.get("description", "").split()).replace("%", "%%")
    kw: dict = {"dest": opt.dest, "default": copy.deepcopy(node.get("default")), "help": text}
    if kind == "boolean":
        return {**kw, "action": argparse.BooleanOptionalAction}
    if kind == "array":
        item = node.get("items", {})
        kw["nargs"] = "+" if node.get("minItems", 0) >= 1 else "*"
        node = item
        kind = item.get("type", "string")
    kw["type"] = _bounded(_CASTS[kind], node, opt)
    if "enum" in node:
        kw["choices"] = node["enum"]
    return kw


def add_config_options(ap: argparse.ArgumentParser, command: str) -> None:
    """Add the options the schema gives `command` (config_options): typed and bounded as the
    schema says, choices from its enum, its default (read now, when the parser is built) and
    its description as help, the config key in brackets."""
    by_option: dict[str, list[ConfigOption]] = {}
    for opt in config_options(command):
        by_option.setdefault(opt.option, []).append(opt)
    if not by_option:
        return
    group = ap.add_argument_group("config options (config/README.md)")
    for option, opts in by_option.items():
        # Several keys for one option (make-demo-images: imagenet.generate.seed and
        # natural_images.generate.seed): the rule passes the one it means; the first is the
        # default.
        kw = _argument(opts[0])
        kw["help"] = f"{kw['help']} [{' or '.join(o.key for o in opts)}]".lstrip()
        group.add_argument(option, **kw)


def config_values(args: argparse.Namespace, command: str, section: str) -> dict:
    """The parsed values of `command`'s config options under `section`, by key (the
    section's own names): the section dict back from the command line."""
    prefix = section + "."
    return {
        opt.key[len(prefix) :]: getattr(args, opt.dest)
        for opt in config_options(command)
        if opt.key.startswith(prefix) and hasattr(args, opt.dest)
    }


def _render(value) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def config_argv(
    config: dict, command: str, *, teacher: str | None = None, section: str | None = None
) -> str:
    """The option string a rule passes to `lipsim <command>`: every config key the schema gives
    it, from `config` (validated: defaults filled in), shell-quoted. With `teacher`, its
    teacher_settings apply (distill, finetune); with `section`, the keys of other sections
    are left out (top-level keys stay). A null value is left out (the option's default is the
    same null); booleans are --key / --no-key.
    """
    from lipsim.configcheck import ConfigError, teacher_section

    words: list[str] = []
    given: dict[str, str] = {}
    for opt in config_options(command):
        if section and "." in opt.key and not opt.key.startswith(section + "."):
            continue
        if opt.option in given:
            raise ConfigError(
                f"{command} {opt.option} stands for {given[opt.option]} and {opt.key}: "
                "name the section whose keys to pass"
            )
        given[opt.option] = opt.key
        head, *rest = opt.key.split(".")
        if teacher and rest:
            value = teacher_section(config, head, teacher)
        else:
            value = config[head]
        for part in rest:
            value = value[part]
        if value is None:
            continue
        if isinstance(value, bool):
            words.append(opt.option if value else "--no-" + opt.option[2:])
            continue
        words += [opt.option, *_render(value)]
    return " ".join(shlex.quote(w) for w in words)
