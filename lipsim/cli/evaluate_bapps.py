"""`python -m lipsim evaluate-bapps`: 2AFC of any metric on BAPPS, one row per triplet.

Writes parquet (atomically) with columns id, split (the BAPPS category), p, d0, d1, score and,
for a LipSim checkpoint (lipsim:CKPT), its certified radius (lipsim.certify.certify_triplets);
prints the natural score per category and overall (and the certified scores at --eps for
LipSim). Images are loaded at the metric's own input size (LipSim: the certificate holds in
its input space), else at --image-size (224 in the LipSim authors' BAPPS evaluation).
"""

from __future__ import annotations

from lipsim.cli._args import add_config_options, parser


def main(argv: list[str] | None = None) -> int:
    from lipsim.cli._metric import add_metric_args

    ap = parser(__name__, __doc__)
    add_metric_args(ap)
    ap.add_argument(
        "--bapps", required=True, help="BAPPS 2AFC folder (holding the categories or val/)"
    )
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--out", required=True, help="per-triplet parquet to write")
    # --eps: the certified radii printed for LipSim, in /255 units
    add_config_options(ap, "evaluate-bapps")
    args = ap.parse_args(argv)

    import torch

    from lipsim.atomic import write_parquet
    from lipsim.baselines import evaluate_triplets
    from lipsim.certify import certify_triplets
    from lipsim.cli._metric import metric_from_args
    from lipsim.data.bapps import GROUPS, BappsTriplets, read_bapps
    from lipsim.eps import convert_eps
    from lipsim.reporting.bapps import ALL, category_scores

    metric, device, size = metric_from_args(args)
    df = read_bapps(args.bapps, args.categories)
    # Table order: result rows are matched to ids by position (never shuffle).
    loader = torch.utils.data.DataLoader(
        BappsTriplets(df, size), batch_size=args.batch_size, shuffle=False, num_workers=args.workers
    )
    ids, splits = df["id"].to_numpy(), df["split"].to_numpy()
    lipsim = args.metric.startswith("lipsim:")
    if lipsim:
        rows = certify_triplets(metric, loader, device, ids=ids, splits=splits)
    else:
        rows = evaluate_triplets(metric, loader, device, ids, splits)
    write_parquet(args.out, rows)

    eps = [convert_eps(e, "image") for e in args.eps] if lipsim else []
    s = category_scores(rows, eps)
    print(f"evaluate-bapps: {args.metric} on {len(rows)} triplets at {size}px -> {args.out}")
    print(
        "category".ljust(14)
        + "natural".rjust(9)
        + "".join(f"{'cert@' + format(e, 'g'):>12}" for e in args.eps if lipsim)
    )
    for cat in [*args.categories, *(g for g in GROUPS if g in s["natural"]), ALL]:
        line = cat.ljust(14) + f"{s['natural'][cat]:9.2f}"
        line += "".join(f"{s['certified'][e][cat]:12.2f}" for e in eps)
        print(line)
    return 0
