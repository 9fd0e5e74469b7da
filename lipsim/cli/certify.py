"""Natural and certified 2AFC scores of a LipSim checkpoint on NIGHT, per LipSim metric.

Writes one row per triplet and metric (lipsim.certify.COLUMNS: id, split, metric, p, d0, d1,
score, radius = the sound radius, radius_authors = the authors' radius, norm = ||f(ref)||)
as parquet, atomically, and prints the natural and certified scores (percent) per split and
for 'test' (size-weighted test_imagenet + test_no_imagenet). eps values are given in
1/--eps-scale units (36 72 108 with --eps-scale 255 are the paper's radii); radii in the
parquet are in [0, 1]-pixel units. The conventions used (--half-votes, --tie-radius) are
stored in the parquet as columns of the same names.
"""

from __future__ import annotations

from lipsim.certify import HALF_VOTES, TIE_RADIUS
from lipsim.cli._args import parser
from lipsim.models.net import METRICS


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--checkpoint", required=True, help="lipsim-repro checkpoint (.pt)")
    ap.add_argument("--night", required=True, help="NIGHT folder (holding data.csv)")
    ap.add_argument(
        "--splits",
        nargs="+",
        required=True,
        help="NIGHT splits to score, e.g. test_imagenet test_no_imagenet",
    )
    ap.add_argument(
        "--metrics",
        nargs="+",
        choices=METRICS,
        required=True,
        help="LipSim metrics to certify under (rows per metric)",
    )
    ap.add_argument(
        "--half-votes",
        choices=HALF_VOTES,
        required=True,
        help="p = 0.5 triplets: keep (score 0.5) or drop (the authors')",
    )
    ap.add_argument(
        "--tie-radius",
        choices=TIE_RADIUS,
        required=True,
        help="the authors' radius of an exact tie (the sound one is always 0)",
    )
    ap.add_argument(
        "--eps",
        nargs="+",
        type=float,
        required=True,
        help="radii to report, in 1/--eps-scale units",
    )
    ap.add_argument(
        "--eps-scale",
        type=float,
        default=255.0,
        help="eps are divided by this (255: eps in pixel levels)",
    )
    ap.add_argument("--batch-size", type=int, required=True, help="triplets per batch")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    ap.add_argument(
        "--min-votes", type=int, required=True, help="keep triplets with at least this many votes"
    )
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--no-progress", action="store_true", help="no progress lines")
    ap.add_argument("--out", required=True, help="per-triplet parquet to write")
    args = ap.parse_args(argv)

    from lipsim.atomic import write_parquet
    from lipsim.certify import apply_half_votes, certified_scores, certify_triplets
    from lipsim.cli._night import read_triplets, triplet_loader
    from lipsim.metric import load
    from lipsim.progress import Progress

    metric = load(args.checkpoint, device=args.device)
    df = read_triplets("certify", args.night, splits=args.splits, min_votes=args.min_votes)
    loader = triplet_loader(df, metric.image_size, args.batch_size, args.workers)
    device = next(metric.parameters()).device
    with Progress(len(df), "certify", unit="triplet", enabled=not args.no_progress) as bar:
        rows = certify_triplets(
            metric,
            loader,
            device,
            metrics=args.metrics,
            tie_radius=args.tie_radius,
            on_part=lambda part: bar.update(len(part)),
        )
    rows = apply_half_votes(rows, args.half_votes)
    rows = rows.assign(half_votes=args.half_votes, tie_radius=args.tie_radius)
    write_parquet(args.out, rows)

    eps = [e / args.eps_scale for e in args.eps]
    print(
        f"certify: {args.checkpoint} on {len(df)} triplets ({args.half_votes} p = 0.5 rows: "
        f"{len(rows) // len(args.metrics)} scored) -> {args.out}"
    )
    for name in args.metrics:
        part = rows[rows["metric"] == name]
        for label, column in (("sound", "radius"), ("authors", "radius_authors")):
            scores = certified_scores(part, eps, radius=column)
            names = sorted(scores["natural"], key=lambda s: (s == "test", s))
            print(f"metric {name}, {label} radius")
            print(
                "split".ljust(18)
                + "natural".rjust(9)
                + "".join(f"{'cert@' + format(e, 'g'):>12}" for e in args.eps)
            )
            for s in names:
                print(
                    s.ljust(18)
                    + f"{scores['natural'][s]:9.2f}"
                    + "".join(f"{scores['certified'][e][s]:12.2f}" for e in eps)
                )
    return 0
