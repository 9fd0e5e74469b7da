"""Fill one part of the teacher-embedding cache (shards of teacher embeddings).

`python -m lipsim cache-fill --teacher NAME --images DIR --list images.parquet --part K
--parts N --out-dir DIR [--crop C] [--mirror] [...]`

Embeds the images of part K (a contiguous range of the ceil(n / shard-size) shards split
over N parts) with the teacher and writes OUT_DIR/shard-XXXXX.npy for them, then
OUT_DIR/part-K.json (written last). Shards already present that verify against an earlier
run of the same configuration are kept; truncated or corrupted ones are rebuilt.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lipsim.cli._args import add_config_options, config_values, parser
from lipsim.device import resolve_device
from lipsim.embcache import fill_part, read_image_list
from lipsim.registry import names
from lipsim.teachers import get_teacher


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__name__, __doc__)
    ap.add_argument(
        "--teacher", required=True, choices=names("teacher"), help="teacher to embed with"
    )
    ap.add_argument(
        "--weights-dir",
        type=Path,
        default=None,
        help="folder of fetched teacher weights (fetch-weights)",
    )
    ap.add_argument(
        "--random-weights",
        action="store_true",
        help="seeded random teacher weights (tests / demo only)",
    )
    ap.add_argument("--images", required=True, type=Path, help="the folder given to cache-list")
    ap.add_argument("--list", required=True, type=Path, help="images.parquet from cache-list")
    ap.add_argument("--part", required=True, type=int, help="this job's part, 0..PARTS-1")
    ap.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="crop size fed to the teacher (default: its own size)",
    )
    ap.add_argument(
        "--mirror",
        action="store_true",
        help="embed the horizontally mirrored crops (the cache distill "
        "--teacher-view flipped reads for flipped views; use its own --out-dir)",
    )
    ap.add_argument("--out-dir", required=True, type=Path, help="the cache folder")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    # --crop is distill.crop: the crops the student regresses are the ones embedded here
    add_config_options(ap, "cache-fill")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    image_list = read_image_list(args.list)  # before the teacher: a bad list fails at once
    device = resolve_device(args.device)
    teacher = get_teacher(
        args.teacher,
        weights_dir=args.weights_dir,
        device=device,
        random_weights=args.random_weights,
    )
    m = fill_part(
        teacher=teacher,
        teacher_name=args.teacher,
        images=args.images,
        image_list=image_list,
        out_dir=args.out_dir,
        part=args.part,
        **config_values(args, "cache-fill", "cache"),  # parts, shard_size, dtype, ...
        image_size=args.image_size,
        device=device,
        random_weights=args.random_weights,
        progress=not args.no_progress,
        crop=args.crop,
        mirror=args.mirror,
    )  # BadImageError: the dispatcher's error line
    for b in m["bad_images"]:
        print(f"cache-fill: skipped undecodable image {b['path']}: {b['error']}", file=sys.stderr)
    print(
        f"cache-fill: part {args.part}/{args.parts}: {m['counts']['shards']} shard(s), "
        f"{m['counts']['images']} image(s), {m['counts']['bad']} skipped -> {args.out_dir}"
    )
    return 0
