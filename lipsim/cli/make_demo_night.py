"""`python -m lipsim make-demo-night`: write a seeded NIGHT-format demo set (see lipsim.data.synthetic)."""

from __future__ import annotations

from lipsim.cli._args import parser
from lipsim.configcheck import schema_default


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument(
        "--out",
        required=True,
        help="folder to write (data.csv, ref/, distort/); replaced atomically",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=schema_default("night.generate.seed"),
        help="seed of the generator",
    )
    ap.add_argument(
        "--n-train",
        type=int,
        default=schema_default("night.generate.n_train"),
        help="training triplets",
    )
    ap.add_argument(
        "--n-val",
        type=int,
        default=schema_default("night.generate.n_val"),
        help="validation triplets",
    )
    ap.add_argument(
        "--n-test",
        type=int,
        default=schema_default("night.generate.n_test"),
        help="test triplets (half is_imagenet True, half False)",
    )
    ap.add_argument(
        "--image-size",
        type=int,
        default=schema_default("image_size"),
        help="side of the square images",
    )
    args = ap.parse_args(argv)
    from lipsim.data.synthetic import make_night

    out = make_night(
        args.out,
        seed=args.seed,
        n_train=args.n_train,
        n_val=args.n_val,
        n_test=args.n_test,
        image_size=args.image_size,
    )
    n = args.n_train + args.n_val + args.n_test
    print(f"make-demo-night: wrote {n} triplets ({args.image_size}px, seed {args.seed}) to {out}")
    return 0
