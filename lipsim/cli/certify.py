"""`python -m lipsim certify`: natural and certified 2AFC scores of a LipSim checkpoint on NIGHT.

Writes one row per triplet (id, split, p, d0, d1, score, radius) as parquet, atomically, and
prints the natural and certified scores (percent) per split and for 'test' (size-weighted
test_imagenet + test_no_imagenet). eps values are given in 1/--eps-scale units (36 72 108
with --eps-scale 255 are the paper's radii); radii in the parquet are in [0, 1]-pixel units.
"""

from __future__ import annotations

from lipsim.cli._args import parser


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--checkpoint", required=True, help="lipsim-repro checkpoint (.pt)")
    ap.add_argument("--night", required=True, help="NIGHT folder (holding data.csv)")
    ap.add_argument("--splits", nargs="+", default=["test_imagenet", "test_no_imagenet"],
                    help="NIGHT splits")
    ap.add_argument("--eps", nargs="+", type=float, default=[36.0, 72.0, 108.0],
                    help="radii, 1/--eps-scale units")
    ap.add_argument("--eps-scale", type=float, default=255.0,
                    help="eps are divided by this (255: eps in pixel levels)")
    ap.add_argument("--batch-size", type=int, default=64, help="triplets per batch")
    ap.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto")
    ap.add_argument("--min-votes", type=int, default=6, help="keep triplets with this many votes")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--out", required=True, help="per-triplet parquet to write")
    args = ap.parse_args(argv)


    from lipsim.atomic import write_parquet
    from lipsim.certify import certified_scores, certify_triplets
    from lipsim.cli._night import read_triplets, triplet_loader
    from lipsim.metric import load

    metric = load(args.checkpoint, device=args.device)
    df = read_triplets("certify", args.night, splits=args.splits, min_votes=args.min_votes)
    loader = triplet_loader(df, metric.image_size, args.batch_size, args.workers)
    device = next(metric.parameters()).device
    rows = certify_triplets(metric, loader, device)
    write_parquet(args.out, rows)

    eps = [e / args.eps_scale for e in args.eps]
    scores = certified_scores(rows, eps)
    names = sorted(scores["natural"], key=lambda s: (s == "test", s))
    print(f"certify: {args.checkpoint} on {len(rows)} triplets -> {args.out}")
    header = "split".ljust(18) + "natural".rjust(9) + "".join(
        f"{'cert@' + format(e, 'g'):>12}" for e in args.eps)
    print(header)
    for s in names:
        line = s.ljust(18) + f"{scores['natural'][s]:9.2f}"
        line += "".join(f"{scores['certified'][e][s]:12.2f}" for e in eps)
        print(line)
    return 0
