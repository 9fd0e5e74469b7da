"""Attack radii at an image size other than the one they were chosen for.

An l2 radius is a length in pixel space: for images of side s (3 s^2 values in [0, 1]) the
norm of an image, and of a perturbation of a given per-pixel size, grows as s. The paper's l2
radii are for 224 px images (eps 2.0 is about 1% of a 224 px image's norm); at 32 px the same
relative size is 2.0 x 32 / 224 = 0.29. An linf radius bounds each pixel and does not depend
on the image size.

`attacks.eps_reference_size` in the config says at which size the configured radii (attack
l2 radii, retrieval.eps, distances.eps) are meant; null = they are applied as written. The
workflow passes `eps_divisor` as the commands' --eps-scale; the tables and figures label a
radius with both the applied value and the configured one (`reference_eps`).
"""

from __future__ import annotations

from lipsim.errors import LipSimError


def _check(image_size: int, reference_size: int | None) -> None:
    if int(image_size) < 1:
        raise LipSimError(f"image_size must be >= 1, got {image_size}")
    if reference_size is not None and int(reference_size) < 1:
        raise LipSimError(f"attacks.eps_reference_size must be >= 1 or null, got {reference_size}")


def eps_divisor(norm: str, image_size: int, reference_size: int | None) -> float:
    """What a configured radius is divided by to give the radius applied at image_size:
    reference_size / image_size for l2, 1 for linf or when reference_size is None."""
    _check(image_size, reference_size)
    if reference_size is None or str(norm).lower() != "l2":
        return 1.0
    return int(reference_size) / int(image_size)


def applied_eps(eps: float, norm: str, image_size: int, reference_size: int | None) -> float:
    """The radius used at image_size for a radius meant at reference_size."""
    return float(eps) / eps_divisor(norm, image_size, reference_size)


def reference_eps(eps: float, norm: str, image_size: int, reference_size: int | None) -> float:
    """The radius at reference_size that an applied radius at image_size stands for."""
    return float(eps) * eps_divisor(norm, image_size, reference_size)


def config_eps_scale(config: dict, norm: str) -> float | int:
    """--eps-scale of a workflow command for a radius of the validated config: linf radii are
    written in /255 units; l2 ones are meant at attacks.eps_reference_size."""
    if str(norm).lower() == "linf":
        return 255
    return eps_divisor("l2", config["image_size"], config["attacks"]["eps_reference_size"])


def scaled_note(image_size: int, reference_size: int | None) -> str:
    """One sentence for table notes and figure captions ('' when nothing is scaled)."""
    if reference_size is None or eps_divisor("l2", image_size, reference_size) == 1.0:
        return ""
    return (
        f"l2 radii are scaled to the {int(image_size)} px images: ε = paper ε × "
        f"{int(image_size)}/{int(reference_size)}, followed by (paper ε), the radius at "
        f"{int(reference_size)} px; linf radii are per pixel and not scaled."
    )


__all__ = ["applied_eps", "config_eps_scale", "eps_divisor", "reference_eps", "scaled_note"]
