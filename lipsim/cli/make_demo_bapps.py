"""`python -m lipsim make-demo-bapps`: write a seeded BAPPS-format demo set (see lipsim.data.bapps)."""

from __future__ import annotations

from lipsim.cli._args import add_config_options, config_values, parser


def main(argv: list[str] | None = None) -> int:
    from lipsim.data.bapps import BAPPS_SIZE, CATEGORIES

    ap = parser(__name__, __doc__)
    ap.add_argument(
        "--out", required=True, help="folder to write (val/<category>/...); replaced atomically"
    )
    ap.add_argument("--image-size", type=int, default=BAPPS_SIZE, help="side of the PNGs")
    add_config_options(ap, "make-demo-bapps")  # --seed, --n-per-category
    args = ap.parse_args(argv)
    from lipsim.data.bapps import make_bapps

    generate = config_values(args, "make-demo-bapps", "bapps.generate")
    out = make_bapps(args.out, **generate, image_size=args.image_size)
    print(
        f"make-demo-bapps: wrote {args.n_per_category} x {len(CATEGORIES)} triplets "
        f"({args.image_size}px, seed {args.seed}) to {out}"
    )
    return 0
