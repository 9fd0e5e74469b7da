"""Teachers: get_teacher(name) builds the registry's teacher `name` (its embedding size, input
size and weights are its card, lipsim.registry.METRICS_TABLE).

    from lipsim.teachers import get_teacher
    t = get_teacher("demo")                                   # no weights needed
    t = get_teacher("dreamsim_ensemble", weights_dir="weights", device="cuda")
    t = get_teacher("dreamsim_ensemble", random_weights=True) # real architecture, seeded weights
    e = t.embed(x)        # x: (B, 3, H, W) in [0, 1], any size -> (B, t.emb_dim)

Every teacher is a `lipsim.similarity.SimilarityMetric` (cosine distance on its embedding).
Its builder is registered by its module (`@register("teacher", name)`); the modules are
imported below, one line each. Weights live in `weights_dir/<teacher name>/` and are fetched
(network) by `python -m lipsim fetch-weights --teacher NAME --weights-dir DIR` (the
`fetch_weights` rule); building never downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

# The teacher modules, imported for their registrations (one line per module).
import lipsim.teachers.demo  # noqa: F401
import lipsim.teachers.dreamsim  # noqa: F401
from lipsim.checksum import sha256_file as _sha256
from lipsim.registry import Download, builder, metric_card
from lipsim.teachers.base import Teacher

__all__ = ["Teacher", "fetch_weights", "get_teacher"]


def get_teacher(
    name: str,
    *,
    weights_dir: str | os.PathLike | None = None,
    device="cpu",
    random_weights: bool = False,
) -> Teacher:
    """Build teacher `name` (frozen, eval mode) on `device`. See the module docstring."""
    return builder("teacher", name)(
        weights_dir=weights_dir, device=str(device), random_weights=random_weights
    )


def fetch_weights(
    name: str, weights_dir: str | os.PathLike, downloads: tuple[Download, ...] | None = None
) -> dict:
    """Download `name`'s weights into weights_dir/<name>/ (network) and return a record
    {teacher, folder, files: [{path, bytes, sha256}], urls}. `downloads` defaults to the
    metric's card's (a teacher's or a baseline's). Already present
    downloads are not fetched again (a file is only ever renamed into place when complete)."""
    # The project's own downloader and extractor: resumable, retried and size-checked
    # transfers, and zip entries that cannot escape the weights folder.
    from lipsim.data.download import fetch
    from lipsim.data.extract import safe_extract

    if downloads is None:
        downloads = metric_card(name).downloads
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
