"""Natural and certified 2AFC scores of a LipSim checkpoint on NIGHT, per LipSim metric.

Writes one row per triplet and metric (lipsim.certify.COLUMNS: id, split, metric, p, d0, d1,
score, radius = the sound radius, radius_authors = the authors' radius, norm = ||f(ref)||)
as parquet, atomically: every triplet, with both per-triplet scores (score = 2AFC, correct =
the authors' accuracy), so a table can apply any rule. Prints the natural and certified scores
(percent) per split and for 'test' (size-weighted test_imagenet + test_no_imagenet): the sound
radius with the 2AFC score over every triplet, the authors' radius under --scoring and
--half-votes (Table 1's columns). eps values are given in 1/--eps-scale units (36 72 108 with
--eps-scale 255 are the paper's radii); radii in the parquet are in [0, 1]-pixel units. The
--tie-radius used is stored in the parquet as a column of that name, and the checkpoint's own
record of what it is as columns stage (pretrained | finetuned), margin (NaN for a pretrained
model) and teacher: reporting reads them, not the model's file name.
"""

from __future__ import annotations

from lipsim.cli._args import add_config_options, parser
from lipsim.cli._rule import rule_from_args


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--checkpoint", required=True, help="lipsim-repro checkpoint (.pt)")
    ap.add_argument("--night", required=True, help="NIGHT folder (holding data.csv)")
    ap.add_argument(
        "--eps-scale",
        type=float,
        default=255.0,
        help="--eps are divided by this (255: eps in pixel levels)",
    )
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--no-progress", action="store_true", help="no progress lines")
    ap.add_argument("--out", required=True, help="per-triplet parquet to write")
    add_config_options(ap, "certify")
    args = ap.parse_args(argv)

    from lipsim.atomic import write_parquet
    from lipsim.certify import certified_scores, certify_triplets
    from lipsim.cli._night import read_triplets, triplet_loader
    from lipsim.metric import load
    from lipsim.progress import progress_bar
    from lipsim.scoring import DREAMSIM

    metric = load(args.checkpoint, device=args.device)
    df = read_triplets(args.night, splits=args.splits, min_votes=args.min_votes)
    loader = triplet_loader(df, metric.image_size, args.batch_size, args.workers)
    device = next(metric.parameters()).device
    with progress_bar(len(df), "certify", "triplet", enabled=not args.no_progress) as bar:
        rows = certify_triplets(
            metric,
            loader,
            device,
            metrics=args.metrics,
            tie_radius=args.tie_radius,
            on_part=lambda part: bar.update(len(part)),
        )
    margin = metric.info.get("margin")
    rows = rows.assign(
        tie_radius=args.tie_radius,
        stage=str(metric.info["stage"]),
        margin=float("nan") if margin is None else float(margin),
        teacher=str(metric.info["teacher"]),
    )
    write_parquet(args.out, rows)

    eps = [e / args.eps_scale for e in args.eps]
    rule = rule_from_args(args)
    print(f"certify: {args.checkpoint} on {len(df)} triplets -> {args.out}")
    for name in args.metrics:
        part = rows[rows["metric"] == name]
        for label, column, r in (
            ("sound", "radius", DREAMSIM),
            ("authors", "radius_authors", rule),
        ):
            scores = certified_scores(part, eps, radius=column, rule=r)
            names = sorted(scores["natural"], key=lambda s: (s == "test", s))
            print(f"metric {name}, {label} radius; {r.describe()}")
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
