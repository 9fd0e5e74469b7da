"""`python -m lipsim check-folder`: check an ImageNet train folder or a flat image folder.

Counts images and unreadable files, and says how to obtain the data when it is missing."""

from __future__ import annotations

import sys

from lipsim.cli._args import parser
from lipsim.configcheck import schema_default


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument(
        "--layout",
        choices=("imagenet", "flat"),
        required=True,
        help="imagenet: class folders under train/; flat: one folder of images",
    )
    ap.add_argument(
        "--root", required=True, help="imagenet: the folder holding train/; flat: the image folder"
    )
    ap.add_argument(
        "--expect-classes",
        type=int,
        default=schema_default("imagenet.expect_classes"),
        help="imagenet: number of class folders expected (0 = do not check)",
    )
    ap.add_argument("--min-images", type=int, default=1, help="flat: fewest images accepted")
    ap.add_argument(
        "--no-decode",
        action="store_true",
        help="only check that files are non-empty (fast), do not decode every image",
    )
    ap.add_argument("--report", help="write the report as JSON to this file (atomically)")
    args = ap.parse_args(argv)
    from lipsim.atomic import write_json
    from lipsim.data.folders import check_image_folder, check_imagenet
    from lipsim.errors import LipSimError

    if args.layout == "imagenet":
        report = check_imagenet(args.root, args.expect_classes or None, decode=not args.no_decode)
        print(f"check-folder: {report.root}: {report.n_classes} classes, {report.n_images} images")
    else:
        report = check_image_folder(
            args.root, decode=not args.no_decode, min_images=args.min_images
        )
        print(f"check-folder: {report.root}: {report.n_images} images")
    if args.report:
        write_json(args.report, report.as_dict())
    for line in report.unreadable[:50]:
        print(f"check-folder: unreadable: {line}", file=sys.stderr)
    if not report.ok:
        raise LipSimError(" ".join(report.problems) or f"{args.root}: unreadable images")
    return 0
