"""`python -m lipsim <command> [options]` (also installed as `lipsim`).

Each command is the module lipsim/cli/<command with - as _>.py exposing main(argv) -> int;
its one-line description in `lipsim --help` is read from that module's docstring, so adding a
step never needs more here than naming its stage in STAGES (unnamed ones are listed as "other").
"""

from __future__ import annotations

import importlib
import io
import os
import pkgutil
import sys
from pathlib import Path

import lipsim
import lipsim.cli
from lipsim.atomic import no_space
from lipsim.cli._args import module_doc, summary
from lipsim.errors import LipSimError

# `lipsim --help` groups commands by pipeline stage, in pipeline order.
STAGES: dict[str, tuple[str, ...]] = {
    "data": (
        "download-night",
        "verify-night",
        "make-demo-night",
        "make-demo-images",
        "download-bapps",
        "make-demo-bapps",
        "check-bapps",
        "check-folder",
        "fetch-weights",
        "fetch-released",
    ),
    "teacher-embedding cache": ("cache-list", "cache-fill", "cache-index"),
    "training": ("distill", "finetune", "import-checkpoint"),
    "evaluation": (
        "evaluate",
        "certify",
        "attack",
        "check-consistency",
        "distances",
        "retrieval",
        "evaluate-bapps",
    ),
    "tables and figures": (
        "table1",
        "table2",
        "table-retrieval",
        "table-bapps",
        "fig3a",
        "fig3b",
        "fig-margins",
        "radii",
        "study",
    ),
    "provenance": ("manifest", "provenance"),
    "maintenance": ("config-doc",),
}


def _commands() -> list[str]:
    return sorted(
        m.name.replace("_", "-")
        for m in pkgutil.iter_modules(lipsim.cli.__path__)
        if not m.name.startswith("_")
    )


def _module_file(name: str) -> Path:
    return Path(lipsim.cli.__path__[0]) / f"{name.replace('-', '_')}.py"


def usage() -> str:
    """The text of `lipsim --help`: commands by stage, each with its one-line description."""
    commands = _commands()
    width = max(map(len, commands)) + 2
    groups = {stage: [c for c in names if c in commands] for stage, names in STAGES.items()}
    grouped = {c for names in groups.values() for c in names}
    groups["other"] = [c for c in commands if c not in grouped]
    lines = [
        "usage: lipsim <command> [options]   (lipsim <command> --help for its options)",
        "",
        "options:",
        "  -h, --help     show this help and exit",
        "  --version      show the version and exit",
    ]
    for stage, names in groups.items():
        if names:
            lines += ["", f"{stage}:"]
            lines += [f"  {c:<{width}}{summary(module_doc(_module_file(c)))}" for c in names]
    return "\n".join(lines)


def _run(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"lipsim {lipsim.__version__}")
        return 0
    name = argv[0]
    if name not in _commands():
        print(
            f"lipsim: unknown command {name!r}; commands: {', '.join(_commands())}", file=sys.stderr
        )
        return 2
    module = importlib.import_module(f"lipsim.cli.{name.replace('-', '_')}")
    try:
        return int(module.main(argv[1:]) or 0)
    except LipSimError as exc:  # expected: one line, no traceback
        print(f"lipsim {name}: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # a full disk is expected too, wherever the step was writing
        full = no_space(exc, _written_file(exc))
        if full is None:
            raise
        print(f"lipsim {name}: error: {full}", file=sys.stderr)
        return 1


def _written_file(exc: OSError) -> str:
    """The file a failed write was writing: the error's own filename, else the open writable
    file nearest the failure in the traceback (a plain fh.write names no file)."""
    if exc.filename:
        return os.fsdecode(exc.filename)
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in frame.f_locals.values():
            # (closed by now: the `with open(...)` around the write has exited)
            mode, name = getattr(value, "mode", ""), getattr(value, "name", None)
            if (
                isinstance(value, io.IOBase)
                and isinstance(mode, str)
                and set(mode) & set("wax+")
                and isinstance(name, (str, bytes))
                and not os.fsdecode(name).startswith("<")  # <stderr>, <stdout>
            ):
                return os.fsdecode(name)
    return "an output file"


def main(argv: list[str] | None = None) -> int:
    try:
        code = _run(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        # `lipsim ... | head`: the reader is gone; stop quietly (Python's documented recipe:
        # point stdout at devnull so the interpreter's final flush cannot raise again).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
