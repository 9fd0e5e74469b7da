"""`python -m lipsim fetch-weights --teacher NAME --weights-dir DIR [--marker FILE]`

Downloads a teacher's pretrained weights (needs network) into DIR/NAME/ and writes a marker
json (files with sizes and sha256) once everything is in place: the marker is the rule's
output, so snakemake only considers the weights present when the download finished.
Teachers without weights (demo) write the marker only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lipsim.atomic import write_json
from lipsim.teachers import fetch_weights, teacher_names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lipsim fetch-weights", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, choices=teacher_names())
    ap.add_argument("--weights-dir", required=True, type=Path)
    ap.add_argument("--marker", type=Path, default=None,
                    help="marker json to write (default WEIGHTS_DIR/NAME.fetched.json)")
    args = ap.parse_args(argv)
    record = fetch_weights(args.teacher, args.weights_dir)
    marker = args.marker or args.weights_dir / f"{args.teacher}.fetched.json"
    write_json(marker, record)
    print(f"fetch-weights: {args.teacher}: {len(record['files'])} file(s) in {record['folder']}; "
          f"marker {marker}")
    return 0
