"""Preemption safety: a distillation killed with SIGKILL after a checkpoint and restarted
ends with exactly the weights of an uninterrupted run (CPU, deterministic); metrics.csv has
each step once. Plus the schedules and the finetune loss / CLI."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from helpers import options, train_options
from test_train_distributed import child_env, distill_args, make_cache

from lipsim.cli import finetune as finetune_cli
from lipsim.data.synthetic import make_night
from lipsim.models import build_model, load_checkpoint, save_checkpoint
from lipsim.train.finetune import hinge_loss
from lipsim.train.schedule import SCHEDULES


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted_run(tmp_path):
    images, cache = make_cache(tmp_path)  # 32 images, batch 4: 8 steps/epoch, 3 epochs

    def run(workdir, out, *extra):
        args = distill_args(images, cache, workdir, out, 4)
        args[args.index("--epochs") + 1] = "3"
        args[args.index("--ckpt-every") + 1] = "3"
        return [sys.executable, *args, *extra]

    ref = subprocess.Popen(
        run(tmp_path / "ref", tmp_path / "ref.pt"),
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # Throttled so that it is still running when we kill it.
    victim = subprocess.Popen(
        run(tmp_path / "w", tmp_path / "w.pt", "--throttle-s", "0.3"),
        env=child_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    target = tmp_path / "w" / "resume-000000006.pt"  # mid-epoch 1 (step 6 of 8)
    deadline = time.time() + 120
    while not target.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert target.exists(), "no checkpoint appeared before the deadline"
    assert not (tmp_path / "w.pt").exists(), "the run finished before it could be killed"

    again = subprocess.run(
        run(tmp_path / "w", tmp_path / "w.pt"),
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed from" in again.stderr
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out[-3000:]

    a, _ = load_checkpoint(tmp_path / "w.pt")
    b, _ = load_checkpoint(tmp_path / "ref.pt")
    for k, v in b.state_dict().items():
        assert torch.equal(a.state_dict()[k], v), f"{k} differs after kill + resume"
    m = pd.read_csv(tmp_path / "w" / "metrics.csv")
    assert list(m["step"]) == list(range(1, 25))
    assert list(m.columns) == ["step", "epoch", "loss", "lr", "images_per_s", "time"]
    ref_m = pd.read_csv(tmp_path / "ref" / "metrics.csv")
    assert list(m["loss"]) == list(ref_m["loss"])


def test_schedules():
    total, warm = 100, 10
    cos = [SCHEDULES["cosine"](s, total, warm) for s in range(total)]
    assert cos[0] == pytest.approx(0.1) and cos[9] == pytest.approx(1.0)
    assert cos[-1] < 0.01 and all(x >= y for x, y in zip(cos[10:], cos[11:], strict=False))
    tri = [SCHEDULES["triangular"](s, total, 0) for s in range(total)]
    assert max(tri) == pytest.approx(1.0) and tri.index(max(tri)) == 49 and tri[-1] < 0.05
    assert SCHEDULES["constant"](50, total, warm) == 1.0


def test_hinge_loss_convention():
    d0, d1 = torch.tensor([0.2, 0.2]), torch.tensor([0.5, 0.5])  # the model prefers x0
    # p = share of votes for x1: humans agree (p small) -> loss m - 0.3; disagree -> m + 0.3.
    assert hinge_loss(d0[:1], d1[:1], torch.tensor([0.1]), 0.5, "mean") == pytest.approx(0.2)
    assert hinge_loss(d0[1:], d1[1:], torch.tensor([0.9]), 0.5, "mean") == pytest.approx(0.8)
    assert hinge_loss(d0[:1], d1[:1], torch.tensor([0.0]), 0.2, "mean") == pytest.approx(0.0)


def test_finetune_cli_writes_finetuned_checkpoint(tmp_path):
    night = make_night(tmp_path / "night", seed=0, n_train=48, n_val=0, n_test=0, image_size=32)
    torch.manual_seed(0)
    save_checkpoint(
        tmp_path / "pre.pt", build_model("tiny", 32, 64), stage="pretrained", teacher="demo"
    )
    rc = finetune_cli.main(
        [
            "--init",
            str(tmp_path / "pre.pt"),
            "--night",
            str(night),
            *options(margin=0.5, min_votes=6, metric="ball", loss="hinge", loss_reduction="mean"),
            "--optimizer-state",
            "fresh",
            *train_options(batch_size=8),
            "--workdir",
            str(tmp_path / "w"),
            "--out",
            str(tmp_path / "m.pt"),
            "--no-progress",
        ]
    )
    assert rc == 0
    net, ck = load_checkpoint(tmp_path / "m.pt")
    assert ck["stage"] == "finetuned" and ck["margin"] == 0.5 and ck["teacher"] == "demo"
    assert ck["meta"]["loss"] == "hinge" and ck["metric"] == "ball"
    assert (ck["meta"]["loss_reduction"], ck["meta"]["optimizer_state"]) == ("mean", "fresh")
    pre, _ = load_checkpoint(tmp_path / "pre.pt")
    assert any(not torch.equal(v, pre.state_dict()[k]) for k, v in net.state_dict().items())
    m = pd.read_csv(tmp_path / "w" / "metrics.csv")
    assert len(m) == ck["meta"]["triplets"] // 8
    # A finished run leaves nothing to resume: snakemake rerunning the job (code change, -f)
    # must train again, not "resume" at the last step and hand back the old weights.
    from lipsim.train.checkpointing import list_checkpoints

    assert list_checkpoints(tmp_path / "w") == []


def test_resume_checkpoints_of_another_configuration_are_not_continued(tmp_path):
    from lipsim.train import checkpointing as ckpt

    for step in (2, 4, 6):
        ckpt.save_resume(tmp_path, step, {"fingerprint": {"lr": 0.01}, "global_step": step})
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == [
        "resume-000000006.pt",
        "resume-000000004.pt",
    ]
    state, path = ckpt.load_latest(tmp_path, {"lr": 0.01})
    assert state["global_step"] == 6 and path.name == "resume-000000006.pt"
    (tmp_path / "resume-000000006.pt").write_bytes(b"torn")  # unreadable: fall back
    assert ckpt.load_latest(tmp_path, {"lr": 0.01})[0]["global_step"] == 4
    assert ckpt.load_latest(tmp_path, {"lr": 0.02}) == (None, None)  # changed lr: fresh run
    assert ckpt.list_checkpoints(tmp_path) == []
