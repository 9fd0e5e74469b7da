"""Teachers: name -> how to build it (its embedding size, input size and weights are the
registry's, lipsim.registry.METRICS_TABLE).

    from lipsim.teachers import get_teacher
    t = get_teacher("demo")                                   # no weights needed
    t = get_teacher("dreamsim_ensemble", weights_dir="weights", device="cuda")
    t = get_teacher("dreamsim_ensemble", random_weights=True) # real architecture, seeded weights
    e = t.embed(x)        # x: (B, 3, H, W) in [0, 1], any size -> (B, t.emb_dim)

Every teacher is a `lipsim.similarity.SimilarityMetric` (cosine distance on its embedding).
Weights live in `weights_dir/<teacher name>/` and are fetched (network) by
`python -m lipsim fetch-weights --teacher NAME --weights-dir DIR` (the `fetch_weights` rule);
building never downloads.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable
from pathlib import Path

from lipsim.checksum import sha256_file as _sha256
from lipsim.registry import METRICS_TABLE, TEACHER_NAMES, Download
from lipsim.teachers.base import Teacher

__all__ = [
    "TEACHERS",
    "Download",
    "Teacher",
    "TeacherSpec",
    "fetch_weights",
    "get_teacher",
    "teacher_names",
]


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    build: Callable[..., Teacher]  # (weights_dir, device, random_weights) -> Teacher
    emb_dim: int
    image_size: int
    downloads: tuple[Download, ...] = ()
    description: str = ""


def _build_demo(
    *, weights_dir=None, device="cpu", random_weights=False, name="demo", seed=0
) -> Teacher:
    from lipsim.teachers.demo import DemoTeacher

    # Seeded by construction; weights_dir / random_weights do not apply.
    teacher = DemoTeacher(seed=seed)
    teacher.name = name
    return teacher.to(device)


def _dreamsim(name, backbones, lora):
    def build(*, weights_dir=None, device="cpu", random_weights=False) -> Teacher:
        from lipsim.teachers.dreamsim import build_dreamsim

        return build_dreamsim(
            name,
            backbones=backbones,
            lora=lora,
            weights_dir=weights_dir,
            device=device,
            random_weights=random_weights,
        )

    return build


# How to build each teacher; its facts (embedding size, input size, weights) are the registry's.
_BUILDERS: dict[str, Callable[..., Teacher]] = {
    "demo": _build_demo,
    "demo2": functools.partial(_build_demo, name="demo2", seed=1),
    "dreamsim_ensemble": _dreamsim(
        "dreamsim_ensemble", ("dino_vitb16", "clip_vitb16", "open_clip_vitb16"), "ensemble_lora"
    ),
    "dino_vitb16": _dreamsim("dino_vitb16", ("dino_vitb16",), "dino_vitb16_single_lora"),
    "clip_vitb32": _dreamsim("clip_vitb32", ("clip_vitb32",), "clip_vitb32_single_lora"),
    "open_clip_vitb32": _dreamsim(
        "open_clip_vitb32", ("open_clip_vitb32",), "open_clip_vitb32_single_lora"
    ),
}
TEACHERS: dict[str, TeacherSpec] = {
    name: TeacherSpec(
        _BUILDERS[name], card.emb_dim, card.image_size, card.downloads, card.description
    )
    for name, card in ((n, METRICS_TABLE[n]) for n in TEACHER_NAMES)
}


def teacher_names() -> list[str]:
    return list(TEACHERS)


def _spec(name: str) -> TeacherSpec:
    try:
        return TEACHERS[name]
    except KeyError:
        raise KeyError(f"unknown teacher {name!r}; known: {', '.join(TEACHERS)}") from None


def get_teacher(
    name: str,
    *,
    weights_dir: str | os.PathLike | None = None,
    device="cpu",
    random_weights: bool = False,
) -> Teacher:
    """Build teacher `name` (frozen, eval mode) on `device`. See the module docstring."""
    teacher = _spec(name).build(
        weights_dir=weights_dir, device=str(device), random_weights=random_weights
    )
    return teacher


def fetch_weights(
    name: str, weights_dir: str | os.PathLike, downloads: tuple | None = None
) -> dict:
    """Download `name`'s weights into weights_dir/<name>/ (network) and return a record
    {teacher, folder, files: [{path, bytes, sha256}], urls}. `downloads` defaults to the
    teacher's own (TEACHERS[name].downloads); baselines pass theirs. Already present
    downloads are not fetched again (a file is only ever renamed into place when complete)."""
    # The project's own downloader and extractor: resumable, retried and size-checked
    # transfers, and zip entries that cannot escape the weights folder.
    from lipsim.data.download import fetch
    from lipsim.data.extract import safe_extract

    if downloads is None:
        downloads = _spec(name).downloads
    folder = Path(weights_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    urls = []
    for dl in downloads:
        urls.append(dl.url)
        target = folder / dl.name
        if not target.exists():
            # An archive is only accepted when it opens as one (an HTML error page is not).
            fetch(dl.url, target, expect="zip" if dl.kind == "zip" else None)
        if dl.kind == "zip":
            safe_extract(target, folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {
        "teacher": name,
        "folder": str(folder),
        "urls": urls,
        "files": [
            {"path": str(p.relative_to(folder)), "bytes": p.stat().st_size, "sha256": _sha256(p)}
            for p in files
        ],
    }
