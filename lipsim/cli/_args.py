"""The one CLI skeleton: every command builds its parser with `parser(__name__, __doc__)`.

Help shows each option's default (unless it has none to show: required options, flags and
None), the module docstring is the description, and `prog` is `lipsim <command>`, so every
command's --help looks the same. Expected errors are LipSimError, turned into one `error:`
line and exit 1 by the dispatcher; argparse's usage errors exit 2.
"""

from __future__ import annotations

import argparse
import ast
import re
from pathlib import Path

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
