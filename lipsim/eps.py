"""Radii (eps) of attacks and certificates: image units everywhere, /255 only at the edges.

Image units are those of pixels in [0, 1]: an l2 radius is the l2 norm of the perturbation
over every pixel and channel, an linf radius its largest pixel change. Every library function
and every result file (the `eps` columns, certify's radii) uses them. Pixel levels (k/255) are
for people and file names only: labels (`4/255`), the config's `*_eps_255` lists, the
workflow's Linf attack file names (`autoattack-Linf-4.parquet`; l2 ones are written in image
units, `autoattack-L2-0.5.parquet`). Converting between the two is `convert_eps`, and the
helpers below are the only places that call it for file names and labels; nothing guesses a
unit from a value's size.
"""

from __future__ import annotations

import math

from lipsim.errors import LipSimError

LEVELS = 255  # pixel levels of an 8-bit image: eps k/255 is k levels
UNITS = ("image", "255")
# A radius within this of k/255 (image units) reads as k/255: file names and tables round
# 4/255 to 0.0157 or 0.016; 1/255 steps (0.0039) stay apart.
LEVEL_ATOL = 5e-4


def convert_eps(value: float, to: str) -> float:
    """The one conversion: to="image": from /255 units (k) to image units (k / 255);
    to="255": from image units to /255 units (eps x 255)."""
    if to == "image":
        return float(value) / LEVELS
    if to == "255":
        return float(value) * LEVELS
    raise LipSimError(f"eps units must be one of {UNITS}, got {to!r}")


def _linf(norm: str) -> bool:
    n = str(norm).lower()
    if n not in ("l2", "linf"):
        raise LipSimError(f"attack norm must be l2 or linf, got {norm!r}")
    return n == "linf"


def eps_file_token(eps: float, norm: str) -> str:
    """The eps part of an attack file name (eps in image units): Linf in /255 units (`4`),
    l2 in image units (`0.5`); one spelling per number (`2`, never `2.0`)."""
    value = convert_eps(eps, "255") if _linf(norm) else float(eps)
    return f"{round(value, 6):g}"


def eps_from_file_token(token: str, norm: str) -> float:
    """eps in image units from the eps part of an attack file name (see eps_file_token)."""
    try:
        value = float(token)
    except ValueError:
        raise LipSimError(f"eps {token!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise LipSimError(f"eps {token!r} must be a finite number >= 0")
    return convert_eps(value, "image") if _linf(norm) else value


def eps_label(eps: float, norm: str) -> str:
    """Label of a radius in image units: Linf as k/255 (the paper's convention) when it is
    one, otherwise (and for l2) the decimal."""
    eps = float(eps)
    if str(norm).lower() == "linf":
        k = round(convert_eps(eps, "255"))
        if k > 0 and abs(eps - convert_eps(k, "image")) < LEVEL_ATOL:
            return f"{k}/{LEVELS}"
    return f"{eps:g}"


__all__ = [
    "LEVELS",
    "LEVEL_ATOL",
    "UNITS",
    "convert_eps",
    "eps_file_token",
    "eps_from_file_token",
    "eps_label",
]
