"""`python -m lipsim make-demo-bapps`: write a seeded BAPPS-format demo set (see lipsim.data.bapps)."""

from __future__ import annotations

from lipsim.cli._args import parser
from lipsim.configcheck import schema_default


def main(argv: list[str] | None = None) -> int:
    from lipsim.data.bapps import BAPPS_SIZE, CATEGORIES

    ap = parser(__name__, __doc__)
    ap.add_argument(
        "--out", required=True, help="folder to write (val/<category>/...); replaced atomically"
    )
    ap.add_argument(
        "--seed", type=int, default=schema_default("bapps.generate.seed"), help="generator seed"
    )
    ap.add_argument(
        "--n-per-category",
        type=int,
        default=schema_default("bapps.generate.n_per_category"),
        help="triplets per category",
    )
    ap.add_argument("--image-size", type=int, default=BAPPS_SIZE, help="side of the PNGs")
    args = ap.parse_args(argv)
    from lipsim.data.bapps import make_bapps

    out = make_bapps(
        args.out, seed=args.seed, n_per_category=args.n_per_category, image_size=args.image_size
    )
    print(
        f"make-demo-bapps: wrote {args.n_per_category} x {len(CATEGORIES)} triplets "
        f"({args.image_size}px, seed {args.seed}) to {out}"
    )
    return 0
