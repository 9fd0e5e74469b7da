"""Resume checkpoints of the trainer (not final model checkpoints: see lipsim.models).

A resume checkpoint `WORKDIR/resume-{step:09d}.pt` holds everything needed to continue a run
bit-for-bit on the same hardware: model, optimizer, epoch and step within the epoch (the
sampler position), the global step (the lr is a function of it: lipsim.train.schedule), each
rank's RNG states (torch CPU, CUDA, numpy, python) and a fingerprint of the run's
configuration. Each file is written
atomically, so the newest file present is complete; the two newest are kept (a file can still
be unreadable after a disk problem, and then the previous one is used).
Loadable with torch.load(weights_only=True): RNG states are stored as tensors / plain types.
"""

from __future__ import annotations

import logging
import os
import random
import re
from pathlib import Path

import numpy as np
import torch

from lipsim.atomic import torch_save

log = logging.getLogger(__name__)
_NAME = re.compile(r"^resume-(\d{9})\.pt$")


def rng_state() -> dict:
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        cuda = state["cuda"][: torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)
    n = state["numpy"]
    np.random.set_state(
        (
            n["name"],
            n["keys"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))


def checkpoint_path(workdir: str | os.PathLike, step: int) -> Path:
    return Path(workdir) / f"resume-{step:09d}.pt"


def list_checkpoints(workdir: str | os.PathLike) -> list[Path]:
    """Resume checkpoints in `workdir`, newest first."""
    workdir = Path(workdir)
    if not workdir.is_dir():
        return []
    found = [p for p in workdir.iterdir() if _NAME.match(p.name)]
    return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)), reverse=True)


def save_resume(workdir: str | os.PathLike, step: int, state: dict, keep: int = 2) -> Path:
    path = checkpoint_path(workdir, step)
    torch_save(path, state)
    for old in list_checkpoints(workdir)[keep:]:
        old.unlink(missing_ok=True)
    return path


def clear_resume(workdir: str | os.PathLike) -> None:
    """Drop the resume checkpoints of a run whose final checkpoint is written.

    They exist to continue an interrupted run. Once the run is complete, a new run in the
    same workdir (snakemake rerunning the job after a code or input change, or -f) must
    train from scratch, not "resume" at the last step and return the old weights.
    """
    for path in list_checkpoints(workdir):
        path.unlink(missing_ok=True)


def load_latest(
    workdir: str | os.PathLike, fingerprint: dict, map_location="cpu", remove_stale: bool = True
) -> tuple[dict | None, Path | None]:
    """The newest loadable resume checkpoint of a run with this fingerprint, or (None, None).

    Checkpoints of another configuration (changed hyperparameters: snakemake reran the rule)
    are ignored with a warning (and removed when `remove_stale`: pass True on one rank only)
    -- continuing them would silently mix two runs.
    """
    for path in list_checkpoints(workdir):
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: fall back to older
            log.warning("resume checkpoint %s unreadable (%s); trying an older one", path, exc)
            continue
        if state.get("fingerprint") != fingerprint:
            log.warning(
                "resume checkpoint %s belongs to another configuration; starting "
                "fresh (changed: %s)",
                path,
                sorted(
                    k
                    for k in set(fingerprint) | set(state.get("fingerprint", {}))
                    if fingerprint.get(k) != state.get("fingerprint", {}).get(k)
                ),
            )
            if remove_stale:
                for p in list_checkpoints(workdir):
                    p.unlink(missing_ok=True)
            return None, None
        return state, path
    return None, None
