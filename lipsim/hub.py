"""The authors' released LipSim checkpoints by name, fetched once into a cache folder.

    lipsim.load("released:margin0.5")   # also released:pretrained, released:margin0.2

The first call downloads the authors' file from Google Drive (lipsim.data.gdrive: the
confirmation page, resumable, HTML pages refused), converts it once to the lipsim-repro
format (lipsim.models.released: weights_only with the numpy allow-list) and keeps both in
the cache folder ($LIPSIM_CACHE, else ~/.cache/lipsim); later calls read the converted file.
A fetched file that the conversion refuses is moved aside (`.refused`), never kept under
the cache's name, so the next call downloads it again.
The Drive ids are the config's `released.ids` (the schema is their one source).
"""

from __future__ import annotations

import os
from pathlib import Path

from lipsim.errors import LipSimError

PREFIX = "released:"
# What the released files are (docs/method.md section 12): LipSim-DreamSim, small preset, 224 px.
RELEASED_ARCH = {"preset": "small", "image_size": 224, "emb_dim": 1792}
RELEASED_TEACHER = "dreamsim_ensemble"


def cache_dir() -> Path:
    return Path(os.environ.get("LIPSIM_CACHE") or Path.home() / ".cache" / "lipsim")


def released_names() -> list[str]:
    from lipsim.configcheck import schema_default

    return [
        PREFIX + (k if k == "pretrained" else f"margin{k}") for k in schema_default("released.ids")
    ]


def released_checkpoint(
    name: str,
    *,
    folder: str | os.PathLike | None = None,
    base_url: str | None = None,
    arch: dict | None = None,
    progress: bool = True,
) -> Path:
    """Path of the converted checkpoint of a released model, fetched and converted if needed.

    `base_url` (Drive's download endpoint) and `arch` exist for tests against a loopback
    server with a small model; they default to Drive and the released architecture.
    """
    from lipsim.configcheck import schema_default

    key = name[len(PREFIX) :] if name.startswith(PREFIX) else name
    ids = schema_default("released.ids")
    drive_key = "pretrained" if key == "pretrained" else key.removeprefix("margin")
    if drive_key not in ids:
        raise LipSimError(
            f"lipsim.load: unknown released model {name!r}; known: {', '.join(released_names())}"
        )
    folder = Path(folder) if folder is not None else cache_dir()
    arch = dict(arch or RELEASED_ARCH)
    tag = f"{key}-{arch['preset']}-{arch['image_size']}-{arch['emb_dim']}"
    converted = folder / f"released-{tag}.pt"
    if converted.is_file():
        return converted
    from lipsim.data.gdrive import DRIVE_DOWNLOAD_URL, fetch_drive
    from lipsim.models import CheckpointError, import_released, save_checkpoint

    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"released-{key}.pth"
    sha = schema_default("released.sha256").get(drive_key)
    if not raw.is_file():
        fetch_drive(
            ids[drive_key],
            raw,
            base=base_url or schema_default("released.url") or DRIVE_DOWNLOAD_URL,
            sha256=sha,
            progress=progress,
        )
    try:
        imp = import_released(raw, **arch)
    except CheckpointError as exc:
        # Never keep a refused file under the name the cache trusts: the next call fetches
        # again (the server may serve the right file by then); the refused one stays aside.
        refused = raw.with_name(raw.name + ".refused")
        os.replace(raw, refused)
        raise CheckpointError(
            f"{exc} (moved to {refused}; the next call downloads it again)"
        ) from exc
    finetuned = key != "pretrained"
    save_checkpoint(
        converted,
        imp.net,
        stage="finetuned" if finetuned else "pretrained",
        margin=float(drive_key) if finetuned else None,
        teacher=RELEASED_TEACHER,
        # The authors finetuned with their metric, 1 - cos (docs/method.md section 11).
        metric="cosine" if finetuned else None,
        optimizer_state=imp.optimizer_state,
        meta={"imported_from": str(raw), "drive_id": ids[drive_key], **imp.info},
    )
    return converted
