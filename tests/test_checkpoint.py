"""Our checkpoint format round-trips; released checkpoints import exactly, or fail clearly."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lipsim.__main__ import main as lipsim_main
from lipsim.models import (
    CheckpointError,
    build_model,
    import_released,
    load_checkpoint,
    project_to_ball,
    save_checkpoint,
)

CFG = dict(preset="tiny", image_size=32, emb_dim=64)


def _released_state(
    seed=0, conv_depth=3, linear_depth=2, channels=32, conv_inner=16, features=128, linear_inner=128
):
    """A state dict in the public LipSim layout (DataParallel > NormalizedModel > network),
    written from the public code's conventions, with random weights. The conv q are random
    too: they must have no effect (they cancel in the public conv layer)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for i in range(conv_depth):
        layer = {
            "kernel": 0.3 * torch.randn(conv_inner, channels, 3, 3, generator=g),
            "bias": 0.1 * torch.randn(1, conv_inner, 1, 1, generator=g),
            "q": torch.randn(conv_inner, generator=g),
        }
        for name, v in layer.items():
            state[f"module.model.convs.{i}.{name}"] = v
            state[f"module.model.base.1.{i}.{name}"] = v  # the same tensor, twice
    for j in range(1, linear_depth + 1):  # linear.0 is the Flatten
        layer = {
            "weight": 0.2 * torch.randn(linear_inner, features, generator=g),
            "bias": 0.1 * torch.randn(1, linear_inner, generator=g),
            "q": torch.randn(linear_inner, generator=g),
        }
        for name, v in layer.items():
            state[f"module.model.linear.{j}.{name}"] = v
            state[f"module.model.base.2.{j}.{name}"] = v
    return state


def _public_forward(state, x, emb_dim):
    """The released network's forward, written independently from the public code's
    formulas (einsum over q for linear layers; q_a / q_a for conv layers)."""
    s = {k.removeprefix("module.model."): v for k, v in state.items()}
    out = torch.zeros(x.shape[0], s["convs.0.kernel"].shape[1], *x.shape[-2:])
    out[:, :3] = x
    i = 0
    while f"convs.{i}.kernel" in s:
        k, b, q = s[f"convs.{i}.kernel"], s[f"convs.{i}.bias"], s[f"convs.{i}.q"]
        ktk = F.conv2d(k, k, padding=2).abs()
        t = 1.0 / (
            torch.exp(-q).reshape(-1, 1, 1, 1) * ktk * torch.exp(q).reshape(-1, 1, 1, 1)
        ).sum((1, 2, 3))
        res = t.reshape(1, -1, 1, 1) * F.relu(F.conv2d(out, k, padding=1) + b)
        out = out - 2 * F.conv_transpose2d(res, k, padding=1)
        i += 1
    out = F.avg_pool2d(F.avg_pool2d(out, 4, divisor_override=4), 4, divisor_override=4)
    out = out.flatten(1)
    j = 1
    while f"linear.{j}.weight" in s:
        w, b, q = s[f"linear.{j}.weight"], s[f"linear.{j}.bias"], s[f"linear.{j}.q"]
        t = 1.0 / torch.einsum("i,ik,kj,j->ij", torch.exp(-q), w, w.T, torch.exp(q)).abs().sum(1)
        out = out - 2 * F.linear(t * F.relu(F.linear(out, w) + b), w.T)
        j += 1
    return out[:, :emb_dim]


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    net = build_model(**CFG, conv_depth=2)
    path = tmp_path / "ck" / "m.pt"
    save_checkpoint(path, net, stage="finetuned", margin=0.5, teacher="demo", meta={"epochs": 2})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "lipsim-repro/1" and raw["stage"] == "finetuned"
    assert raw["margin"] == 0.5 and raw["teacher"] == "demo" and raw["meta"] == {"epochs": 2}
    assert raw["model_config"] == net.config
    loaded, ckpt = load_checkpoint(path)
    assert not loaded.training and ckpt["teacher"] == "demo"
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded(x), net.eval()(x))
    assert [p.name for p in tmp_path.joinpath("ck").iterdir()] == ["m.pt"]  # no temp files left


def test_save_checkpoint_validates(tmp_path):
    net = build_model(**CFG)
    with pytest.raises(ValueError, match="stage"):
        save_checkpoint(tmp_path / "x.pt", net, stage="final", teacher="demo")
    with pytest.raises(TypeError, match="LipSimNet"):
        save_checkpoint(
            tmp_path / "x.pt", torch.nn.Linear(2, 2), stage="pretrained", teacher="demo"
        )
    assert not (tmp_path / "x.pt").exists()


def test_load_checkpoint_rejects_released_file_with_hint(tmp_path):
    torch.save({"model_state_dict": _released_state(), "epoch": 3}, tmp_path / "rel.pth")
    with pytest.raises(ValueError, match="import-checkpoint"):
        load_checkpoint(tmp_path / "rel.pth")


def test_import_released_gives_identical_embeddings(tmp_path):
    state = _released_state()
    path = tmp_path / "released.pth"
    torch.save({"model_state_dict": state, "epoch": 40}, path)
    net = import_released(path, **CFG).net
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        ours, public = net(x), _public_forward(state, x, 64)
    # Only the 1e-5 safety inflation of T separates the two.
    torch.testing.assert_close(ours, public, rtol=1e-4, atol=1e-5)
    assert (ours - x.new_zeros(())).abs().max() > 0
    # Conv q are dead in the public layer: changing them changes nothing there either.
    state2 = {
        k: (v + 5 if k.startswith("module.model.convs.") and k.endswith(".q") else v)
        for k, v in state.items()
    }
    with torch.no_grad():
        torch.testing.assert_close(_public_forward(state2, x, 64), public)
    # The imported weights are the released ones, tensor for tensor.
    sd = net.state_dict()
    assert torch.equal(sd["convs.1.kernel"], state["module.model.convs.1.kernel"])
    assert torch.equal(sd["linear.2.q"], state["module.model.linear.2.q"])
    # In-memory state dicts and the bare state dict (no wrapper) are accepted too.
    net2 = import_released(state, **CFG).net
    with torch.no_grad():
        assert torch.equal(net2(x), ours)
    emb = project_to_ball(ours)
    assert (emb.norm(dim=-1) <= 1 + 1e-6).all()


def test_import_released_accepts_single_copy_and_ignores_alpha():
    state = {k: v for k, v in _released_state().items() if ".base." not in k}
    state["module.model.linear.1.alpha"] = torch.zeros(1)
    assert dict(import_released(state, **CFG).ignored)["module.model.linear.1.alpha"]


@pytest.mark.parametrize(
    "edit,message",
    [
        (
            lambda s: [
                s.pop(k) for k in ("module.model.convs.2.kernel", "module.model.base.1.2.kernel")
            ],
            r"missing keys: convs\.2\.kernel",
        ),
        (
            lambda s: s.__setitem__("module.model.linear.7.weight", torch.zeros(3)),
            r"unexpected keys: linear\.7\.weight",
        ),
        (
            lambda s: s.update(
                dict.fromkeys(
                    ["module.model.linear.1.weight", "module.model.base.2.1.weight"],
                    torch.zeros(128, 100),
                )
            ),
            r"shape mismatches: linear\.1\.weight: checkpoint \(128, 100\) vs model \(128, 128\)",
        ),
        (
            lambda s: s.__setitem__("module.model.base.2.1.bias", torch.ones(1, 128)),
            r"linear\.1\.bias and its duplicate under base\.\* differ",
        ),
    ],
)
def test_import_released_errors_name_the_keys(edit, message, tmp_path):
    state = _released_state()
    edit(state)
    torch.save({"model_state_dict": state}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match=message) as err:
        import_released(tmp_path / "bad.pth", **CFG)
    assert "bad.pth" in str(err.value)


def test_import_released_wrong_preset_names_shapes():
    with pytest.raises(
        ValueError,
        match=r"convs\.0\.kernel: checkpoint \(16, 32, 3, 3\) vs "
        r"model \(5, 45, 3, 3\)",
    ):
        import_released(_released_state(), "small", 32, 64)


def test_cli_import_checkpoint(tmp_path, capsys):
    state = _released_state()
    torch.save({"model_state_dict": state}, tmp_path / "rel.pth")
    out = tmp_path / "checkpoints" / "margin0.5.pt"
    rc = lipsim_main(
        [
            "import-checkpoint",
            "--src",
            str(tmp_path / "rel.pth"),
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
            "--teacher",
            "dreamsim_ensemble",
            "--out",
            str(out),
        ]
    )
    assert rc == 0 and "margin 0.5" in capsys.readouterr().out
    net, ckpt = load_checkpoint(out)
    assert (ckpt["stage"], ckpt["margin"], ckpt["teacher"]) == (
        "finetuned",
        0.5,
        "dreamsim_ensemble",
    )
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), _public_forward(state, x, 64), rtol=1e-4, atol=1e-5)
    with pytest.raises(SystemExit):
        lipsim_main(
            [
                "import-checkpoint",
                "--src",
                str(tmp_path / "rel.pth"),
                "--preset",
                "tiny",
                "--image-size",
                "32",
                "--emb-dim",
                "64",
                "--stage",
                "finetuned",
                "--teacher",
                "demo",
                "--out",
                str(tmp_path / "x.pt"),
            ]
        )
