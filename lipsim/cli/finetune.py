"""`python -m lipsim finetune --init CKPT --night DIR --margin M --workdir DIR --out CKPT
[training options]`

Finetunes a distilled LipSim checkpoint on NIGHT train with the hinge loss at margin M on the
projected distance (lipsim.train.finetune) and writes the stage "finetuned" checkpoint with
the margin recorded. Use one --workdir per margin. Distributed like `distill`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from lipsim.cli._args import parser
from lipsim.data.night import NightTriplets, find_night_root, read_night
from lipsim.embcache import sha256_file
from lipsim.models import load_checkpoint, save_checkpoint
from lipsim.train.checkpointing import clear_resume
from lipsim.train.distributed import cleanup, init_distributed
from lipsim.train.finetune import FinetuneTask
from lipsim.train.trainer import (
    Trainer,
    add_training_options,
    config_from_args,
    configure_logging,
    default_threads,
    seed_everything,
)


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--init", required=True, type=Path, help="distilled checkpoint (pretrained)")
    ap.add_argument("--night", required=True, type=Path, help="NIGHT folder (holding data.csv)")
    ap.add_argument("--margin", required=True, type=float, help="hinge-loss margin")
    ap.add_argument("--min-votes", type=int, default=6, help="keep triplets with this many votes")
    ap.add_argument("--out", required=True, type=Path, help="checkpoint to write (stage finetuned)")
    add_training_options(ap, lr=0.01, epochs=1, batch_size=32)
    args = ap.parse_args(argv)
    default_threads()
    env, device = init_distributed(args.device)
    configure_logging(env)
    try:
        cfg = config_from_args(args)
        seed_everything(cfg.seed)
        net, init = load_checkpoint(args.init, map_location="cpu")
        df = read_night(args.night, min_votes=args.min_votes, splits=["train"])
        dataset = NightTriplets(df, net.image_size)
        trainer = Trainer(cfg, env, device)
        net = trainer.fit(net, FinetuneTask(dataset, args.margin), fingerprint_extra={
            "task": "finetune", "margin": args.margin, "min_votes": args.min_votes,
            # Content, not paths: a re-distilled init or changed NIGHT csv starts afresh.
            "init_sha256": sha256_file(args.init),
            "night_csv_sha256": sha256_file(find_night_root(args.night) / "data.csv"),
            "model_config": dict(net.config)})
        if env.is_main:
            save_checkpoint(args.out, net, stage="finetuned", margin=args.margin,
                            teacher=init.get("teacher", "unknown"), meta={
                                "init": str(args.init), "epochs": cfg.epochs,
                                "global_batch": cfg.batch_size * env.world_size, "lr": cfg.lr,
                                "betas": [cfg.beta1, cfg.beta2],
                                "weight_decay": cfg.weight_decay, "schedule": cfg.schedule,
                                "warmup_steps": cfg.warmup_steps, "seed": cfg.seed,
                                "amp": cfg.amp, "triplets": len(dataset),
                                "min_votes": args.min_votes, "world_size": env.world_size,
                                "loss": "hinge"})
            print(f"finetune: wrote {args.out}")
            clear_resume(cfg.workdir)
    except (FileNotFoundError, ValueError, KeyError) as exc:
        print(f"finetune: {exc}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    return 0
