"""config/paper.yaml trains step for step as the authors' code runs (docs/authors-code.md):
the lr of every step of both stages, partial batches, the fp32 teacher targets and view 1's
colour jitter on 8-bit images. The expected numbers are the authors' formulas evaluated by
hand (their scheduler classes are not part of this repository).

  distill.schedule / lr_timing / schedule_items   cosine_restarts / previous_step / 1281167
  finetune.lr_timing / schedule_items             previous_step / 15941
  distill.partial_batches, finetune.partial_batches  keep
  cache.dtype                                     float32
  distill.jitter_input                            uint8
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from helpers import one_part_cache, train_config
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as TF

from lipsim.cli import finetune as finetune_cli
from lipsim.configcheck import SCHEMA_PATH, validate_config
from lipsim.data.night import NightTriplets, read_night
from lipsim.data.synthetic import make_night
from lipsim.embcache import EmbeddingCache
from lipsim.errors import LipSimError
from lipsim.models import build_model, load_checkpoint, save_checkpoint
from lipsim.teachers import get_teacher
from lipsim.train.distill import DistillDataset, _item_seed
from lipsim.train.distributed import detect_env
from lipsim.train.finetune import FinetuneTask
from lipsim.train.schedule import check_schedule, schedule_steps, step_lr
from lipsim.train.trainer import TrainConfig, Trainer, epoch_steps

REPO = Path(__file__).resolve().parents[1]
IMAGENET_TRAIN = 1_281_167  # ImageNet-1k train images
NIGHT_TRAIN = 15_941  # NIGHT train triplets with >= 6 votes, as the authors hard-code it


@pytest.fixture(scope="module")
def paper() -> dict:
    config = yaml.safe_load((REPO / "config/paper.yaml").read_text(encoding="utf-8"))
    return validate_config(config, SCHEMA_PATH)


def _lr_of(section: dict, n_items: int, world: int, first_lr: float | None = None):
    """(steps the run takes, step -> lr) for a stage configured by `section`."""
    run = section["epochs"] * epoch_steps(
        n_items, world, section["batch_size"], section["partial_batches"]
    )
    length = schedule_steps(
        run, section["epochs"], section["schedule_items"], section["batch_size"] * world
    )
    check_schedule(section["schedule"], length, section["warmup_steps"])

    def lr(step: int) -> float:
        return step_lr(
            step,
            lr=section["lr"],
            schedule=section["schedule"],
            total=length,
            warmup=section["warmup_steps"],
            timing=section["lr_timing"],
            first_lr=first_lr,
        )

    return run, lr


# --------------------------------------------------------------------------- distillation
def test_paper_distillation_lr_is_the_authors_at_every_landmark(paper):
    d = paper["distill"]
    world = d["resources"]["nodes"] * d["resources"]["tasks_per_node"]  # 16 GPUs
    run, lr = _lr_of(d, IMAGENET_TRAIN, world)
    # No drop_last: ceil(ceil(1281167 / 16) / 32) = 2503 steps per epoch, 40 epochs.
    assert run == 100_120
    assert schedule_steps(run, 40, d["schedule_items"], 512) == 100_091  # their cycle
    # Their scheduler starts at its minimum lr (0) and is stepped with the index of the step
    # just taken: step s trains at 0.01 x (s - 1) / 2000 during the warm-up.
    assert lr(0) == 0.0 and lr(1) == 0.0
    assert lr(2) == pytest.approx(5e-6, rel=1e-12)
    assert lr(1999) == pytest.approx(0.00999, rel=1e-12)
    assert lr(2000) == pytest.approx(0.009995, rel=1e-12)
    assert lr(2001) == 0.01  # the cosine's start
    # The cycle's last step (phase 100090 of 100091): 0.01 x (1 + cos(pi 98090 / 98091)) / 2.
    assert lr(100_091) == pytest.approx(2.5643742e-12, rel=1e-6)
    # The run goes on for 28 more steps: the warm-up starts over from 0 ...
    assert lr(100_092) == 0.0 and lr(100_093) == pytest.approx(5e-6, rel=1e-12)
    # ... and the last step trains at 0.01 x 27 / 2000; the lr left in the optimizer (and in
    # their final checkpoint) is the next one, 0.01 x 28 / 2000.
    assert lr(run - 1) == pytest.approx(1.35e-4, rel=1e-12)
    assert lr(run) == pytest.approx(1.4e-4, rel=1e-12)


def test_demo_defaults_keep_our_distillation_timing():
    ours = validate_config({}, SCHEMA_PATH)["distill"]
    ours.update(epochs=40, batch_size=32, warmup_steps=2000)
    run, lr = _lr_of(ours, IMAGENET_TRAIN, 16)
    assert run == 100_080  # full batches only: floor(floor(1281167 / 16) / 32) x 40
    assert lr(0) == pytest.approx(5e-6) and lr(1999) == 0.01  # warm-up (s + 1) / 2000
    assert lr(run - 1) == pytest.approx(0.01 * (1 - np.cos(np.pi / 98_080)) / 2)


# --------------------------------------------------------------------------- finetuning
def test_paper_finetuning_lr_is_the_authors_at_every_landmark(paper):
    f = paper["finetune"]
    reloaded = 1.4e-4  # the lr their distillation leaves in its optimizer state
    run, lr = _lr_of(f, NIGHT_TRAIN, 1, first_lr=reloaded)
    assert run == 499  # ceil(15941 / 32): the last batch holds 5 triplets
    assert schedule_steps(run, 1, f["schedule_items"], 32) == 498  # 15941 // 32
    # Knots at 498 x 2 // 5 = 199 and 498 x 4 // 5 = 398; step s trains at interp(s - 1).
    assert lr(0) == reloaded
    assert lr(1) == 0.0
    assert lr(2) == pytest.approx(0.01 / 199, rel=1e-12)
    assert lr(200) == pytest.approx(0.01, rel=1e-12)
    assert lr(399) == pytest.approx(0.0005, rel=1e-12)
    assert lr(run - 1) == pytest.approx(5e-6, rel=1e-9)  # interp(497) = 0.0005 / 100
    assert lr(run) == 0.0
    # Without a reloaded state the first step uses the schedule's start, interp(0) = 0.
    assert _lr_of(f, NIGHT_TRAIN, 1)[1](0) == 0.0


class _Recorded:
    """A 2-parameter regression over `n` items that records each batch's size."""

    def __init__(self, n: int):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, 2, generator=g)
        self.dataset = torch.utils.data.TensorDataset(x, x @ torch.tensor([1.0, -2.0]))
        self.sizes: list[int] = []

    def loss(self, model, batch, device):
        x, y = batch
        self.sizes.append(len(x))
        return ((model(x).squeeze(1) - y) ** 2).mean(), len(x)


def _cfg(tmp_path: Path, **kw) -> TrainConfig:
    """The authors' timing: restarts every 10 items, partial batches kept, warm-up of 2."""
    authors = dict(
        epochs=3,
        lr=0.01,
        schedule="cosine_restarts",
        warmup_steps=2,
        lr_timing="previous_step",
        schedule_items=10,
        partial_batches="keep",
        ckpt_every=0,
    )
    return train_config(tmp_path, **{**authors, **kw})


def test_the_trainer_runs_the_authors_timing_with_partial_batches(tmp_path):
    task = _Recorded(10)
    trainer = Trainer(_cfg(tmp_path), detect_env({}), torch.device("cpu"))
    torch.manual_seed(0)
    trainer.fit(torch.nn.Linear(2, 1), task)
    # 10 items in batches of 4, the partial batch kept: 3 steps an epoch, 9 in all; the cycle
    # is 3 x 10 // 4 = 7 steps, so the run outlasts it and step 8 restarts the warm-up.
    assert task.sizes == [4, 4, 2] * 3
    c1, c2 = (1 + np.cos(np.pi / 5)) / 2, (1 + np.cos(2 * np.pi / 5)) / 2
    want = [0, 0, 0.5, 1, c1, c2, 1 - c2, 1 - c1, 0]
    lr = pd.read_csv(tmp_path / "w" / "metrics.csv")["lr"].tolist()
    assert lr == pytest.approx([0.01 * w for w in want], abs=1e-10)
    # The optimizer keeps the next step's lr (warm-up phase 1 of the new cycle).
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)

    dropped = _Recorded(10)
    cfg = _cfg(tmp_path, workdir=str(tmp_path / "d"), metrics="", partial_batches="drop")
    Trainer(cfg, detect_env({}), torch.device("cpu")).fit(torch.nn.Linear(2, 1), dropped)
    assert dropped.sizes == [4, 4] * 3


def test_a_schedule_shorter_than_its_warm_up_is_refused(tmp_path):
    cfg = _cfg(tmp_path, schedule_items=4, warmup_steps=3)  # 3 x 4 // 4 = 3 steps
    with pytest.raises(LipSimError, match="--warmup-steps 3 must be below the schedule's 3 steps"):
        Trainer(cfg, detect_env({}), torch.device("cpu")).fit(torch.nn.Linear(2, 1), _Recorded(10))


def _finetune(tmp_path: Path, night: Path, init: Path, name: str, timing: str) -> Path:
    out = tmp_path / f"{name}.pt"
    opts = {
        "init": init,
        "night": night,
        "margin": 0.5,
        "min-votes": 6,
        "metric": "cosine",
        "loss-reduction": "sum",
        "optimizer-state": "reload",
        "epochs": 1,
        "batch-size": 8,
        "lr": 0.01,
        "beta1": 0.5,
        "beta2": 0.9,
        "weight-decay": 0,
        "schedule": "interp",
        "warmup-steps": 0,
        "lr-timing": timing,
        "schedule-items": 80,  # a schedule of 80 // 8 = 10 steps: interp(0) = 0
        "partial-batches": "keep",
        "seed": 0,
        "workers": 0,
        "amp": "none",
        "ckpt-every": 100,
        "device": "cpu",
        "workdir": tmp_path / name,
        "out": out,
    }
    args = [a for k, v in opts.items() for a in (f"--{k}", str(v))]
    assert finetune_cli.main([*args, "--no-progress"]) == 0
    return out


def test_one_finetune_step_from_a_reloaded_checkpoint_uses_the_reloaded_lr(tmp_path):
    night = make_night(tmp_path / "night", seed=0, n_train=8, n_val=0, n_test=0, image_size=32)
    torch.manual_seed(0)
    net = build_model("tiny", 32, 16)
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.5, 0.9))
    for p in net.parameters():  # Adam moments to continue, as after a distillation
        p.grad = torch.randn_like(p)
    opt.step()
    for g in opt.param_groups:
        g["lr"] = 1.4e-4  # the lr the authors' distillation leaves behind
    save_checkpoint(
        tmp_path / "pre.pt",
        net,
        stage="pretrained",
        teacher="demo",
        optimizer_state=opt.state_dict(),
    )
    # One step (8 triplets, batch 8) under the authors' timing ...
    out = _finetune(tmp_path, night, tmp_path / "pre.pt", "authors", "previous_step")
    assert pd.read_csv(tmp_path / "authors" / "metrics.csv")["lr"].tolist() == [1.4e-4]
    tuned, _ = load_checkpoint(out)
    # ... equals one Adam step at lr 1.4e-4 from the reloaded state, by hand.
    start, ck = load_checkpoint(tmp_path / "pre.pt")
    by_hand = torch.optim.Adam(start.parameters(), lr=1.4e-4, betas=(0.5, 0.9))
    by_hand.load_state_dict(ck["optimizer_state_dict"])
    for g in by_hand.param_groups:
        g["lr"] = 1.4e-4
    df = read_night(night, min_votes=6, splits=["train"])
    batch = next(iter(torch.utils.data.DataLoader(NightTriplets(df, 32), batch_size=8)))
    task = FinetuneTask(None, 0.5, metric="cosine", loss_reduction="sum")
    start.train()
    task.loss(start, batch, torch.device("cpu"))[0].backward()
    by_hand.step()
    moved = 0.0
    for (k, v), w in zip(tuned.state_dict().items(), start.state_dict().values(), strict=True):
        torch.testing.assert_close(v, w, rtol=1e-5, atol=1e-7, msg=k)
        moved = max(moved, float((v - net.state_dict()[k]).abs().max()))
    assert moved > 1e-5  # the step did move the weights
    # Our timing trains step 0 at lr x interp(0) = 0: the weights stay where they were.
    ours, _ = load_checkpoint(_finetune(tmp_path, night, tmp_path / "pre.pt", "ours", "this_step"))
    for k, v in ours.state_dict().items():
        assert torch.equal(v, net.state_dict()[k]), k


# --------------------------------------------------------------------------- targets, views
def _images(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    folder = root / "train" / "n00000000"
    folder.mkdir(parents=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)).save(
            folder / f"{i:03d}.png"
        )
    return root


def _cache(images: Path, out: Path, dtype: str) -> EmbeddingCache:
    return one_part_cache(images, out, dtype=dtype, crop="center")


def test_paper_targets_are_the_teachers_fp32_embeddings(tmp_path, paper):
    assert paper["cache"]["dtype"] == "float32"
    images = _images(tmp_path / "img", 6)
    teacher = get_teacher("demo")
    full, half = (
        _cache(images, tmp_path / "f32", "float32"),
        _cache(images, tmp_path / "f16", "float16"),
    )
    kw = dict(crop="center", teacher_view="original", jitter_input="float", augment=False)
    ds32 = DistillDataset(full, images, 32, **kw)
    ds16 = DistillDataset(half, images, 32, **kw)
    worst = 0.0
    for i in range(len(ds32)):
        img, _, t32, _ = ds32[i]
        _, _, t16, _ = ds16[i]
        assert t32.dtype == t16.dtype == torch.float32
        torch.testing.assert_close(t32, teacher.embed(img[None])[0], rtol=1e-5, atol=1e-6)
        # float16 storage rounds each value to 11 significant bits (normal values: those at
        # least 2^-14 in size; smaller ones keep fewer).
        assert torch.equal(t16, t32.half().float())
        normal = t32.abs() >= 2**-14
        worst = max(worst, float(((t16 - t32).abs() / t32.abs())[normal].max()))
    assert 0 < worst <= 2**-11


def _authors_view1(img: torch.Tensor) -> torch.Tensor:
    """View 1 as the authors build it: PIL flip, jitter and grey-scale, then to a tensor."""
    pil = Image.fromarray((img.permute(1, 2, 0) * 255).round().byte().numpy())
    return transforms.Compose(
        [
            transforms.RandomHorizontalFlip(0.5),
            transforms.RandomApply([transforms.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
            transforms.RandomGrayscale(p=0.2),
            transforms.ToTensor(),
        ]
    )(pil)


def test_paper_jitters_view_1_on_8_bit_images(tmp_path, paper):
    assert paper["distill"]["jitter_input"] == "uint8"
    images = _images(tmp_path / "img", 16, seed=2)
    cache = _cache(images, tmp_path / "c", "float32")
    kw = dict(crop="center", teacher_view="original", seed=3)
    u8 = DistillDataset(cache, images, 32, jitter_input="uint8", **kw)
    fl = DistillDataset(cache, images, 32, jitter_input="float", **kw)
    plain = DistillDataset(cache, images, 32, jitter_input="uint8", augment=False, **kw)
    gaps, jittered = [], 0
    for i in range(len(u8)):
        img, _, _, row = plain[i]
        v0, v1, _, _ = u8[i]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(_item_seed(3, 0, row))
            torch.rand(1)  # view 0's flip draw comes first
            want = _authors_view1(img)
        assert torch.equal(v1, want), i
        jittered += not (torch.equal(v1, img) or torch.equal(v1, TF.hflip(img)))
        assert torch.equal((v1 * 255).round() / 255, v1)  # 8-bit values
        f0, f1, _, _ = fl[i]
        assert torch.equal(f0, v0)  # the same draws: view 0 alike, view 1 close
        gaps.append(float((f1 - v1).abs().max()))
    assert 0 < max(gaps) < 0.1
    assert jittered > len(u8) // 2  # p = 0.8 of a jitter, 0.2 of grey-scale
