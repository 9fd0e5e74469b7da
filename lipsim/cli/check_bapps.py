"""`python -m lipsim check-bapps`: check a BAPPS 2AFC folder (the six categories, ref/p0/p1/
judge for every triplet, judge values in [0, 1], images decodable); lists every problem and
exits 1 if any."""

from __future__ import annotations

import sys

from lipsim.cli._args import add_config_options, parser


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--root", required=True, help="BAPPS folder (holding the categories or val/)")
    ap.add_argument(
        "--no-decode", action="store_true", help="check that images exist, do not decode them"
    )
    ap.add_argument(
        "--report", help="write {ok, counts, n_problems, problems} as JSON (atomically)"
    )
    add_config_options(ap, "check-bapps")
    args = ap.parse_args(argv)

    from lipsim.atomic import write_json
    from lipsim.data.bapps import check_bapps

    problems, counts = check_bapps(args.root, decode=not args.no_decode, categories=args.categories)
    if args.report and not problems:  # a report is the rule's output: only when the check passed
        write_json(
            args.report,
            {
                "root": args.root,
                "ok": True,
                "counts": counts,
                "n_triplets": sum(counts.values()),
                "n_problems": 0,
                "problems": [],
            },
        )
    for p in problems[:50]:
        print(f"check-bapps: {p}", file=sys.stderr)
    if problems:
        print(f"check-bapps: {len(problems)} problem(s) in {args.root}", file=sys.stderr)
        return 1
    print(f"check-bapps: {args.root} OK: " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    return 0
