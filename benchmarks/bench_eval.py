"""Eval throughput of a LipSim backbone with and without the cached SLL rescaling vectors.

    python benchmarks/bench_eval.py [--preset small] [--image-size 224] [--emb-dim 1792]
                                    [--batches 1 8] [--iters 3] [--threads 1] [--device cpu]

t depends on the weights only; without the cache every forward recomputes it, which for the
small preset means 7 Gram matrices W W^T of a 1024 x 8820 weight -- comparable to or more
than the convolutions of a small batch. "uncached" runs the same forward in train mode
(no layer behaves differently in train mode except the cache), both under no_grad.
Prints one table row per batch size with images/s for both paths and their ratio.
"""

from __future__ import annotations

import argparse
import time

import torch


def _images_per_s(net, x, iters: int, sync) -> float:
    with torch.no_grad():
        net(x)  # warm-up (and, in eval mode, fills the cache)
        sync()
        start = time.perf_counter()
        for _ in range(iters):
            net(x)
        sync()
    return iters * x.shape[0] / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--preset", default="small")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--emb-dim", type=int, default=1792)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)

    from lipsim.models import build_model

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    net = build_model(args.preset, args.image_size, args.emb_dim).to(device)
    n = sum(p.numel() for p in net.parameters())
    print(
        f"preset {args.preset}, {args.image_size}px, emb {args.emb_dim}, {n / 1e6:.1f}M "
        f"params, device {device}, {args.threads} thread(s), {args.iters} iters/point, "
        f"torch {torch.__version__}"
    )
    print(f"{'batch':>5} {'uncached img/s':>15} {'cached img/s':>13} {'speed-up':>9}")
    for b in args.batches:
        x = torch.rand(b, 3, args.image_size, args.image_size, device=device)
        uncached = _images_per_s(net.train(), x, args.iters, sync)
        cached = _images_per_s(net.eval(), x, args.iters, sync)
        with torch.no_grad():  # both paths compute the same function
            ref = net.train()(x)
            out = net.eval()(x)
        err = ((out - ref).abs().max() / ref.abs().max()).item()
        print(
            f"{b:>5} {uncached:>15.2f} {cached:>13.2f} {cached / uncached:>8.2f}x"
            f"   (max rel. diff {err:.1e})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
