"""Write config/README.md from the config schema (types, defaults, descriptions).

    python -m lipsim config-doc [--schema workflow/schemas/config.schema.yaml] [--out FILE]

tests/test_config.py fails when the committed config/README.md differs from this output.
"""

from __future__ import annotations

from pathlib import Path

from lipsim.atomic import write_text
from lipsim.cli._args import parser
from lipsim.configcheck import SCHEMA_PATH, load_schema
from lipsim.configdoc import render


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--schema", default=str(SCHEMA_PATH), help="the config schema to document")
    ap.add_argument(
        "--out",
        default=str(SCHEMA_PATH.parents[2] / "config" / "README.md"),
        help="Markdown file to write ('-' for stdout)",
    )
    args = ap.parse_args(argv)
    text = render(load_schema(args.schema))
    if args.out == "-":
        print(text, end="")
    else:
        write_text(Path(args.out), text)
    return 0
