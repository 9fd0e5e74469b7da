"""SLL layers (SDP-based Lipschitz layers, Araujo et al., ICLR 2023), 1-Lipschitz in l2.

A residual layer h(x) = x - 2 W^T (t ⊙ ReLU(W x + b)) is 1-Lipschitz when
diag(1/t) ⪰ W W^T. We take t_i = 1 / T_i with the Schur-test (weighted Gershgorin) bound

    T_i = sum_j |(W W^T)_ij| exp(q_j) / exp(q_i)        (any q),

which gives diag(T) ⪰ W W^T.

Linear layer: W is `weight` (inner, D), q a learned vector (inner,).

Conv layer: W is a 3x3 convolution with padding 1 (kernel (inner, C, 3, 3)) and W^T its
transposed convolution. W W^T is a convolution on the inner channels whose kernel is
conv2d(K, K, padding=2) (all cross-correlations of filter pairs, shape (inner, inner, 5, 5)),
so T_a = sum_{b,u,v} |(K*K)[a, b, u, v]|. This bounds the zero-padded operator too: with E
the zero extension of the input, W W^T = S C (E E^T) C^T S^T ⪯ S C C^T S^T, a principal
block of the infinite convolution's Gram matrix, which the row sums above dominate.
We use q = 0 for conv layers: the public LipSim code multiplies by exp(-q_a) and exp(q_a) on
the same index, so its conv q cancels (a dead parameter); q = 0 reproduces the released
models exactly and the bound holds for any q, in particular 0. The importer drops those q.

Numerical safety: T is inflated by a relative 1e-5 (and 1e-12 absolute) before inverting, so
a rounding error in the sums can only make t smaller, never larger than the bound allows
(a row of W that is exactly zero contributes nothing whatever its t).

t depends on the weights only: in eval mode it is computed once and cached, keyed on each
weight's storage, version counter (bumped by every in-place update: optimizer steps,
load_state_dict, .copy_()), dtype and device; train() drops the cache. The cache is not used
while gradients can flow into the weights (grad enabled and a weight requires grad), since a
cached t carries no graph.

Parameter names and shapes follow the public code (`kernel`/`bias` with bias (1, inner, 1, 1)
for conv, `weight`/`bias`/`q` with bias (1, inner) for linear), so importing a released
state dict is a rename.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

_T_REL = 1e-5
_T_ABS = 1e-12


def _safe_inverse(T: torch.Tensor) -> torch.Tensor:
    # Inflate T so that t = 1/T can only err on the safe (smaller) side.
    return 1.0 / (T * (1.0 + _T_REL) + _T_ABS)


class _CachedT(nn.Module):
    """Mixin: `self.t()` returns the rescaling vector, cached in eval mode."""

    def __init__(self) -> None:
        super().__init__()
        self._t_cache: torch.Tensor | None = None
        self._t_key: tuple | None = None

    def _compute_t(self) -> torch.Tensor:
        raise NotImplementedError

    def _weights(self) -> list[torch.Tensor]:
        raise NotImplementedError

    def t(self) -> torch.Tensor:
        weights = self._weights()
        needs_graph = torch.is_grad_enabled() and any(w.requires_grad for w in weights)
        if self.training or needs_graph:
            return self._compute_t()
        key = tuple((w.data_ptr(), w._version, w.dtype, w.device) for w in weights)
        if self._t_cache is None or key != self._t_key:
            # Normal (non-inference) tensor without graph: usable later in autograd calls
            # (attacks differentiate w.r.t. the input) even if first built in inference mode.
            with torch.inference_mode(False), torch.no_grad():
                self._t_cache = self._compute_t()
            self._t_key = key
        return self._t_cache

    def train(self, mode: bool = True):
        self._t_cache, self._t_key = None, None
        return super().train(mode)

    def _load_from_state_dict(self, *args, **kwargs):
        self._t_cache, self._t_key = None, None
        return super()._load_from_state_dict(*args, **kwargs)


class SLLConv2d(_CachedT):
    """Conv SLL layer on (B, channels, H, W): x - 2 K^T (t ⊙ ReLU(K x + b)), 3x3, padding 1."""

    def __init__(self, channels: int, inner: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd (same padding), got {kernel_size}")
        self.padding = kernel_size // 2
        self.kernel = nn.Parameter(torch.empty(inner, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(1, inner, 1, 1))
        nn.init.xavier_normal_(self.kernel)
        bound = 1.0 / np.sqrt(channels * kernel_size * kernel_size)
        nn.init.uniform_(self.bias, -bound, bound)

    def _weights(self) -> list[torch.Tensor]:
        return [self.kernel]

    def _compute_t(self) -> torch.Tensor:
        k = self.kernel
        ktk = F.conv2d(k, k, padding=k.shape[-1] - 1)  # (inner, inner, 2k-1, 2k-1)
        return _safe_inverse(ktk.abs().sum((1, 2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = F.conv2d(x, self.kernel, padding=self.padding) + self.bias
        res = self.t().view(1, -1, 1, 1) * F.relu(res)
        return x - 2.0 * F.conv_transpose2d(res, self.kernel, padding=self.padding)

    def extra_repr(self) -> str:
        inner, channels, k, _ = self.kernel.shape
        return f"channels={channels}, inner={inner}, kernel_size={k}"


class SLLLinear(_CachedT):
    """Linear SLL layer on (B, features): x - 2 W^T (t ⊙ ReLU(W x + b))."""

    def __init__(self, features: int, inner: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(inner, features))
        self.bias = nn.Parameter(torch.empty(1, inner))
        self.q = nn.Parameter(torch.randn(inner))
        nn.init.xavier_normal_(self.weight)
        bound = 1.0 / np.sqrt(features)
        nn.init.uniform_(self.bias, -bound, bound)

    def _weights(self) -> list[torch.Tensor]:
        return [self.weight, self.q]

    def _compute_t(self) -> torch.Tensor:
        w = self.weight
        gram = (w @ w.T).abs()  # (inner, inner): the cost a cache saves at eval time
        # T_i = sum_j |G_ij| exp(q_j - q_i); shift by max(q) for overflow safety (cancels).
        e = torch.exp(self.q - self.q.max())
        return _safe_inverse((gram @ e) / e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = F.relu(F.linear(x, self.weight) + self.bias)
        return x - 2.0 * F.linear(self.t() * res, self.weight.T)

    def extra_repr(self) -> str:
        inner, features = self.weight.shape
        return f"features={features}, inner={inner}"


class PadChannels(nn.Module):
    """Zero-pad the channel axis from 3 to `channels` (an isometry)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.channels:
            raise ValueError(f"cannot pad {x.shape[1]} channels to {self.channels}")
        return F.pad(x, (0, 0, 0, 0, 0, self.channels - x.shape[1]))


class SumPool4(nn.AvgPool2d):
    """4x4 window sum / 4 (stride 4): ||sum/4||^2 <= 16 * sum(x^2) / 16, so 1-Lipschitz."""

    def __init__(self) -> None:
        super().__init__(4, divisor_override=4)


class Truncate(nn.Module):
    """Keep the first `dim` coordinates (a coordinate projection: 1-Lipschitz)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, : self.dim]

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
