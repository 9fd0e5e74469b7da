"""`python -m lipsim finetune --init CKPT --night DIR --margin M --metric {cosine,ball}
--loss {hinge,hinge_sound} --loss-reduction {mean,sum} --optimizer-state {fresh,reload} --workdir DIR --out CKPT
[training options]`

Finetunes a distilled LipSim checkpoint on NIGHT train with the hinge loss at margin M on the
distance of --metric, or with --loss hinge_sound on its sound certified radius
(lipsim.train.finetune) and writes the stage "finetuned" checkpoint with
the margin and metric recorded. --optimizer-state reload starts Adam from the state stored in
the --init checkpoint (the authors' recipe; betas and weight decay still come from the
options, and so does the lr, except for the first step under --lr-timing previous_step,
which trains with the lr stored in that state, as the authors' finetuning does), fresh from
zero moments. Use one --workdir per margin. Distributed like `distill`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lipsim.cli._args import parser
from lipsim.data.night import NightTriplets, find_night_root, read_night
from lipsim.embcache import sha256_file
from lipsim.errors import LipSimError
from lipsim.models import METRICS, load_checkpoint, save_checkpoint
from lipsim.train.checkpointing import clear_resume
from lipsim.train.distributed import cleanup, init_distributed
from lipsim.train.finetune import LOSS_REDUCTIONS, LOSSES, FinetuneTask
from lipsim.train.trainer import (
    OptimizerStateError,
    Trainer,
    add_training_options,
    config_from_args,
    configure_logging,
    default_threads,
    seed_everything,
)

OPTIMIZER_STATES = ("fresh", "reload")


def init_optimizer_state(init: dict, path: Path, how: str) -> dict | None:
    """The Adam state finetuning starts from: None (fresh) or the --init checkpoint's."""
    if how == "fresh":
        return None
    state = init.get("optimizer_state_dict")
    if state is None:
        raise LipSimError(
            f"{path}: the checkpoint holds no optimizer state "
            "(optimizer_state_dict), which --optimizer-state reload "
            "(config finetune.optimizer_state) needs; distill it again with this "
            "version, or finetune with --optimizer-state fresh"
        )
    return state


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__name__, __doc__)
    ap.add_argument("--init", required=True, type=Path, help="distilled checkpoint (pretrained)")
    ap.add_argument("--night", required=True, type=Path, help="NIGHT folder (holding data.csv)")
    ap.add_argument("--margin", required=True, type=float, help="hinge-loss margin")
    ap.add_argument(
        "--min-votes", type=int, required=True, help="keep triplets with at least this many votes"
    )
    ap.add_argument("--out", required=True, type=Path, help="checkpoint to write (stage finetuned)")
    g = ap.add_argument_group("recipe (lipsim.train.finetune)")
    g.add_argument(
        "--metric",
        choices=METRICS,
        required=True,
        help="cosine: 1 - cos (the authors'); ball: the unit-ball projection",
    )
    g.add_argument(
        "--loss",
        choices=LOSSES,
        required=True,
        help="hinge on the distance gap (the paper's) or on the sound radius (hinge_sound)",
    )
    g.add_argument(
        "--loss-reduction",
        choices=LOSS_REDUCTIONS,
        required=True,
        help="hinge loss averaged or summed (the authors') over the batch",
    )
    g.add_argument(
        "--optimizer-state",
        choices=OPTIMIZER_STATES,
        required=True,
        help="fresh Adam, or reload the --init checkpoint's state (the authors')",
    )
    add_training_options(ap)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    default_threads()
    env, device = init_distributed(args.device)
    configure_logging(env)
    try:
        cfg = config_from_args(args)
        seed_everything(cfg.seed)
        net, init = load_checkpoint(args.init, map_location="cpu")
        opt_state = init_optimizer_state(init, args.init, args.optimizer_state)
        df = read_night(args.night, min_votes=args.min_votes, splits=["train"])
        dataset = NightTriplets(df, net.image_size)
        recipe = {
            "loss": args.loss,
            "metric": args.metric,
            "loss_reduction": args.loss_reduction,
            "optimizer_state": args.optimizer_state,
        }
        trainer = Trainer(cfg, env, device)
        task = FinetuneTask(
            dataset,
            args.margin,
            metric=args.metric,
            loss_reduction=args.loss_reduction,
            loss=args.loss,
        )
        try:
            net = trainer.fit(
                net,
                task,
                init_optimizer_state=opt_state,
                fingerprint_extra={
                    "task": "finetune",
                    "margin": args.margin,
                    "min_votes": args.min_votes,
                    **recipe,
                    # Content, not paths: a re-distilled init or changed NIGHT csv starts afresh.
                    "init_sha256": sha256_file(args.init),
                    "night_csv_sha256": sha256_file(find_night_root(args.night) / "data.csv"),
                    "model_config": dict(net.config),
                },
            )
        except OptimizerStateError as exc:
            raise LipSimError(
                f"{args.init}: its optimizer state does not fit the model "
                f"(--optimizer-state reload): {exc}"
            ) from exc
        if env.is_main:
            save_checkpoint(
                args.out,
                net,
                stage="finetuned",
                margin=args.margin,
                teacher=init.get("teacher", "unknown"),
                metric=args.metric,
                meta={
                    "init": str(args.init),
                    "epochs": cfg.epochs,
                    "global_batch": cfg.batch_size * env.world_size,
                    "lr": cfg.lr,
                    "betas": [cfg.beta1, cfg.beta2],
                    "weight_decay": cfg.weight_decay,
                    "schedule": cfg.schedule,
                    "warmup_steps": cfg.warmup_steps,
                    "lr_timing": cfg.lr_timing,
                    "schedule_items": cfg.schedule_items,
                    "partial_batches": cfg.partial_batches,
                    "seed": cfg.seed,
                    "amp": cfg.amp,
                    "triplets": len(dataset),
                    "min_votes": args.min_votes,
                    "world_size": env.world_size,
                    **recipe,
                },
            )
            print(f"finetune: wrote {args.out}")
            clear_resume(cfg.workdir)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"finetune: {exc}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    return 0
