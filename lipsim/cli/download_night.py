"""`python -m lipsim download-night`: download NIGHT, resumable and verified.

One zip or 2 x N chunk zips + data.csv, extracted safely into OUT (data.csv, ref/, distort/)
with a manifest OUT/.night-complete.json; a rerun verifies instead of downloading."""

from __future__ import annotations

from lipsim.cli._args import parser
from lipsim.configcheck import schema_default


def main(argv: list[str] | None = None) -> int:
    from lipsim.data.download import MIN_RATE, NIGHT_CHUNKED_URL, NIGHT_ZIP_URL, STALL_TIME
    from lipsim.data.extract import MAX_MEMBERS, MAX_RATIO

    ap = parser(__name__, __doc__)
    ap.add_argument(
        "--mode",
        choices=("zip", "chunked"),
        default=schema_default("night.download.mode"),
        help="one zip, or the chunked variant",
    )
    ap.add_argument(
        "--url",
        help=f"zip: the archive URL (default {NIGHT_ZIP_URL}); chunked: the "
        f"base URL holding ref/NNN.zip, distort/NNN.zip, data.csv (default {NIGHT_CHUNKED_URL})",
    )
    ap.add_argument(
        "--out", required=True, help="folder to create (holds data.csv, ref/, distort/)"
    )
    ap.add_argument("--sha256", help="zip mode: expected sha256 of the archive")
    ap.add_argument(
        "--chunks",
        type=int,
        default=schema_default("night.download.chunks"),
        help="chunked mode: number of chunks per folder",
    )
    ap.add_argument("--csv-url", help="chunked mode: where data.csv is (default URL/data.csv)")
    ap.add_argument(
        "--retries",
        type=int,
        default=schema_default("night.download.retries"),
        help="consecutive attempts without progress before giving up, per file",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=schema_default("night.download.timeout"),
        help="seconds without data before a retry",
    )
    ap.add_argument(
        "--min-rate",
        type=float,
        default=MIN_RATE,
        help="bytes/s: an attempt averaging less over --stall-time seconds is "
        "abandoned and counts as a failed attempt (0 = no stall rule; "
        "default %(default)g)",
    )
    ap.add_argument(
        "--stall-time",
        type=float,
        default=STALL_TIME,
        help="window in seconds of the --min-rate rule (default %(default)g)",
    )
    ap.add_argument(
        "--max-extract-gb",
        type=float,
        default=None,
        help="refuse an archive declaring more than this many GB uncompressed "
        "(default: only the free disk limits it)",
    )
    ap.add_argument(
        "--max-ratio",
        type=float,
        default=MAX_RATIO,
        help="refuse an archive (or a zip entry of 1 MiB or more) whose declared size "
        "exceeds its compressed size by more than this factor (default %(default)g)",
    )
    ap.add_argument(
        "--max-members",
        type=int,
        default=MAX_MEMBERS,
        help="refuse an archive of more members than this, counted before extracting "
        "(default %(default)d)",
    )
    ap.add_argument(
        "--workdir",
        help="where archives (*.part) are downloaded (default: .OUT.download beside OUT)",
    )
    ap.add_argument("--keep-archives", action="store_true", help="keep the zips after extraction")
    ap.add_argument(
        "--quick-verify",
        action="store_true",
        help="on a rerun, verify file sizes only (no sha256 of every file)",
    )
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = ap.parse_args(argv)
    for opt in ("retries", "chunks", "min_rate", "max_ratio"):
        if getattr(args, opt) < 0:
            ap.error(f"--{opt.replace('_', '-')} must be >= 0, got {getattr(args, opt)}")
    for opt in ("timeout", "stall_time", "max_extract_gb", "max_members"):
        if getattr(args, opt) is not None and getattr(args, opt) <= 0:
            ap.error(f"--{opt.replace('_', '-')} must be > 0, got {getattr(args, opt)}")
    from lipsim.data.download import download_night

    # DownloadError / ExtractError are LipSimErrors: the dispatcher prints one error line.
    download_night(
        args.out,
        mode=args.mode,
        url=args.url,
        sha256=args.sha256,
        chunks=args.chunks,
        retries=args.retries,
        timeout=args.timeout,
        workdir=args.workdir,
        csv_url=args.csv_url,
        keep_archives=args.keep_archives,
        check_sha256=not args.quick_verify,
        progress=not args.no_progress,
        min_rate=args.min_rate,
        stall_time=args.stall_time,
        max_ratio=args.max_ratio or None,
        max_members=args.max_members,
        max_bytes=None if args.max_extract_gb is None else int(args.max_extract_gb * 1e9),
    )
    return 0
