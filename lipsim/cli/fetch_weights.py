"""Download the pretrained weights of a teacher or baseline (needs network).

`python -m lipsim fetch-weights --teacher NAME --weights-dir DIR [--marker FILE]`

Downloads a teacher's pretrained weights (needs network) into DIR/NAME/ and writes a marker
json (files with sizes and sha256) once everything is in place: the marker is the rule's
output, so snakemake only considers the weights present when the download finished.
Teachers without weights (demo) write the marker only. Baselines with pretrained weights
(lpips, dists: lipsim.baselines.BASELINE_DOWNLOADS) are fetched the same way.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lipsim.atomic import write_json
from lipsim.cli._args import parser
from lipsim.errors import LipSimError
from lipsim.teachers import Download, fetch_weights, teacher_names


def _baseline_downloads() -> dict[str, tuple[Download, ...]]:
    from lipsim.baselines import BASELINE_DOWNLOADS

    return {
        name: tuple(Download(url, "file", fname) for url, fname in files)
        for name, files in BASELINE_DOWNLOADS.items()
    }


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    baselines = _baseline_downloads()
    ap.add_argument(
        "--teacher",
        required=True,
        choices=teacher_names() + sorted(baselines),
        help="teacher or baseline name",
    )
    ap.add_argument(
        "--weights-dir",
        required=True,
        type=Path,
        help="folder of weights; files go to WEIGHTS_DIR/NAME/",
    )
    ap.add_argument(
        "--marker",
        type=Path,
        default=None,
        help="marker json to write (default WEIGHTS_DIR/NAME.fetched.json)",
    )
    args = ap.parse_args(argv)
    try:
        record = fetch_weights(args.teacher, args.weights_dir, baselines.get(args.teacher))
    except LipSimError as exc:  # DownloadError, ExtractError: the URL or archive at fault
        # No marker: snakemake must not take the weights as present. The dispatcher's format,
        # with the teacher named.
        print(f"lipsim fetch-weights: error: {args.teacher}: {exc}", file=sys.stderr)
        return 1
    marker = args.marker or args.weights_dir / f"{args.teacher}.fetched.json"
    write_json(marker, record)
    print(
        f"fetch-weights: {args.teacher}: {len(record['files'])} file(s) in {record['folder']}; "
        f"marker {marker}"
    )
    return 0
