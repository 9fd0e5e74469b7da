"""`python -m lipsim make-demo-images`: write a seeded demo image folder.

ImageNet train layout, or a flat folder standing in for COCO; see
lipsim.data.synthetic.make_image_folder."""

from __future__ import annotations

from lipsim.cli._args import add_config_options, parser


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--out", required=True, help="folder to write; replaced atomically")
    ap.add_argument(
        "--layout",
        choices=("imagenet", "flat"),
        required=True,
        help="imagenet: OUT/train/<class>/<img>.png; flat: OUT/<img>.png",
    )
    # imagenet.generate.* and natural_images.generate.* (the defaults of --seed are the
    # former's: the rule of the flat folder passes the latter's), image_size
    add_config_options(ap, "make-demo-images")
    args = ap.parse_args(argv)
    from lipsim.data.synthetic import make_image_folder

    out = make_image_folder(
        args.out,
        layout=args.layout,
        seed=args.seed,
        classes=args.classes,
        per_class=args.per_class,
        n=args.n,
        image_size=args.image_size,
    )
    n = args.classes * args.per_class if args.layout == "imagenet" else args.n
    print(
        f"make-demo-images: wrote {n} {args.layout} images ({args.image_size}px, seed {args.seed}) to {out}"
    )
    return 0
