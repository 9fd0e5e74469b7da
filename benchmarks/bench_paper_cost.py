"""Estimated device-hours of the paper run, per rule, from model costs measured on this device.

    python benchmarks/bench_paper_cost.py [--config config/paper.yaml] [--device auto]
        [--iters 3] [--max-batch N] [--threads N] [--robust-share 1.0]

1. The DAG: `snakemake -n -p --configfile CONFIG` lists every job of the run with its command
   line, and every number the cost depends on is read from those command lines -- i.e. from
   the config as the workflow resolves it: epochs, batch sizes, the attack grid and budgets
   (lipsim.attacks.BUDGETS), PGD steps, triplet caps, metrics, image counts of figure 3b and
   retrieval, the DDP layout of distillation.
2. Data sizes: from the config for generated data (the demo); for real data, which no config
   holds: ImageNet-1k train images (counted under imagenet.path when the folder exists, else
   `--imagenet-images`), NIGHT train and test triplets (read from the NIGHT folder when it
   exists, else `--night-train` / `--night-test`, estimates), the natural-image folder (COCO
   val2017; counted when present, else `--gallery-images`).
3. Costs measured here, per model, at the batch size its jobs use (capped by --max-batch,
   default 2 on a CPU, where a batch of 256 ViT-B/16 images takes minutes and the cost per
   image hardly depends on the batch; a training step, whose rescaling vectors are computed
   once per step, is extrapolated linearly from the cap and half the cap), median of
   --iters timed calls after one warm-up:
   - img_fwd: an embedding forward per image (LipSim certify/evaluate, teacher cache fill);
   - train_fwdbwd: a training step's forward + backward per image (LipSim, weights trainable,
     bf16 autocast on a GPU when the job asks for it);
   - row_fwd / row_fwdbwd: one 2AFC adapter row (reference embedding + distances to its
     cached pair; both pair distances in full for LPIPS / DISTS / l2) without / with the
     gradient w.r.t. the reference -- the unit of attacks, figure 3b and retrieval.
   LipSim models are the configured preset with seeded random weights; teachers and
   baselines are their real architectures with random weights (no download).
4. Work per job, in those units:
   cache-fill   images / parts  x img_fwd (teacher)
   distill      epochs x images x 2 views x train_fwdbwd; wall time = device-hours / processes
   finetune     epochs x train triplets x 3 images x train_fwdbwd
   certify      test triplets x 3 img_fwd;  evaluate: test triplets x (3 img_fwd or 1 row_fwd)
   attack       per triplet: 2 img_fwd (x0/x1) + 2 row_fwd (clean checks), and the passes
                the attack's registry entry counts (lipsim.attacks.run, `passes`):
                AutoAttack: APGD iters x restarts row_fwdbwd + share x (FAB iters x (row_fwdbwd +
                row_fwd) + Square queries x row_fwd) -- share = --robust-share, the triplets
                still unbroken when FAB and Square run (1.0: the upper bound of a robust model);
                PGD: steps x restarts row_fwdbwd
   distances    images x (steps row_fwdbwd + 2 row_fwd)
   retrieval    gallery x img_fwd + queries x eps>0 x (steps row_fwdbwd + row_fwd)
   Other rules (data checks, tables, figures, manifest) use no accelerator and are listed
   with 0.
Prints one line per rule: jobs, device-hours in total, the longest job in hours, and the
limit of the job's `runtime` resource in the config.
"""

from __future__ import annotations

import argparse
import collections
import shlex
import subprocess
import sys
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # device_check, also when this file is loaded by path

from device_check import timed  # noqa: E402

# rule -> the config section holding its cluster resources (shown as the job's time limit)
RESOURCES = {
    "cache-fill": ("resources", "cache"),
    "distill": ("distill", "resources"),
    "finetune": ("finetune", "resources"),
    "certify": ("certify", "resources"),
    "evaluate": ("resources", "eval"),
    "attack": ("attacks", "resources"),
    "distances": ("resources", "eval"),
    "retrieval": ("resources", "eval"),
}


# ---- the DAG ------------------------------------------------------------------------------
def dag_jobs(config: Path) -> list[tuple[str, dict, str]]:
    """(lipsim step, {option: [values]}, launcher prefix) of every job of the DAG.

    --forceall: the cost of the whole run, whatever outputs this checkout already holds."""
    out = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "-p", "-c1", "--forceall"]
        + ["--configfile", str(config)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(f"bench_paper_cost: snakemake dry run failed:\n{out.stderr[-2000:]}")
    jobs = []
    for line in out.stdout.splitlines():
        if not line.startswith("Shell command:") or "-m lipsim " not in line:
            continue
        cmd = line[len("Shell command:") :].split(" > ")[0]
        prefix, rest = cmd.split("python -m lipsim ", 1)
        words = shlex.split(rest)
        opts: dict[str, list[str]] = {}
        key = None
        for w in words[1:]:
            if w.startswith("--"):
                key = w[2:]
                opts[key] = []
            elif key is not None:
                opts[key].append(w)
        jobs.append((words[0], opts, prefix))
    return jobs


def _one(opts, key, cast=str, default=None):
    vals = opts.get(key)
    return cast(vals[0]) if vals else default


# ---- data sizes ---------------------------------------------------------------------------
def data_sizes(cfg: dict, args) -> dict:
    sizes = {
        "imagenet": args.imagenet_images,
        "night_train": args.night_train,
        "night_test": args.night_test,
        "gallery": args.gallery_images,
        "source": [],
    }
    # Generated data (the demo): the config says how much.
    if cfg["imagenet"]["source"] == "generate":
        g = cfg["imagenet"]["generate"]
        sizes["imagenet"] = g["classes"] * g["per_class"]
    if cfg["night"]["source"] == "generate":
        g = cfg["night"]["generate"]
        sizes["night_train"], sizes["night_test"] = g["n_train"], g["n_test"]
    if cfg["natural_images"]["source"] == "generate":
        sizes["gallery"] = cfg["natural_images"]["generate"]["n"]
    if "generate" in (
        cfg["imagenet"]["source"],
        cfg["night"]["source"],
        cfg["natural_images"]["source"],
    ):
        sizes["source"].append("generated data: sizes from the config")
    im = cfg["imagenet"].get("path") if cfg["imagenet"]["source"] == "path" else None
    if im and (ROOT / im / "train").is_dir():
        from lipsim.data.folders import IMAGE_SUFFIXES

        sizes["imagenet"] = sum(
            1 for p in (ROOT / im / "train").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
        )
        sizes["source"].append(f"ImageNet counted under {im}")
    night = ROOT / "results" / cfg["run"] / "data" / "night"
    if (night / "data.csv").exists():
        from lipsim.data.night import read_night

        votes = cfg["night"]["min_votes"]
        sizes["night_train"] = len(read_night(night, min_votes=votes, splits=["train"]))
        sizes["night_test"] = len(
            read_night(night, min_votes=votes, splits=["test_imagenet", "test_no_imagenet"])
        )
        sizes["source"].append(f"NIGHT read from {night}")
    nat = cfg["natural_images"].get("path") if cfg["natural_images"]["source"] == "path" else None
    if nat and (ROOT / nat).is_dir():
        from lipsim.retrieval import list_images

        sizes["gallery"] = len(list_images(ROOT / nat))
        sizes["source"].append(f"natural images counted under {nat}")
    return sizes


# ---- costs --------------------------------------------------------------------------------
def _timed(fn, iters: int, device) -> float:
    """Median seconds of `iters` calls after a warm-up one (allocator, cached SLL rescaling
    vectors, kernels): device_check.timed's second figure."""
    return timed(fn, iters, device)[1]


class Costs:
    """Seconds per image / per row, measured lazily and memoised per (model, unit, batch)."""

    def __init__(self, args, device, lipsim_arch: dict, image_size: int):
        self.args, self.device = args, device
        self.arch, self.size = lipsim_arch, image_size
        self.models: dict = {}
        self.memo: dict = {}

    def batch(self, b: int) -> int:
        cap = self.args.max_batch or (2 if self.device.type == "cpu" else 0)
        return min(b, cap) if cap else b

    def model(self, name: str):
        if name not in self.models:
            from lipsim.factory import build_metric
            from lipsim.metric import load

            if name == "lipsim":
                m = load(
                    self.arch["preset"],
                    device=self.device,
                    image_size=self.size,
                    emb_dim=self.arch["emb_dim"],
                    pretrained=False,  # seeded random weights: timing only
                )
            else:
                m = build_metric(
                    name, device=self.device, random_weights=True, image_size=self.size
                )
            self.models[name] = m
        return self.models[name]

    def get(self, name: str, unit: str, batch: int, amp: bool = False) -> float:
        """Seconds per item at `batch`. Above the cap: the cost per item at the cap, except
        for a training step, whose per-step work (LipSim's rescaling vectors, computed from
        the weights once per step) does not grow with the batch: there a step is taken to
        cost a + c * batch, a and c fitted on the cap and half the cap."""
        key = (name, unit, batch, amp)
        if key not in self.memo:
            b = self.batch(batch)
            t = self._measure(name, unit, b, amp)
            how = f"batch {b}"
            if b < batch and b > 1 and unit == "train_fwdbwd":
                lo = b // 2
                t_lo = self._measure(name, unit, lo, amp)
                per = (t - t_lo) / (b - lo)
                # a per-call part below zero is measurement noise: no extrapolation then
                if per > 0 and t_lo - per * lo > 0:
                    t = t_lo + per * (batch - lo)
                    b = batch
                    how = f"batch {batch} from {lo}, {self.batch(batch)}"
            self.memo[key] = t / b
            print(
                f"  measured {name:18s} {unit:13s} {how:20s} {1e3 * self.memo[key]:10.2f} "
                "ms per item",
                flush=True,
            )
        return self.memo[key]

    def _measure(self, name, unit, b, amp) -> float:
        from lipsim.attacks import TwoAFCAdapter, frozen

        m, dev, it = self.model(name), self.device, self.args.iters
        g = torch.Generator().manual_seed(0)
        x = torch.rand(b, 3, self.size, self.size, generator=g).to(dev)
        if unit == "train_fwdbwd":
            m.train()
            m.requires_grad_(True)

            def step():
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    loss = m.embed(x).float().square().mean()
                loss.backward()
                m.zero_grad(set_to_none=True)

            try:
                return _timed(step, it, dev)
            finally:
                m.requires_grad_(False)
                m.eval()
        with frozen(m):
            if unit == "img_fwd":
                with torch.no_grad():
                    return _timed(lambda: m.embed(x), it, dev)
            adapter = TwoAFCAdapter(m)
            adapter.set_pairs(torch.rand_like(x), torch.rand_like(x))
            if unit == "row_fwd":
                with torch.no_grad():
                    return _timed(lambda: adapter(x), it, dev)

            def fwdbwd():
                z = x.clone().requires_grad_(True)
                logits = adapter(z)
                torch.autograd.grad((logits[:, 0] - logits[:, 1]).sum(), z)

            return _timed(fwdbwd, it, dev)


def _metric_name(spec: str) -> str:
    # lipsim:PATH, lipsim-cosine:PATH, lipsim-ball:PATH (lipsim.factory.build_metric)
    return "lipsim" if spec.split(":", 1)[0] in ("lipsim", "lipsim-cosine", "lipsim-ball") else spec


# ---- work per job -------------------------------------------------------------------------
def job_seconds(step, o, prefix, costs: Costs, sizes: dict, args) -> float:
    from lipsim.attacks import AttackSpec, AutoAttackConfig
    from lipsim.registry import builder

    c = costs.get
    if step == "cache-fill":
        return (
            sizes["imagenet"]
            / _one(o, "parts", int)
            * c(_one(o, "teacher"), "img_fwd", _one(o, "batch-size", int))
        )
    if step == "distill":
        amp = _one(o, "amp") == "bf16" and costs.device.type == "cuda"
        views = 2
        b = _one(o, "batch-size", int) * views
        return (
            _one(o, "epochs", int) * sizes["imagenet"] * views * c("lipsim", "train_fwdbwd", b, amp)
        )
    if step == "finetune":
        amp = _one(o, "amp") == "bf16" and costs.device.type == "cuda"
        b = _one(o, "batch-size", int) * 3
        return (
            _one(o, "epochs", int) * sizes["night_train"] * 3 * c("lipsim", "train_fwdbwd", b, amp)
        )
    n_test = sizes["night_test"]
    if step == "certify":
        return n_test * 3 * c("lipsim", "img_fwd", _one(o, "batch-size", int))
    name = _metric_name(_one(o, "metric", default=""))
    if step == "evaluate":
        b = _one(o, "batch-size", int)
        if getattr(costs.model(name), "has_embedding", False):
            return n_test * 3 * c(name, "img_fwd", b)
        return n_test * c(name, "row_fwd", b)
    if step == "attack":
        b = _one(o, "batch-size", int)
        cap = _one(o, "max-triplets", int, 0)
        n = min(n_test, cap) if cap > 0 else n_test
        fwd, fwdbwd = c(name, "row_fwd", b), c(name, "row_fwdbwd", b)
        pair = (
            2 * c(name, "img_fwd", b) if getattr(costs.model(name), "has_embedding", False) else 0.0
        )
        # The attack's own count of adapter passes per triplet (its registry entry).
        kind, norm = _one(o, "attack"), _one(o, "norm")
        eps = _one(o, "eps", float) / _one(o, "eps-scale", float, 1.0)
        spec = AttackSpec(
            kind,
            norm,
            eps,
            # every job names a budget; an eps of 0 fails in the job itself for AutoAttack
            autoattack=AutoAttackConfig.from_budget(_one(o, "budget"), norm, eps) if eps else None,
            steps=_one(o, "steps", int),
            restarts=_one(o, "restarts", int, 1),
        )
        grads, fwds = builder("attack", kind).passes(spec, args.robust_share)
        return n * (pair + 2 * fwd + grads * fwdbwd + fwds * fwd)
    if step == "distances":
        b = args.attack_batch
        return _one(o, "n-images", int) * (
            _one(o, "steps", int) * c(name, "row_fwdbwd", b) + 2 * c(name, "row_fwd", b)
        )
    if step == "retrieval":
        b = args.attack_batch
        eps = [float(e) for e in o.get("eps", [])]
        return sizes["gallery"] * c(name, "img_fwd", b) + _one(o, "n-queries", int) * sum(
            e > 0 for e in eps
        ) * (_one(o, "steps", int) * c(name, "row_fwdbwd", b) + c(name, "row_fwd", b))
    return 0.0


def _processes(prefix: str) -> int:
    words = prefix.split()
    n = {w.split("=")[0]: w.split("=")[1] for w in words if w.startswith("--") and "=" in w}
    if "--nodes" in n:
        return int(n["--nodes"]) * int(n.get("--ntasks-per-node", 1))
    for w in words:
        if w.startswith("--nproc_per_node="):
            return int(w.split("=")[1])
    return 1


def _h(hours: float) -> str:
    return f"{hours:,.1f}" if hours >= 100 else f"{hours:.3g}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", type=Path, default=ROOT / "config" / "paper.yaml")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--iters", type=int, default=3, help="timed calls per measurement")
    ap.add_argument(
        "--max-batch",
        type=int,
        default=None,
        help="cap on measured batch sizes (default: 2 on CPU, none on GPU)",
    )
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument(
        "--robust-share",
        type=float,
        default=1.0,
        help="share of attacked triplets still unbroken when FAB and Square run",
    )
    ap.add_argument(
        "--imagenet-images",
        type=int,
        default=1_281_167,
        help="ImageNet-1k train images, when imagenet.path is absent",
    )
    ap.add_argument(
        "--night-train",
        type=int,
        default=16_000,
        help="NIGHT train triplets (>= min votes), when NIGHT is absent (estimate)",
    )
    ap.add_argument(
        "--night-test",
        type=int,
        default=2_000,
        help="NIGHT test triplets (>= min votes), when NIGHT is absent (estimate)",
    )
    ap.add_argument(
        "--gallery-images",
        type=int,
        default=5_000,
        help="natural-image folder size (COCO val2017), when absent",
    )
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from lipsim.device import resolve_device
    from lipsim.registry import metric_card

    device = resolve_device(args.device)
    from lipsim.configcheck import validate_config

    cfg = validate_config(
        yaml.safe_load(args.config.read_text()),
        ROOT / "workflow" / "schemas" / "config.schema.yaml",
    )
    jobs = dag_jobs(args.config)
    distill = next((o for s, o, _ in jobs if s == "distill"), None)
    preset = _one(distill, "preset") if distill else cfg["model"]["preset"]
    size = _one(distill, "image-size", int) if distill else cfg["image_size"]
    teacher = _one(distill, "teacher") if distill else cfg["teacher"]["name"]
    args.attack_batch = next((_one(o, "batch-size", int) for s, o, _ in jobs if s == "attack"), 1)
    sizes = data_sizes(cfg, args)
    arch = {"preset": preset, "emb_dim": metric_card(teacher).emb_dim}
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} thread(s)"
    )
    print(
        f"bench_paper_cost: {args.config.name}: {len(jobs)} jobs; LipSim {preset} at {size} px "
        f"(emb {arch['emb_dim']}); device {name}; ImageNet {sizes['imagenet']:,} images, "
        f"NIGHT {sizes['night_train']:,} train / {sizes['night_test']:,} test triplets, "
        f"{sizes['gallery']:,} natural images"
        + (f" ({'; '.join(sizes['source'])})" if sizes["source"] else " (estimates)"),
        flush=True,
    )
    costs = Costs(args, device, arch, size)
    per_rule: dict[str, list[float]] = collections.defaultdict(list)
    procs: dict[str, int] = {}
    for step, o, prefix in jobs:
        per_rule[step].append(job_seconds(step, o, prefix, costs, sizes, args) / 3600)
        procs[step] = _processes(prefix)
    print(f"\n{'rule':18s} {'jobs':>5s} {'device-h':>12s} {'longest job h':>14s} {'limit h':>8s}")
    total = 0.0
    for step, hours in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])):
        sec = RESOURCES.get(step)
        limit = cfg.get(sec[0], {}).get(sec[1], {}).get("runtime") if sec else None
        longest = max(hours) / procs[step]  # a DDP job's wall time is shared by its processes
        total += sum(hours)
        print(
            f"{step:18s} {len(hours):5d} {_h(sum(hours)):>12s} {_h(longest):>14s} "
            f"{'' if limit is None else f'{limit / 60:8.1f}'}"
        )
    print(f"{'total':18s} {len(jobs):5d} {_h(total):>12s}")
    if args.robust_share == 1.0:
        print(
            "AutoAttack counted at its upper bound: every attacked triplet survives APGD and "
            "runs FAB-T and Square in full (--robust-share to change)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
