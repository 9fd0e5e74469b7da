"""Verify every shard of the teacher-embedding cache and write its index.

`python -m lipsim cache-index --cache-dir DIR --parts N [--list F] [--out DIR/index.parquet]`

Verifies every part manifest and every shard (size and sha256) of an embedding cache and
writes the index (path, label, shard, row, ok). Fails, naming each bad file, if anything
is missing, truncated, corrupted, or filled from another image list or configuration.
"""

from __future__ import annotations

from pathlib import Path

from lipsim.cli._args import add_config_options, parser
from lipsim.embcache import write_index


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--cache-dir", required=True, type=Path, help="the cache folder")
    ap.add_argument(
        "--list",
        type=Path,
        default=None,
        help="images.parquet from cache-list (default CACHE_DIR/images.parquet)",
    )
    ap.add_argument("--out", type=Path, default=None, help="default CACHE_DIR/index.parquet")
    add_config_options(ap, "cache-index")  # --parts: the parts the cache was filled in
    args = ap.parse_args(argv)
    df = write_index(args.cache_dir, args.parts, args.out, args.list)  # CacheError: error line
    print(
        f"cache-index: {len(df)} images, {int((~df['ok']).sum())} not decodable -> "
        f"{args.out or args.cache_dir / 'index.parquet'}"
    )
    return 0
