"""Download the pretrained weights of a teacher or baseline (needs network).

`python -m lipsim fetch-weights --teacher NAME --weights-dir DIR [--marker FILE]`

Downloads a teacher's pretrained weights (needs network) into DIR/NAME/ and writes a marker
json (files with sizes and sha256) once everything is in place: the marker is the rule's
output, so snakemake only considers the weights present when the download finished.
Teachers without weights (demo) write the marker only. Baselines with pretrained weights
(lpips, dists) are fetched the same way; what each downloads is the registry's
(lipsim.registry.METRICS_TABLE).
"""

from __future__ import annotations

from pathlib import Path

from lipsim.atomic import write_json
from lipsim.cli._args import parser
from lipsim.errors import LipSimError
from lipsim.registry import BASELINE_NAMES, METRICS_TABLE, TEACHER_NAMES
from lipsim.teachers import fetch_weights


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    baselines = [n for n in BASELINE_NAMES if METRICS_TABLE[n].needs_weights]
    ap.add_argument(
        "--teacher",
        required=True,
        choices=[*TEACHER_NAMES, *baselines],
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
        record = fetch_weights(
            args.teacher, args.weights_dir, METRICS_TABLE[args.teacher].downloads
        )
    except LipSimError as exc:  # DownloadError, ExtractError: the URL or archive at fault
        # No marker: snakemake must not take the weights as present. Named by the teacher.
        raise LipSimError(f"{args.teacher}: {exc}") from exc
    marker = args.marker or args.weights_dir / f"{args.teacher}.fetched.json"
    write_json(marker, record)
    print(
        f"fetch-weights: {args.teacher}: {len(record['files'])} file(s) in {record['folder']}; "
        f"marker {marker}"
    )
    return 0
