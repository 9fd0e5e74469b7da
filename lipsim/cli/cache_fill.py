"""Fill one part of the teacher-embedding cache (shards of teacher embeddings).

`python -m lipsim cache-fill --teacher NAME --images DIR --list images.parquet --part K
--parts N --out-dir DIR [...]`

Embeds the images of part K (a contiguous range of the ceil(n / shard-size) shards split
over N parts) with the teacher and writes OUT_DIR/shard-XXXXX.npy for them, then
OUT_DIR/part-K.json (written last). Shards already present that verify against an earlier
run of the same configuration are kept; truncated or corrupted ones are rebuilt.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pandas as pd

from lipsim.cli._args import parser
from lipsim.configcheck import schema_default
from lipsim.device import resolve_device
from lipsim.embcache import BadImageError, fill_part
from lipsim.teachers import get_teacher, teacher_names


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--teacher", required=True, choices=teacher_names(),
                    help="teacher to embed with")
    ap.add_argument("--weights-dir", type=Path, default=None,
                    help="folder of fetched teacher weights (fetch-weights)")
    ap.add_argument("--random-weights", action="store_true",
                    help="seeded random teacher weights (tests / demo only)")
    ap.add_argument("--images", required=True, type=Path, help="the folder given to cache-list")
    ap.add_argument("--list", required=True, type=Path, help="images.parquet from cache-list")
    ap.add_argument("--part", required=True, type=int, help="this job's part, 0..PARTS-1")
    ap.add_argument("--parts", required=True, type=int, help="parts the shards are split over")
    ap.add_argument("--shard-size", type=int, default=schema_default("cache.shard_size"),
                    help="images per shard")
    ap.add_argument("--dtype", choices=("float16", "float32"),
                    default=schema_default("cache.dtype"),
                    help="storage type of the embeddings")
    ap.add_argument("--image-size", type=int, default=None,
                    help="resize+centre-crop size fed to the teacher (default: its own size)")
    ap.add_argument("--batch-size", type=int, default=schema_default("cache.batch_size"),
                    help="teacher batch size")
    ap.add_argument("--workers", type=int, default=schema_default("cache.workers"),
                    help="image-decoding worker processes")
    ap.add_argument("--on-bad-image", choices=("skip", "fail"),
                    default=schema_default("cache.on_bad_image"),
                    help="skip (and report) an undecodable image, or fail")
    ap.add_argument("--device", default=schema_default("device"), help="auto, cpu, cuda, cuda:N")
    ap.add_argument("--out-dir", required=True, type=Path, help="the cache folder")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    device = resolve_device(args.device)
    teacher = get_teacher(args.teacher, weights_dir=args.weights_dir, device=device,
                          random_weights=args.random_weights)
    image_list = pd.read_parquet(args.list)
    try:
        m = fill_part(teacher=teacher, teacher_name=args.teacher, images=args.images,
                      image_list=image_list, out_dir=args.out_dir, part=args.part,
                      parts=args.parts, shard_size=args.shard_size, dtype=args.dtype,
                      batch_size=args.batch_size, workers=args.workers,
                      on_bad_image=args.on_bad_image, image_size=args.image_size,
                      device=device, random_weights=args.random_weights,
                      progress=not args.no_progress)
    except BadImageError as exc:
        print(f"lipsim cache-fill: error: {exc}", file=sys.stderr)
        return 1
    for b in m["bad_images"]:
        print(f"cache-fill: skipped undecodable image {b['path']}: {b['error']}", file=sys.stderr)
    print(f"cache-fill: part {args.part}/{args.parts}: {m['counts']['shards']} shard(s), "
          f"{m['counts']['images']} image(s), {m['counts']['bad']} skipped -> {args.out_dir}")
    return 0
