"""Values and argument lists several test files share (fixtures live in conftest.py).

FAST: download options that keep retries quick. TRAIN: the training options the trainer tests
spell out (TrainConfig's fields, the CLI's --options); `train_config` and `train_options` turn
them, with a test's own changes, into a TrainConfig or a command line. `certify_options` is the
certify command line the tests score a checkpoint with.
"""

from __future__ import annotations

from pathlib import Path

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


def train_config(tmp_path: Path, **kw):
    """A TrainConfig of TRAIN with `kw` changed, working under tmp_path/w, logging each step."""
    from lipsim.train.trainer import TrainConfig

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
