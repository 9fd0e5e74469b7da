"""Benchmark: embedding cache and training throughput.

    .venv/bin/python benchmarks/bench_cache_train.py [--images 512] [--train-steps 2] [--json F]

Measures
  1. cache fill, images/s: `fill_part` with the demo teacher on generated 32px images;
  2. random reads from the memory-mapped cache vs decoding + embedding the same images
     (what one-file-per-image or on-the-fly teachers cost per sample), images/s and ratio;
  3. file count of a cache of ImageNet-1k train (1,281,167 images) at the default shard size;
  4. one distillation training step (two views, RMSE) of the `small` preset at 224px, fp32,
     batch 32, images/s (on the device given; CPU by default).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lipsim.data.synthetic import make_image_folder
from lipsim.embcache import (
    EmbeddingCache,
    fill_part,
    list_images,
    load_train_image,
    n_shards,
    write_index,
)
from lipsim.models import build_model
from lipsim.teachers import get_teacher
from lipsim.train.distill import rmse_per_image

IMAGENET_TRAIN = 1_281_167


def bench_cache(n_images: int, workdir: Path, reads: int) -> dict:
    per_class = max(1, n_images // 8)
    images = make_image_folder(
        workdir / "imagenet", seed=0, classes=8, per_class=per_class, image_size=32
    )
    lst = list_images(images)
    cache = workdir / "cache"
    cache.mkdir()
    lst.to_parquet(cache / "images.parquet", index=False)
    teacher = get_teacher("demo")
    t0 = time.perf_counter()
    fill_part(
        teacher=teacher,
        images=images,
        image_list=lst,
        out_dir=cache,
        part=0,
        parts=1,
        shard_size=100,
        batch_size=64,
        workers=0,
        progress=False,
    )
    fill_s = time.perf_counter() - t0
    write_index(cache, 1)

    reader = EmbeddingCache(cache)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, len(reader), reads)
    reader.get(idx[:10])  # open the maps once (a training run does this once per worker)
    t0 = time.perf_counter()
    for i in idx:
        reader[int(i)]
    read_s = time.perf_counter() - t0

    n_embed = min(reads, 500)
    t0 = time.perf_counter()
    with torch.no_grad():
        for i in idx[:n_embed]:
            teacher.embed(load_train_image(images / reader.paths[int(i)], 32)[None])
    embed_s = time.perf_counter() - t0
    read_rate, embed_rate = reads / read_s, n_embed / embed_s
    return {
        "images": len(lst),
        "fill_images_per_s": len(lst) / fill_s,
        "random_read_images_per_s": read_rate,
        "decode_embed_images_per_s": embed_rate,
        "read_vs_decode_embed": read_rate / embed_rate,
    }


def bench_files(shard_size: int = 1000, parts: int = 16) -> dict:
    shards = n_shards(IMAGENET_TRAIN, shard_size)
    return {
        "imagenet_images": IMAGENET_TRAIN,
        "shard_size": shard_size,
        "shards": shards,
        "files_total": shards + parts + 2,  # + part manifests, images.parquet, index
        "parts_assumed": parts,
        "shard_mib_float16_1792": 1000 * 1792 * 2 / 2**20,
    }


def bench_train(steps: int, batch: int, device: str) -> dict:
    torch.manual_seed(0)
    net = build_model("small", 224, 1792).to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.5, 0.9))
    v = torch.rand(2 * batch, 3, 224, 224, device=device)
    target = torch.randn(batch, 1792, device=device)

    def step():
        out = net(v)
        loss = 0.5 * (
            rmse_per_image(out[:batch], target).mean() + rmse_per_image(out[batch:], target).mean()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = []
    for i in range(steps + 1):  # the first is a warm-up (allocations, first-call overheads)
        t0 = time.perf_counter()
        step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        print(f"train step {i}: {times[-1]:.1f} s", file=sys.stderr, flush=True)
    dt = float(np.mean(times[1:])) if steps else times[0]
    return {
        "preset": "small",
        "image_size": 224,
        "batch": batch,
        "views": 2,
        "params_m": sum(p.numel() for p in net.parameters()) / 1e6,
        "device": device,
        "threads": torch.get_num_threads(),
        "warmup_s": times[0],
        "s_per_step": dt,
        "images_per_s": batch / dt,
        "forward_images_per_s": 2 * batch / dt,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--reads", type=int, default=20000)
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-train", action="store_true")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        out["cache"] = bench_cache(args.images, Path(tmp), args.reads)
    out["files"] = bench_files()
    if not args.skip_train:
        out["train"] = bench_train(args.train_steps, args.batch, args.device)
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
