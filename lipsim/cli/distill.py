"""`python -m lipsim distill --cache-dir DIR --images DIR --preset P --image-size S
--teacher NAME --workdir DIR --out CKPT [training options]`

Trains a LipSim student from scratch to regress the cached teacher embeddings (emb_dim is
read from the cache) and writes the final checkpoint (stage "pretrained") to --out.
Runs as 1 process, under torchrun, or under `srun` (one task per GPU): see
lipsim.train.distributed for the environment variables read.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from lipsim.cli._args import parser
from lipsim.embcache import CacheError, EmbeddingCache
from lipsim.models import build_model, save_checkpoint
from lipsim.train.checkpointing import clear_resume
from lipsim.train.distill import DistillDataset, DistillTask
from lipsim.train.distributed import cleanup, init_distributed
from lipsim.train.trainer import (
    Trainer,
    add_training_options,
    config_from_args,
    configure_logging,
    default_threads,
    seed_everything,
)


def _cache_digest(cache_dir: Path) -> str:
    """Identity of the cache's content: its part manifests hold every shard's sha256."""
    h = hashlib.sha256()
    for p in sorted(cache_dir.glob("part-*.json")) + [cache_dir / "index.parquet"]:
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--cache-dir", required=True, type=Path, help="embedding cache (with index.parquet)")
    ap.add_argument("--images", required=True, type=Path, help="the image folder given to cache-list")
    ap.add_argument("--teacher", required=True, help="teacher name; must match the cache's")
    ap.add_argument("--preset", default="small", help="student architecture preset")
    ap.add_argument("--image-size", type=int, default=224, help="student input size")
    ap.add_argument("--out", required=True, type=Path, help="final checkpoint (stage pretrained)")
    ap.add_argument("--no-augment", action="store_true",
                    help="both views = the plain image (tests, debugging)")
    add_training_options(ap, lr=0.01, epochs=40, batch_size=32)
    args = ap.parse_args(argv)
    default_threads()
    env, device = init_distributed(args.device)
    configure_logging(env)
    try:
        cache = EmbeddingCache(args.cache_dir)
        part0 = json.loads((args.cache_dir / "part-0.json").read_text(encoding="utf-8"))
        cache_teacher = part0["config"]["teacher"]
        if cache_teacher != args.teacher:
            raise CacheError(f"--teacher {args.teacher} but the cache {args.cache_dir} holds "
                             f"embeddings of {cache_teacher!r}")
        cfg = config_from_args(args)
        seed_everything(cfg.seed)
        net = build_model(args.preset, args.image_size, cache.emb_dim)
        dataset = DistillDataset(cache, args.images, args.image_size, seed=cfg.seed,
                                 augment=not args.no_augment)
        trainer = Trainer(cfg, env, device)
        net = trainer.fit(net, DistillTask(dataset), fingerprint_extra={
            "task": "distill", "preset": args.preset, "image_size": args.image_size,
            "emb_dim": cache.emb_dim, "teacher": args.teacher, "augment": not args.no_augment,
            # A refilled cache (same options, new embeddings) must not resume an old run.
            "cache": _cache_digest(args.cache_dir)})
        if env.is_main:
            save_checkpoint(args.out, net, stage="pretrained", teacher=args.teacher, meta={
                "epochs": cfg.epochs, "global_batch": cfg.batch_size * env.world_size,
                "lr": cfg.lr, "betas": [cfg.beta1, cfg.beta2], "weight_decay": cfg.weight_decay,
                "schedule": cfg.schedule, "warmup_steps": cfg.warmup_steps, "seed": cfg.seed,
                "amp": cfg.amp, "images": len(dataset), "world_size": env.world_size,
                "augment": not args.no_augment, "cache_dir": str(args.cache_dir)})
            print(f"distill: wrote {args.out}")
            clear_resume(cfg.workdir)
    except (CacheError, FileNotFoundError, ValueError, KeyError) as exc:
        print(f"distill: {exc}", file=sys.stderr)
        return 1
    finally:
        cleanup()
    return 0
