"""`python -m lipsim distill --cache-dir DIR --images DIR --teacher NAME --workdir DIR
--out CKPT [--mirror-cache-dir DIR] [config options]`

Trains a LipSim student from scratch to regress the cached teacher embeddings (emb_dim is
read from the cache) and writes the final checkpoint (stage "pretrained", with the final
Adam state, so finetuning can continue it) to --out. The config options are the distill
section's (config/README.md); its recipe options (crop, teacher view, RMSE reduction, jitter
input) are described in lipsim.train.distill; the caches must have been filled with
the same --crop, the mirrored one with `cache-fill --mirror`.
Runs as 1 process, under torchrun, or under `srun` (one task per GPU): see
lipsim.train.distributed for the environment variables read.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import torch

from lipsim.cli._args import add_config_options, parser
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


def _fill_config(cache_dir: Path) -> dict:
    return json.loads((cache_dir / "part-0.json").read_text(encoding="utf-8"))["config"]


def _check_cache(cache_dir: Path, teacher: str, crop: str, mirror: bool) -> None:
    """The cache holds what this run regresses: the teacher, the crop and the view."""
    config = _fill_config(cache_dir)
    if config["teacher"] != teacher:
        raise CacheError(
            f"--teacher {teacher} but the cache {cache_dir} holds embeddings of "
            f"{config['teacher']!r}"
        )
    # Caches filled before the crop was an option were all resize_center and not mirrored.
    if config.get("crop", "resize_center") != crop:
        raise CacheError(
            f"--crop {crop} but the cache {cache_dir} was filled with "
            f"cache-fill --crop {config.get('crop', 'resize_center')}"
        )
    if mirror and not config.get("mirror", False):
        raise CacheError(f"--mirror-cache-dir {cache_dir} was filled without cache-fill --mirror")
    if not mirror and config.get("mirror", False):
        raise CacheError(
            f"--cache-dir {cache_dir} holds mirrored crops (cache-fill --mirror); "
            "pass it as --mirror-cache-dir"
        )


def _to_cpu(obj):
    """An optimizer state dict with every tensor on the CPU (the checkpoint is portable)."""
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def build_parser() -> argparse.ArgumentParser:
    ap = parser(__name__, __doc__)
    ap.add_argument(
        "--cache-dir", required=True, type=Path, help="embedding cache (with index.parquet)"
    )
    ap.add_argument(
        "--images", required=True, type=Path, help="the image folder given to cache-list"
    )
    ap.add_argument("--teacher", required=True, help="teacher name; must match the cache's")
    ap.add_argument("--out", required=True, type=Path, help="final checkpoint (stage pretrained)")
    ap.add_argument(
        "--no-augment", action="store_true", help="both views = the plain image (tests, debugging)"
    )
    ap.add_argument(
        "--mirror-cache-dir",
        type=Path,
        default=None,
        help="cache of the mirrored crops (cache-fill --mirror), for --teacher-view flipped",
    )
    add_training_options(ap)
    # the distill section (the loop's hyperparameters and the recipe: lipsim.train.distill),
    # model.preset, image_size, device
    add_config_options(ap, "distill")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if (args.teacher_view == "flipped") != (args.mirror_cache_dir is not None):
        ap.error("--mirror-cache-dir is needed with --teacher-view flipped, and only then")
    default_threads()
    env, device = init_distributed(args.device)
    configure_logging(env)
    try:
        cache = EmbeddingCache(args.cache_dir)
        _check_cache(args.cache_dir, args.teacher, args.crop, mirror=False)
        mirror = None
        if args.mirror_cache_dir is not None:
            mirror = EmbeddingCache(args.mirror_cache_dir)
            _check_cache(args.mirror_cache_dir, args.teacher, args.crop, mirror=True)
        cfg = config_from_args(args, "distill")
        seed_everything(cfg.seed)
        net = build_model(args.preset, args.image_size, cache.emb_dim)
        dataset = DistillDataset(
            cache,
            args.images,
            args.image_size,
            crop=args.crop,
            teacher_view=args.teacher_view,
            jitter_input=args.jitter_input,
            mirror=mirror,
            seed=cfg.seed,
            augment=not args.no_augment,
        )
        trainer = Trainer(cfg, env, device)
        net = trainer.fit(
            net,
            DistillTask(dataset, rmse_reduction=args.rmse_reduction),
            fingerprint_extra={
                "task": "distill",
                "preset": args.preset,
                "image_size": args.image_size,
                "emb_dim": cache.emb_dim,
                "teacher": args.teacher,
                "augment": not args.no_augment,
                # A refilled cache (same options, new embeddings) must not resume an old run.
                "cache": _cache_digest(args.cache_dir),
                "mirror_cache": _cache_digest(args.mirror_cache_dir) if mirror else None,
            },
        )
        if env.is_main:
            save_checkpoint(
                args.out,
                net,
                stage="pretrained",
                teacher=args.teacher,
                meta={
                    **cfg.recipe,
                    "global_batch": cfg.batch_size * env.world_size,
                    "images": len(dataset),
                    "world_size": env.world_size,
                    "augment": not args.no_augment,
                    "cache_dir": str(args.cache_dir),
                    "mirror_cache_dir": str(args.mirror_cache_dir) if mirror else None,
                },
                optimizer_state=_to_cpu(trainer.optimizer.state_dict()),
            )
            print(f"distill: wrote {args.out}")
            clear_resume(cfg.workdir)
    finally:
        cleanup()
    return 0
