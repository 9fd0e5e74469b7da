"""The command line: `lipsim --help` by stage, --version, closed pipes, one CLI skeleton, and
config options built from the schema (the one declaration of every key: the commands' parsers
and the rules' option strings derive from it)."""

from __future__ import annotations

import argparse
import copy
import importlib
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import lipsim
from lipsim import configcheck
from lipsim.__main__ import STAGES, _commands, usage
from lipsim.cli._args import (
    add_config_options,
    config_argv,
    config_options,
    config_values,
    summary,
)
from lipsim.configcheck import ConfigError, load_schema, schema_default, validate_config
from lipsim.errors import LipSimError

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = _commands()


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


def cli_parser(command: str, monkeypatch) -> argparse.ArgumentParser:
    """The real parser a command builds, caught as it starts parsing."""

    def capture(self, *args, **kwargs):
        raise _Captured(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    module = importlib.import_module(f"lipsim.cli.{command.replace('-', '_')}")
    with pytest.raises(_Captured) as caught:
        module.main([])
    return caught.value.parser


def _lipsim(*args, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "lipsim", *args],
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def test_help_lists_every_command_with_a_description_by_stage():
    out = _lipsim("--help")
    assert out.returncode == 0 and out.stdout == usage() + "\n"
    lines = out.stdout.splitlines()
    for command in COMMANDS:
        line = next((ln for ln in lines if ln.split()[:1] == [command]), None)
        assert line, f"{command} missing from lipsim --help"
        assert len(line.split(None, 1)) == 2, f"{command} has no description"
    for stage in STAGES:
        assert f"{stage}:" in lines
    assert "other:" not in lines, "name the stage of every command in lipsim.__main__.STAGES"


def test_descriptions_come_from_the_docstrings():
    doc = '"""`python -m lipsim x --a A\n--b B`\n\nDoes one thing. Then more."""'
    assert summary(eval(doc)) == "Does one thing"
    assert (
        summary("`python -m lipsim x`: natural 2AFC of any metric.") == "Natural 2AFC of any metric"
    )
    assert (
        summary("d(x, x + delta) under attack (fig. 3b).")
        == "d(x, x + delta) under attack (fig. 3b)"
    )
    assert len(summary("word " * 40)) <= 76


def test_version_and_usage_errors():
    out = _lipsim("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"lipsim {lipsim.__version__}"
    assert _lipsim().returncode == 2
    bad = _lipsim("no-such-step")
    assert bad.returncode == 2 and "unknown command 'no-such-step'" in bad.stderr
    bad = _lipsim("verify-night", "--root", ".", "--no-such-option")
    assert bad.returncode == 2 and "unrecognized arguments: --no-such-option" in bad.stderr


def test_expected_errors_are_one_line_exit_1(tmp_path):
    missing = tmp_path / "missing.yaml"
    out = _lipsim("config-doc", "--schema", str(missing), "--out", str(tmp_path / "x.md"))
    assert out.returncode == 1
    assert out.stderr == f"lipsim config-doc: error: config schema not found: {missing}\n"
    assert not (tmp_path / "x.md").exists()


@pytest.mark.parametrize(
    "args", [["--help"], ["provenance", "--help"], ["config-doc", "--out", "-"]]
)
def test_closed_pipe_ends_quietly(args):
    # the reader is gone before the first write (as with `| head -1` on a long output)
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run(
        [sys.executable, "-m", "lipsim", *args],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    os.close(write)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 1)  # argparse's own --help swallows the error: 0


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_and_shows_its_default(command, monkeypatch):
    parser = cli_parser(command, monkeypatch)
    assert parser.prog == f"lipsim {command}"
    undocumented = [a.option_strings[0] for a in parser._actions if a.option_strings and not a.help]
    assert not undocumented, f"{command}: options without help: {undocumented}"
    for action in parser._actions:
        if (
            action.option_strings
            and not action.required
            and action.help is not argparse.SUPPRESS
            and action.default not in (None, False, [], argparse.SUPPRESS)
        ):
            assert "default" in parser._get_formatter()._get_help_string(action), action


def _schema_commands(node, found=None):
    """Every command an `x-cli` of the schema names."""
    found = set() if found is None else found
    if isinstance(node, dict):
        spec = node.get("x-cli")
        if spec:
            found.update(spec)
        for value in node.values():
            _schema_commands(value, found)
    return found


def test_schema_options_name_real_commands():
    named = _schema_commands(load_schema())
    assert named and named <= set(COMMANDS), named - set(COMMANDS)


@pytest.mark.parametrize("command", sorted(_schema_commands(load_schema())))
def test_config_options_are_the_schemas(command, monkeypatch):
    """Each config option of a command: the schema's default, enum and description."""
    parser = cli_parser(command, monkeypatch)
    options = {s: a for a in parser._actions for s in a.option_strings}
    seen = set()
    for opt in config_options(command):
        action = options[opt.option]
        if opt.option in seen:  # fed by two sections: the first one's default
            continue
        seen.add(opt.option)
        assert action.default == schema_default(opt.key), (command, opt.option)
        assert f"[{opt.key}" in action.help, (command, opt.option)
        enum = opt.node.get("enum") or opt.node.get("items", {}).get("enum")
        assert list(action.choices or []) == list(enum or []), (command, opt.option)


def test_schema_bounds_are_one_error_line():
    out = _lipsim("verify-night", "--root", ".", "--min-votes", "-1")
    assert out.returncode == 1
    assert out.stderr == (
        "lipsim verify-night: error: --min-votes must be >= 0 (night.min_votes), got -1\n"
    )


def test_device_option_takes_a_gpu_index_and_refuses_other_names():
    from lipsim.cli.attack import build_parser

    base = ["--metric", "l2", "--night", "n", "--attack", "pgd", "--norm", "L2", "--eps", "1"]
    base += ["--out", "o.parquet"]
    assert build_parser().parse_args([*base, "--device", "cuda:1"]).device == "cuda:1"
    out = _lipsim("attack", *base, "--device", "gpu")
    assert out.returncode == 1
    assert "--device must match" in out.stderr and "(device), got gpu" in out.stderr
    with pytest.raises(ConfigError, match="device"):
        _validated(device="gpu")
    assert _validated(device="cuda:0")["device"] == "cuda:0"


def _validated(**overrides):
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    for key, value in overrides.items():
        config[key] = value
    return validate_config(config, ROOT / "workflow" / "schemas" / "config.schema.yaml")


def test_option_strings_render_every_kind_of_value():
    config = _validated(teacher_settings={"demo2": {"distill": {"lr": 0.005}}})
    # lists, numbers, strings
    attack = shlex.split(config_argv(config, "attack"))
    assert attack[attack.index("--splits") + 1 : attack.index("--splits") + 3] == [
        "test_imagenet",
        "test_no_imagenet",
    ]
    assert attack[attack.index("--steps") + 1] == str(config["attacks"]["pgd_steps"])
    # a teacher's settings apply to its own chain only
    assert "--lr 0.005" in config_argv(config, "distill", teacher="demo2")
    assert f"--lr {config['distill']['lr']}" in config_argv(config, "distill", teacher="demo")
    # one option fed by two sections needs the section named
    with pytest.raises(ConfigError, match="--seed stands for imagenet.generate.seed and"):
        config_argv(config, "make-demo-images")
    flat = config_argv(config, "make-demo-images", section="natural_images.generate")
    assert (
        "--classes" not in flat and f"--seed {config['natural_images']['generate']['seed']}" in flat
    )


def test_null_and_boolean_values(monkeypatch):
    schema = load_schema()
    knobs = schema["properties"]["retrieval"]["properties"]
    knobs["on"] = {"type": "boolean", "default": False, "description": "A switch."}
    knobs["cap"] = {"type": ["number", "null"], "default": None, "description": "A cap."}
    monkeypatch.setattr(configcheck, "load_schema", lambda *a, **k: copy.deepcopy(schema))
    config = {"retrieval": {**_validated()["retrieval"], "on": True, "cap": None}}
    config["device"] = "cpu"
    words = config_argv(config, "retrieval")
    assert " --on" in words and "--cap" not in words
    config["retrieval"].update(on=False, cap=2.5)
    words = config_argv(config, "retrieval")
    assert "--no-on" in words and "--cap 2.5" in words
    ap = argparse.ArgumentParser()
    add_config_options(ap, "retrieval")
    args = ap.parse_args(shlex.split(words))
    assert (args.on, args.cap) == (False, 2.5)
    assert config_values(args, "retrieval", "retrieval") == config["retrieval"]


NEW_KEYS = {
    "attacks": ("attack", "attack"),
    "distill": ("distill", "distill"),
    "cache": ("cache-fill", "cache_fill"),
}


def _with_new_knobs(schema):
    for section in NEW_KEYS:
        schema["properties"][section]["properties"]["new_knob"] = {
            "type": "integer",
            "minimum": 1,
            "default": 7,
            "description": "A knob no code reads yet.",
        }
    return schema


def test_a_new_schema_key_is_an_option_of_its_command(monkeypatch):
    """A key added to a section in the schema alone: its command's parser has it (default,
    bounds, help) and its option string passes it."""
    schema = _with_new_knobs(load_schema())
    monkeypatch.setattr(configcheck, "load_schema", lambda *a, **k: copy.deepcopy(schema))
    config = _validated()
    for section, (command, _) in NEW_KEYS.items():
        config[section]["new_knob"] = 3
        parser = cli_parser(command, monkeypatch)
        action = next(a for a in parser._actions if "--new-knob" in a.option_strings)
        assert action.default == 7 and f"[{section}.new_knob]" in action.help
        with pytest.raises(LipSimError, match=f"--new-knob must be >= 1 \\({section}.new_knob\\)"):
            action.type("0")
        assert "--new-knob 3" in config_argv(config, command, teacher="demo2")


@pytest.mark.slow
def test_a_new_schema_key_reaches_the_cli_and_the_rule(tmp_path):
    """End to end, in a copy of the checkout: a key added to a section in the schema alone is
    in `lipsim <command> --help` and in the shell command of every job of the rule."""
    shutil.copytree(ROOT / "lipsim", tmp_path / "lipsim", symlinks=True, ignore=_PYCACHE)
    shutil.copytree(ROOT / "workflow", tmp_path / "workflow", ignore=_PYCACHE)
    shutil.copytree(ROOT / "config", tmp_path / "config")
    schema_file = tmp_path / "workflow" / "schemas" / "config.schema.yaml"
    schema = _with_new_knobs(yaml.safe_load(schema_file.read_text()))
    schema_file.write_text(yaml.safe_dump(schema, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    for command, _ in NEW_KEYS.values():
        out = _lipsim(command, "--help", cwd=tmp_path, env=env)
        assert out.returncode == 0, out.stderr
        text = " ".join(out.stdout.split())
        assert "--new-knob NEW_KNOB A knob no code reads yet." in text, command
        assert "new_knob] (default: 7)" in text, command
    overlay = tmp_path / "config" / "knobs.yaml"
    overlay.write_text("".join(f"{s}: {{new_knob: 3}}\n" for s in NEW_KEYS))
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "--forceall", "--configfile"]
        + [str(tmp_path / "config" / "config.yaml"), str(overlay)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for command, rule in NEW_KEYS.values():
        lines = [ln for ln in proc.stdout.splitlines() if f"lipsim {command} " in ln]
        assert lines and all("--new-knob 3" in ln for ln in lines), (rule, lines[:1])


def _PYCACHE(folder, names):
    return [n for n in names if n == "__pycache__"]
