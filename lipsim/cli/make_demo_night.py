"""`python -m lipsim make-demo-night`: write a seeded NIGHT-format demo set (see lipsim.data.synthetic)."""

from __future__ import annotations

from lipsim.cli._args import add_config_options, config_values, parser


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument(
        "--out",
        required=True,
        help="folder to write (data.csv, ref/, distort/); replaced atomically",
    )
    add_config_options(ap, "make-demo-night")  # night.generate.*, image_size
    args = ap.parse_args(argv)
    from lipsim.data.synthetic import make_night

    generate = config_values(args, "make-demo-night", "night.generate")
    out = make_night(args.out, **generate, image_size=args.image_size)
    n = args.n_train + args.n_val + args.n_test
    print(f"make-demo-night: wrote {n} triplets ({args.image_size}px, seed {args.seed}) to {out}")
    return 0
