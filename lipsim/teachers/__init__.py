"""Teacher registry: name -> how to build it and where its weights come from.

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
class Download:
    url: str
    kind: str  # "zip": extracted into the teacher folder; "file": saved under `name`
    name: str


@dataclasses.dataclass(frozen=True)
class TeacherSpec:
    build: Callable[..., Teacher]  # (weights_dir, device, random_weights) -> Teacher
    emb_dim: int
    image_size: int
    # Download, or a callable returning one (resolved at fetch time: reads the dreamsim package)
    downloads: tuple = ()
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


def _dreamsim_zip(key: str) -> Download:
    """The DreamSim release zip of the installed dreamsim package for `key`."""
    from dreamsim.config import dreamsim_weights

    return Download(dreamsim_weights[key], "zip", f"dreamsim_{key}.zip")


_DINO = Download(
    "https://dl.fbaipublicfiles.com/dino/dino_vitbase16_pretrain/dino_vitbase16_pretrain.pth",
    "file",
    "dino_vitbase16_pretrain.pth",
)
# The DreamSim ensemble LipSim distilled from (2023, dreamsim 0.1.x): DINO, CLIP and OpenCLIP
# ViT-B/16 (strides 16,16,16 in every released dreamsim config; CLIP/OpenCLIP B/16 and B/32
# both give 512-d embeddings, hence 768 + 512 + 512 = 1792). The zip holds the CLIP/OpenCLIP
# backbones and `ensemble_lora/`; dreamsim 0.2.x ships a re-released ensemble checkpoint
# (v0.2.0-checkpoints/dreamsim_ensemble_checkpoint.zip) with the same layout.
_ENSEMBLE_V01 = Download(
    "https://github.com/ssundaram21/dreamsim/releases/download/v0.1.0/dreamsim_checkpoint.zip",
    "zip",
    "dreamsim_ensemble_v0.1.zip",
)

TEACHERS: dict[str, TeacherSpec] = {
    "demo": TeacherSpec(
        _build_demo, 64, 32, (), "seeded random multi-scale conv features (demo; no weights)"
    ),
    # A second demo teacher (other filters and rotation) so the demo runs a teacher sweep.
    "demo2": TeacherSpec(
        functools.partial(_build_demo, name="demo2", seed=1),
        64,
        32,
        (),
        "the demo teacher with another seed (demo teacher sweep; no weights)",
    ),
    "dreamsim_ensemble": TeacherSpec(
        _dreamsim(
            "dreamsim_ensemble", ("dino_vitb16", "clip_vitb16", "open_clip_vitb16"), "ensemble_lora"
        ),
        1792,
        224,
        (_ENSEMBLE_V01, _DINO),
        "DreamSim ensemble: DINO ViT-B/16 (768) + CLIP ViT-B/16 (512) + OpenCLIP ViT-B/16 (512)",
    ),
    "dino_vitb16": TeacherSpec(
        _dreamsim("dino_vitb16", ("dino_vitb16",), "dino_vitb16_single_lora"),
        768,
        224,
        (functools.partial(_dreamsim_zip, "dino_vitb16"), _DINO),
        "DreamSim single DINO ViT-B/16",
    ),
    "clip_vitb32": TeacherSpec(
        _dreamsim("clip_vitb32", ("clip_vitb32",), "clip_vitb32_single_lora"),
        512,
        224,
        (functools.partial(_dreamsim_zip, "clip_vitb32"),),
        "DreamSim single CLIP ViT-B/32",
    ),
    "open_clip_vitb32": TeacherSpec(
        _dreamsim("open_clip_vitb32", ("open_clip_vitb32",), "open_clip_vitb32_single_lora"),
        512,
        224,
        (functools.partial(_dreamsim_zip, "open_clip_vitb32"),),
        "DreamSim single OpenCLIP ViT-B/32",
    ),
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
        dl = dl() if callable(dl) else dl
        urls.append(dl.url)
        target = folder / dl.name
        if not target.exists():
            fetch(dl.url, target)
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
