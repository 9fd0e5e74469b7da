"""`python -m lipsim download-bapps`: download the BAPPS 2AFC validation archive (resumable,
sha256-verified), extract it safely and check its layout; OUT is replaced only when complete."""

from __future__ import annotations

from lipsim.cli._args import add_config_options, parser


def main(argv: list[str] | None = None) -> int:
    from lipsim.data.bapps import BAPPS_VAL_SHA256, BAPPS_VAL_URL

    ap = parser(__name__, __doc__)
    ap.add_argument("--out", required=True, help="folder to create (holds val/<category>/...)")
    ap.add_argument(
        "--workdir",
        help="where the archive (*.part) is downloaded (default: .OUT.download beside OUT)",
    )
    ap.add_argument("--keep-archive", action="store_true", help="keep the archive after extraction")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_options(ap, "download-bapps")  # bapps.download: --url, --sha256, --retries, ...
    args = ap.parse_args(argv)
    from lipsim.data.bapps import download_bapps

    url = args.url or BAPPS_VAL_URL
    # None: the recorded sha256 of the default URL; '': no check
    sha256 = BAPPS_VAL_SHA256 if args.sha256 is None else args.sha256
    out = download_bapps(
        args.out,
        url=url,
        sha256=sha256 or None,
        retries=args.retries,
        timeout=args.timeout,
        workdir=args.workdir,
        keep_archive=args.keep_archive,
        progress=not args.no_progress,
    )
    print(f"download-bapps: {url} -> {out}")
    return 0
