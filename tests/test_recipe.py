"""The authors' training recipe as named options (config/paper.yaml; docs/method.md section 11):
each option changes what it says and nothing else, on tiny batches with seeded weights.

  distill.crop            center | resize_center
  distill.teacher_view    flipped | original
  distill.rmse_reduction  batch | image
  finetune.loss_reduction sum | mean
  finetune.schedule       interp (and lr)
  (the lr timing, schedule length, partial batches, jitter input and target dtype:
   tests/test_authors_timing.py)
  finetune.optimizer_state reload | fresh
  metric                  cosine | ball (the finetune loss)
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import one_part_cache, snakemake, train_config
from PIL import Image
from torch import nn

from lipsim.__main__ import main as lipsim_main
from lipsim.cli import distill as distill_cli
from lipsim.data.synthetic import make_night
from lipsim.embcache import EmbeddingCache, load_train_image
from lipsim.models import build_model, load_checkpoint, save_checkpoint
from lipsim.teachers import get_teacher
from lipsim.train.distill import DistillDataset, DistillTask, batch_rmse
from lipsim.train.distributed import detect_env
from lipsim.train.finetune import FinetuneTask, hinge_loss, lipsim_distances
from lipsim.train.schedule import SCHEDULES, step_lr
from lipsim.train.trainer import TrainConfig, Trainer, load_optimizer_state

REPO = Path(__file__).resolve().parents[1]


def _image_folder(root: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    """ImageNet layout, one class, random RGB images of the given (width, height)."""
    rng = np.random.default_rng(seed)
    folder = root / "train" / "n00000000"
    folder.mkdir(parents=True)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            folder / f"{i:03d}.png"
        )
    return root


def _cache(images: Path, out: Path, *, crop: str, mirror: bool = False) -> EmbeddingCache:
    return one_part_cache(images, out, dtype="float32", crop=crop, mirror=mirror)


# --------------------------------------------------------------------------- crop
def test_crop_center_is_the_full_resolution_centre_and_resize_center_is_not(tmp_path):
    images = _image_folder(tmp_path / "img", [(60, 40), (20, 24)])
    big, small = sorted((images / "train" / "n00000000").iterdir())
    arr = torch.from_numpy(np.array(Image.open(big))).permute(2, 0, 1).float() / 255
    centre = load_train_image(big, 32, crop="center")
    # torchvision CenterCrop offsets: round((60 - 32) / 2) = 14, round((40 - 32) / 2) = 4.
    assert torch.equal(centre, arr[:, 4:36, 14:46])
    resized = load_train_image(big, 32, crop="resize_center")
    assert resized.shape == centre.shape == (3, 32, 32)
    assert (resized - centre).abs().max() > 0.1  # 40 -> 32 resize first: another view
    # An image smaller than the crop is padded with zeros (CenterCrop), not upscaled.
    padded = load_train_image(small, 32, crop="center")
    assert padded[:, :4].abs().max() == 0 and padded[:, :, :6].abs().max() == 0
    assert padded[:, 4:28, 6:26].abs().max() > 0
    with pytest.raises(ValueError, match="--crop"):
        load_train_image(big, 32, crop="random")


def test_the_teacher_cache_embeds_the_same_crop_as_the_student(tmp_path):
    images = _image_folder(tmp_path / "img", [(60, 40), (44, 52), (40, 40)])
    teacher = get_teacher("demo")
    for crop in ("center", "resize_center"):
        cache = _cache(images, tmp_path / crop, crop=crop)
        ds = DistillDataset(
            cache,
            images,
            32,
            crop=crop,
            teacher_view="original",
            jitter_input="float",
            augment=False,
        )
        for i in range(len(ds)):
            img, _, target, row = ds[i]
            torch.testing.assert_close(target, teacher.embed(img[None])[0], rtol=1e-5, atol=1e-6)
    a, b = EmbeddingCache(tmp_path / "center"), EmbeddingCache(tmp_path / "resize_center")
    assert not np.allclose(a[0], b[0])  # the non-square image: two different views


# --------------------------------------------------------------------------- teacher view
def test_flipped_teacher_view_targets_the_embedding_of_view_0_with_its_flip(tmp_path):
    images = _image_folder(tmp_path / "img", [(40, 36)] * 12, seed=3)
    cache = _cache(images, tmp_path / "c", crop="center")
    mirror = _cache(images, tmp_path / "m", crop="center", mirror=True)
    teacher = get_teacher("demo")
    kw = dict(crop="center", jitter_input="float", seed=5)
    flipped = DistillDataset(cache, images, 32, teacher_view="flipped", mirror=mirror, **kw)
    original = DistillDataset(cache, images, 32, teacher_view="original", **kw)
    n_flipped = 0
    for i in range(len(flipped)):
        v0, _, target, row = flipped[i]
        plain = load_train_image(images / cache.paths[row], 32, crop="center")
        was_flipped = not torch.equal(v0, plain)
        n_flipped += was_flipped
        # The target is the teacher's embedding of the very tensor view 0 is.
        torch.testing.assert_close(target, teacher.embed(v0[None])[0], rtol=1e-5, atol=1e-6)
        # `original` sees the same views and targets the un-augmented image instead.
        v0_o, _, target_o, _ = original[i]
        assert torch.equal(v0_o, v0)
        torch.testing.assert_close(target_o, teacher.embed(plain[None])[0], rtol=1e-5, atol=1e-6)
        assert was_flipped == (not torch.allclose(target, target_o))
    assert 0 < n_flipped < len(flipped)  # both cases were exercised
    with pytest.raises(ValueError, match="mirror"):
        DistillDataset(
            cache, images, 32, crop="center", teacher_view="flipped", jitter_input="float"
        )


# --------------------------------------------------------------------------- reductions
def test_rmse_reductions_follow_their_formulas():
    target = torch.zeros(2, 4)
    pred = torch.stack([torch.full((4,), 1.0), torch.full((4,), 3.0)])  # per-image RMSE 1, 3
    assert float(batch_rmse(pred, target, "image")) == pytest.approx(2.0)  # (1 + 3) / 2
    assert float(batch_rmse(pred, target, "batch")) == pytest.approx(5**0.5)  # sqrt((1+9)/2)
    with pytest.raises(ValueError, match="--rmse-reduction"):
        batch_rmse(pred, target, "sum")

    class Const(nn.Module):  # f(view) = pred for both views
        def forward(self, x):
            return pred.repeat(x.shape[0] // 2, 1)

    batch = (torch.zeros(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), target, torch.arange(2))
    for reduction, value in (("image", 2.0), ("batch", 5**0.5)):
        loss, n = DistillTask(None, rmse_reduction=reduction).loss(Const(), batch, "cpu")
        assert float(loss) == pytest.approx(value) and n == 4


def test_hinge_sum_is_batch_size_times_mean():
    d0, d1 = torch.tensor([0.2, 0.6, 0.3, 0.1]), torch.tensor([0.5, 0.1, 0.3, 0.4])
    p = torch.tensor([1.0, 0.0, 1.0, 0.3])
    mean, total = hinge_loss(d0, d1, p, 0.5, "mean"), hinge_loss(d0, d1, p, 0.5, "sum")
    assert float(mean) > 0 and float(total) == pytest.approx(4 * float(mean))
    with pytest.raises(ValueError, match="--loss-reduction"):
        hinge_loss(d0, d1, p, 0.5, "max")


# --------------------------------------------------------------------------- schedule
def test_interp_schedule_knots():
    f = SCHEDULES["interp"]
    assert [f(s, 100, 0) for s in (0, 40, 80, 100)] == pytest.approx([0, 1, 1 / 20, 0])
    assert f(20, 100, 0) == pytest.approx(0.5) and f(60, 100, 0) == pytest.approx(0.525)
    # Integer division for the knots, as the authors' code: T = 7 -> knots 2 and 5.
    assert f(2, 7, 0) == 1.0 and f(5, 7, 0) == pytest.approx(1 / 20)
    # The lr each step uses is lr x the schedule at that step (this_step timing).
    used = [
        step_lr(s, lr=0.01, schedule="interp", total=10, warmup=0, timing="this_step")
        for s in range(10)
    ]
    assert used[0] == 0 and used[4] == pytest.approx(0.01) and used[8] == pytest.approx(0.0005)


# --------------------------------------------------------------------------- optimizer state
def _adam_with_moments(net: nn.Module) -> torch.optim.Adam:
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.5, 0.9))
    # torch's lr schedulers (the authors') leave `initial_lr` in the param groups
    torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    return opt


def _cfg(tmp_path, **kw) -> TrainConfig:
    return train_config(tmp_path, **{**dict(lr=0.003, beta1=0.8, beta2=0.95), **kw})


def test_reloaded_adam_state_has_the_saved_moments_and_the_configured_lr(tmp_path):
    torch.manual_seed(0)
    src = build_model("tiny", 32, 16)
    saved = _adam_with_moments(src).state_dict()
    torch.manual_seed(1)
    net = build_model("tiny", 32, 16)
    opt = torch.optim.Adam(net.parameters(), lr=0.003, betas=(0.8, 0.95))
    assert opt.state_dict()["state"] == {}  # fresh: no moments (zero at the first step)
    # It returns the lr the saved state carried (0.01 x 0.5 from the scheduler above).
    assert load_optimizer_state(opt, saved, _cfg(tmp_path)) == 0.005
    for i, p in enumerate(net.parameters()):
        assert torch.equal(opt.state[p]["exp_avg"], saved["state"][i]["exp_avg"])
        assert torch.equal(opt.state[p]["exp_avg_sq"], saved["state"][i]["exp_avg_sq"])
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], "initial_lr" in g) == (0.003, (0.8, 0.95), False)
    smaller = build_model("tiny", 32, 16, linear_inner=64)  # same count, other shapes
    with pytest.raises(ValueError, match="shape"):
        load_optimizer_state(torch.optim.Adam(smaller.parameters()), saved, _cfg(tmp_path))


class _Regress:
    """A tiny task: regress fixed targets (enough to drive Trainer.fit)."""

    def __init__(self, n: int = 8):
        g = torch.Generator().manual_seed(0)
        self.dataset = torch.utils.data.TensorDataset(
            torch.rand(n, 3, 32, 32, generator=g), torch.randn(n, 16, generator=g)
        )

    def loss(self, model, batch, device):
        x, y = batch
        return (model(x) - y).square().mean(), x.shape[0]


def test_fit_continues_the_reloaded_state_and_a_resume_checkpoint_wins(tmp_path):
    torch.manual_seed(0)
    saved = _adam_with_moments(build_model("tiny", 32, 16)).state_dict()
    cfg = _cfg(tmp_path)
    trainer = Trainer(cfg, detect_env({}), torch.device("cpu"))
    torch.manual_seed(1)
    trainer.fit(build_model("tiny", 32, 16), _Regress(), init_optimizer_state=saved)
    steps = [float(s["step"]) for s in trainer.optimizer.state_dict()["state"].values()]
    assert steps and all(s == 1 + 2 for s in steps)  # 1 saved step + 2 of this run
    # Same run again: its finished resume checkpoint wins over another initial state.
    other = {
        **saved,
        "state": {i: {**s, "step": torch.tensor(100.0)} for i, s in saved["state"].items()},
    }
    again = Trainer(cfg, detect_env({}), torch.device("cpu"))
    torch.manual_seed(1)
    again.fit(build_model("tiny", 32, 16), _Regress(), init_optimizer_state=other)
    assert again.resumed_from == 2
    assert all(float(s["step"]) == 3 for s in again.optimizer.state_dict()["state"].values())
    # fresh: Adam starts from zero moments, its step counts are this run's alone.
    fresh = Trainer(
        _cfg(tmp_path, workdir=str(tmp_path / "f")), detect_env({}), torch.device("cpu")
    )
    fresh.fit(build_model("tiny", 32, 16), _Regress())
    assert all(float(s["step"]) == 2 for s in fresh.optimizer.state_dict()["state"].values())


# --------------------------------------------------------------------------- metric
def test_finetune_metric_matters_inside_the_unit_ball_only():
    g = torch.Generator().manual_seed(0)
    ref, x0, x1 = (torch.randn(4, 8, generator=g) for _ in range(3))
    p = torch.tensor([0.0, 1.0, 1.0, 0.0])

    def losses(scale):
        out = {}
        for metric in ("cosine", "ball"):
            d0, d1 = lipsim_distances(nn.Identity(), scale * ref, scale * x0, scale * x1, metric)
            out[metric] = float(hinge_loss(d0, d1, p, 0.5, "mean"))
        return out

    inside = losses(0.05)  # every embedding inside the unit ball
    assert abs(inside["cosine"] - inside["ball"]) > 0.1
    outside = losses(10.0)  # on the sphere after either map
    assert outside["cosine"] == pytest.approx(outside["ball"], abs=1e-6)
    # The task uses its metric: cosine ignores the scale, ball does not.
    batch = (0.05 * ref, 0.05 * x0, 0.05 * x1, p, torch.arange(4))
    task_loss = {
        m: float(
            FinetuneTask(None, 0.5, metric=m, loss_reduction="mean").loss(
                nn.Identity(), batch, "cpu"
            )[0]
        )
        for m in ("cosine", "ball")
    }
    assert task_loss == pytest.approx(inside)


# --------------------------------------------------------------------------- CLIs and config
# (The CLIs' recipe options and the rules' option strings are built from the schema: see
# tests/test_cli.py, a new key reaches both.)
def test_paper_config_states_the_authors_recipe():
    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    assert {k: paper["distill"][k] for k in ("crop", "teacher_view", "rmse_reduction")} == {
        "crop": "center",
        "teacher_view": "flipped",
        "rmse_reduction": "batch",
    }
    assert {
        k: paper["finetune"][k] for k in ("lr", "schedule", "loss_reduction", "optimizer_state")
    } == {"lr": 0.01, "schedule": "interp", "loss_reduction": "sum", "optimizer_state": "reload"}
    assert paper["metric"] == "cosine"


# --------------------------------------------------------------------------- end to end
def _train_args(workdir: Path, out: Path, batch: int, **kw) -> list[str]:
    opts = {
        "epochs": 1,
        "batch-size": batch,
        "lr": 0.01,
        "beta1": 0.5,
        "beta2": 0.9,
        "weight-decay": 0,
        "schedule": "constant",
        "warmup-steps": 0,
        "lr-timing": "this_step",
        "schedule-items": 0,
        "partial-batches": "drop",
        "seed": 0,
        "workers": 0,
        "amp": "none",
        "ckpt-every": 100,
        "device": "cpu",
        **kw,
    }
    return [a for k, v in opts.items() for a in (f"--{k}", str(v))] + [
        "--workdir",
        str(workdir),
        "--out",
        str(out),
        "--no-progress",
    ]


def test_authors_recipe_end_to_end_distill_then_finetune(tmp_path, capsys):
    images = _image_folder(tmp_path / "img", [(40, 36)] * 8, seed=4)
    _cache(images, tmp_path / "c", crop="center")
    _cache(images, tmp_path / "m", crop="center", mirror=True)
    common = [
        "--cache-dir",
        str(tmp_path / "c"),
        "--images",
        str(images),
        "--teacher",
        "demo",
        "--preset",
        "tiny",
        "--image-size",
        "32",
        "--rmse-reduction",
        "batch",
        "--jitter-input",
        "uint8",
    ]
    rc = distill_cli.main(
        [
            *common,
            "--crop",
            "center",
            "--teacher-view",
            "flipped",
            "--mirror-cache-dir",
            str(tmp_path / "m"),
            *_train_args(tmp_path / "wd", tmp_path / "pre.pt", 4),
        ]
    )
    assert rc == 0
    _, pre = load_checkpoint(tmp_path / "pre.pt")
    assert {k: pre["meta"][k] for k in ("crop", "teacher_view", "rmse_reduction")} == {
        "crop": "center",
        "teacher_view": "flipped",
        "rmse_reduction": "batch",
    }
    assert len(pre["optimizer_state_dict"]["state"]) == len(
        list(build_model("tiny", 32, 64).parameters())
    )
    # A cache filled with another crop is refused, naming the cache and both crops.
    rc = lipsim_main(
        [
            "distill",
            *common,
            "--crop",
            "resize_center",
            "--teacher-view",
            "original",
            *_train_args(tmp_path / "wd2", tmp_path / "x.pt", 4),
        ]
    )
    assert rc == 1 and "resize_center" in capsys.readouterr().err

    night = make_night(tmp_path / "night", seed=0, n_train=40, n_val=0, n_test=0, image_size=32)
    ft = [
        "finetune",
        "--init",
        str(tmp_path / "pre.pt"),
        "--night",
        str(night),
        "--margin",
        "0.5",
        "--min-votes",
        "6",
        "--metric",
        "cosine",
        "--loss",
        "hinge",
        "--loss-reduction",
        "sum",
        "--optimizer-state",
        "reload",
    ]
    assert (
        lipsim_main([*ft, *_train_args(tmp_path / "wf", tmp_path / "ft.pt", 8, schedule="interp")])
        == 0
    )
    _, ck = load_checkpoint(tmp_path / "ft.pt")
    assert ck["metric"] == "cosine" and ck["meta"]["optimizer_state"] == "reload"
    assert ck["meta"]["loss_reduction"] == "sum" and ck["meta"]["schedule"] == "interp"
    lr = pd.read_csv(tmp_path / "wf" / "metrics.csv")["lr"].tolist()
    # interp over the run's T >= 3 steps: lr 0 at step 0, the peak at 2T // 5.
    assert len(lr) >= 3 and lr[0] == 0 and max(lr) == pytest.approx(0.01)

    # reload from a checkpoint without optimizer state: one error line naming file and option.
    torch.manual_seed(0)
    save_checkpoint(
        tmp_path / "bare.pt", build_model("tiny", 32, 64), stage="pretrained", teacher="demo"
    )
    ft[2] = str(tmp_path / "bare.pt")
    capsys.readouterr()
    assert lipsim_main([*ft, *_train_args(tmp_path / "wb", tmp_path / "b.pt", 8)]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("lipsim finetune: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "bare.pt" in lines[0] and "--optimizer-state reload" in lines[0]


# --------------------------------------------------------------------------- workflow
AUTHORS = (
    "distill: {crop: center, teacher_view: flipped, rmse_reduction: batch}\n"
    "finetune: {lr: 0.01, schedule: interp, loss_reduction: sum, optimizer_state: reload}\n"
    "metric: cosine\n"
)


def _snakemake(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    return snakemake(workdir, *args, timeout=1200)


@pytest.mark.slow
def test_paper_dry_run_passes_the_authors_recipe(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    proc = _snakemake(
        tmp_path,
        "-n",
        "-p",
        "--cores",
        "1",
        "--configfile",
        str(tmp_path / "config" / "paper.yaml"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    distill = [ln for ln in lines if "lipsim distill" in ln]
    # paper.yaml's teacher sweep: one distillation per teacher, each with the same recipe.
    teachers = ("dino_vitb16", "clip_vitb32", "open_clip_vitb32", "dreamsim_ensemble")
    assert len(distill) == len(teachers)
    for t in teachers:
        line = next(ln for ln in distill if f"--teacher {t} " in ln)
        for flag in (
            "--crop center",
            "--teacher-view flipped",
            "--rmse-reduction batch",
            "--jitter-input uint8",
            "--schedule cosine_restarts",
            "--lr-timing previous_step",
            "--schedule-items 1281167",
            "--partial-batches keep",
            f"--mirror-cache-dir results/paper/cache/{t}-mirror",
        ):
            assert flag in line, (t, flag)
    fills = [ln for ln in lines if "lipsim cache-fill" in ln]
    assert all("--crop center" in ln for ln in fills)
    assert (
        sum("--mirror --out-dir results/paper/cache/dreamsim_ensemble-mirror" in ln for ln in fills)
        == len(fills) // (2 * len(teachers))
        == 64
    )
    finetune = [ln for ln in lines if "lipsim finetune" in ln]
    assert len(finetune) == 2 * len(teachers)
    for flag in (
        "--lr 0.01",
        "--schedule interp",
        "--metric cosine",
        "--loss-reduction sum",
        "--optimizer-state reload",
        "--lr-timing previous_step",
        "--schedule-items 15941",
        "--partial-batches keep",
    ):
        assert all(flag in ln for ln in finetune), flag


@pytest.mark.slow
def test_authors_recipe_runs_through_the_workflow_and_its_keys_rerun_the_chain(tmp_path):
    shutil.copytree(REPO / "config", tmp_path / "config")
    overlay = tmp_path / "config" / "authors.yaml"
    overlay.write_text(AUTHORS)
    cfg = ["--configfile", str(tmp_path / "config" / "test.yaml"), str(overlay)]
    target = "results/test/checkpoints/margin0.5.pt"
    proc = _snakemake(tmp_path, target, "--cores", "2", *cfg)
    assert proc.returncode == 0, proc.stderr[-4000:]
    _, pre = load_checkpoint(tmp_path / "results/test/checkpoints/pretrained.pt")
    _, ck = load_checkpoint(tmp_path / target)
    assert pre["meta"]["teacher_view"] == "flipped" and "optimizer_state_dict" in pre
    assert ck["metric"] == "cosine" and ck["meta"]["optimizer_state"] == "reload"
    assert (tmp_path / "results/test/cache/demo-mirror/index.parquet").exists()

    def planned(text: str) -> set[str]:
        overlay.write_text(text)
        proc = _snakemake(tmp_path, target, "-n", "--cores", "1", *cfg)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return set(re.findall(r"^(?:local)?rule (\w+):", proc.stdout, flags=re.M))

    assert planned(AUTHORS) == set()  # nothing to do
    assert planned(AUTHORS.replace("rmse_reduction: batch", "rmse_reduction: image")) == {
        "distill",
        "finetune",
    }
    assert planned(AUTHORS.replace("loss_reduction: sum", "loss_reduction: mean")) == {"finetune"}
    assert {"cache_fill", "cache_index", "distill", "finetune"} <= planned(
        AUTHORS.replace("crop: center", "crop: resize_center")
    )
