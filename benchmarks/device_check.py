"""The prepared device check: one command that answers the GPU questions in one short window.

    python benchmarks/device_check.py --device cuda [--budget-s 420] [--out DIR]
    python benchmarks/device_check.py --device cpu --budget-s 300     # the same, on the CPU

Six stages, in this order, each in its own process with its own time box (a crash, an
out-of-memory or a hung CUDA call ends that stage only):
  1. environment  torch / CUDA / cuDNN / NCCL versions, device name and memory, TF32 settings,
                  the packages the pipeline needs
  2. numerics     seeded random weights of the `small` and `tiny` presets, the same inputs on
                  the device (fp32) and on the CPU (fp32 and float64): embeddings, distances and
                  certified radii of both metrics (tolerance: max|a - b| / max|ref| <= 1e-4);
                  bf16 autocast vs fp32; the gradients of one distillation step
  3. smoke        the test config's DAG (config/test.yaml, one teacher and one margin: cache
                  fill, distillation, finetune, certify, AutoAttack, tables 1 and 2) through
                  snakemake with `device=<device>` in a scratch folder, distillation in 2
                  processes when the backend allows; on a GPU the same run with device=cpu
                  beside it, and every output compared (decisions identical, scores within 1 point)
  4. train        images/s and peak memory of the distillation step (lipsim.train.distill's
                  loss + Adam, as the trainer does): fp32, bf16 autocast, channels_last,
                  torch.compile (with its compile time), forward and forward+backward, at the
                  configured batch and the largest that fits; the SLL conv layer alone
  5. attack       AutoAttack (lipsim.attacks.attack_triplets) at batch 1 vs one batch: triplets/s,
                  the ratio, and whether both flip the same triplets
  6. cost         benchmarks/bench_paper_cost.py on the device: device-hours per rule of
                  config/paper.yaml and config/released.yaml

Stage i must end by budget x (share of stages 1..i) after the start, so time a stage leaves
unused passes to the next ones, and the whole run ends inside --budget-s. A stage that fails
or runs out of time is recorded as such (with the rows it finished) and the next one runs.
OUT/device_check.json and OUT/device_check.md are rewritten atomically after every stage;
OUT/device_check.log holds the stages' own output. One line per stage goes to stdout.

On the CPU (`--device cpu`) every stage runs with the CPU in place of the device at reduced
sizes (SIZES below): numerics compares fp32 with float64, the smoke runs once (no second
device to compare with), torch.compile uses the aot_eager backend (inductor's C++ build takes
minutes on 2 cores), and the cost stage prices config/test.yaml.

Stage statuses: ok; mismatch (it ran, a tolerance check failed); partial (rows left out for
lack of time); timeout (stopped at its time box; finished rows kept, the running one marked);
failed (an exception, its last line recorded); not selected (--stages).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's lipsim, also where it is not installed

from lipsim.atomic import write_text  # noqa: E402  (stdlib only: no torch here)

STAGES = {
    "environment": "Environment",
    "numerics": "Numerics: device vs CPU",
    "smoke": "Pipeline smoke (test config)",
    "train": "Training step",
    "attack": "AutoAttack batching",
    "cost": "Paper cost on the device",
}
# Share of the budget per stage (in STAGES order).
SHARES = {
    "cuda": (0.02, 0.10, 0.30, 0.20, 0.16, 0.22),
    "cpu": (0.03, 0.08, 0.60, 0.10, 0.10, 0.09),
}
# What each stage runs at. The GPU sizes are the paper's; the CPU ones fit 2 busy cores.
SIZES = {
    "cuda": {
        # (preset, image size, embedding width, triplets)
        "numerics": [("small", 224, 1792, 8), ("tiny", 32, 128, 16)],
        "grad_batch": 2,
        "train": {"preset": "small", "size": 224, "emb": 1792, "batch": 32, "max_batch": 1024},
        "compile_backend": "inductor",
        "iters": 5,
        "attack": {"preset": "small", "budget": "standard", "eps": 2.0, "triplets": 64},
        "cost": ["config/paper.yaml", "config/released.yaml"],
    },
    "cpu": {
        "numerics": [("small", 32, 128, 2), ("tiny", 32, 128, 8)],
        "grad_batch": 2,
        "train": {"preset": "tiny", "size": 32, "emb": 128, "batch": 4, "max_batch": 8},
        "compile_backend": "aot_eager",
        "iters": 1,
        "attack": {"preset": "tiny", "budget": "demo", "eps": 0.5, "triplets": 16},
        "cost": ["config/test.yaml"],
    },
}
TOL = 1e-4  # relative (max|a - b| / max|ref|) for fp32 vs the CPU
SCORE_TOL = 1.0  # points of a table score, device run vs CPU run
# The smoke run: config/test.yaml cut to one teacher and one margin, tables 1 and 2 as targets.
SMOKE_CONFIG = [
    "teachers=[demo]",
    "margins=[0.5]",
    "cache={parts: 1}",
    "attacks={pgd_l2_eps: [], max_triplets: 8}",
]
SMOKE_TARGETS = ("tables/table1.csv", "tables/table2.csv")
SMOKE_RUN = "test"  # config/test.yaml's run name


# ---- the orchestrator (no torch in this process) -------------------------------------------
def deadlines(budget: float, shares) -> list[float]:
    """Seconds after the start by which each stage must have ended."""
    total, out = 0.0, []
    for s in shares:
        total += s
        out.append(budget * total / sum(shares))
    return out


def child_env() -> dict:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # rules run `python -m lipsim` / `torchrun`: this interpreter's folder first on PATH, and
    # the checkout importable (the device machine has no installed lipsim)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


def stop_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM the process group of `proc` (started with start_new_session), SIGKILL later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def write_json(path: Path, obj) -> None:
    # not lipsim.atomic.write_json: that one sorts the keys, and a row's keys are its columns
    write_text(path, json.dumps(obj, indent=2, default=str) + "\n")


def run_stage(name: str, args, box: float, scratch: Path, log) -> dict:
    result = scratch / f"{name}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--run-stage", name]
    cmd += ["--device", args.device, "--box-s", f"{box:.1f}", "--scratch", str(scratch)]
    if name in args.fail_stage:
        cmd.append("--forced-failure")
    log.write(f"\n===== stage {name} (box {box:.0f} s) =====\n")
    log.flush()
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=child_env()
    )
    _CHILD_GROUPS.append(proc)
    timed_out = False
    try:
        proc.wait(timeout=max(box, 1.0))
    except subprocess.TimeoutExpired:
        timed_out = True
        stop_group(proc)
    rec = json.loads(result.read_text()) if result.exists() else {}
    rec.setdefault("rows", [])
    rec["wall_s"] = round(time.monotonic() - start, 1)
    if timed_out and rec.get("status") not in (None, "running"):
        # it had written its result and was stopped on its way out (CUDA teardown, say)
        rec.setdefault("notes", []).append(f"Finished; stopped at its time box ({box:.0f} s).")
    elif timed_out:
        rec["status"] = "timeout"
        rec["error"] = f"stopped at its time box ({box:.0f} s)"
        for row in rec["rows"]:
            if row.get("status") == "running":
                row["status"] = f"timeout (> {rec['wall_s'] - row.get('_started', 0):.0f} s)"
    elif rec.get("status") in (None, "running"):
        rec["status"] = "failed"
        rec["error"] = f"the stage process exited with {proc.returncode} (see device_check.log)"
    for row in rec["rows"]:
        row.pop("_started", None)
    return rec


def orchestrate(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "command": " ".join(shlex.quote(a) for a in [Path(sys.argv[0]).as_posix()] + sys.argv[1:]),
        "device": args.device,
        "budget_s": args.budget_s,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stages": [],
    }
    ends = deadlines(args.budget_s, SHARES[args.device])
    t0 = time.monotonic()
    # a stage runs in a session of its own: stopped from outside, take it along
    signal.signal(signal.SIGTERM, _stop_children)
    signal.signal(signal.SIGINT, _stop_children)
    with (
        tempfile.TemporaryDirectory(prefix="device_check_") as tmp,
        open(out / "device_check.log", "w") as log,
    ):
        for i, (name, title) in enumerate(STAGES.items()):
            box = ends[i] - (time.monotonic() - t0)
            if name not in args.stages:
                rec = {"status": "not selected", "wall_s": 0.0, "rows": []}
            elif box < 2.0:
                rec = {"status": "timeout", "wall_s": 0.0, "rows": [], "error": "no time left"}
            else:
                rec = run_stage(name, args, box, Path(tmp), log)
            rec.update(name=name, title=title, box_s=round(max(box, 0.0), 1))
            report["stages"].append(rec)
            report["wall_s"] = round(time.monotonic() - t0, 1)
            if name == "environment":
                report["device_name"] = rec.get("device_name", "")
            write_json(out / "device_check.json", report)
            write_text(out / "device_check.md", markdown(report))
            detail = rec.get("summary") or rec.get("error") or ""
            print(
                f"[{i + 1}/{len(STAGES)}] {name:11s} {rec['status']:12s} "
                f"{rec['wall_s']:6.1f} s of {rec['box_s']:5.0f}  {detail}",
                flush=True,
            )
        report["finished"] = True
        write_json(out / "device_check.json", report)
        write_text(out / "device_check.md", markdown(report))
    print(f"device_check: {report['wall_s']:.0f} s; {out / 'device_check.md'}")
    return 0


# ---- the report ------------------------------------------------------------------------------
def _cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def md_table(rows: list[dict]) -> str:
    cols: list[str] = []
    for r in rows:  # every key that has a value in some row, in order of appearance
        cols += [k for k, v in r.items() if k not in cols and v is not None]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def markdown(report: dict) -> str:
    head = [
        f"# Device check: {report.get('device_name') or report['device']}",
        "",
        f"`{report['command']}` -- started {report['started_utc']}, budget "
        f"{report['budget_s']:.0f} s, {report.get('wall_s', 0):.0f} s "
        + ("in all." if report.get("finished") else "so far (unfinished)."),
        "",
    ]
    summary = [
        {
            "stage": f"{i + 1}. {s['name']}",
            "status": s["status"],
            "wall s": s["wall_s"],
            "box s": s["box_s"],
            "summary": s.get("summary") or s.get("error") or "",
        }
        for i, s in enumerate(report["stages"])
    ]
    parts = ["\n".join(head) + "\n" + md_table(summary)]
    for i, s in enumerate(report["stages"]):
        text = [f"## {i + 1}. {s['title']}", f"Status: **{s['status']}**."]
        if s.get("error"):
            text.append(f"Error: `{s['error']}`")
        if s.get("notes"):
            text += s["notes"]
        if s["rows"]:
            text.append(md_table(s["rows"]))
        parts.append("\n\n".join(text))
    return "\n\n".join(parts) + "\n"


# ---- one stage, in its own process -----------------------------------------------------------
class Stage:
    """Rows and checks of the running stage, written to its result file after every change."""

    def __init__(self, name: str, device: str, box: float, scratch: Path):
        self.name, self.device_name, self.scratch = name, device, scratch
        self.sizes = SIZES["cuda" if device.startswith("cuda") else "cpu"]
        self.t0 = time.monotonic()
        # keep a margin to write the last row before the orchestrator stops the process
        self.end = self.t0 + box - max(3.0, 0.05 * box)
        self.rows: list[dict] = []
        self.notes: list[str] = []
        self.extra: dict = {}
        self.summary = ""
        self.failed_checks: list[str] = []
        self.row_errors: list[str] = []
        self.skipped = 0
        self.status = "running"

    @property
    def device(self):
        import torch

        return torch.device(self.device_name)

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def row(self, **cols) -> dict:
        cols["_started"] = round(time.monotonic() - self.t0, 1)
        self.rows.append(cols)
        self.flush()
        return cols

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.failed_checks.append(what)
        return ok

    def skip(self, row: dict, why: str) -> None:
        row["status"] = f"skipped: {why}"
        self.skipped += 1
        self.flush()

    @contextlib.contextmanager
    def guarded(self, row: dict):
        """Run one row: an exception (out of memory, a compile error) fails the row and the
        stage, and the stage's next rows still run."""
        try:
            yield
        except Exception as exc:
            traceback.print_exc()
            msg = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            row["status"] = f"failed: {msg}"
            self.row_errors.append(f"{row.get('what', '')} {row.get('variant', '')}: {msg}")
            self.flush()

    def finish(self) -> None:
        self.status = "mismatch" if self.failed_checks else "partial" if self.skipped else "ok"
        if self.row_errors:
            self.status = "failed"
            self.extra["error"] = f"{len(self.row_errors)} row(s) failed; {self.row_errors[0]}"
        if self.failed_checks:
            self.notes.append("Outside tolerance: " + "; ".join(self.failed_checks) + ".")
        self.flush()

    def fail(self, exc: BaseException) -> None:
        for r in self.rows:
            if r.get("status") == "running":
                r["status"] = "failed"
        self.status = "failed"
        self.extra["error"] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        self.flush()

    def flush(self) -> None:
        write_json(
            self.scratch / f"{self.name}.json",
            {
                **self.extra,
                "status": self.status,
                "summary": self.summary,
                "notes": self.notes,
                "rows": self.rows,
            },
        )


def timed(fn, iters: int, device) -> tuple[float, float]:
    """(seconds of the first call, median seconds of `iters` further calls)."""
    import torch

    def once() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t

    first = once()
    return first, statistics.median(once() for _ in range(max(iters, 1)))


def triplet_images(n: int, size: int, seed: int):
    """(ref, x0, x1, p): n seeded random triplets, x0 nearer to ref than x1 on average."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ref = torch.rand(n, 3, size, size, generator=g)
    x0 = (ref + 0.1 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    x1 = (ref + 0.2 * torch.randn(ref.shape, generator=g)).clamp(0, 1)
    return ref, x0, x1, torch.rand(n, generator=g)


def rel_err(a, ref) -> float:
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    scale = float(ref.abs().max())
    return float((a - ref).abs().max()) / scale if scale > 0 else float((a - ref).abs().max())


def norm_rel_err(a, ref) -> float:
    """||a - ref|| / ||ref|| (l2 over the whole tensor): a gradient check's measure."""
    a, ref = a.detach().double().cpu(), ref.detach().double().cpu()
    scale = float(ref.norm())
    return float((a - ref).norm()) / scale if scale > 0 else float((a - ref).norm())


def peak_gib(device) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


# 1. ------------------------------------------------------------------------------------------
def stage_environment(st: Stage) -> None:
    import importlib.metadata as md

    import torch

    def add(item, value):
        st.row(item=item, value=value)

    add("python", platform.python_version())
    add("torch", torch.__version__)
    add("CUDA (torch build)", torch.version.cuda)
    add("cuDNN", torch.backends.cudnn.version())
    add("CUDA available", torch.cuda.is_available())
    add("CPU cores / torch threads", f"{os.cpu_count()} / {torch.get_num_threads()}")
    for pkg in ("torchvision", "numpy", "pandas", "snakemake", "pyautoattack", "jsonschema"):
        try:
            add(pkg, md.version(pkg))
        except md.PackageNotFoundError:
            add(pkg, "not installed")
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    add("checkout", commit or "(no git here)")
    dev = st.device
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: torch sees no CUDA device on this machine")
        p = torch.cuda.get_device_properties(dev)
        name = torch.cuda.get_device_name(dev)
        add("device", name)
        add("memory GiB", round(p.total_memory / 2**30, 1))
        add("compute capability / SMs", f"{p.major}.{p.minor} / {p.multi_processor_count}")
        nccl = torch.cuda.nccl.version()
        add("NCCL", ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl))
        add("driver visible devices", torch.cuda.device_count())
    else:
        name = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
        add("device", name)
    add(
        "TF32 matmul (torch.backends.cuda.matmul.allow_tf32)", torch.backends.cuda.matmul.allow_tf32
    )
    add("TF32 conv (torch.backends.cudnn.allow_tf32)", torch.backends.cudnn.allow_tf32)
    add("float32 matmul precision", torch.get_float32_matmul_precision())
    st.extra["device_name"] = name
    missing = [r["item"] for r in st.rows if r["value"] == "not installed"]
    st.summary = f"{name}; torch {torch.__version__}, CUDA {torch.version.cuda}" + (
        f"; missing: {', '.join(missing)}" if missing else ""
    )


# 2. ------------------------------------------------------------------------------------------
def _fp32_outputs(net, ref, x0, x1) -> dict:
    """Embeddings, distances and certified radii of both metrics, through the public metric."""
    import torch

    from lipsim.metric import LipSim
    from lipsim.models import METRICS

    out = {}
    for metric in METRICS:
        m = LipSim(net, metric=metric)
        with torch.no_grad():
            out[f"embedding ({metric})"] = m.embed(ref)
            out[f"distance ({metric})"] = m(ref, x0)
            out[f"radius ({metric})"] = m.certified_radius(ref, x0, x1)
    return out


def _float64_outputs(net, ref, x0, x1) -> dict:
    """The same quantities in float64 end to end (the metric itself computes in fp32)."""
    import torch

    from lipsim.certify import radii
    from lipsim.models import METRICS, ball_distance, project

    net64 = copy.deepcopy(net).cpu().double()
    with torch.no_grad():
        f = [net64(t.double()) for t in (ref, x0, x1)]
    out = {}
    for metric in METRICS:
        e = [project(v, metric) for v in f]
        out[f"embedding ({metric})"] = e[0]
        out[f"distance ({metric})"] = ball_distance(e[0], e[1])
        out[f"radius ({metric})"] = radii(*f, metric)["radius"]
    return out


def _step_grads(net, batch, device, dtype) -> tuple[float, dict]:
    """Loss and gradients of one distillation step (lipsim.train.distill's loss)."""
    import torch

    from lipsim.train.distill import DistillTask

    model = copy.deepcopy(net).to(device=device, dtype=dtype).requires_grad_(True).train()
    v0, v1, target, idx = batch
    batch = (v0.to(dtype), v1.to(dtype), target.to(dtype), idx)
    loss, _ = DistillTask(None, rmse_reduction="image").loss(model, batch, torch.device(device))
    loss.backward()
    return float(loss.detach()), {
        n: p.grad for n, p in model.named_parameters() if p.grad is not None
    }


@contextlib.contextmanager
def tf32(enabled: bool | None):
    """TF32 for convolutions and matmuls on or off (None: leave the defaults)."""
    import torch

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    if enabled is not None:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def stage_numerics(st: Stage) -> None:
    import torch

    import lipsim
    from lipsim.metric import LipSim

    dev = st.device
    on_gpu = dev.type != "cpu"
    settings = [("defaults", None)] + ([("TF32 off", False)] if on_gpu else [])
    worst: dict[str, float] = {}
    gaps = []
    for preset, size, emb, n in st.sizes["numerics"]:
        # lipsim.load seeds the weights: the same net on every machine
        net = lipsim.load(preset, pretrained=False, image_size=size, emb_dim=emb).net
        ref, x0, x1, _ = triplet_images(n, size, seed=0)
        exact = _float64_outputs(net, ref, x0, x1)
        cpu32 = _fp32_outputs(net, ref, x0, x1) if on_gpu else None
        dref, dx0, dx1 = (t.to(dev) for t in (ref, x0, x1))
        for label, flag in settings:
            # a fresh copy per setting: the cached SLL vectors t were computed under the last one
            dnet = copy.deepcopy(net).to(dev)
            with tf32(flag):
                got = _fp32_outputs(dnet, dref, dx0, dx1)
            if flag is None:
                fp32_emb = got["embedding (ball)"]
            for q, v in got.items():
                e64 = rel_err(v, exact[q])
                e32 = rel_err(v, cpu32[q]) if on_gpu else None
                err = e32 if on_gpu else e64
                worst[label] = max(worst.get(label, 0.0), err)
                st.check(err <= TOL, f"{preset} {q} ({label}) {err:.2g}")
                st.row(
                    preset=f"{preset}@{size}",
                    quantity=q,
                    settings=label,
                    rel_vs_cpu_fp32=e32,
                    rel_vs_cpu_float64=e64,
                    within_tol=err <= TOL,
                )
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16):
            emb16 = LipSim(dnet).embed(dref)
        gap = rel_err(emb16.float(), fp32_emb)
        gaps.append(gap)
        st.row(
            preset=f"{preset}@{size}",
            quantity="embedding, bf16 autocast vs fp32 (gap)",
            settings="defaults",
            rel_vs_cpu_fp32=None,
            rel_vs_cpu_float64=gap,
            within_tol=None,
        )
        # one training step: the loss and every parameter's gradient, device vs float64 CPU
        b = st.sizes["grad_batch"]
        g = torch.Generator().manual_seed(1)
        batch = (ref[:b], x0[:b], 0.1 * torch.randn(b, emb, generator=g), torch.arange(b))
        loss64, grads64 = _step_grads(net, batch, "cpu", torch.float64)
        loss32, grads32 = _step_grads(net, batch, dev, torch.float32)
        gerr = max(norm_rel_err(grads32[k], grads64[k]) for k in grads64)
        lerr = abs(loss32 - loss64) / abs(loss64)
        for q, err in (
            ("train step: loss", lerr),
            ("train step: gradients (max over params)", gerr),
        ):
            st.check(err <= TOL, f"{preset} {q} {err:.2g}")
            worst["defaults"] = max(worst["defaults"], err)
            st.row(
                preset=f"{preset}@{size}",
                quantity=q,
                settings="defaults",
                rel_vs_cpu_fp32=None,
                rel_vs_cpu_float64=err,
                within_tol=err <= TOL,
            )
    ref_name = "CPU fp32" if on_gpu else "CPU float64"
    st.summary = (
        f"max rel err vs {ref_name} {worst['defaults']:.2g} (tol {TOL:g})"
        + (f", TF32 off {worst['TF32 off']:.2g}" if "TF32 off" in worst else "")
        + f"; bf16 gap {max(gaps):.2g}"
    )
    st.notes.append(
        "rel = max|a - b| / max|reference| over the batch; gradients: ||a - b|| / ||reference|| "
        "per parameter, the largest over the parameters. The train step is lipsim.train.distill's loss (two views, RMSE) in train "
        "mode; its reference is always float64 on the CPU."
    )


# 3. ------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def probe_ddp(backend: str, device: str) -> None:
    """One rank of a 2-process all_reduce (run by the smoke stage, RANK in the environment).

    backend "pipeline": lipsim.train.init_distributed, as distillation starts (NCCL on CUDA,
    gloo on the CPU); "gloo": gloo on the same device, the fallback."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from lipsim.train import init_distributed

    if backend == "pipeline":
        env, dev = init_distributed(device)
    else:
        dev = torch.device("cuda", 0) if device == "cuda" else torch.device("cpu")
        dist.init_process_group(
            backend,
            init_method=f"tcp://127.0.0.1:{os.environ['MASTER_PORT']}",
            rank=int(os.environ["RANK"]),
            world_size=2,
            timeout=timedelta(seconds=60),
        )
    t = torch.full((4,), float(dist.get_rank() + 1), device=dev)
    dist.all_reduce(t)
    if t.tolist() != [3.0] * 4:
        raise RuntimeError(f"all_reduce gave {t.tolist()}, expected [3.0] * 4")
    dist.destroy_process_group()


def _probe(backend: str, device: str, timeout: float) -> tuple[bool, str]:
    port = _free_port()
    procs = []
    for rank in range(2):
        env = dict(child_env(), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2")
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--probe-ddp", backend]
        procs.append(
            subprocess.Popen(
                cmd + ["--device", device],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    errs = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_group(p)
            err = f"no answer in {timeout:.0f} s"
        if p.returncode:
            lines = [ln for ln in (err or "").splitlines() if ln.strip()]
            errs.append(lines[-1][:200] if lines else f"exit {p.returncode}")
    return not errs, errs[0] if errs else "2-process all_reduce ok"


def _distill_layout(st: Stage) -> tuple[int, str]:
    """Processes for distillation and why: 2 where the pipeline's backend allows it."""
    dev = st.device_name
    timeout = min(90.0, max(10.0, st.remaining() / 6))
    ok, msg = _probe("pipeline", dev, timeout)
    backend = "NCCL" if dev == "cuda" else "gloo"
    st.row(
        run="probe",
        what=f"2 ranks, one {dev}, {backend} (the pipeline's)",
        result=msg,
        status="ok" if ok else "refused",
    )
    if ok:
        return 2, f"2 processes ({backend})"
    if dev == "cuda":
        gok, gmsg = _probe("gloo", dev, timeout)
        st.row(
            run="probe",
            what="2 ranks, one cuda, gloo",
            result=gmsg,
            status="ok" if gok else "refused",
        )
        why = "gloo works" if gok else "gloo fails too"
        return 1, (
            f"1 process: NCCL refused 2 ranks on one GPU; {why}, but lipsim.train.distributed "
            "picks NCCL for CUDA"
        )
    return 1, "1 process: gloo refused 2 ranks"


def _snakemake(workdir: Path, results: Path, device: str, procs: int, cores: int):
    workdir.mkdir(parents=True)
    config = list(SMOKE_CONFIG) + [f"results_dir={results}", f"device={device}"]
    if procs > 1:
        config.append(f"distill={{launcher: torchrun, resources: {{tasks_per_node: {procs}}}}}")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile")]
    cmd += ["-d", str(workdir), "--configfile", str(ROOT / "config" / "test.yaml")]
    cmd += ["--config", *config, "--cores", str(cores), "--quiet", "rules", "--"]
    cmd += [str(results / SMOKE_RUN / t) for t in SMOKE_TARGETS]
    log = open(workdir / "snakemake.log", "w")  # noqa: SIM115 (closed with the process)
    proc = subprocess.Popen(
        cmd,
        cwd=workdir,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=child_env(),
        start_new_session=True,
    )
    _CHILD_GROUPS.append(proc)
    return proc, log


def _compare_tables(run: Path, ref: Path) -> float:
    import pandas as pd

    worst = 0.0
    for f in sorted(ref.glob("tables/*.csv")):
        a, b = pd.read_csv(run / f.relative_to(ref)), pd.read_csv(f)
        if a.shape != b.shape or list(a.columns) != list(b.columns):
            return float("inf")
        for c in b.select_dtypes("number").columns:
            diff = (a[c] - b[c]).abs()
            both_nan = a[c].isna() & b[c].isna()
            if (diff.isna() & ~both_nan).any():
                return float("inf")
            worst = max(worst, float(diff.fillna(0).max()) if len(diff) else 0.0)
    return worst


def compare_runs(run: Path, ref: Path) -> dict:
    """Outputs of two runs of the same DAG: files present, table numbers, 2AFC decisions.

    run / ref: the results/{run} folders. Every file of the reference must exist in `run`;
    every number of tables/*.csv must agree within SCORE_TOL; every per-triplet decision
    (d0 < d1, clean and attacked, in every parquet that has them) must be identical."""
    import numpy as np
    import pandas as pd

    files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())
    missing = [str(p) for p in files if not (run / p).is_file()]
    decisions = differ = 0
    for p in files:
        if p.suffix != ".parquet" or str(p) in missing:
            continue
        a, b = pd.read_parquet(run / p), pd.read_parquet(ref / p)
        for d0, d1 in (("d0", "d1"), ("d0_adv", "d1_adv")):
            if d0 in b.columns and d1 in b.columns:
                if len(a) != len(b) or d0 not in a.columns:
                    differ += len(b)
                    decisions += len(b)
                    continue
                same = np.asarray(a[d0] < a[d1]) == np.asarray(b[d0] < b[d1])
                decisions += len(b)
                differ += int((~same).sum())
    return {
        "outputs": len(files),
        "missing": missing,
        "max_table_diff": _compare_tables(run, ref),
        "decisions": decisions,
        "decisions_differ": differ,
    }


def _failure(results: Path, snakemake_log: Path) -> str:
    """The first failed rule and the last line of its log (the exception), for the table."""
    lines = snakemake_log.read_text(errors="replace").splitlines()
    rule = next((ln.strip() for ln in lines if ln.startswith("Error in rule")), "")
    for log in sorted(results.glob("logs/**/*.log"), key=lambda p: p.stat().st_mtime):
        text = log.read_text(errors="replace")
        if "Traceback" in text or "error:" in text:
            last = [ln for ln in text.splitlines() if ln.strip()][-1]
            return f"{rule} {log.relative_to(results)}: {last}"[:300]
    return rule or (lines[-1] if lines else "")


def stage_smoke(st: Stage) -> None:
    procs, layout = _distill_layout(st)
    devices = [st.device_name] + (["cpu"] if st.device_name != "cpu" else [])
    cores = max(1, (os.cpu_count() or 2) // len(devices))  # the two runs side by side
    runs = {}
    for dev in devices:
        work = st.scratch / "smoke" / dev
        proc, log = _snakemake(work / "work", work / "results", dev, procs, cores)
        row = st.row(run=f"snakemake, device={dev}", what=layout, status="running")
        runs[dev] = dict(proc=proc, log=log, work=work, row=row, start=time.monotonic())
    for dev, r in runs.items():
        try:
            rc = r["proc"].wait(timeout=max(st.remaining(), 1.0))
        except subprocess.TimeoutExpired:
            stop_group(r["proc"])
            rc = None
        r["log"].close()
        r["results"] = r["work"] / "results" / SMOKE_RUN
        row = r["row"]
        row["wall_s"] = round(time.monotonic() - r["start"], 1)
        if rc is None:
            row["status"] = "timeout"
            st.skipped += 1
        elif rc:
            row["status"] = f"failed (exit {rc})"
            row["result"] = _failure(r["results"], r["work"] / "work" / "snakemake.log")
            st.check(False, f"snakemake device={dev} exit {rc}")
        else:
            n = sum(1 for p in r["results"].rglob("*") if p.is_file())
            row["status"], row["result"] = "ok", f"{n} files"
        st.flush()
    run = runs[st.device_name]
    if run["row"]["status"] != "ok":
        st.summary = f"the device run did not finish ({run['row']['status']}); {layout}"
        return
    if st.device_name == "cpu":
        ref, versus = run, "itself (the device is the CPU: no second run to compare with)"
    elif runs["cpu"]["row"]["status"] == "ok":
        ref, versus = runs["cpu"], "the same run on the CPU"
    else:
        st.summary = f"the CPU run did not finish: nothing compared; {layout}"
        return
    cmp = compare_runs(run["results"], ref["results"])
    st.check(not cmp["missing"], f"{len(cmp['missing'])} outputs missing")
    st.check(cmp["max_table_diff"] <= SCORE_TOL, f"table diff {cmp['max_table_diff']:.3g}")
    st.check(not cmp["decisions_differ"], f"{cmp['decisions_differ']} decisions differ")
    st.row(
        run="compare",
        what=f"device run vs {versus}",
        result=(
            f"{cmp['outputs']} outputs, {len(cmp['missing'])} missing; table numbers max diff "
            f"{cmp['max_table_diff']:.3g} (tol {SCORE_TOL:g}); {cmp['decisions']} decisions, "
            f"{cmp['decisions_differ']} differ"
        ),
        status="ok",
    )
    st.summary = (
        f"{layout}; vs {'the CPU run' if ref is not run else 'itself'}: "
        f"{len(cmp['missing'])} missing, table diff {cmp['max_table_diff']:.2g}, "
        f"{cmp['decisions_differ']}/{cmp['decisions']} decisions differ"
    )
    st.notes.append(
        f"config/test.yaml with `{' '.join(SMOKE_CONFIG)}`, targets {', '.join(SMOKE_TARGETS)}, "
        "in a scratch folder removed afterwards."
    )


# 4. ------------------------------------------------------------------------------------------
def stage_train(st: Stage) -> None:
    import torch

    import lipsim
    from lipsim.models import PRESETS, SLLConv2d
    from lipsim.train.distill import DistillTask

    dev, sz, iters = st.device, st.sizes["train"], st.sizes["iters"]
    task = DistillTask(None, rmse_reduction="image")
    base = lipsim.load(sz["preset"], pretrained=False, image_size=sz["size"], emb_dim=sz["emb"])
    net = base.net.requires_grad_(True).train().to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-6)  # the trainer's optimiser; lr: timing only
    last_row_s = 0.0  # what the previous row took: a row is left out when less time remains

    def batch_of(b: int, channels_last: bool = False):
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        g = torch.Generator().manual_seed(b)
        views = torch.rand(2 * b, 3, sz["size"], sz["size"], generator=g)
        views = views.to(dev).contiguous(memory_format=fmt)
        target = 0.1 * torch.randn(b, sz["emb"], generator=g).to(dev)
        return views[:b], views[b:], target, torch.arange(b)

    def step_fn(model, batch, amp: bool, backward: bool):
        def step():
            # as lipsim.train.trainer.Trainer.fit does: autocast around the loss only
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                with torch.set_grad_enabled(backward):
                    loss, _ = task.loss(model, batch, dev)
            if backward:
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        return step

    def measure(row: dict, fn, images: int, compile_row: bool = False) -> None:
        nonlocal last_row_s
        reset_peak(dev)
        first, sec = timed(fn, iters, dev)
        last_row_s = first + iters * sec
        row.update(
            images_per_s=round(images / sec, 1),
            ms_per_step=round(1e3 * sec, 2),
            peak_gib=peak_gib(dev),
            compile_s=round(first - sec, 1) if compile_row else None,
            status="ok",
        )
        st.flush()

    def step_row(what: str, variant: str, b: int, backward: bool, need_s: float) -> None:
        row = st.row(what=what, variant=variant, batch=b, images_per_step=2 * b, status="running")
        if st.remaining() < need_s:
            st.skip(row, f"{st.remaining():.0f} s left")
            return
        fmt = torch.channels_last if variant == "channels_last" else torch.contiguous_format
        with st.guarded(row):
            model = net.to(memory_format=fmt)
            if variant == "compile":
                model = torch.compile(net, backend=st.sizes["compile_backend"])
            batch = batch_of(b, variant == "channels_last")
            measure(
                row, step_fn(model, batch, variant == "bf16", backward), 2 * b, variant == "compile"
            )
        net.to(memory_format=torch.contiguous_format)
        opt.zero_grad(set_to_none=True)

    kinds = [("forward", False), ("train step (fwd+bwd+Adam)", True)]
    for variant in ("fp32", "bf16", "channels_last"):
        for what, backward in kinds:
            step_row(what, variant, sz["batch"], backward, 2 * last_row_s)

    # the SLL conv layer alone: conv -> ReLU (scaled by t) -> conv-transpose, the preset's widths
    p = PRESETS[sz["preset"]]
    layer = SLLConv2d(p["channels"], p["conv_inner"]).to(dev).train()
    x = torch.rand(2 * sz["batch"], p["channels"], sz["size"], sz["size"], device=dev)
    for variant in ("fp32", "bf16"):
        for what, backward in (
            ("SLL conv layer, forward", False),
            ("SLL conv layer, fwd+bwd", True),
        ):
            row = st.row(what=what, variant=variant, batch=sz["batch"], images_per_step=len(x))
            if st.remaining() < 2 * last_row_s:
                st.skip(row, f"{st.remaining():.0f} s left")
                continue

            def call(backward=backward, amp=variant == "bf16"):
                with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    with torch.set_grad_enabled(backward):
                        y = layer(x.requires_grad_(backward))
                    if backward:
                        y.float().sum().backward()

            with st.guarded(row):
                measure(row, call, len(x))
    x = layer = None

    largest = largest_batch(st, net, opt, lambda b: step_fn(net, batch_of(b), False, True))
    if largest != sz["batch"]:
        for variant in ("fp32", "bf16", "channels_last"):
            step_row("train step (fwd+bwd+Adam)", variant, largest, True, 2 * last_row_s)
    # last: a compile time is unknown until measured, and a timeout here loses nothing else
    for what, backward in kinds:
        step_row(what, "compile", sz["batch"], backward, 0.0)
    fp32 = next(r for r in st.rows if r["variant"] == "fp32" and r["what"].startswith("train"))
    st.summary = (
        f"{sz['preset']}@{sz['size']} batch {sz['batch']}: fp32 train step "
        f"{fp32.get('images_per_s') or 'n/a'} img/s; largest fp32 batch {largest}"
    )
    st.notes.append(
        "A distillation step of batch b forwards 2b images (two views); images/s counts them. "
        f"torch.compile backend: {st.sizes['compile_backend']}; compile_s = first call - "
        "median call. peak_gib: torch.cuda.max_memory_allocated (empty on the CPU)."
    )


def largest_batch(st: Stage, net, opt, make_step) -> int:
    """The largest batch whose fp32 train step fits: doubling from the configured batch up to
    the cap, then halving the gap to the first one that ran out of memory."""
    import torch

    dev, sz = st.device, st.sizes["train"]
    row = st.row(what="largest fp32 train-step batch", variant="fp32", status="running")
    ok, bad, per_image_s = sz["batch"], None, 0.0
    while True:
        b = ok * 2 if bad is None else (ok + bad) // 2
        if (bad is None and b > sz["max_batch"]) or (bad is not None and bad - ok <= ok // 8):
            break
        if st.remaining() < 3 * per_image_s * b + 2:
            row["note"] = "stopped for time"
            st.skipped += 1
            break
        try:
            t = time.monotonic()
            make_step(b)()
            per_image_s = (time.monotonic() - t) / b
            ok = b
        except torch.cuda.OutOfMemoryError:
            bad = b
        opt.zero_grad(set_to_none=True)
        reset_peak(dev)
    row.update(batch=ok, images_per_step=2 * ok, status="ok")
    row.setdefault(
        "note", f"out of memory at {bad}" if bad else f"the cap ({sz['max_batch']}) fits"
    )
    st.flush()
    return ok


# 5. ------------------------------------------------------------------------------------------
def stage_attack(st: Stage) -> None:
    import numpy as np
    import pandas as pd
    import torch

    import lipsim
    from lipsim.attacks import AttackSpec, AutoAttackConfig, attack_triplets

    dev, sz = st.device, st.sizes["attack"]
    metric = lipsim.load(sz["preset"], device=dev, pretrained=False)
    n = sz["triplets"]
    ref, x0, x1, p = triplet_images(n, metric.image_size, seed=2)
    ids, splits = np.arange(n), np.array(["test"] * n)
    cfg = AutoAttackConfig.from_budget(sz["budget"], "L2", sz["eps"])
    spec = AttackSpec("autoattack", "L2", sz["eps"], seed=0, autoattack=cfg)

    def attack(lo: int, hi: int) -> pd.DataFrame:
        batch = [(ref[lo:hi], x0[lo:hi], x1[lo:hi], p[lo:hi], torch.arange(lo, hi))]
        return attack_triplets(metric, batch, spec, device=dev, ids=ids, splits=splits, log=None)

    def flips(df: pd.DataFrame) -> np.ndarray:
        return np.asarray(df["d0"] < df["d1"]) != np.asarray(df["d0_adv"] < df["d1_adv"])

    # per triplet first, for at most 40% of the stage's time; then the same triplets in one batch
    one = st.row(what="AutoAttack, batch 1", batch=1, status="running")
    start, parts = time.monotonic(), []
    stop = start + 0.4 * st.remaining()
    while len(parts) < n and time.monotonic() < stop:
        parts.append(attack(len(parts), len(parts) + 1))
    sec1 = time.monotonic() - start
    k = len(parts)
    one.update(triplets=k, seconds=round(sec1, 1), triplets_per_s=k / sec1, status="ok")
    st.flush()
    # all n triplets in one batch when that fits the time left at no speed-up over batch 1
    # (or half of it at x2); else as many as fit, and the row says so
    fits = int(0.8 * 2 * st.remaining() * k / sec1)
    b = min(n, max(k, fits))
    many = st.row(what=f"AutoAttack, batch {b}", batch=b, triplets=b, status="running")
    start = time.monotonic()
    batched = attack(0, b)
    secb = time.monotonic() - start
    same = int((flips(pd.concat(parts, ignore_index=True)) == flips(batched.iloc[:k])).sum())
    ratio = (b / secb) / (k / sec1)
    many.update(
        seconds=round(secb, 1),
        triplets_per_s=b / secb,
        speedup=ratio,
        same_flips=f"{same}/{k}",
        status="ok" if b == n else f"ok (batch cut from {n} to fit the time)",
    )
    st.check(same == k, f"{k - same} of {k} triplets flip differently at batch {b}")
    st.flush()
    st.summary = (
        f"{sz['preset']}@{metric.image_size}, {sz['budget']} budget, l2 eps {sz['eps']}: "
        f"batch 1 {k / sec1:.3g} vs batch {b} {b / secb:.3g} triplets/s (x{ratio:.2f}); "
        f"same flips {same}/{k}"
    )
    st.notes.append(
        f"{cfg}; seeded random weights and random triplets (the cost, not the score). "
        "Flips are compared on the triplets attacked both ways; a batch draws its random numbers "
        "for the whole batch, so a flip can differ without either run being wrong."
    )


# 6. ------------------------------------------------------------------------------------------
def parse_cost_table(text: str) -> list[dict]:
    """The per-rule table bench_paper_cost.py prints: rule, jobs, device-h, longest job h, limit."""
    rows, inside = [], False
    for line in text.splitlines():
        words = line.split()
        if words[:2] == ["rule", "jobs"]:
            inside = True
            continue
        if not inside or len(words) < 3:
            continue
        hours = float(words[2].replace(",", ""))
        row = {"rule": words[0], "jobs": int(words[1]), "device_h": hours}
        if len(words) >= 4:
            row["longest_job_h"] = float(words[3].replace(",", ""))
        if len(words) >= 5:
            row["limit_h"] = float(words[4])
        rows.append(row)
        if words[0] == "total":
            break
    return rows


def stage_cost(st: Stage) -> None:
    configs = st.sizes["cost"]
    totals = []
    for i, config in enumerate(configs):
        head = st.row(config=config, rule="(measuring)", status="running")
        # the first config (the paper's, the larger) may take more than its even share
        box = st.remaining() * (0.6 if i + 1 < len(configs) else 1.0)
        cmd = [sys.executable, str(ROOT / "benchmarks" / "bench_paper_cost.py")]
        cmd += ["--config", str(ROOT / config), "--device", st.device_name, "--iters", "1"]
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(),
            start_new_session=True,
        )
        _CHILD_GROUPS.append(proc)
        try:
            out, _ = proc.communicate(timeout=max(box, 1.0))
        except subprocess.TimeoutExpired:
            stop_group(proc)
            head.update(rule="(all)", status=f"timeout ({box:.0f} s)")
            st.skipped += 1
            st.flush()
            continue
        print(out, flush=True)  # into the log
        table = parse_cost_table(out)
        if proc.returncode or not table:
            last = [ln for ln in out.splitlines() if ln.strip()][-1:] or [""]
            raise RuntimeError(f"bench_paper_cost.py {config}: exit {proc.returncode}: {last[0]}")
        st.rows.remove(head)
        for r in table:
            if r["device_h"] > 0 or r["rule"] == "total":
                st.row(config=Path(config).name, **r, status="ok")
        total = table[-1]["device_h"]
        top = max((r for r in table if r["rule"] != "total"), key=lambda r: r["device_h"])
        totals.append(
            f"{Path(config).name} {total:,.4g} device-h ({top['rule']} {top['device_h']:,.4g})"
        )
    st.summary = "; ".join(totals) or "nothing finished"
    st.notes.append(
        "benchmarks/bench_paper_cost.py --iters 1 on this device (its docstring says what is "
        "measured and what is estimated); rules that use no accelerator are left out."
    )


STAGE_FUNCS = {
    "environment": stage_environment,
    "numerics": stage_numerics,
    "smoke": stage_smoke,
    "train": stage_train,
    "attack": stage_attack,
    "cost": stage_cost,
}
_CHILD_GROUPS: list[subprocess.Popen] = []  # snakemake / benchmark processes of this stage


def _stop_children(signum, frame):
    # SIGTERM (a time box, or the device command's limit): the process groups this process
    # started go too, else a stage, snakemake or a benchmark would run on in its own session
    for p in _CHILD_GROUPS:
        if p.poll() is None:
            stop_group(p, grace=1.0)
    raise SystemExit(128 + signum)


def run_one_stage(args) -> int:
    st = Stage(args.run_stage, args.device, args.box_s, Path(args.scratch))
    signal.signal(signal.SIGTERM, _stop_children)
    st.flush()
    try:
        if args.forced_failure:
            raise RuntimeError("forced failure (--fail-stage)")
        STAGE_FUNCS[st.name](st)
        st.finish()
    except Exception as exc:
        traceback.print_exc()
        st.fail(exc)
        return 1
    finally:
        for p in _CHILD_GROUPS:
            if p.poll() is None:
                stop_group(p, grace=1.0)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    ap.add_argument("--budget-s", type=float, default=420.0, help="the whole run, seconds")
    ap.add_argument("--out", default=None, help="default: benchmarks/results/<device>/")
    ap.add_argument(
        "--stages", default=",".join(STAGES), help="comma-separated subset (default: all)"
    )
    ap.add_argument(
        "--fail-stage",
        default="",
        help="comma-separated stages made to fail at their start (tests the recording)",
    )
    # internal: one stage, or one rank of the 2-process probe, in a process of its own
    ap.add_argument("--run-stage", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--box-s", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--scratch", help=argparse.SUPPRESS)
    ap.add_argument("--forced-failure", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--probe-ddp", choices=("pipeline", "gloo"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.probe_ddp:
        probe_ddp(args.probe_ddp, args.device)
        return 0
    if args.run_stage:
        return run_one_stage(args)
    for opt in ("stages", "fail_stage"):
        names = [s for s in getattr(args, opt).split(",") if s]
        unknown = sorted(set(names) - set(STAGES))
        if unknown:
            ap.error(
                f"--{opt.replace('_', '-')}: unknown stage(s) {unknown}; known: {list(STAGES)}"
            )
        setattr(args, opt, names)
    if args.budget_s <= 0:
        ap.error("--budget-s must be > 0")
    args.out = args.out or str(ROOT / "benchmarks" / "results" / args.device)
    return orchestrate(args)


if __name__ == "__main__":
    raise SystemExit(main())
