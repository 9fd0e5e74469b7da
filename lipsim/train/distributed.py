"""Process-group setup from the environment: one code path for 1 process, torchrun, SLURM.

Environment variables read (first match wins):
  torchrun / torch.distributed.run:  RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT
  SLURM (srun, one task per GPU):    SLURM_PROCID (rank), SLURM_NTASKS or SLURM_STEP_NUM_TASKS
                                     (world size), SLURM_LOCALID (local rank),
                                     SLURM_JOB_NODELIST (master = first host of
                                     `scontrol show hostnames`, unless MASTER_ADDR is set),
                                     SLURM_JOB_ID (MASTER_PORT = 15000 + JOB_ID % 20000 unless
                                     MASTER_PORT is set, so concurrent jobs on one node differ)
  neither (or a world size of 1):    a single process, no process group
Backend: NCCL when the device is CUDA, gloo otherwise (CPU runs, tests).
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import subprocess
from collections.abc import Mapping

import torch
import torch.distributed as dist

from lipsim.device import resolve_device


@dataclasses.dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launcher: str = "none"  # "none" | "torchrun" | "slurm"

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _first_slurm_host(nodelist: str) -> str:
    try:
        out = subprocess.run(
            ["scontrol", "show", "hostnames", nodelist],
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError) as exc:
        raise RuntimeError(
            f"SLURM: cannot expand SLURM_JOB_NODELIST={nodelist!r} with `scontrol show "
            f"hostnames` ({exc}); set MASTER_ADDR to the first node's hostname"
        ) from exc
    if not out:
        raise RuntimeError(f"SLURM: `scontrol show hostnames {nodelist}` printed nothing")
    return out[0]


def detect_env(environ: Mapping[str, str] | None = None) -> DistEnv:
    """The process's place in the job, from the environment (see the module docstring)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(
            rank=int(env["RANK"]),
            world_size=int(env["WORLD_SIZE"]),
            local_rank=int(env.get("LOCAL_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=int(env.get("MASTER_PORT", 29500)),
            launcher="torchrun",
        )
    world = env.get("SLURM_STEP_NUM_TASKS") or env.get("SLURM_NTASKS")
    if "SLURM_PROCID" in env and world and int(world) > 1:
        if "MASTER_ADDR" in env:
            addr = env["MASTER_ADDR"]
        elif "SLURM_JOB_NODELIST" in env:
            addr = _first_slurm_host(env["SLURM_JOB_NODELIST"])
        else:
            addr = "127.0.0.1"
        port = (
            int(env["MASTER_PORT"])
            if "MASTER_PORT" in env
            else 15000 + int(env.get("SLURM_JOB_ID", 0)) % 20000
        )
        return DistEnv(
            rank=int(env["SLURM_PROCID"]),
            world_size=int(world),
            local_rank=int(env.get("SLURM_LOCALID", 0)),
            master_addr=addr,
            master_port=port,
            launcher="slurm",
        )
    return DistEnv()


def rank_device(name: str, env: DistEnv) -> torch.device:
    """`auto`/`cuda` -> cuda:LOCAL_RANK (one GPU per process) when CUDA is there, else cpu."""
    dev = resolve_device(name)
    if dev.type == "cuda" and dev.index is None:
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda: CUDA is not available on this machine")
        return torch.device("cuda", env.local_rank % torch.cuda.device_count())
    return dev


def init_distributed(
    device: str = "auto", environ: Mapping[str, str] | None = None
) -> tuple[DistEnv, torch.device]:
    """Detect the environment, pick the device, and join the process group when world > 1."""
    env = detect_env(environ)
    dev = rank_device(device, env)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if env.distributed and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(
            backend=backend,
            init_method=f"tcp://{env.master_addr}:{env.master_port}",
            rank=env.rank,
            world_size=env.world_size,
            timeout=datetime.timedelta(minutes=30),
            **({"device_id": dev} if dev.type == "cuda" else {}),
        )
    return env, dev


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


def all_gather_object(obj):
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
