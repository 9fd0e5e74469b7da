"""`python -m lipsim attack`: 2AFC under attack on NIGHT (AutoAttack or PGD on the reference).

Only the reference image is perturbed (x0, x1 untouched), within the --norm ball of radius
--eps / --eps-scale ([0, 1]-pixel units; Linf radii are usually given as --eps 4
--eps-scale 255), pixels kept in [0, 1]. Writes one row per triplet (atomically): id, split,
p, score_clean, score_adv, d0_adv, d1_adv, delta_norm, plus d0, d1, delta_l2, attack, norm,
eps, seed (see lipsim.attacks.run).

AutoAttack = pyautoattack's APGD-CE + FAB-T (1 target) + Square (the ensemble meaningful for
2 classes; lipsim.attacks.autoattack). --budget standard: APGD 100 it., FAB-T 100 it., Square
5000 queries; demo: APGD-CE 10 it., FAB-T 10 it., Square 200 queries. --attacks /
--apgd-iters / --apgd-restarts / --fab-iters / --square-queries override the budget.
PGD: --steps, --restarts (attacks.pgd_steps, attacks.pgd_restarts), --step-size (in
--eps-scale units; default 2.5 eps / steps); they do not apply to AutoAttack (ignored).

--max-triplets N attacks a subset of N triplets drawn with --seed (the same subset for every
metric and attack with that seed). PGD seeds each triplet from --seed and its id, so its
results do not depend on --batch-size. AutoAttack attacks each batch of --batch-size
triplets in one call (seeded from --seed and the batch's ids), so its results depend on the
batch size and the triplet order, both recorded in the file (columns batch_size, group, and
the row order): a rerun with the same options writes the same file; --batch-size 1 attacks
one triplet per call, each seeded from its own id.
A progress bar (done/total triplets, ETA) goes to stderr unless --no-progress.
"""

from __future__ import annotations

import argparse
import sys

from lipsim.cli._args import add_config_options, parser
from lipsim.errors import LipSimError
from lipsim.registry import ATTACKS_TABLE


def select_triplets(df, max_triplets: int, seed: int):
    """A seeded subset of max_triplets rows in their original order (all when <= 0)."""
    import numpy as np

    if max_triplets <= 0 or len(df) <= max_triplets:
        return df.reset_index(drop=True)
    keep = np.sort(np.random.default_rng(seed).choice(len(df), size=max_triplets, replace=False))
    return df.iloc[keep].reset_index(drop=True)


def build_parser() -> argparse.ArgumentParser:
    from lipsim.cli._metric import add_metric_args

    ap = parser(__name__, __doc__)
    add_metric_args(ap)
    ap.add_argument("--night", required=True, help="NIGHT folder (holding data.csv)")
    ap.add_argument(
        "--attack",
        required=True,
        choices=list(ATTACKS_TABLE),
        help="; ".join(f"{c.name}: {c.description}" for c in ATTACKS_TABLE.values()),
    )
    ap.add_argument("--norm", required=True, choices=["L2", "Linf"], help="threat model")
    ap.add_argument("--eps", required=True, type=float, help="radius, in 1/--eps-scale units")
    ap.add_argument(
        "--eps-scale",
        type=float,
        default=1.0,
        help="eps (and --step-size) are divided by this (255: pixel levels)",
    )
    ap.add_argument(
        "--attacks",
        nargs="+",
        default=None,
        help="AutoAttack attacks (subset of apgd-ce fab-t square)",
    )
    ap.add_argument("--apgd-iters", type=int, default=None, help="APGD iterations (budget's)")
    ap.add_argument("--apgd-restarts", type=int, default=None, help="APGD restarts (budget's)")
    ap.add_argument("--fab-iters", type=int, default=None, help="FAB iterations (budget's)")
    ap.add_argument("--square-queries", type=int, default=None, help="Square queries (budget's)")
    ap.add_argument("--step-size", type=float, default=None, help="PGD step, eps units")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    ap.add_argument("--out", required=True, help="per-triplet parquet to write")
    add_config_options(ap, "attack")
    return ap


def attack_spec(args: argparse.Namespace):
    """The AttackSpec the options describe (radii converted to [0, 1]-pixel units)."""
    from lipsim.attacks import AttackSpec, AutoAttackConfig

    if args.eps_scale <= 0:
        raise LipSimError(f"--eps-scale must be > 0, got {args.eps_scale}")
    eps = args.eps / args.eps_scale
    aa_cfg = None
    if args.attack == "autoattack":
        aa_cfg = AutoAttackConfig.from_budget(
            args.budget,
            args.norm,
            eps,
            attacks=args.attacks,
            apgd_iters=args.apgd_iters,
            apgd_restarts=args.apgd_restarts,
            fab_iters=args.fab_iters,
            square_queries=args.square_queries,
        )
    return AttackSpec(
        args.attack,
        args.norm,
        eps,
        seed=args.seed,
        autoattack=aa_cfg,
        steps=args.steps,
        restarts=args.restarts,
        step_size=None if args.step_size is None else args.step_size / args.eps_scale,
    )


def _describe(spec) -> str:
    if spec.autoattack:
        return f"AutoAttack {spec.autoattack}"
    step = spec.step_size or 2.5 * spec.eps / max(spec.steps, 1)
    return f"PGD steps={spec.steps} restarts={spec.restarts} step={step:.6g}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    spec = attack_spec(args)

    from lipsim.atomic import write_parquet
    from lipsim.attacks import attack_triplets
    from lipsim.cli._metric import metric_from_args
    from lipsim.cli._night import read_triplets, triplet_loader
    from lipsim.scoring import split_scores

    metric, device, size = metric_from_args(args)
    df = read_triplets(args.night, splits=args.splits, min_votes=args.min_votes)
    df = select_triplets(df, args.max_triplets, args.seed)
    print(
        f"attack: {args.metric} ({size}px, {device}) {len(df)} triplets, {args.norm} "
        f"eps={spec.eps:.6g}; {_describe(spec)}",
        flush=True,
    )
    rows = attack_triplets(
        metric,
        triplet_loader(df, size, args.batch_size, args.workers),
        spec,
        device=device,
        ids=df["id"].to_numpy(),
        splits=df["split"].to_numpy(),
        log=None if args.no_progress else sys.stderr,
        batch_size=args.batch_size,
    )
    if getattr(metric, "metric", None) in ("cosine", "ball"):  # a LipSim model: which metric
        rows = rows.assign(lipsim_metric=metric.metric)
    write_parquet(args.out, rows)
    clean, adv = split_scores(rows, "score_clean"), split_scores(rows, "score_adv")
    print(f"attack: -> {args.out}")
    for split in sorted(clean, key=lambda s: (s == "test", s)):
        print(f"  {split:18s} clean {clean[split]:6.2f}  attacked {adv[split]:6.2f}")
    return 0
