"""List an ImageNet-layout folder: the image order of the cache.

`python -m lipsim cache-list --images DIR --out images.parquet`

Lists an ImageNet-layout folder (DIR/train/<class>/<img> or DIR/<class>/<img>) as a sorted
table (path relative to DIR, label = sorted class index): row i is image i of the cache.
"""

from __future__ import annotations

from pathlib import Path

from lipsim.atomic import write_parquet
from lipsim.cli._args import parser
from lipsim.embcache import list_images


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--images", required=True, type=Path, help="ImageNet root or its train/ folder")
    ap.add_argument("--out", required=True, type=Path, help="images.parquet to write")
    args = ap.parse_args(argv)
    df = list_images(args.images)
    write_parquet(args.out, df)
    print(f"cache-list: {len(df)} images in {df['label'].nunique()} classes -> {args.out}")
    return 0
