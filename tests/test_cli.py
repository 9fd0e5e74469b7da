"""The command line: `lipsim --help` by stage, --version, closed pipes, one CLI skeleton, and
CLI defaults that agree with the config schema (the one source of pipeline defaults)."""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys

import pytest

import lipsim
from lipsim.__main__ import STAGES, _commands, usage
from lipsim.cli._args import summary
from lipsim.configcheck import schema_default

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


# CLI option -> the schema key a rule passes to it. Keep every option that has a schema key
# here: the test below then fails when a default is restated differently.
SCHEMA_KEYS = {
    "attack": {
        "--splits": "evaluation.splits",
        "--min-votes": "night.min_votes",
        "--budget": "attacks.budget",
        "--restarts": "attacks.pgd_restarts",
        "--steps": "attacks.pgd_steps",
        "--max-triplets": "attacks.max_triplets",
        "--batch-size": "attacks.batch_size",
        "--seed": "attacks.seed",
        "--device": "device",
    },
    "cache-fill": {
        "--shard-size": "cache.shard_size",
        "--dtype": "cache.dtype",
        "--batch-size": "cache.batch_size",
        "--workers": "cache.workers",
        "--on-bad-image": "cache.on_bad_image",
        "--device": "device",
    },
    "certify": {
        "--splits": "evaluation.splits",
        "--eps": "certify.eps_255",
        "--batch-size": "certify.batch_size",
        "--min-votes": "night.min_votes",
        "--device": "device",
    },
    "check-folder": {"--expect-classes": "imagenet.expect_classes"},
    "distances": {
        "--eps": "distances.eps",
        "--steps": "distances.steps",
        "--n-images": "distances.n_images",
        "--device": "device",
    },
    "distill": {
        "--preset": "model.preset",
        "--image-size": "image_size",
        **{
            f"--{k.replace('_', '-')}": f"distill.{k}"
            for k in (
                "epochs",
                "batch_size",
                "lr",
                "beta1",
                "beta2",
                "weight_decay",
                "schedule",
                "warmup_steps",
                "amp",
                "ckpt_every",
                "workers",
                "seed",
            )
        },
        "--device": "device",
    },
    "download-night": {
        "--mode": "night.download.mode",
        "--chunks": "night.download.chunks",
        "--retries": "night.download.retries",
        "--timeout": "night.download.timeout",
        "--sha256": "night.download.sha256",
    },
    "evaluate": {
        "--splits": "evaluation.splits",
        "--min-votes": "night.min_votes",
        "--batch-size": "evaluation.batch_size",
        "--device": "device",
    },
    "finetune": {
        "--min-votes": "night.min_votes",
        **{
            f"--{k.replace('_', '-')}": f"finetune.{k}"
            for k in (
                "epochs",
                "batch_size",
                "lr",
                "beta1",
                "beta2",
                "weight_decay",
                "schedule",
                "amp",
                "ckpt_every",
                "workers",
                "seed",
            )
        },
        "--device": "device",
    },
    "make-demo-images": {
        "--seed": "imagenet.generate.seed",
        "--classes": "imagenet.generate.classes",
        "--per-class": "imagenet.generate.per_class",
        "--n": "natural_images.generate.n",
        "--image-size": "image_size",
    },
    "make-demo-night": {
        "--seed": "night.generate.seed",
        "--n-train": "night.generate.n_train",
        "--n-val": "night.generate.n_val",
        "--n-test": "night.generate.n_test",
        "--image-size": "image_size",
    },
    "retrieval": {
        "--n-queries": "retrieval.n_queries",
        "--eps": "retrieval.eps",
        "--k": "retrieval.k",
        "--steps": "retrieval.steps",
        "--device": "device",
        "--distractors": "retrieval.distractors",
        "--distractor-noise": "retrieval.distractor_noise",
    },
    "table1": {"--eps": "certify.eps_255"},
    "verify-night": {"--min-votes": "night.min_votes"},
}


def _same(cli, schema) -> bool:
    # 36.0 == 36: an option typed float agrees with an integer written in the schema
    return list(cli) == schema if isinstance(schema, list) else cli == schema


@pytest.mark.parametrize("command", sorted(SCHEMA_KEYS))
def test_cli_defaults_agree_with_the_schema(command, monkeypatch):
    parser = cli_parser(command, monkeypatch)
    options = {s: a for a in parser._actions for s in a.option_strings}
    mismatches = []
    for option, key in SCHEMA_KEYS[command].items():
        assert option in options, f"{command} has no option {option} (update SCHEMA_KEYS)"
        action, expected = options[option], schema_default(key)
        # a required option has no default to disagree; None means "the caller passes it"
        if action.required or action.default is None:
            continue
        if not _same(action.default, expected):
            mismatches.append(f"{option}={action.default!r} but {key}={expected!r}")
    assert not mismatches, f"lipsim {command}: " + "; ".join(mismatches)
