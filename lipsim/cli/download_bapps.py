"""`python -m lipsim download-bapps`: download the BAPPS 2AFC validation archive (resumable,
sha256-verified), extract it safely and check its layout; OUT is replaced only when complete."""

from __future__ import annotations

from lipsim.cli._args import parser


def main(argv: list[str] | None = None) -> int:
    from lipsim.data.bapps import BAPPS_VAL_SHA256, BAPPS_VAL_URL

    ap = parser(__name__, __doc__)
    ap.add_argument("--url", default=BAPPS_VAL_URL, help=f"archive URL (default {BAPPS_VAL_URL})")
    ap.add_argument(
        "--sha256",
        default=BAPPS_VAL_SHA256,
        help="expected sha256 of the archive ('' = do not check)",
    )
    ap.add_argument("--out", required=True, help="folder to create (holds val/<category>/...)")
    ap.add_argument(
        "--retries",
        type=int,
        default=8,
        help="consecutive attempts without progress before giving up",
    )
    ap.add_argument(
        "--timeout", type=float, default=60.0, help="seconds without data before a retry"
    )
    ap.add_argument(
        "--workdir",
        help="where the archive (*.part) is downloaded (default: .OUT.download beside OUT)",
    )
    ap.add_argument("--keep-archive", action="store_true", help="keep the archive after extraction")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    from lipsim.data.bapps import download_bapps

    out = download_bapps(
        args.out,
        url=args.url,
        sha256=args.sha256 or None,
        retries=args.retries,
        timeout=args.timeout,
        workdir=args.workdir,
        keep_archive=args.keep_archive,
        progress=not args.no_progress,
    )
    print(f"download-bapps: {args.url} -> {out}")
    return 0
