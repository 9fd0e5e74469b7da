"""`python -m lipsim make-demo-images`: write a seeded demo image folder.

ImageNet train layout, or a flat folder standing in for COCO; see
lipsim.data.synthetic.make_image_folder."""

from __future__ import annotations

from lipsim.cli._args import parser
from lipsim.configcheck import schema_default


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--out", required=True, help="folder to write; replaced atomically")
    ap.add_argument(
        "--layout",
        choices=("imagenet", "flat"),
        required=True,
        help="imagenet: OUT/train/<class>/<img>.png; flat: OUT/<img>.png",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=schema_default("imagenet.generate.seed"),
        help="seed of the generator (the pipeline's flat folder uses natural_images.generate.seed)",
    )
    ap.add_argument(
        "--classes",
        type=int,
        default=schema_default("imagenet.generate.classes"),
        help="imagenet layout: number of classes",
    )
    ap.add_argument(
        "--per-class",
        type=int,
        default=schema_default("imagenet.generate.per_class"),
        help="imagenet layout: images per class",
    )
    ap.add_argument(
        "--n",
        type=int,
        default=schema_default("natural_images.generate.n"),
        help="flat layout: number of images",
    )
    ap.add_argument(
        "--image-size",
        type=int,
        default=schema_default("image_size"),
        help="side of the square images",
    )
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
