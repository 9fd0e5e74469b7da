"""The backbone is 1-Lipschitz (layer by layer, for every preset, and end to end with the
projection), the check catches a broken layer, and the eval-mode t cache is exact."""

from __future__ import annotations

import pytest
import torch

from lipsim.models import PRESETS, SLLConv2d, SLLLinear, build_model, project_to_ball
from lipsim.models.sll import PadChannels, SumPool4, Truncate

TOL = 1e-4


def _ratio(fn, x, y):
    num = torch.linalg.vector_norm((fn(x) - fn(y)).flatten(1), dim=1)
    den = torch.linalg.vector_norm((x - y).flatten(1), dim=1)
    return num / den


def _max_ratio(fn, shape, *, seed=0, n_random=16, steps=60, restarts=2, scale=1.0):
    """Largest ||fn(x) - fn(y)|| / ||x - y|| over random pairs (far and near) and over pairs
    found by gradient ascent on that ratio (Adam on x and y)."""
    g = torch.Generator().manual_seed(seed)
    best = 0.0
    with torch.no_grad():
        x = scale * torch.randn((n_random, *shape), generator=g)
        for y in (
            scale * torch.randn((n_random, *shape), generator=g),
            x + 1e-2 * torch.randn((n_random, *shape), generator=g),
        ):
            best = max(best, _ratio(fn, x, y).max().item())
    for _ in range(restarts):
        x = (scale * torch.randn((4, *shape), generator=g)).requires_grad_(True)
        y = (x.detach() + 0.1 * torch.randn((4, *shape), generator=g)).requires_grad_(True)
        opt = torch.optim.Adam([x, y], lr=0.05)
        for _ in range(steps):
            r = _ratio(fn, x, y)
            best = max(best, r.max().item())
            opt.zero_grad()
            (-r.sum()).backward()
            opt.step()
        with torch.no_grad():
            best = max(best, _ratio(fn, x, y).max().item())
    return best


def _sharpen(layer, factor=3.0, seed=0):
    """Scale the weights up and give a positive bias: a raw W with norm > 1 and active ReLUs,
    so an unscaled layer is clearly expansive and the rescaling has real work to do."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name in ("kernel", "weight"):
                p.mul_(factor)
            elif name == "bias":
                p.copy_(torch.rand(p.shape, generator=g) * 0.5)
            elif name == "q":
                p.copy_(torch.randn(p.shape, generator=g))
    return layer


class _UnscaledConv(SLLConv2d):
    """Deliberately broken: t = 1 instead of 1 / T."""

    def _compute_t(self):
        return torch.ones(self.kernel.shape[0])


class _UnscaledLinear(SLLLinear):
    def _compute_t(self):
        return torch.ones(self.weight.shape[0])


def _layer_cases(cfg, side=8, image_size=32):
    features = cfg["channels"] * (image_size // 16) ** 2
    return [
        (SLLConv2d, (cfg["channels"], cfg["conv_inner"]), (cfg["channels"], side, side)),
        (SLLLinear, (features, cfg["linear_inner"]), (features,)),
    ]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_layers_are_1_lipschitz(preset):
    torch.manual_seed(0)
    for cls, args, shape in _layer_cases(PRESETS[preset]):
        layer = _sharpen(cls(*args)).eval().requires_grad_(False)  # frozen: t cached
        r = _max_ratio(layer, shape, steps=30, restarts=1)
        assert r <= 1 + TOL, f"{preset} {cls.__name__}{args}: Lipschitz ratio {r}"


@pytest.mark.parametrize(
    "cls,unscaled,args,shape",
    [
        (SLLConv2d, _UnscaledConv, (16, 8), (16, 6, 6)),
        (SLLLinear, _UnscaledLinear, (64, 32), (64,)),
    ],
)
def test_check_catches_unscaled_layer(cls, unscaled, args, shape):
    torch.manual_seed(0)
    good = _sharpen(cls(*args))
    broken = unscaled(*args)
    broken.load_state_dict(good.state_dict())
    assert _max_ratio(good, shape) <= 1 + TOL
    assert _max_ratio(broken, shape) > 1 + 10 * TOL  # the same check flags it


def test_fixed_layers_are_1_lipschitz():
    pad, pool, trunc = PadChannels(8), SumPool4(), Truncate(5)
    assert _max_ratio(pad, (3, 4, 4)) <= 1 + TOL
    assert _max_ratio(pool, (2, 8, 8)) <= 1 + TOL
    assert _max_ratio(trunc, (9,)) <= 1 + TOL
    # sum/4 over a window is tight: a constant patch attains ratio 1.
    x = torch.ones(1, 1, 4, 4)
    assert torch.allclose(pool(x).norm(), x.norm())


def test_projection_is_nonexpansive_and_naive_normalisation_is_not():
    assert _max_ratio(project_to_ball, (6,), scale=0.3) <= 1 + TOL
    naive = _max_ratio(lambda z: z / z.norm(dim=-1, keepdim=True), (6,), scale=0.3)
    assert naive > 1.5  # the public code's normalisation expands near the origin
    z = torch.tensor([[3.0, 4.0], [0.3, 0.4]])
    assert torch.allclose(project_to_ball(z), torch.tensor([[0.6, 0.8], [0.3, 0.4]]))


def test_tiny_model_with_projection_is_1_lipschitz():
    torch.manual_seed(0)
    net = build_model("tiny", 32, 64).eval()
    for layer in net.modules():
        if isinstance(layer, (SLLConv2d, SLLLinear)):
            _sharpen(layer, factor=2.0)
    net.requires_grad_(False)
    # Scale the output down so that both the interior and the sphere part of P are hit.
    for scale in (1.0, 0.05):
        phi = lambda x, s=scale: project_to_ball(s * net(x))  # noqa: E731
        r = _max_ratio(phi, (3, 32, 32), steps=25, restarts=1, n_random=8, scale=0.5)
        assert r <= 1 + TOL, f"scale {scale}: ratio {r}"


def test_build_model_config_and_errors():
    net = build_model("tiny", 32, 16, conv_depth=1)
    assert net.config == {
        "preset": "tiny",
        "image_size": 32,
        "emb_dim": 16,
        "conv_depth": 1,
        "channels": 32,
        "conv_inner": 16,
        "linear_depth": 2,
        "linear_inner": 128,
    }
    again = build_model(**net.config)
    assert [k for k in again.state_dict()] == [k for k in net.state_dict()]
    assert net(torch.rand(2, 3, 32, 32)).shape == (2, 16)
    with pytest.raises(ValueError, match="emb_dim=200 exceeds"):
        build_model("tiny", 32, 200)
    with pytest.raises(KeyError, match="unknown LipSim preset 'huge'"):
        build_model("huge", 32, 8)
    with pytest.raises(TypeError, match="depth"):
        build_model("tiny", 32, 8, depth=3)
    with pytest.raises(ValueError, match="multiple of 16"):
        build_model("tiny", 40, 8)
    with pytest.raises(ValueError, match=r"expects \(B, 3, 32, 32\)"):
        net(torch.rand(1, 3, 64, 64))


def test_small_preset_size_matches_paper():
    net = torch.device("meta")
    with net:
        small = build_model("small", 224, 1792)
    n = sum(p.numel() for p in small.parameters())
    assert small.features == 8820 and abs(n / 1e6 - 63.3) < 0.05


# --- eval-mode t cache -------------------------------------------------------------------


def _sll_layers(net):
    return [m for m in net.modules() if isinstance(m, (SLLConv2d, SLLLinear))]


def test_eval_cache_matches_training_path():
    torch.manual_seed(0)
    net = build_model("tiny", 32, 64)
    x = torch.rand(3, 3, 32, 32)
    net.train()
    ref = net(x).detach()
    net.eval()
    with torch.no_grad():
        first = net(x)
        cached = [layer._t_cache for layer in _sll_layers(net)]
        second = net(x)
    assert all(c is not None for c in cached)
    assert all(layer._t_cache is c for layer, c in zip(_sll_layers(net), cached, strict=True))
    for out in (first, second):
        assert torch.allclose(out, ref, rtol=1e-6, atol=1e-6 * ref.abs().max().item())
    for layer in _sll_layers(net):
        t_uncached = layer._compute_t()
        assert torch.allclose(layer.t(), t_uncached, rtol=1e-6, atol=0)


@pytest.mark.parametrize("foreach", [False, True])
def test_eval_cache_invalidated_by_optimizer_step(foreach):
    torch.manual_seed(0)
    net = build_model("tiny", 32, 64, conv_depth=1).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        net(x)
    stale = [layer._t_cache.clone() for layer in _sll_layers(net)]
    opt = torch.optim.Adam(net.parameters(), lr=0.1, foreach=foreach)
    net(x).square().sum().backward()  # grad enabled + trainable weights: uncached path
    opt.step()
    with torch.no_grad():
        after = net(x)
        for layer, old in zip(_sll_layers(net), stale, strict=True):
            fresh = layer._compute_t()
            assert not torch.allclose(fresh, old)
            assert torch.allclose(layer.t(), fresh, rtol=1e-6, atol=0)
    net.train()
    assert torch.allclose(after, net(x).detach(), rtol=1e-6, atol=1e-6)


def test_eval_cache_invalidated_by_load_state_dict_and_train():
    torch.manual_seed(0)
    a, b = build_model("tiny", 32, 64).eval(), build_model("tiny", 32, 64).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        a(x)
        a.load_state_dict(b.state_dict())
        assert torch.allclose(a(x), b(x), rtol=1e-6, atol=1e-7)
    a.train()
    assert all(layer._t_cache is None for layer in _sll_layers(a))


def test_frozen_eval_net_caches_with_grad_enabled_for_input_gradients():
    torch.manual_seed(0)
    net = build_model("tiny", 32, 64).eval().requires_grad_(False)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    with torch.inference_mode():
        net(x.detach())  # cache built in inference mode must still work under autograd
    net(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(layer._t_cache is not None for layer in _sll_layers(net))
