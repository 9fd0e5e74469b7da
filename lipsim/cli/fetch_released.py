"""`python -m lipsim fetch-released`: download one of the authors' released LipSim checkpoints
from Google Drive (through Drive's confirmation page; resumable, size- and sha256-verified) and
record where it came from (Drive id, URL, size, sha256) in a JSON file beside it."""

from __future__ import annotations

from lipsim.cli._args import add_config_options, parser


def main(argv: list[str] | None = None) -> int:
    from lipsim.data.gdrive import DRIVE_DOWNLOAD_URL

    ap = parser(__name__, __doc__)
    ap.add_argument("--id", required=True, help="Google Drive file id")
    ap.add_argument("--out", required=True, help="checkpoint file to write")
    ap.add_argument("--record", help="JSON record to write (default OUT with .json)")
    ap.add_argument("--sha256", help="expected sha256 of the file")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_config_options(ap, "fetch-released")  # released: --url, --retries, --timeout
    args = ap.parse_args(argv)
    base = args.url or DRIVE_DOWNLOAD_URL

    import time
    from pathlib import Path

    from lipsim.atomic import write_json
    from lipsim.data.gdrive import drive_url, fetch_drive

    res = fetch_drive(
        args.id,
        args.out,
        base=base,
        sha256=args.sha256 or None,
        retries=args.retries,
        timeout=args.timeout,
        progress=not args.no_progress,
    )
    record = Path(args.record) if args.record else Path(args.out).with_suffix(".json")
    write_json(
        record,
        {
            "drive_id": args.id,
            "url": drive_url(args.id, base),
            "path": str(res.path),
            "bytes": res.size,
            "sha256": res.sha256,
            "sha256_expected": args.sha256 or None,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
    )
    print(f"fetch-released: {args.id} -> {res.path} ({res.size} bytes, sha256 {res.sha256})")
    return 0
