"""`python -m lipsim download-night`: download NIGHT, resumable and verified.

One zip or 2 x N chunk zips + data.csv, extracted safely into OUT (data.csv, ref/, distort/)
with a manifest OUT/.night-complete.json; a rerun verifies instead of downloading."""

from __future__ import annotations

from lipsim.cli._args import add_config_options, parser


def main(argv: list[str] | None = None) -> int:
    from lipsim.configcheck import resolve
    from lipsim.data.download import NIGHT_CHUNKED_URL, NIGHT_ZIP_URL

    ap = parser(__name__, __doc__)
    ap.add_argument(
        "--url",
        help=f"zip: the archive URL (default {resolve(NIGHT_ZIP_URL)}); chunked: the "
        f"base URL holding ref/NNN.zip, distort/NNN.zip, data.csv (default {resolve(NIGHT_CHUNKED_URL)})",
    )
    ap.add_argument(
        "--out", required=True, help="folder to create (holds data.csv, ref/, distort/)"
    )
    ap.add_argument("--csv-url", help="chunked mode: where data.csv is (default URL/data.csv)")
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
    # night.download: --mode, --sha256, --chunks, --retries, --timeout, --min-rate, ...
    add_config_options(ap, "download-night")
    args = ap.parse_args(argv)
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
