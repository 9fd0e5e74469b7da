"""`python -m lipsim retrieval`: image retrieval with attacked queries (recall@k per eps).

Gallery = every image under --images; queries = --n-queries gallery images (drawn with
--seed), plus --distractors noisy copies of each query (per-pixel std --distractor-noise);
for each --eps the query is attacked (l2 PGD, --steps, pushing its embedding away from the
clean one) and the gallery ranked by the metric's distance to it.
recall@k = share of queries whose own clean image is among the k nearest; also
neighbour_overlap@k (see lipsim.retrieval). Writes parquet atomically: metric, eps, k,
recall, neighbour_overlap, n_queries, gallery_size, distractors.
"""

from __future__ import annotations

from lipsim.cli._args import add_config_options, parser


def main(argv: list[str] | None = None) -> int:
    from lipsim.cli._metric import add_metric_args

    ap = parser(__name__, __doc__)
    add_metric_args(ap)
    ap.add_argument("--images", required=True, help="image folder (searched recursively)")
    ap.add_argument("--eps-scale", type=float, default=1.0, help="units of --eps (255: /255)")
    ap.add_argument("--batch-size", type=int, default=16, help="images per batch")
    ap.add_argument("--seed", type=int, default=0, help="seed of the query draw and the attack")
    ap.add_argument(
        "--name", default=None, help="value of the metric column (default: the metric's name)"
    )
    ap.add_argument("--out", required=True, help="parquet to write")
    add_config_options(ap, "retrieval")  # --eps in 1/--eps-scale units
    args = ap.parse_args(argv)

    from lipsim.atomic import write_parquet
    from lipsim.cli._metric import metric_from_args
    from lipsim.retrieval import retrieval_recall

    metric, device, size = metric_from_args(args)
    eps = [e / args.eps_scale for e in args.eps]
    df = retrieval_recall(
        metric,
        args.images,
        image_size=size,
        n_queries=args.n_queries,
        eps_list=eps,
        ks=args.k,
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        device=device,
        distractors=args.distractors,
        distractor_noise=args.distractor_noise,
    )
    df.insert(0, "metric", args.name or getattr(metric, "name", args.metric))
    write_parquet(args.out, df)
    print(df.to_string(index=False))
    print(f"retrieval: -> {args.out}")
    return 0
