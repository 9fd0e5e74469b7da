"""`python -m lipsim make-demo-images`: write a seeded demo image folder.

ImageNet train layout, or a flat folder standing in for COCO; see lipsim.data.synthetic.make_image_folder."""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lipsim make-demo-images", description=__doc__)
    ap.add_argument("--out", required=True, help="folder to write; replaced atomically")
    ap.add_argument("--layout", choices=("imagenet", "flat"), required=True,
                    help="imagenet: OUT/train/<class>/<img>.png; flat: OUT/<img>.png")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--classes", type=int, default=8, help="imagenet layout: number of classes")
    ap.add_argument("--per-class", type=int, default=40, help="imagenet layout: images per class")
    ap.add_argument("--n", type=int, default=64, help="flat layout: number of images")
    ap.add_argument("--image-size", type=int, default=32)
    args = ap.parse_args(argv)
    from lipsim.data.synthetic import make_image_folder

    out = make_image_folder(args.out, layout=args.layout, seed=args.seed, classes=args.classes,
                            per_class=args.per_class, n=args.n, image_size=args.image_size)
    n = args.classes * args.per_class if args.layout == "imagenet" else args.n
    print(f"make-demo-images: wrote {n} {args.layout} images ({args.image_size}px, seed {args.seed}) to {out}")
    return 0
