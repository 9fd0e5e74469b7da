"""Values and argument lists several test files share (fixtures live in conftest.py).

FAST: download options that keep retries quick. TRAIN: the training options the trainer tests
spell out (TrainConfig's fields, the CLI's --options); `train_config` and `train_options` turn
them, with a test's own changes, into a TrainConfig or a command line. `certify_options` is the
certify command line the tests score a checkpoint with. `one_part_cache` fills the demo
teacher's embedding cache of an image folder in one part. `snakemake` runs the repository's
Snakefile in a work folder; `dry_run_jobs` reads the jobs a dry run plans.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from lipsim.embcache import EmbeddingCache, fill_part, list_images, write_index
from lipsim.teachers import get_teacher
from lipsim.train.trainer import TrainConfig

ROOT = Path(__file__).resolve().parents[1]

FAST = dict(backoff=0.001, progress=False, timeout=10)

TRAIN = dict(
    epochs=1,
    batch_size=4,
    lr=0.001,
    beta1=0.5,
    beta2=0.9,
    weight_decay=0.0,
    schedule="constant",
    warmup_steps=0,
    lr_timing="this_step",
    schedule_items=0,
    partial_batches="drop",
    seed=0,
    workers=0,
    amp="none",
    ckpt_every=100,
    device="cpu",
)


def options(**kw) -> list[str]:
    """Each keyword as a command-line option: batch_size=4 -> ["--batch-size", "4"]."""
    return [a for k, v in kw.items() for a in (f"--{k.replace('_', '-')}", str(v))]


def train_options(**kw) -> list[str]:
    """TRAIN, with `kw` changed or added, as command-line options."""
    return options(**{**TRAIN, **kw})


def train_config(tmp_path: Path, **kw) -> TrainConfig:
    """A TrainConfig of TRAIN with `kw` changed, working under tmp_path/w, logging each step."""
    base = dict(
        TRAIN,
        workdir=str(tmp_path / "w"),
        metrics=str(tmp_path / "w" / "metrics.csv"),
        log_every=1,
        progress=False,
    )
    return TrainConfig(**{**base, **kw})


def certify_options(checkpoint: Path, night: Path, out: Path, *, metrics=("ball",)) -> list[str]:
    """`lipsim certify`'s options scoring `checkpoint` on NIGHT's two test splits at eps 36."""
    return [
        "--checkpoint",
        str(checkpoint),
        "--night",
        str(night),
        "--splits",
        "test_imagenet",
        "test_no_imagenet",
        "--metrics",
        *metrics,
        *options(
            half_votes="keep", tie_radius="zero", eps=36, batch_size=8, device="cpu", min_votes=1
        ),
        "--no-progress",
        "--out",
        str(out),
    ]


def one_part_cache(images: Path, out: Path, **fill) -> EmbeddingCache:
    """The demo teacher's cache of `images` in `out`, one part of 8-row shards, indexed;
    `fill` (dtype, crop, mirror, ...) goes to lipsim.embcache.fill_part."""
    lst = list_images(images)
    fill_part(
        teacher=get_teacher("demo"),
        images=images,
        image_list=lst,
        out_dir=out,
        part=0,
        parts=1,
        shard_size=8,
        progress=False,
        **fill,
    )
    write_index(out, 1, image_list=lst)
    return EmbeddingCache(out)


def snakemake(workdir: Path, *args: str, timeout=600, cwd=None) -> subprocess.CompletedProcess:
    """`python -m snakemake` of the repository's Snakefile in `workdir`, with this
    interpreter's bin folder first on PATH (the rules call `lipsim` and `python`)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile")]
    return subprocess.run(
        [*cmd, "-d", str(workdir), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=cwd,
    )


def dry_run_jobs(proc: subprocess.CompletedProcess) -> list[dict[str, str]]:
    """The jobs a successful `snakemake -n` lists, in order: rule, wildcards, first output and
    (with -p) the `Shell command:` line; "" where the run did not show one."""
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs: list[dict[str, str]] = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        m = re.match(r"^(?:local)?rule (\w+):", line)
        if m:
            jobs.append(dict(rule=m.group(1), wildcards="", output="", shell=""))
        elif jobs and line.startswith("wildcards:"):
            jobs[-1]["wildcards"] = line.split(":", 1)[1].strip()
        elif jobs and line.startswith("output:") and not jobs[-1]["output"]:
            jobs[-1]["output"] = line.split(":", 1)[1].strip().split(",")[0].strip()
        elif jobs and line.startswith("Shell command:"):
            jobs[-1]["shell"] = line
    return jobs
