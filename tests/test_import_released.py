"""Released checkpoints as the authors' code saves them: DDP / DataParallel wrappers,
NormalizedModel, the duplicated base.* names, an Adam state with numpy scalars (numpy 1 and 2
spellings), epoch / global_step / scheduler entries. They import, give the same embeddings as
the model they came from, and bring their Adam state; a pickle that would run code does not."""

from __future__ import annotations

import io
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from lipsim.__main__ import main as lipsim_main
from lipsim.models import CheckpointError, import_released, load_checkpoint

CFG = dict(preset="tiny", image_size=32, emb_dim=64)
TINY = dict(
    conv_depth=3, channels=32, conv_inner=16, linear_depth=2, features=128, linear_inner=128
)


class _Params(nn.Module):
    """A layer of the authors' network reduced to its parameters, in their order."""

    def __init__(self, **shapes):
        super().__init__()
        for name, shape in shapes.items():
            setattr(self, name, nn.Parameter(0.2 * torch.randn(*shape)))


class _AuthorsLayout(nn.Module):
    """The module tree of their L2LipschitzNetwork: conv1, convs, linear, then `base`, a
    Sequential that registers the same modules again, and `last`."""

    def __init__(self, conv_depth, channels, conv_inner, linear_depth, features, linear_inner):
        super().__init__()
        self.conv1 = nn.Identity()  # channel padding: no parameters
        self.convs = nn.Sequential(
            *[
                _Params(
                    kernel=(conv_inner, channels, 3, 3), bias=(1, conv_inner, 1, 1), q=(conv_inner,)
                )
                for _ in range(conv_depth)
            ],
            nn.AvgPool2d(4, divisor_override=4),
            nn.AvgPool2d(4, divisor_override=4),
        )
        self.linear = nn.Sequential(
            nn.Flatten(),
            *[
                _Params(weight=(linear_inner, features), bias=(1, linear_inner), q=(linear_inner,))
                for _ in range(linear_depth)
            ],
        )
        self.base = nn.Sequential(self.conv1, self.convs, self.linear)
        self.last = nn.Identity()  # truncation: no parameters


class _Normalized(nn.Module):
    """Their NormalizedModel with mean 0 / std 1: a `model.` level and nothing else."""

    def __init__(self, model):
        super().__init__()
        self.model = model


def _adam_step(module, lr):
    opt = torch.optim.Adam(module.parameters(), lr=lr, betas=(0.5, 0.9))
    loss = sum((p * p).sum() for p in module.parameters())
    loss.backward()
    opt.step()
    return opt


def _save_finetuner_style(path, seed=0):
    """nn.DataParallel, Adam whose lr was set by np.interp (a numpy.float64), no scheduler."""
    torch.manual_seed(seed)
    model = nn.DataParallel(_Normalized(_AuthorsLayout(**TINY)))
    opt = _adam_step(model, 0.01)
    for group in opt.param_groups:
        group["lr"] = np.interp(5, [0, 10, 20], [0.0, 0.01, 0.0005])
    assert type(opt.param_groups[0]["lr"]) is np.float64
    torch.save(
        {
            "epoch": 1,
            "global_step": 7,
            "model_state_dict": model.state_dict(),
            "optimizer_state_dict": opt.state_dict(),
        },
        path,
    )
    return model.module.model, opt


def _save_trainer_style(path, tmp_path, seed=1):
    """DistributedDataParallel (gloo, one process), Adam + a scheduler entry."""
    torch.manual_seed(seed)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        model = nn.parallel.DistributedDataParallel(_Normalized(_AuthorsLayout(**TINY)))
        opt = _adam_step(model, 0.01)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
        torch.save(
            {
                "epoch": 40,
                "global_step": 1000,
                "model_state_dict": model.state_dict(),
                "optimizer_state_dict": opt.state_dict(),
                "scheduler": sched.state_dict(),
            },
            path,
        )
    finally:
        dist.destroy_process_group()
    return model.module.model, opt


def _numpy1_spelling(path):
    """The same file as numpy 1 pickles it (numpy.core.multiarray.scalar)."""
    with zipfile.ZipFile(path) as zin:
        entries = [(info, zin.read(info.filename)) for info in zin.infolist()]
    out = path.with_name(path.stem + "-np1.pth")
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as zout:
        for info, data in entries:
            if info.filename.endswith("data.pkl"):
                data = data.replace(
                    b"numpy._core.multiarray\nscalar", b"numpy.core.multiarray\nscalar"
                )
                assert b"numpy.core.multiarray\nscalar" in data
            zout.writestr(info, data)
    return out


def _reference_embedding(layout, x, emb_dim=64):
    """The authors' forward written from their formulas on the layout's parameters."""
    import torch.nn.functional as F

    out = torch.zeros(x.shape[0], TINY["channels"], *x.shape[-2:])
    out[:, :3] = x
    for layer in list(layout.convs)[:-2]:
        k, b = layer.kernel, layer.bias
        t = 1.0 / F.conv2d(k, k, padding=2).abs().sum((1, 2, 3))  # their q factors cancel
        out = out - 2 * F.conv_transpose2d(
            t.view(1, -1, 1, 1) * F.relu(F.conv2d(out, k, padding=1) + b), k, padding=1
        )
    out = F.avg_pool2d(F.avg_pool2d(out, 4, divisor_override=4), 4, divisor_override=4)
    out = out.flatten(1)
    for layer in list(layout.linear)[1:]:
        w, b, q = layer.weight, layer.bias, layer.q
        t = 1.0 / torch.einsum("i,ik,kj,j->ij", torch.exp(-q), w, w.T, torch.exp(q)).abs().sum(1)
        out = out - 2 * F.linear(t * F.relu(F.linear(out, w) + b), w.T)
    return out[:, :emb_dim]


@pytest.mark.parametrize("style", ["finetuner", "trainer"])
def test_authors_files_import_with_their_embeddings_and_adam_state(style, tmp_path):
    path = tmp_path / f"{style}.pth"
    if style == "finetuner":
        layout, opt = _save_finetuner_style(path)
    else:
        layout, opt = _save_trainer_style(path, tmp_path)
    if style == "finetuner":  # plain weights_only refuses its numpy scalar
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path, weights_only=True)
    files = [path] + ([_numpy1_spelling(path)] if style == "finetuner" else [])
    for f in files:
        imp = import_released(f, **CFG)
        x = torch.rand(3, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(
                imp.net(x), _reference_embedding(layout, x), rtol=1e-4, atol=1e-5
            )
        ignored = dict(imp.ignored)
        assert "epoch" in ignored and "global_step" in ignored
        assert ("scheduler" in ignored) == (style == "trainer")
        assert "convs.*.q" in ignored and "base.1.* / base.2.*" in ignored
        # Their Adam moments, moved to our parameter order (conv q dropped).
        their = opt.state_dict()
        names = [n for n, _ in layout.named_parameters()]
        ours = dict(imp.net.named_parameters())
        assert imp.optimizer_state is not None
        assert len(imp.optimizer_state["state"]) == len(ours)
        for k, name in enumerate(ours):
            want = their["state"][names.index(name)]["exp_avg"]
            assert torch.equal(imp.optimizer_state["state"][k]["exp_avg"], want)
        group = imp.optimizer_state["param_groups"][0]
        assert type(group["lr"]) is float and group["betas"] == (0.5, 0.9)


def test_cli_imports_a_finetuner_file_and_names_what_it_ignores(tmp_path, capsys):
    src = tmp_path / "margin0.5.pth"
    layout, _ = _save_finetuner_style(src)
    out = tmp_path / "margin0.5.pt"
    rc = lipsim_main(
        [
            "import-checkpoint",
            "--src",
            str(src),
            "--preset",
            "tiny",
            "--image-size",
            "32",
            "--emb-dim",
            "64",
            "--stage",
            "finetuned",
            "--margin",
            "0.5",
            "--metric",
            "cosine",
            "--teacher",
            "dreamsim_ensemble",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    for key in ("epoch", "global_step", "convs.*.q", "optimizer_state_dict"):
        assert key in printed
    net, ckpt = load_checkpoint(out)  # our format: plain weights_only, no numpy globals
    assert ckpt["metric"] == "cosine" and ckpt["margin"] == 0.5
    assert "optimizer_state_dict" in ckpt and ckpt["meta"]["global_step"] == 7
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _reference_embedding(layout, x), rtol=1e-4, atol=1e-5)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    buf = io.BytesIO()
    torch.save({"model_state_dict": {}, "evil": _RunsCode()}, buf)
    bad = tmp_path / "evil.pth"
    bad.write_bytes(buf.getvalue())
    with pytest.raises(CheckpointError, match="evil.pth: refused"):
        import_released(bad, **CFG)
    rc = lipsim_main(
        [
            "import-checkpoint",
            "--src",
            str(bad),
            "--preset",
            "tiny",
            "--image-size",
            "32",
            "--emb-dim",
            "64",
            "--stage",
            "pretrained",
            "--teacher",
            "demo",
            "--out",
            str(tmp_path / "x.pt"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "evil.pth" in err and "Traceback" not in err
    assert not (tmp_path / "x.pt").exists()


def test_truncated_file_is_one_error_naming_it(tmp_path):
    src = tmp_path / "cut.pth"
    _save_finetuner_style(src)
    src.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pth: not a readable torch checkpoint"):
        import_released(src, **CFG)
