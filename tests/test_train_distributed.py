"""Distributed training: 2 processes (gloo, CPU, launched by torchrun) with batch b give the
same weights after k steps as 1 process with batch 2b; environment detection for torchrun
and SLURM."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import train_options

from lipsim.data.synthetic import make_image_folder
from lipsim.embcache import fill_part, list_images, write_index
from lipsim.models import build_model, load_checkpoint
from lipsim.teachers import get_teacher
from lipsim.train.checkpointing import list_checkpoints
from lipsim.train.distributed import detect_env

REPO = Path(__file__).resolve().parents[1]


def make_cache(root: Path, classes: int = 4, per_class: int = 8) -> tuple[Path, Path]:
    """A demo-teacher cache of classes x per_class 32px images: (images, cache_dir)."""
    images = make_image_folder(
        root / "imagenet", seed=2, classes=classes, per_class=per_class, image_size=32
    )
    cache = root / "cache"
    lst = list_images(images)
    lst.to_parquet(cache.mkdir(parents=True) or cache / "images.parquet", index=False)
    fill_part(
        teacher=get_teacher("demo"),
        images=images,
        image_list=lst,
        out_dir=cache,
        part=0,
        parts=1,
        shard_size=16,
        progress=False,
    )
    write_index(cache, 1)
    return images, cache


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env() -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
        and not k.startswith("SLURM_")
    }
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO), CUDA_VISIBLE_DEVICES="")
    return env


def distill_args(images, cache, workdir, out, batch, *extra):
    return [
        "-m",
        "lipsim",
        "distill",
        "--cache-dir",
        str(cache),
        "--images",
        str(images),
        "--teacher",
        "demo",
        "--preset",
        "tiny",
        "--image-size",
        "32",
        *train_options(batch_size=batch, lr=0.01, schedule="cosine", warmup_steps=1),
        # Per-image RMSE: the reduction under which N ranks x batch b = 1 rank x N b.
        "--crop",
        "resize_center",
        "--teacher-view",
        "original",
        "--rmse-reduction",
        "image",
        "--jitter-input",
        "float",
        "--workdir",
        str(workdir),
        "--out",
        str(out),
        "--no-progress",
        *extra,
    ]


@pytest.mark.slow
def test_ddp_two_processes_equal_one_process_double_batch(tmp_path):
    images, cache = make_cache(tmp_path)
    b = 4  # 32 images: 2 x 4 per step -> 4 steps; 1 x 8 per step -> 4 steps
    port = free_port()
    two = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(port),
            *distill_args(images, cache, tmp_path / "w2", tmp_path / "two.pt", b, "--no-augment"),
        ],
        env=child_env(),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    one = subprocess.run(
        [
            sys.executable,
            *distill_args(
                images, cache, tmp_path / "w1", tmp_path / "one.pt", 2 * b, "--no-augment"
            ),
        ],
        env=child_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out2, _ = two.communicate(timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    assert two.returncode == 0, out2[-3000:]
    net1, ck1 = load_checkpoint(tmp_path / "one.pt")
    net2, ck2 = load_checkpoint(tmp_path / "two.pt")
    assert ck1["meta"]["world_size"] == 1 and ck2["meta"]["world_size"] == 2
    assert ck1["meta"]["global_batch"] == ck2["meta"]["global_batch"] == 2 * b
    # Both runs finished (4 steps, see metrics below) and left no resume checkpoint behind.
    assert list_checkpoints(tmp_path / "w1") == list_checkpoints(tmp_path / "w2") == []
    s1, s2 = net1.state_dict(), net2.state_dict()
    torch.manual_seed(0)
    init = build_model("tiny", 32, 64).state_dict()
    # Training moved the weights (the comparison is not between two untouched models).
    assert max(float((s1[k] - init[k]).abs().max()) for k in s1) > 1e-3
    # Compared relative to how far training moved each tensor, not elementwise: Adam's first
    # steps divide by |g|, so float roundoff in a near-zero gradient component (the two runs sum
    # the batch in a different order) moves that one element by a visible share of lr. Measured
    # ratios are below 1e-4; a rank stepping on its own half-batch gradient moves whole tensors.
    for k in s1:
        moved = float((s1[k] - init[k]).norm())
        ratio = float((s2[k] - s1[k]).norm()) / max(moved, 1e-12)
        assert ratio < 1e-3, f"tensor {k} differs: |two - one| = {ratio:.2e} x |one - init|"
    m1 = pd.read_csv(tmp_path / "w1" / "metrics.csv")
    m2 = pd.read_csv(tmp_path / "w2" / "metrics.csv")
    assert list(m1["step"]) == list(m2["step"]) == [1, 2, 3, 4]
    torch.testing.assert_close(
        torch.tensor(m2["loss"].to_numpy()),
        torch.tensor(m1["loss"].to_numpy()),
        rtol=1e-4,
        atol=1e-6,
    )
    assert m1["loss"].iloc[-1] < m1["loss"].iloc[0]


def test_detect_env_torchrun_slurm_single(tmp_path):
    assert detect_env({}).world_size == 1
    e = detect_env(
        {
            "RANK": "3",
            "WORLD_SIZE": "8",
            "LOCAL_RANK": "1",
            "MASTER_ADDR": "h0",
            "MASTER_PORT": "1234",
            "SLURM_PROCID": "0",
            "SLURM_NTASKS": "8",
        }
    )
    assert (e.rank, e.world_size, e.local_rank, e.master_addr, e.master_port, e.launcher) == (
        3,
        8,
        1,
        "h0",
        1234,
        "torchrun",
    )  # torchrun inside a SLURM job wins
    e = detect_env(
        {
            "SLURM_PROCID": "5",
            "SLURM_NTASKS": "16",
            "SLURM_LOCALID": "1",
            "SLURM_JOB_ID": "4242",
            "MASTER_ADDR": "node07",
        }
    )
    assert (e.rank, e.world_size, e.local_rank, e.master_addr, e.master_port, e.launcher) == (
        5,
        16,
        1,
        "node07",
        15000 + 4242 % 20000,
        "slurm",
    )
    # A single-task SLURM job (snakemake's srun -n1) is a plain single process.
    assert detect_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}).world_size == 1
    # MASTER_ADDR from the node list via scontrol (a stand-in scontrol on PATH).
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "scontrol").write_text("#!/bin/sh\necho gpu-a01\necho gpu-a02\n")
    (fake / "scontrol").chmod(0o755)
    old = os.environ["PATH"]
    os.environ["PATH"] = f"{fake}:{old}"
    try:
        e = detect_env(
            {
                "SLURM_PROCID": "1",
                "SLURM_NTASKS": "2",
                "SLURM_JOB_NODELIST": "gpu-a[01-02]",
                "MASTER_PORT": "2222",
            }
        )
    finally:
        os.environ["PATH"] = old
    assert (e.master_addr, e.master_port) == ("gpu-a01", 2222)
