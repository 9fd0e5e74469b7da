"""Progress bars redraw on an interval, not per update (lipsim.progress, the trainer's bar)."""

from __future__ import annotations

import io

import torch
from helpers import train_config

from lipsim.progress import progress_bar
from lipsim.train.distributed import DistEnv
from lipsim.train.trainer import Trainer


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_redraws_on_its_interval_whatever_the_update_rate():
    for out, redraws in (
        (io.StringIO(), lambda s: s.count("\n")),
        (_Tty(), lambda s: s.count("\r")),
    ):
        bar = progress_bar(1000, "work", "item", file=out)
        for i in range(1000):
            bar.set_postfix(loss=f"{1 / (i + 1):.4f}", refresh=False)
            bar.update(1)
        bar.close()
        text = out.getvalue()
        assert redraws(text) <= 5, text
        assert "1000/1000" in text
    # in a log file, every redraw is one complete line (no carriage returns piling up)
    out = io.StringIO()
    bar = progress_bar(3, "work", "item", file=out, interval_s=0)
    for _ in range(3):
        bar.update(1)
    bar.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    # 0/3 .. 3/3, and the final state again on close
    assert [ln.split("|")[-1].split()[0] for ln in lines] == ["0/3", "1/3", "2/3", "3/3", "3/3"]
    # disabled: nothing at all
    out = io.StringIO()
    bar = progress_bar(3, "work", "item", file=out, enabled=False)
    bar.update(3)
    bar.close()
    assert out.getvalue() == ""


class _Regression:
    """1,000 one-item batches of a 2-parameter regression: 1,000 fast steps."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(1000, 2, generator=g)
        self.dataset = torch.utils.data.TensorDataset(x, x @ torch.tensor([1.0, -2.0]))

    def loss(self, model, batch, device):
        x, y = batch
        return ((model(x).squeeze(1) - y) ** 2).mean(), len(x)


def test_trainer_bar_of_a_1000_step_run_redraws_a_few_times(tmp_path, capsys):
    cfg = train_config(
        tmp_path,
        batch_size=1,
        lr=0.01,
        ckpt_every=0,
        workdir=str(tmp_path / "work"),
        metrics=str(tmp_path / "metrics.csv"),
        progress=True,
    )
    Trainer(cfg, DistEnv(), torch.device("cpu")).fit(torch.nn.Linear(2, 1), _Regression())
    err = capsys.readouterr().err
    bar_lines = [ln for ln in err.splitlines() if ln.startswith("train")]
    assert "1000/1000" in bar_lines[-1]
    assert len(bar_lines) <= 30 and err.count("\r") <= 30, err[-2000:]
