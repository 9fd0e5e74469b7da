"""Attack cost per triplet: cached adapter vs a naive one (LipSim, pyautoattack APGD-CE).

    python benchmarks/bench_attack.py [--preset small] [--triplets 2] [--iters 5] [--threads 1]

Variants, each attacking the same triplets with the same seeds (same trajectories):
- naive: the adapter re-embeds ref, x0 and x1 on every model call, with the weights left
  trainable (requires_grad) as a model fresh from training is, so every call also rebuilds
  the SLL rescaling vectors t inside the autograd graph;
- emb-cache: x0 / x1 embedded once per triplet, weights still trainable (t rebuilt per call);
- emb-cache + t-cache: x0 / x1 embedded once and the metric frozen (lipsim.attacks.frozen:
  eval mode, no weight gradients), so the SLL layers reuse their cached t -- what
  `lipsim attack` does.
The attack is pyautoattack's APGD-CE (1 restart, --iters iterations) through AutoAttack's
run_standard_evaluation, i.e. the real per-triplet path including AutoAttack's checks.
Labels are the metric's own predictions so every triplet is attacked for all iterations.
Prints seconds per triplet, model calls, and the speed-up; also checks the variants agree.
"""

from __future__ import annotations

import argparse
import time

import torch

from lipsim.attacks import AutoAttackConfig, TwoAFCAdapter, frozen
from lipsim.attacks.autoattack import autoattack_one, make_autoattack
from lipsim.metric import load


def run(metric, variant: str, ref, x0, x1, cfg) -> tuple[float, int, torch.Tensor]:
    cache = variant != "naive"
    adapter = TwoAFCAdapter(metric, cache=cache)
    aa = make_autoattack(adapter, cfg, "cpu")
    outs, calls, start = [], 0, time.perf_counter()
    for i in range(ref.shape[0]):
        adapter.set_pairs(x0[i : i + 1], x1[i : i + 1])  # embedding x0/x1 is part of the cost
        with torch.no_grad():
            label = adapter(ref[i : i + 1]).argmax(1)
        outs.append(autoattack_one(aa, ref[i : i + 1], label, seed=i))
        calls += adapter.calls
    return (time.perf_counter() - start) / ref.shape[0], calls // ref.shape[0], torch.cat(outs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="small", help="LipSim preset (small: 224 px, emb 1792)")
    ap.add_argument("--triplets", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5, help="APGD-CE iterations")
    ap.add_argument("--eps", type=float, default=2.0, help="l2 radius")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    metric = load(args.preset, device="cpu")  # seeded random weights: timing only
    size = metric.image_size
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(args.triplets, 3, size, size, generator=g)
    x0 = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    x1 = (ref + 0.2 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
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
                results[variant] = run(metric, variant, ref, x0, x1, cfg)
        else:
            metric.requires_grad_(True)  # as trained: weights require grad -> no t cache
            try:
                results[variant] = run(metric, variant, ref, x0, x1, cfg)
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


if __name__ == "__main__":
    raise SystemExit(main())
