"""The training loop shared by distillation and finetuning.

One code path for 1 process, N local processes (torchrun) and N processes across nodes
(SLURM srun): lipsim.train.distributed reads the environment; with a world size > 1 the
model is wrapped in DistributedDataParallel (gradients averaged over ranks) and each rank
reads its share of the data through a DistributedSampler (set_epoch each epoch), so
k steps of N processes with batch b equal k steps of one process with batch N * b when the
loss is a mean over the batch (tests/test_train_ddp.py checks it).

Per step: optional bf16 autocast (GPU only), Adam(lr, betas, weight decay) at the lr that
lipsim.train.schedule.step_lr gives the step. An epoch keeps or drops its last partial batch
(`partial_batches`; keep pads each rank to the same count, as DistributedSampler does).
Every `ckpt_every` steps and at the end a resume checkpoint is written atomically to the
workdir; on start the newest complete one of the same configuration is loaded and the run
continues at the same sampler position with the same RNG states (kill -9 and restart = an uninterrupted run, tests/test_train_resume.py).
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
import functools
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
from lipsim.train.schedule import check_schedule, schedule_steps, step_lr

log = logging.getLogger(__name__)
METRIC_COLUMNS = ("step", "epoch", "loss", "lr", "images_per_s", "time")
PARTIAL_BATCHES = ("drop", "keep")


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
    lr_timing: str  # lipsim.train.schedule.LR_TIMINGS
    schedule_items: int  # 0: the schedule spans the run; else epochs x items // global batch
    partial_batches: str  # "drop" | "keep" (the last batch of an epoch)
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


def epoch_steps(n_items: int, world_size: int, batch_size: int, partial_batches: str) -> int:
    """Optimisation steps per epoch. keep: every item, the distributed sampler padding each
    rank to ceil(n / world) items and the last batch partial (the authors' loaders);
    drop: floor(n / world) items per rank, full batches only."""
    if partial_batches == "keep":
        return _ceil_div(_ceil_div(n_items, world_size), batch_size)
    if partial_batches == "drop":
        return n_items // world_size // batch_size
    raise LipSimError(
        f"--partial-batches must be one of {', '.join(PARTIAL_BATCHES)}, got {partial_batches!r}"
    )


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclasses.dataclass
class _Position:
    """Where a run stands; saved in every resume checkpoint."""

    epoch: int = 0
    step_in_epoch: int = 0  # the sampler position within the epoch
    global_step: int = 0
    elapsed: float = 0.0  # seconds of training, summed over resumed segments


class _Window:
    """Loss and images since the last metrics row."""

    def __init__(self) -> None:
        self.reset(time.perf_counter())

    def reset(self, now: float) -> None:
        self.loss, self.images, self.t = 0.0, 0, now


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
        """Train `model` on `task`; returns it in eval mode (self.optimizer keeps Adam, holding
        the lr a next step would use).

        init_optimizer_state: an Adam state dict (params in model.parameters() order) to start
        from instead of zero moments (the authors' finetuning reloads the distillation's);
        betas and weight decay still come from the config, and so does the lr except for the
        first step under lr_timing previous_step. A resume checkpoint of this run wins over
        it (it holds the later state).
        """
        cfg, env = self.cfg, self.env
        model = model.to(self.device)
        model.train()
        dataset = task.dataset
        total = self._total_steps(len(dataset))
        first_lr = self._make_optimizer(model, init_optimizer_state)
        lr_at = self._lr_schedule(total, first_lr)
        fingerprint = cfg.fingerprint(
            {**(fingerprint_extra or {}), "world_size": env.world_size, "n_items": len(dataset)}
        )
        pos = self._resume(model, fingerprint, total)
        ddp = self._wrap(model)
        metrics = _Metrics(cfg.metrics, pos.global_step, env.is_main)
        bar = progress_bar(
            total, "train", "step", initial=pos.global_step, enabled=env.is_main and cfg.progress
        )
        start = time.perf_counter() - pos.elapsed
        window = _Window()
        while pos.epoch < cfg.epochs:
            for batch in self._loader(dataset, pos):
                step_lr = lr_at(pos.global_step)
                self._step(ddp, task, batch, step_lr, window)
                pos.global_step += 1
                pos.step_in_epoch += 1
                if pos.global_step % cfg.log_every == 0 or pos.global_step == total:
                    self._log(metrics, bar, window, pos, step_lr, start)
                bar.update(1)
                pos.elapsed = time.perf_counter() - start
                if cfg.ckpt_every and pos.global_step % cfg.ckpt_every == 0:
                    if pos.global_step < total:  # the end saves below
                        self._save(model, fingerprint, pos)
            pos.epoch += 1
            pos.step_in_epoch = 0
        pos.elapsed = time.perf_counter() - start
        _set_lr(self.optimizer, lr_at(total))
        if self.resumed_from != total:
            self._save(model, fingerprint, pos)  # the finished state: a rerun does no work
        bar.close()
        model.eval()
        return model

    def _total_steps(self, n_items: int) -> int:
        cfg, env = self.cfg, self.env
        total = cfg.epochs * epoch_steps(
            n_items, env.world_size, cfg.batch_size, cfg.partial_batches
        )
        if total == 0:
            raise ValueError(
                f"dataset of {n_items} items is smaller than one global batch "
                f"({cfg.batch_size} x {env.world_size} processes)"
            )
        return total

    def _make_optimizer(self, model: nn.Module, init_state: dict | None) -> float | None:
        """Adam over the model's parameters, from `init_state` when given; returns the lr
        that state carried (None without one)."""
        cfg = self.cfg
        self.optimizer = torch.optim.Adam(
            model.parameters(),
            lr=cfg.lr,
            betas=(cfg.beta1, cfg.beta2),
            weight_decay=cfg.weight_decay,
        )
        if init_state is None:
            return None
        return load_optimizer_state(self.optimizer, init_state, cfg)

    def _lr_schedule(self, total_steps: int, first_lr: float | None):
        """step -> the lr that step trains with (lipsim.train.schedule)."""
        cfg = self.cfg
        length = schedule_steps(
            total_steps, cfg.epochs, cfg.schedule_items, cfg.batch_size * self.env.world_size
        )
        check_schedule(cfg.schedule, length, cfg.warmup_steps)
        return functools.partial(
            step_lr,
            lr=cfg.lr,
            schedule=cfg.schedule,
            total=length,
            warmup=cfg.warmup_steps,
            timing=cfg.lr_timing,
            first_lr=first_lr,
        )

    def _resume(self, model: nn.Module, fingerprint: dict, total: int) -> _Position:
        """Load the newest resume checkpoint of this configuration, if any: rank 0 picks it
        and every rank loads that very file."""
        env = self.env
        state, path = (
            ckpt.load_latest(self.cfg.workdir, fingerprint, remove_stale=True)
            if env.is_main
            else (None, None)
        )
        chosen = all_gather_object(str(path) if path else "")[0]
        if not env.is_main and chosen:
            state = torch.load(chosen, map_location="cpu", weights_only=True)
        pos = _Position()
        if state is not None:
            model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            pos = _Position(**{f.name: state[f.name] for f in dataclasses.fields(_Position)})
            rngs = state["rng"]
            ckpt.set_rng_state(rngs[env.rank] if len(rngs) == env.world_size else rngs[0])
            self.resumed_from = pos.global_step
            if env.is_main:
                log.info("resumed from %s (step %d of %d)", chosen, pos.global_step, total)
        barrier()
        return pos

    def _wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel over the ranks (gradients averaged), or the model itself."""
        if not self.env.distributed:
            return model
        dev = self.device
        return nn.parallel.DistributedDataParallel(
            model, device_ids=[dev.index] if dev.type == "cuda" else None
        )

    def _loader(self, dataset, pos: _Position) -> DataLoader:
        """The rest of epoch `pos.epoch` on this rank (a resumed run starts mid-epoch)."""
        cfg, env = self.cfg, self.env
        sampler = _ResumableSampler(
            dataset,
            num_replicas=env.world_size,
            rank=env.rank,
            shuffle=True,
            seed=cfg.seed,
            drop_last=cfg.partial_batches == "drop",
        )
        sampler.set_epoch(pos.epoch)
        sampler.start = pos.step_in_epoch * cfg.batch_size
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(pos.epoch)
        return DataLoader(
            dataset,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.workers,
            drop_last=cfg.partial_batches == "drop",
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    def _step(self, ddp: nn.Module, task: Task, batch, lr: float, window: _Window) -> None:
        """One optimisation step at `lr`; adds its loss and images to `window`."""
        opt = self.optimizer
        _set_lr(opt, lr)
        with torch.autocast(
            device_type=self.device.type, dtype=torch.bfloat16, enabled=self.use_amp
        ):
            loss, n_images = task.loss(ddp, batch, self.device)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        window.loss += float(loss.detach())
        window.images += int(n_images)
        if self.cfg.throttle_s:
            time.sleep(self.cfg.throttle_s)

    def _log(self, metrics, bar, window: _Window, pos: _Position, lr: float, start: float) -> None:
        """One metrics row: the loss averaged over ranks and the window's steps."""
        now = time.perf_counter()
        steps = (pos.global_step - 1) % self.cfg.log_every + 1
        mean_loss = float(all_reduce_mean(torch.tensor(window.loss / steps, device=self.device)))
        rate = window.images * self.env.world_size / max(now - window.t, 1e-9)
        metrics.append(
            {
                "step": pos.global_step,
                "epoch": pos.epoch,
                "loss": mean_loss,
                "lr": lr,
                "images_per_s": rate,
                "time": now - start,
            }
        )
        # refresh=False: the bar's interval decides when to redraw
        bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{rate:.0f}", refresh=False)
        window.reset(now)

    def _save(self, model: nn.Module, fingerprint: dict, pos: _Position) -> None:
        rngs = all_gather_object(ckpt.rng_state())
        if self.env.is_main:
            ckpt.save_resume(
                self.cfg.workdir,
                pos.global_step,
                {
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": self.optimizer.state_dict(),
                    **dataclasses.asdict(pos),
                    "rng": rngs,
                    "fingerprint": fingerprint,
                },
            )
        barrier()


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for g in opt.param_groups:
        g["lr"] = lr


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict, cfg: TrainConfig) -> float:
    """Load a saved Adam state into `opt`, then set lr, betas and weight decay from `cfg`;
    returns the lr the saved state carried (the first step's lr under lr_timing
    previous_step, the authors' timing).

    load_state_dict restores the saved param_groups too (the distillation's last lr, its
    betas, and its scheduler's `initial_lr`): only the moments and step counts are meant to
    carry over. Raises OptimizerStateError when the state does not fit the model's
    parameters (count, shapes).
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
    saved_lr = float(opt.param_groups[0]["lr"])  # a numpy float64 in the authors' files
    for g in opt.param_groups:
        g.pop("initial_lr", None)
        g.update(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    return saved_lr


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
