"""Attack throughput: batched vs per-triplet AutoAttack, and the cached adapter vs a naive one.

    python benchmarks/bench_attack.py [batching] [--triplets 64] [--batch-size 32] [--eps 0.5]
    python benchmarks/bench_attack.py batching --device cuda --preset small --budget standard
    python benchmarks/bench_attack.py cache [--preset small] [--triplets 2] [--iters 5]

batching (default): the demo configuration -- the tiny LipSim preset (seeded random weights,
or --checkpoint, e.g. results/demo/checkpoints/margin0.5.pt), generated NIGHT test triplets
at its 32 px, the demo AutoAttack budget (APGD-CE 10 + FAB-T 10 + Square 200 queries), l2 --
attacked through `lipsim.attacks.attack_triplets` (the path of `lipsim attack`) once with
--batch-size 1 (one triplet per AutoAttack call) and once with --batch-size. On a GPU,
`--preset small --budget standard` is the paper's case (224 px, APGD-CE 100 + FAB-T 100 +
Square 5000; seeded random weights: the cost, not the score, is what is measured). Prints
triplets/s for both, their ratio, and both attacked 2AFC scores (they differ only because a
batched call draws its random numbers for the whole batch).

cache: seconds per triplet of pyautoattack's APGD-CE at batch 1, three variants attacking
the same triplets with the same seeds (same trajectories):
- naive: the adapter re-embeds ref, x0 and x1 on every model call, with the weights left
  trainable (requires_grad) as a model fresh from training is, so every call also rebuilds
  the SLL rescaling vectors t inside the autograd graph;
- emb-cache: x0 / x1 embedded once per triplet, weights still trainable (t rebuilt per call);
- emb-cache + t-cache: x0 / x1 embedded once and the metric frozen (lipsim.attacks.frozen:
  eval mode, no weight gradients), so the SLL layers reuse their cached t -- what
  `lipsim attack` does.
Labels are the metric's own predictions so every triplet is attacked for all iterations.
Prints seconds per triplet, model calls, and the speed-up; also checks the variants agree.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch

from lipsim.attacks import AutoAttackConfig, TwoAFCAdapter, frozen
from lipsim.attacks.autoattack import BUDGETS, autoattack_one, make_autoattack
from lipsim.metric import load


def run(metric, variant: str, ref, x0, x1, cfg, device) -> tuple[float, int, torch.Tensor]:
    cache = variant != "naive"
    adapter = TwoAFCAdapter(metric, cache=cache)
    aa = make_autoattack(adapter, cfg, device)
    outs, calls, start = [], 0, time.perf_counter()
    for i in range(ref.shape[0]):
        adapter.set_pairs(x0[i : i + 1], x1[i : i + 1])  # embedding x0/x1 is part of the cost
        with torch.no_grad():
            label = adapter(ref[i : i + 1]).argmax(1)
        outs.append(autoattack_one(aa, ref[i : i + 1], label, seed=i))
        calls += adapter.calls
    return (time.perf_counter() - start) / ref.shape[0], calls // ref.shape[0], torch.cat(outs)


def batching(args) -> int:
    from lipsim.attacks import AttackSpec, attack_triplets
    from lipsim.cli._night import read_triplets, triplet_loader
    from lipsim.data.synthetic import make_night

    name = args.checkpoint or args.preset
    metric = load(name, device=args.device, pretrained=args.checkpoint is not None)
    size = metric.image_size
    cfg = AutoAttackConfig.from_budget(args.budget, "L2", args.eps)
    spec = AttackSpec("autoattack", "L2", args.eps, seed=0, autoattack=cfg)
    with tempfile.TemporaryDirectory() as tmp:
        night = make_night(
            f"{tmp}/night", seed=0, n_train=0, n_val=0, n_test=args.triplets, image_size=size
        )
        df = read_triplets(night, splits=["test"], min_votes=0)
        print(
            f"bench_attack: LipSim {args.checkpoint or args.preset + ' (random weights)'} "
            f"({size} px), {len(df)} triplets, l2 eps {args.eps}, {cfg}, device {args.device}, "
            f"{args.threads} thread(s)",
            flush=True,
        )
        out = {}
        for bs in (1, args.batch_size):
            loader = triplet_loader(df, size, bs, 0)
            start = time.perf_counter()
            rows = attack_triplets(
                metric,
                loader,
                spec,
                device=args.device,
                ids=df["id"].to_numpy(),
                splits=df["split"].to_numpy(),
                log=None,
                batch_size=bs,
            )
            sec = time.perf_counter() - start
            out[bs] = (
                len(rows) / sec,
                100 * rows["score_clean"].mean(),
                100 * rows["score_adv"].mean(),
                int(rows["group"].max()) + 1,
            )
            print(
                f"  batch {bs:3d}: {out[bs][0]:7.2f} triplets/s  clean {out[bs][1]:.2f}  "
                f"attacked {out[bs][2]:.2f}  ({out[bs][3]} AutoAttack calls)",
                flush=True,
            )
    one, many = out[1], out[args.batch_size]
    print(
        f"  speed-up batch {args.batch_size} vs 1: x{many[0] / one[0]:.2f}; attacked 2AFC "
        f"differs by {many[2] - one[2]:+.2f} points"
    )
    return 0


def cache(args) -> int:

    metric = load(args.preset, device=args.device, pretrained=False)  # seeded: timing only
    size = metric.image_size
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(args.triplets, 3, size, size, generator=g)
    x0 = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    x1 = (ref + 0.2 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    ref, x0, x1 = (t.to(args.device) for t in (ref, x0, x1))
    cfg = AutoAttackConfig(norm="L2", eps=args.eps, attacks=("apgd-ce",), apgd_iters=args.iters)
    print(
        f"bench_attack: LipSim {args.preset} ({size} px, emb {metric.net.emb_dim}, "
        f"{sum(p.numel() for p in metric.parameters()) / 1e6:.2f}M params), "
        f"{args.triplets} triplets, APGD-CE {args.iters} it., {args.threads} thread(s)"
    )
    with torch.no_grad():
        metric.embed(ref[:1])  # warm-up (allocator, first t computation)
    results = {}
    for variant in ("naive", "emb-cache", "emb-cache + t-cache"):
        if variant == "emb-cache + t-cache":
            with frozen(metric):
                results[variant] = run(metric, variant, ref, x0, x1, cfg, args.device)
        else:
            metric.requires_grad_(True)  # as trained: weights require grad -> no t cache
            try:
                results[variant] = run(metric, variant, ref, x0, x1, cfg, args.device)
            finally:
                metric.requires_grad_(False)
        sec, calls, _ = results[variant]
        print(f"  {variant:22s} {sec:8.2f} s/triplet  ({calls} model calls/triplet)", flush=True)
    base = results["naive"][0]
    for variant in ("emb-cache", "emb-cache + t-cache"):
        print(f"  speed-up {variant:22s} x{base / results[variant][0]:.2f}")
    diff = (results["naive"][2] - results["emb-cache + t-cache"][2]).abs().max().item()
    print(f"  max |x_adv(naive) - x_adv(cached)| = {diff:.2e} (same attack, same result)")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    mode = argv.pop(0) if argv and argv[0] in ("batching", "cache") else "batching"
    ap = argparse.ArgumentParser(prog=f"bench_attack.py {mode}", description=__doc__.split("\n")[0])
    ap.add_argument("--triplets", type=int, default=64 if mode == "batching" else 2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", help="torch device (cuda on a GPU machine)")
    if mode == "batching":
        ap.add_argument(
            "--checkpoint", default=None, help="LipSim checkpoint (default: --preset, random)"
        )
        ap.add_argument("--preset", default="tiny", help="LipSim preset (small: 224 px)")
        ap.add_argument(
            "--budget", default="demo", choices=sorted(BUDGETS), help="AutoAttack budget"
        )
        ap.add_argument("--batch-size", type=int, default=32)
        ap.add_argument("--eps", type=float, default=0.5, help="l2 radius")
    else:
        ap.add_argument("--preset", default="small", help="LipSim preset (small: 224 px)")
        ap.add_argument("--iters", type=int, default=5, help="APGD-CE iterations")
        ap.add_argument("--eps", type=float, default=2.0, help="l2 radius")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    return batching(args) if mode == "batching" else cache(args)


if __name__ == "__main__":
    raise SystemExit(main())
