"""LipSim: a provably robust perceptual similarity metric (Ghazanfari et al., ICLR 2024).

Public API::

    import lipsim
    m = lipsim.load("checkpoint.pt")      # or a preset name with random weights
    d = m(a, b)                           # distances for image batches in [0, 1]
    e = m.embed(x)                        # projected embeddings
    r = m.certified_radius(ref, x0, x1)   # l2 radius within which the 2AFC decision holds
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "load"]


def load(path_or_preset, device="cpu", **kwargs):
    """Load a LipSim metric from a checkpoint file or a preset name (see lipsim.metric.load)."""
    from lipsim.metric import load as _load

    return _load(path_or_preset, device=device, **kwargs)
