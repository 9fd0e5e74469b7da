"""`python -m lipsim finetune --init CKPT --night DIR --margin M --workdir DIR --out CKPT
[config options]`

Finetunes a distilled LipSim checkpoint on NIGHT train with the hinge loss at margin M on the
distance of --metric, or with --loss hinge_sound on its sound certified radius
(lipsim.train.finetune), and writes the stage "finetuned" checkpoint with the margin and
metric recorded. The config options are the finetune section's (config/README.md), plus
metric and night.min_votes. --optimizer-state reload starts Adam from the state stored in the
--init checkpoint (the authors' recipe; betas and weight decay still come from the options,
and so does the lr, except for the first step under --lr-timing previous_step, which trains
with the lr stored in that state, as the authors' finetuning does), fresh from zero moments.
Use one --workdir per margin. Distributed like `distill`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lipsim.cli._args import add_config_options, parser
from lipsim.data.night import NightTriplets, find_night_root, read_night
from lipsim.embcache import sha256_file
from lipsim.errors import LipSimError
from lipsim.models import load_checkpoint, save_checkpoint
from lipsim.train.checkpointing import clear_resume
from lipsim.train.distributed import cleanup, init_distributed
from lipsim.train.finetune import FinetuneTask
from lipsim.train.trainer import (
    OptimizerStateError,
    Trainer,
    add_training_options,
    config_from_args,
    configure_logging,
    default_threads,
    seed_everything,
)


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
    ap.add_argument("--out", required=True, type=Path, help="checkpoint to write (stage finetuned)")
    add_training_options(ap)
    # the finetune section (the loop's hyperparameters and the recipe: lipsim.train.finetune),
    # metric, night.min_votes, device
    add_config_options(ap, "finetune")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    default_threads()
    env, device = init_distributed(args.device)
    configure_logging(env)
    try:
        cfg = config_from_args(args, "finetune")
        seed_everything(cfg.seed)
        net, init = load_checkpoint(args.init, map_location="cpu")
        opt_state = init_optimizer_state(init, args.init, args.optimizer_state)
        df = read_night(args.night, min_votes=args.min_votes, splits=["train"])
        dataset = NightTriplets(df, net.image_size)
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
                    "metric": args.metric,
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
                    **cfg.recipe,
                    "init": str(args.init),
                    "global_batch": cfg.batch_size * env.world_size,
                    "triplets": len(dataset),
                    "min_votes": args.min_votes,
                    "world_size": env.world_size,
                },
            )
            print(f"finetune: wrote {args.out}")
            clear_resume(cfg.workdir)
    finally:
        cleanup()
    return 0
