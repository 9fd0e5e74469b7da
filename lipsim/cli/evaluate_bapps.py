"""`python -m lipsim evaluate-bapps`: 2AFC of any metric on BAPPS, one row per triplet.

Writes parquet (atomically) with columns id, split (the BAPPS category), p, d0, d1, score,
correct (per-triplet 2AFC score and the authors' accuracy; every triplet kept) and, for a
LipSim checkpoint (lipsim:CKPT), its certified radii (lipsim.certify.certify_triplets); prints
the natural score per category and overall (and the certified scores at --eps for LipSim)
under LPIPS's rule (2AFC, every triplet, the sound radius) and under --scoring and
--half-votes (the authors' radius). Images are loaded at the metric's own input size (LipSim: the certificate holds in
its input space), else at --image-size (224 in the LipSim authors' BAPPS evaluation).
"""

from __future__ import annotations

from lipsim.cli._args import add_config_options, parser
from lipsim.cli._rule import rule_from_args


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
    from lipsim.certify import certify_triplets
    from lipsim.cli._metric import metric_from_args
    from lipsim.data.bapps import BappsTriplets, read_bapps
    from lipsim.evaluation import evaluate_triplets
    from lipsim.metric import LipSim
    from lipsim.scoring import DREAMSIM

    metric, device, size = metric_from_args(args)
    df = read_bapps(args.bapps, args.categories)
    # Table order: result rows are matched to ids by position (never shuffle).
    loader = torch.utils.data.DataLoader(
        BappsTriplets(df, size), batch_size=args.batch_size, shuffle=False, num_workers=args.workers
    )
    ids, splits = df["id"].to_numpy(), df["split"].to_numpy()
    # Any LipSim spec (lipsim:, lipsim-cosine:, lipsim-ball:) is certified under its metric.
    lipsim = isinstance(metric, LipSim)
    if lipsim:
        rows = certify_triplets(
            metric, loader, device, ids=ids, splits=splits, tie_radius=args.tie_radius
        )
    else:
        rows = evaluate_triplets(metric, loader, device, ids, splits)
    write_parquet(args.out, rows)

    print(f"evaluate-bapps: {args.metric} on {len(rows)} triplets at {size}px -> {args.out}")
    eps = args.eps if lipsim else []
    _print_scores(rows, args.categories, eps, DREAMSIM, "radius")
    _print_scores(rows, args.categories, eps, rule_from_args(args), "radius_authors")
    return 0


def _print_scores(rows, categories, eps_255, rule, radius) -> None:
    """One block: natural (and certified at each eps) per category, group and overall."""
    from lipsim.data.bapps import GROUPS
    from lipsim.eps import convert_eps
    from lipsim.reporting.bapps import ALL, category_scores

    eps = [convert_eps(e, "image") for e in eps_255]
    s = category_scores(rows, eps, rule, radius)
    print(f"{rule.describe()}" + (f"; {radius}" if eps else ""))
    print(
        "category".ljust(14)
        + "natural".rjust(9)
        + "".join(f"{'cert@' + format(e, 'g'):>12}" for e in eps_255)
    )
    for cat in [*categories, *(g for g in GROUPS if g in s["natural"]), ALL]:
        if cat not in s["natural"]:
            continue  # every triplet of it dropped by the rule
        line = cat.ljust(14) + f"{s['natural'][cat]:9.2f}"
        line += "".join(f"{s['certified'][e][cat]:12.2f}" for e in eps)
        print(line)
