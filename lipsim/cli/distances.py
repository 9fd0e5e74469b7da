"""`python -m lipsim distances`: d(x, x + delta) under an l2 attack on natural images (fig. 3b).

For each of --n-images images of --images (drawn with --seed; 0 = all), l2 PGD (--steps,
random start seeded per image) finds delta with ||delta||_2 <= --eps / --eps-scale maximising
the metric's change d(x, x + delta) (lipsim.retrieval.push_away). Writes parquet atomically:
image (path relative to --images), eps, distance, delta_norm.
"""

from __future__ import annotations

from lipsim.cli._args import add_config_options, parser


def main(argv: list[str] | None = None) -> int:
    from lipsim.cli._metric import add_metric_args

    ap = parser(__name__, __doc__)
    add_metric_args(ap)
    ap.add_argument("--images", required=True, help="image folder (searched recursively)")
    ap.add_argument("--eps-scale", type=float, default=1.0, help="units of --eps (255: /255)")
    ap.add_argument("--restarts", type=int, default=1, help="PGD restarts")
    ap.add_argument("--batch-size", type=int, default=16, help="images per batch")
    ap.add_argument("--seed", type=int, default=0, help="seed of the image draw and the attack")
    ap.add_argument("--out", required=True, help="parquet to write")
    add_config_options(ap, "distances")  # --eps (in 1/--eps-scale units), --steps, --n-images
    args = ap.parse_args(argv)

    from lipsim.atomic import write_parquet
    from lipsim.cli._metric import metric_from_args
    from lipsim.retrieval import attacked_distances, list_images, pick

    metric, device, size = metric_from_args(args)
    names = pick(list_images(args.images), args.n_images, args.seed)
    eps = args.eps / args.eps_scale
    print(
        f"distances: {args.metric} ({size}px, {device}) {len(names)} images, l2 eps={eps:.6g}, "
        f"{args.steps} steps",
        flush=True,
    )
    df = attacked_distances(
        metric,
        args.images,
        names,
        image_size=size,
        eps=eps,
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        device=device,
        restarts=args.restarts,
    )
    write_parquet(args.out, df)
    q = df["distance"].quantile([0.1, 0.5, 0.9]).to_numpy()
    print(
        f"distances: -> {args.out}; d(x, x+delta) median {q[1]:.4g} (10%: {q[0]:.4g}, "
        f"90%: {q[2]:.4g})"
    )
    return 0
