"""`python -m lipsim verify-night`: check a NIGHT folder; exits 1 listing every problem.

Checks data.csv columns and values, every image present and decodable, all four splits
non-empty; lists every problem, exits 1 if any."""

from __future__ import annotations

import sys

from lipsim.cli._args import add_config_options, parser


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--root", required=True, help="folder holding data.csv (or its parent)")
    ap.add_argument(
        "--no-decode", action="store_true", help="check that images exist, do not decode them"
    )
    ap.add_argument("--report", help="write {ok, n_problems, problems: [...]} as JSON (atomically)")
    add_config_options(ap, "verify-night")  # --min-votes
    args = ap.parse_args(argv)
    import dataclasses

    from lipsim.atomic import write_json
    from lipsim.data.night import verify_night
    from lipsim.errors import LipSimError

    problems = verify_night(args.root, args.min_votes, decode=not args.no_decode)
    if args.report:
        write_json(
            args.report,
            {
                "root": args.root,
                "min_votes": args.min_votes,
                "ok": not problems,
                "n_problems": len(problems),
                "problems": [dataclasses.asdict(p) for p in problems],
            },
        )
    for p in problems:
        print(f"verify-night: {p}", file=sys.stderr)
    if problems:
        raise LipSimError(f"{len(problems)} problem(s) in {args.root} (listed above)")
    print(f"verify-night: {args.root} OK")
    return 0
