"""`python -m lipsim evaluate`: natural 2AFC of any metric on NIGHT, one row per triplet.

Writes parquet (atomically) with columns id, split, p, d0, d1, score, correct (per-triplet
scores in [0, 1]: the 2AFC score and the authors' accuracy, lipsim.scoring.triplet_scores),
every triplet kept, and prints the score under --scoring and --half-votes per split and for
'test' (percent).
Images are loaded at the metric's own input size (LipSim, teachers), else at --image-size,
else 224 (NIGHT's preprocessing).
"""

from __future__ import annotations

from lipsim.cli._args import add_config_options, parser
from lipsim.cli._rule import rule_from_args


def main(argv: list[str] | None = None) -> int:
    from lipsim.cli._metric import add_metric_args

    ap = parser(__name__, __doc__)
    add_metric_args(ap)
    ap.add_argument("--night", required=True, help="NIGHT folder (holding data.csv)")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--out", required=True, help="per-triplet parquet to write")
    add_config_options(ap, "evaluate")
    args = ap.parse_args(argv)

    from lipsim.atomic import write_parquet
    from lipsim.cli._metric import metric_from_args
    from lipsim.cli._night import read_triplets, triplet_loader
    from lipsim.evaluation import evaluate_triplets
    from lipsim.scoring import rule_scores

    metric, device, size = metric_from_args(args)
    df = read_triplets(args.night, splits=args.splits, min_votes=args.min_votes)
    loader = triplet_loader(df, size, args.batch_size, args.workers)
    rows = evaluate_triplets(metric, loader, device, df["id"].to_numpy(), df["split"].to_numpy())
    write_parquet(args.out, rows)
    rule = rule_from_args(args)
    print(f"evaluate: {args.metric} on {len(rows)} triplets at {size}px -> {args.out}")
    print(f"scores: {rule.describe()}")
    scores = rule_scores(rows, rule)
    for split, score in sorted(scores.items(), key=lambda kv: (kv[0] == "test", kv[0])):
        print(f"  {split:18s} {score:6.2f}")
    return 0
