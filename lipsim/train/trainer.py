"""The training loop shared by distillation and finetuning.

One code path for 1 process, N local processes (torchrun) and N processes across nodes
(SLURM srun): lipsim.train.distributed reads the environment; with a world size > 1 the
model is wrapped in DistributedDataParallel (gradients averaged over ranks) and each rank
reads its share of the data through a DistributedSampler (set_epoch each epoch), so
k steps of N processes with batch b equal k steps of one process with batch N * b when the
loss is a mean over the batch (tests/test_train_ddp.py checks it).

Per step: optional bf16 autocast (GPU only), Adam(lr, betas, weight decay), the lr schedule
(lipsim.train.schedule). Every `ckpt_every` steps and at the end a resume checkpoint is
written atomically to the workdir; on start the newest complete one of the same
configuration is loaded and the run continues at the same sampler position with the same
RNG states (kill -9 and restart = an uninterrupted run, tests/test_train_resume.py).
Rank 0 shows a tqdm bar and appends to metrics.csv (step, epoch, loss = mean over ranks and
the logging window, lr used by the step, images_per_s = student forward images per second
over all ranks (2 views per image when distilling, 3 images per triplet when finetuning),
time = seconds of training since the run began, summed over resumed segments): one complete
line per write; on resume, rows past the checkpoint are dropped first.

A task supplies the data and the loss:
    task.dataset                     a map-style Dataset (optional set_epoch(epoch))
    task.loss(model, batch, device)  -> (scalar loss, number of images in the batch)
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import os
import time
from pathlib import Path
from typing import Protocol

import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from lipsim.atomic import write_csv
from lipsim.errors import LipSimError
from lipsim.progress import progress_bar
from lipsim.train import checkpointing as ckpt
from lipsim.train.distributed import (
    DistEnv,
    all_gather_object,
    all_reduce_mean,
    barrier,
)
from lipsim.train.schedule import build_scheduler

log = logging.getLogger(__name__)
METRIC_COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s", "time")


class OptimizerStateError(LipSimError, ValueError):
    """A saved optimizer state does not fit the model being trained (the message says how)."""


class Task(Protocol):
    dataset: torch.utils.data.Dataset

    def loss(self, model: nn.Module, batch, device: torch.device) -> tuple[torch.Tensor, int]: ...


@dataclasses.dataclass
class TrainConfig:
    """What the loop reads. The hyperparameters are the keys of the same names of the config
    section (distill or finetune): the schema declares them (type, default, description) and
    config_from_args copies them over by name, so none is restated here."""

    epochs: int
    batch_size: int  # per process
    lr: float
    beta1: float
    beta2: float
    weight_decay: float
    schedule: str
    warmup_steps: int
    seed: int
    workers: int
    amp: str  # "bf16" | "none"
    ckpt_every: int
    device: str
    workdir: str
    metrics: str
    log_every: int
    progress: bool
    throttle_s: float = 0.0  # sleep per step (tests make a run slow enough to interrupt)
    # Every key of the section that makes the model (the loop's and the task's; not the
    # schema's `x-resume: false` ones, such as workers and ckpt_every): what a resume must
    # match and what the checkpoint records. config_from_args fills it.
    recipe: dict = dataclasses.field(default_factory=dict)

    def fingerprint(self, extra: dict | None = None) -> dict:
        """What must match for a resume checkpoint to continue this run (a TrainConfig built
        by hand, without a recipe: every field that is no run setting)."""
        recipe = self.recipe or {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in _RUN_SETTINGS
        }
        return {**recipe, **(extra or {})}


# Fields that say how a run goes, not what it trains.
_RUN_SETTINGS = ("device", "workdir", "metrics", "log_every", "progress", "throttle_s", "recipe")


def add_training_options(ap: argparse.ArgumentParser) -> None:
    """How a training run goes (distill and finetune). The hyperparameters are config options
    (add_config_options: the schema's distill / finetune section)."""
    g = ap.add_argument_group("training run")
    g.add_argument("--log-every", type=int, default=1, help="metrics.csv period (steps)")
    g.add_argument("--workdir", required=True, type=Path, help="resume checkpoints live here")
    g.add_argument(
        "--metrics", type=Path, default=None, help="metrics.csv (default WORKDIR/metrics.csv)"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("--throttle-s", type=float, default=0.0, help=argparse.SUPPRESS)


def config_from_args(args: argparse.Namespace, section: str) -> TrainConfig:
    """The TrainConfig of a `lipsim distill` / `lipsim finetune` command line: the config
    section of that name (every key the schema gives the command) plus the run options."""
    from lipsim.cli._args import config_values
    from lipsim.configcheck import schema_node

    values = config_values(args, section, section)
    loop = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(
        **{k: v for k, v in values.items() if k in loop},
        device=args.device,
        workdir=str(args.workdir),
        metrics=str(args.metrics or Path(args.workdir) / "metrics.csv"),
        log_every=args.log_every,
        progress=not args.no_progress,
        throttle_s=args.throttle_s,
        recipe={
            k: v for k, v in values.items() if schema_node(f"{section}.{k}").get("x-resume", True)
        },
    )


class _ResumableSampler(DistributedSampler):
    """DistributedSampler that can start mid-epoch (skip the first `start` of its indices):
    resuming skips data at the index level instead of loading and discarding batches."""

    start = 0

    def __iter__(self):
        return iter(list(super().__iter__())[self.start :])

    def __len__(self) -> int:
        return super().__len__() - self.start


class _Metrics:
    """metrics.csv on rank 0: each row is one write() of one complete line, flushed."""

    def __init__(self, path: str | None, resume_step: int, enabled: bool):
        self.path = Path(path) if path and enabled else None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old = self._read_complete(self.path)
        if resume_step == 0 or old is None:
            old = pd.DataFrame(columns=list(METRIC_COLUMNS))
        # Rows after the checkpoint were made by the interrupted run and will be redone.
        write_csv(self.path, old[old["step"].astype(float) <= resume_step] if len(old) else old)

    @staticmethod
    def _read_complete(path: Path) -> pd.DataFrame | None:
        if not path.exists():
            return None
        text = path.read_text(encoding="utf-8")
        if not text.endswith("\n"):  # a line cut by a kill: drop it
            text = text[: text.rfind("\n") + 1]
        try:
            df = pd.read_csv(io.StringIO(text))
        except (pd.errors.EmptyDataError, pd.errors.ParserError):
            return None
        return df if list(df.columns) == list(METRIC_COLUMNS) else None

    def append(self, row: dict) -> None:
        if self.path is None:
            return
        line = (
            ",".join(
                f"{row[c]:.8g}" if isinstance(row[c], float) else str(row[c])
                for c in METRIC_COLUMNS
            )
            + "\n"
        )
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()


class Trainer:
    def __init__(self, cfg: TrainConfig, env: DistEnv, device: torch.device):
        if cfg.amp not in ("bf16", "none"):
            raise ValueError(f"--amp must be bf16 or none, got {cfg.amp!r}")
        self.cfg, self.env, self.device = cfg, env, device
        self.use_amp = cfg.amp == "bf16" and device.type == "cuda"
        if cfg.amp == "bf16" and not self.use_amp and env.is_main:
            log.info("--amp bf16 applies on GPU only; running fp32 on %s", device)
        self.resumed_from: int | None = None
        self.optimizer: torch.optim.Optimizer | None = None

    def fit(
        self,
        model: nn.Module,
        task: Task,
        fingerprint_extra: dict | None = None,
        init_optimizer_state: dict | None = None,
    ) -> nn.Module:
        """Train `model` on `task`; returns it in eval mode (self.optimizer keeps Adam).

        init_optimizer_state: an Adam state dict (params in model.parameters() order) to start
        from instead of zero moments (the authors' finetuning reloads the distillation's);
        lr, betas and weight decay still come from the config. A resume checkpoint of this
        run wins over it (it holds the later state).
        """
        cfg, env, dev = self.cfg, self.env, self.device
        model = model.to(dev)
        model.train()
        dataset = task.dataset
        sampler = _ResumableSampler(
            dataset,
            num_replicas=env.world_size,
            rank=env.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=True,
        )
        steps_per_epoch = DistributedSampler.__len__(sampler) // cfg.batch_size
        if steps_per_epoch == 0:
            raise ValueError(
                f"dataset of {len(dataset)} items is smaller than one global batch "
                f"({cfg.batch_size} x {env.world_size} processes)"
            )
        total_steps = cfg.epochs * steps_per_epoch
        opt = torch.optim.Adam(
            model.parameters(),
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            weight_decay=cfg.weight_decay,
        )
        if init_optimizer_state is not None:
            load_optimizer_state(opt, init_optimizer_state, cfg)
        self.optimizer = opt
        sched = build_scheduler(opt, cfg.schedule, total_steps, cfg.warmup_steps)
        fingerprint = cfg.fingerprint(
            {**(fingerprint_extra or {}), "world_size": env.world_size, "n_items": len(dataset)}
        )

        # Rank 0 picks the checkpoint and every rank loads that very file.
        state, path = (
            ckpt.load_latest(cfg.workdir, fingerprint, remove_stale=True)
            if env.is_main
            else (None, None)
        )
        chosen = all_gather_object(str(path) if path else "")[0]
        if not env.is_main and chosen:
            state = torch.load(chosen, map_location="cpu", weights_only=True)
        epoch, step_in_epoch, global_step, elapsed = 0, 0, 0, 0.0
        if state is not None:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            epoch, step_in_epoch = state["epoch"], state["step_in_epoch"]
            global_step, elapsed = state["global_step"], state["elapsed"]
            rngs = state["rng"]
            ckpt.set_rng_state(rngs[env.rank] if len(rngs) == env.world_size else rngs[0])
            self.resumed_from = global_step
            if env.is_main:
                log.info("resumed from %s (step %d of %d)", chosen, global_step, total_steps)
        barrier()

        ddp = model
        if env.distributed:
            ddp = nn.parallel.DistributedDataParallel(
                model, device_ids=[dev.index] if dev.type == "cuda" else None
            )
        metrics = _Metrics(cfg.metrics, global_step, env.is_main)
        bar = None
        if env.is_main and cfg.progress:
            bar = progress_bar(total_steps, "train", "step", initial=global_step)

        def save() -> None:
            rngs = all_gather_object(ckpt.rng_state())
            if env.is_main:
                ckpt.save_resume(
                    cfg.workdir,
                    global_step,
                    {
                        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                        "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(),
                        "epoch": epoch,
                        "step_in_epoch": step_in_epoch,
                        "global_step": global_step,
                        "elapsed": elapsed,
                        "rng": rngs,
                        "fingerprint": fingerprint,
                    },
                )
            barrier()

        start = time.perf_counter() - elapsed
        window_loss, window_images, window_t = 0.0, 0, time.perf_counter()
        while epoch < cfg.epochs:
            sampler.set_epoch(epoch)
            sampler.start = step_in_epoch * cfg.batch_size
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            loader = DataLoader(
                dataset,
                batch_size=cfg.batch_size,
                sampler=sampler,
                num_workers=cfg.workers,
                drop_last=True,
                pin_memory=dev.type == "cuda",
                persistent_workers=False,
            )
            for batch in loader:
                with torch.autocast(
                    device_type=dev.type, dtype=torch.bfloat16, enabled=self.use_amp
                ):
                    loss, n_images = task.loss(ddp, batch, dev)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                step_lr = float(opt.param_groups[0]["lr"])  # the lr this step used
                opt.step()
                sched.step()
                global_step += 1
                step_in_epoch += 1
                window_loss += float(loss.detach())
                window_images += int(n_images)
                if cfg.throttle_s:
                    time.sleep(cfg.throttle_s)
                if global_step % cfg.log_every == 0 or global_step == total_steps:
                    now = time.perf_counter()
                    steps = (global_step - 1) % cfg.log_every + 1
                    mean_loss = float(
                        all_reduce_mean(torch.tensor(window_loss / steps, device=dev))
                    )
                    rate = window_images * env.world_size / max(now - window_t, 1e-9)
                    metrics.append(
                        {
                            "step": global_step,
                            "epoch": epoch,
                            "loss": mean_loss,
                            "lr": step_lr,
                            "images_per_s": rate,
                            "time": now - start,
                        }
                    )
                    if bar is not None:
                        # refresh=False: the bar's interval decides when to redraw
                        bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{rate:.0f}", refresh=False)
                    window_loss, window_images, window_t = 0.0, 0, now
                if bar is not None:
                    bar.update(1)
                elapsed = time.perf_counter() - start
                if (
                    cfg.ckpt_every
                    and global_step % cfg.ckpt_every == 0
                    and global_step < total_steps
                ):
                    save()
            epoch += 1
            step_in_epoch = 0
        elapsed = time.perf_counter() - start
        if self.resumed_from != total_steps:
            save()  # the finished state: a rerun with the same options does no work
        if bar is not None:
            bar.close()
        model.eval()
        return model


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict, cfg: TrainConfig) -> None:
    """Load a saved Adam state into `opt`, then set lr, betas and weight decay from `cfg`.

    load_state_dict restores the saved param_groups too (the distillation's last lr, its
    betas, and the scheduler's `initial_lr`, which a new LambdaLR would otherwise keep as
    its base lr): only the moments and step counts are meant to carry over. Raises
    OptimizerStateError when the state does not fit the model's parameters (count, shapes).
    """
    params = [p for g in opt.param_groups for p in g["params"]]
    saved = [i for g in state.get("param_groups", []) for i in g.get("params", [])]
    if len(saved) != len(params):
        raise OptimizerStateError(
            f"optimizer state holds {len(saved)} parameters, the model has {len(params)}"
        )
    for i, p in zip(saved, params, strict=True):
        for name, t in state.get("state", {}).get(i, {}).items():
            if torch.is_tensor(t) and t.dim() > 0 and tuple(t.shape) != tuple(p.shape):
                raise OptimizerStateError(
                    f"optimizer state {name!r} of parameter {i} has shape "
                    f"{tuple(t.shape)}, the model's is {tuple(p.shape)}"
                )
    opt.load_state_dict(state)
    for g in opt.param_groups:
        g.pop("initial_lr", None)
        g.update(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_logging(env: DistEnv) -> None:
    logging.basicConfig(
        level=logging.INFO if env.is_main else logging.WARNING,
        format=f"%(levelname)s [rank {env.rank}] %(name)s: %(message)s",
    )


def default_threads() -> None:
    """Keep CPU runs from oversubscribing cores when several ranks share a machine: split
    the cores among the local processes (torchrun's LOCAL_WORLD_SIZE, SLURM's
    SLURM_STEP_TASKS_PER_NODE) unless OMP_NUM_THREADS says otherwise."""
    if "OMP_NUM_THREADS" in os.environ:
        return
    local = (
        os.environ.get("LOCAL_WORLD_SIZE")
        or os.environ.get("SLURM_STEP_TASKS_PER_NODE", "1").split("(")[0].split(",")[0]
    )
    try:
        n = max(1, int(local))
    except ValueError:
        n = 1
    if n > 1:
        torch.set_num_threads(max(1, torch.get_num_threads() // n))
