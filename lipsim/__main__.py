"""`python -m lipsim <command> [options]` (also installed as `lipsim`).

Each command is the module lipsim/cli/<command with - as _>.py exposing main(argv) -> int,
so adding a pipeline step never touches this file.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import lipsim.cli
from lipsim.errors import LipSimError


def _commands() -> list[str]:
    return sorted(
        m.name.replace("_", "-")
        for m in pkgutil.iter_modules(lipsim.cli.__path__)
        if not m.name.startswith("_")
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: lipsim <command> [options]\n\ncommands:\n  " + "\n  ".join(_commands()))
        return 0 if argv else 2
    name = argv[0]
    if name not in _commands():
        print(f"lipsim: unknown command {name!r}; commands: {', '.join(_commands())}",
              file=sys.stderr)
        return 2
    module = importlib.import_module(f"lipsim.cli.{name.replace('-', '_')}")
    try:
        return int(module.main(argv[1:]) or 0)
    except LipSimError as exc:  # expected: one line, no traceback
        print(f"lipsim {name}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
