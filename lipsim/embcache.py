"""Sharded cache of teacher embeddings: list, fill (per part), verify, index, memory-mapped read.

Layout of a cache folder (`R/cache/{teacher}/`):
  images.parquet        path (relative to the image root), label; sorted; row i = image i
  shard-{i:05d}.npy     embeddings of images [i * S, min(n, (i + 1) * S)), shape (rows, emb_dim),
                        float16 or float32; rows of undecodable images are NaN (never zeros, so
                        a bad row that slipped through would poison a loss loudly, not silently)
  part-{k}.json         manifest of part k (its shards: rows, bytes, sha256, bad rows), written
                        LAST, once every shard of the part is in place
  index.parquet         path, label, shard, row, ok -- written by `cache-index` after verifying
                        every part and shard

Shard count: ceil(n / S); with S = 1000, ImageNet's 1,281,167 images take 1,282 shards plus
the part manifests, the list and the index (< 2,000 files, against 1.28M one-file-per-image).

Part k of N owns the contiguous shard range [k * n_shards // N, (k + 1) * n_shards // N).
Every shard is written atomically; `fill_part` records progress in a hidden
`.part-{k}.progress.json` (replaced after each shard) so a preempted job resumes at shard
granularity and re-verifies (size + sha256) what it keeps; a shard that fails verification
(truncated, corrupted, from another configuration) is rebuilt, never read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from lipsim.atomic import atomic_path, write_json
from lipsim.checksum import sha256_file
from lipsim.configcheck import ConfigError, FromSchema, with_schema_defaults
from lipsim.data.folders import IMAGE_SUFFIXES
from lipsim.errors import LipSimError
from lipsim.progress import progress_bar

__all__ = [
    "CacheError",
    "EmbeddingCache",
    "BadImageError",
    "build_index",
    "fill_part",
    "list_images",
    "load_train_image",
    "n_shards",
    "part_shards",
    "read_image_list",
    "shard_path",
    "verify_part",
]

log = logging.getLogger(__name__)

FORMAT = "lipsim-embcache/1"
_SHARDS_KEY = b"lipsim.shards"  # index.parquet metadata: shard -> {file, bytes, sha256, part}


class CacheError(LipSimError, RuntimeError):
    """The cache folder is incomplete or inconsistent; the message names the file."""


class BadImageError(LipSimError, RuntimeError):
    """An image cannot be decoded (raised under --on-bad-image fail); names the file."""


# --------------------------------------------------------------------------- listing
def list_images(images: str | os.PathLike) -> pd.DataFrame:
    """Sorted (path, label) table of an ImageNet-layout folder.

    `images` is either the train folder itself (class folders inside) or its parent holding
    `train/`. Paths are relative to `images` as given (so later steps pass the same folder);
    label = index of the class folder in sorted order.
    """
    root = Path(images)
    if not root.is_dir():
        raise CacheError(f"cache-list: image folder {root} does not exist")
    class_root = root / "train" if (root / "train").is_dir() else root
    classes = sorted(p.name for p in class_root.iterdir() if p.is_dir())
    if not classes:
        raise CacheError(
            f"cache-list: no class folders in {class_root} (expected ImageNet "
            "layout: train/<class>/<image>)"
        )
    rows = []
    for label, cls in enumerate(classes):
        for dirpath, _dirs, files in os.walk(class_root / cls):
            for f in files:
                if f.lower().endswith(IMAGE_SUFFIXES):
                    rows.append((str((Path(dirpath) / f).relative_to(root).as_posix()), label))
    if not rows:
        raise CacheError(f"cache-list: no images ({', '.join(IMAGE_SUFFIXES)}) under {class_root}")
    df = pd.DataFrame(rows, columns=["path", "label"]).sort_values("path", kind="stable")
    df["label"] = df["label"].astype(np.int64)
    return df.reset_index(drop=True)


def read_image_list(path: str | os.PathLike) -> pd.DataFrame:
    """The image list written by cache-list (path, label); CacheError naming the file."""
    path = Path(path)
    try:
        df = pd.read_parquet(path)
    except FileNotFoundError:
        raise CacheError(f"{path}: missing (the image list from cache-list)") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported as such
        raise CacheError(
            f"{path}: not a readable image list ({type(exc).__name__}: {exc})"
        ) from exc
    missing = [c for c in ("path", "label") if c not in df.columns]
    if missing:
        raise CacheError(
            f"{path}: not an image list from cache-list (no column {', '.join(missing)})"
        )
    return df


# --------------------------------------------------------------------------- images
# How a training image becomes a square: see load_train_image.
CROPS = ("resize_center", "center")


def load_train_image(path: str | os.PathLike, image_size: int, crop: str = "resize_center"):
    """An image as a float tensor (3, S, S) in [0, 1], cropped as `crop` says:
      resize_center  shorter side resized to S (bicubic, antialiased), centre crop S x S
      center         centre crop S x S of the full-resolution image, no resize (the authors'
                     distillation: torchvision's CenterCrop, which pads an image smaller than
                     S with zeros)
    Raises BadImageError naming the file if undecodable."""
    import torch
    from PIL import Image
    from torchvision.transforms import functional as TF

    if crop not in CROPS:
        raise ValueError(f"--crop must be one of {', '.join(CROPS)}, got {crop!r}")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            if crop == "center":
                im = TF.center_crop(im, [image_size, image_size])
            elif (w, h) != (image_size, image_size):
                scale = image_size / min(w, h)
                nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
                im = im.resize((nw, nh), Image.BICUBIC)
                left, top = (nw - image_size) // 2, (nh - image_size) // 2
                im = im.crop((left, top, left + image_size, top + image_size))
            arr = np.asarray(im, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001 - PIL raises many types for bad files
        raise BadImageError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from exc
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


class _ImageRows:
    """Dataset over rows [start, stop) of the image list: (row, image, ok, error)."""

    def __init__(self, root: Path, paths: list[str], start: int, image_size: int, crop: str):
        self.root, self.paths, self.start, self.image_size = root, paths, start, image_size
        self.crop = crop

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch

        path = self.root / self.paths[i]
        try:
            return self.start + i, load_train_image(path, self.image_size, self.crop), True, ""
        except BadImageError as exc:
            # A placeholder keeps the batch shape; its embedding row becomes NaN, ok=False.
            return self.start + i, torch.zeros(3, self.image_size, self.image_size), False, str(exc)


# --------------------------------------------------------------------------- shards
def n_shards(n_images: int, shard_size: int) -> int:
    return math.ceil(n_images / shard_size)


def part_shards(part: int, parts: int, total_shards: int) -> range:
    if not 0 <= part < parts:
        raise ConfigError(f"--part {part} is not in [0, --parts {parts})")
    return range(part * total_shards // parts, (part + 1) * total_shards // parts)


def shard_path(cache_dir: str | os.PathLike, shard: int) -> Path:
    return Path(cache_dir) / f"shard-{shard:05d}.npy"


def part_manifest_path(cache_dir: str | os.PathLike, part: int) -> Path:
    return Path(cache_dir) / f"part-{part}.json"


def _progress_path(cache_dir: Path, part: int) -> Path:
    return cache_dir / f".part-{part}.progress.json"


def _list_digest(df: pd.DataFrame) -> str:
    h = hashlib.sha256()
    for p in df["path"]:
        h.update(p.encode("utf-8") + b"\n")
    return h.hexdigest()


def verify_shard(path: Path, entry: dict) -> str | None:
    """None if the shard file matches its manifest entry (size, then sha256), else why not."""
    if not path.exists():
        return "missing"
    size = path.stat().st_size
    if size != entry["bytes"]:
        return f"size {size} != {entry['bytes']} bytes (truncated or rewritten)"
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        return f"sha256 {digest[:12]}... != {entry['sha256'][:12]}... (corrupted)"
    return None


@dataclasses.dataclass
class FillConfig:
    """Everything that determines shard contents; a stored shard is reused only if equal."""

    teacher: str
    image_size: int
    shard_size: int
    dtype: str
    emb_dim: int
    n_images: int
    list_sha256: str
    random_weights: bool
    crop: str  # load_train_image's crop
    mirror: bool  # embeddings of the horizontally mirrored crops (the distillation's flipped view)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _load_state(cache_dir: Path, part: int, config: dict) -> dict:
    """Shard entries recorded by a previous run of this part with the same configuration."""
    for path in (part_manifest_path(cache_dir, part), _progress_path(cache_dir, part)):
        if path.exists():
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if state.get("config") == config:
                return {int(e["shard"]): e for e in state.get("shards", [])}
            log.warning("%s: written with another configuration; rebuilding its shards", path)
    return {}


def _check_fill_options(on_bad_image: str, dtype: str, shard_size: int) -> None:
    if on_bad_image not in ("skip", "fail"):
        raise ConfigError(f"--on-bad-image must be skip or fail, got {on_bad_image!r}")
    if dtype not in ("float16", "float32"):
        raise ConfigError(f"--dtype must be float16 or float32, got {dtype!r}")
    if shard_size < 1:
        raise ConfigError(f"--shard-size must be >= 1, got {shard_size}")


def _still_valid(path: Path, entry: dict | None) -> bool:
    """Whether a shard recorded by an earlier run still verifies (else it is rebuilt)."""
    if entry is None:
        return False
    why = verify_shard(path, entry)
    if why is not None:
        log.warning("%s: %s; rebuilding it", path, why)
    return why is None


def _report_bad(rows, ok, errors, rel_paths: list[str], start: int, on_bad_image: str) -> list:
    """The undecodable images of a batch (row, path, error); raises under on_bad_image fail."""
    bad = []
    for r, good, err in zip(rows.tolist(), ok.tolist(), errors, strict=True):
        if good:
            continue
        if on_bad_image == "fail":
            raise BadImageError(f"{err} (row {r} of the image list; --on-bad-image fail)")
        log.warning("skipping undecodable image (row %d): %s", r, err)
        bad.append({"row": int(r), "path": rel_paths[r - start], "error": err})
    return bad


def _embed_shard(teacher, rows: _ImageRows, config: FillConfig, opts: dict, bar):
    """(embeddings (rows, emb_dim) float32 with NaN rows for undecodable images, their
    reports) of one shard; opts: batch_size, workers, on_bad_image, device."""
    import torch
    from torch.utils.data import DataLoader

    out = np.empty((len(rows), config.emb_dim), dtype=np.float32)
    bad: list[dict] = []
    loader = DataLoader(
        rows, batch_size=opts["batch_size"], num_workers=opts["workers"], shuffle=False
    )
    for index, batch, ok, errors in loader:
        ok = ok.bool()
        bad += _report_bad(index, ok, errors, rows.paths, rows.start, opts["on_bad_image"])
        with torch.no_grad():
            batch = batch.flip(-1) if config.mirror else batch
            emb = teacher.embed(batch.to(opts["device"])).float().cpu().numpy()
        emb[~ok.numpy()] = np.nan
        out[index.numpy() - rows.start] = emb
        bar.update(len(index))
    return out, bad


def _write_shard(path: Path, shard: int, start: int, emb: np.ndarray, bad: list, dtype: str):
    """Write one shard atomically; returns its manifest entry."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, emb.astype(dtype))
    return {
        "shard": shard,
        "file": path.name,
        "start": start,
        "stop": start + len(emb),
        "rows": len(emb),
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "bad_rows": [b["row"] for b in bad],
        "bad_images": bad,
    }


def _part_manifest(config: FillConfig, part: int, parts: int, shards: range, entries: dict):
    bad_images = [b for s in shards for b in entries[s].get("bad_images", [])]
    return {
        "format": FORMAT,
        "config": config.as_dict(),
        "part": part,
        "parts": parts,
        "n_shards_total": n_shards(config.n_images, config.shard_size),
        "shard_range": [shards.start, shards.stop],
        "counts": {
            "shards": len(shards),
            "images": sum(e["rows"] for e in entries.values()),
            "bad": len(bad_images),
        },
        "bad_images": bad_images,
        "shards": [entries[s] for s in shards],
    }


@with_schema_defaults
def fill_part(
    *,
    teacher,
    images: str | os.PathLike,
    image_list: pd.DataFrame,
    out_dir: str | os.PathLike,
    part: int,
    parts: int,
    shard_size: int = FromSchema("cache.shard_size"),
    dtype: str = FromSchema("cache.dtype"),
    batch_size: int = FromSchema("cache.batch_size"),
    workers: int = FromSchema("cache.workers"),
    on_bad_image: str = FromSchema("cache.on_bad_image"),
    image_size: int | None = None,
    device="cpu",
    random_weights: bool = False,
    teacher_name: str | None = None,
    progress: bool = True,
    crop: str = FromSchema("distill.crop"),
    mirror: bool = False,
) -> dict:
    """Embed the images of part `part` of `parts` and write its shards, then part-K.json.

    Returns the part manifest. Shards already present and verified are kept (resume).
    on_bad_image: "skip" (NaN row, ok=False, reported with its path) or "fail" (raise).
    crop: how each image is cropped (load_train_image); mirror: embed the horizontally
    mirrored crops instead (a separate cache folder: the teacher view of a flipped view 0).
    """
    _check_fill_options(on_bad_image, dtype, shard_size)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n, paths = len(image_list), image_list["path"].tolist()
    config = FillConfig(
        teacher=teacher_name or teacher.name,
        image_size=int(image_size or teacher.image_size),
        shard_size=shard_size,
        dtype=dtype,
        emb_dim=int(teacher.emb_dim),
        n_images=n,
        list_sha256=_list_digest(image_list),
        random_weights=bool(random_weights),
        crop=crop,
        mirror=bool(mirror),
    )
    opts = dict(batch_size=batch_size, workers=workers, on_bad_image=on_bad_image, device=device)
    known = _load_state(out_dir, part, config.as_dict())
    shards = part_shards(part, parts, n_shards(n, shard_size))
    entries: dict[int, dict] = {}
    n_part = sum(min(n, (s + 1) * shard_size) - s * shard_size for s in shards)
    bar = progress_bar(n_part, f"cache part {part}/{parts}", "img", enabled=progress)
    for s in shards:
        path = shard_path(out_dir, s)
        if _still_valid(path, known.get(s)):
            entries[s] = known[s]
            bar.update(known[s]["rows"])
            continue
        start, stop = s * shard_size, min(n, (s + 1) * shard_size)
        rows = _ImageRows(Path(images), paths[start:stop], start, config.image_size, crop)
        emb, bad = _embed_shard(teacher, rows, config, opts, bar)
        entries[s] = _write_shard(path, s, start, emb, bad, dtype)
        record = {"config": config.as_dict(), "shards": [entries[k] for k in sorted(entries)]}
        write_json(_progress_path(out_dir, part), record)
    bar.close()
    manifest = _part_manifest(config, part, parts, shards, entries)
    write_json(part_manifest_path(out_dir, part), manifest)  # last: the part is complete
    _progress_path(out_dir, part).unlink(missing_ok=True)
    return manifest


def verify_part(cache_dir: str | os.PathLike, part: int) -> tuple[dict, list[str]]:
    """(manifest, problems) of part `part`; problems name each bad shard and why."""
    cache_dir = Path(cache_dir)
    path = part_manifest_path(cache_dir, part)
    if not path.exists():
        raise CacheError(f"{path}: missing (part {part} not filled; run cache-fill --part {part})")
    manifest = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for e in manifest["shards"]:
        why = verify_shard(cache_dir / e["file"], e)
        if why is not None:
            problems.append(f"{cache_dir / e['file']}: {why}")
    return manifest, problems


def build_index(
    cache_dir: str | os.PathLike, parts: int, image_list: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Verify every part and shard, check they cover the image list exactly, and return the
    index table (path, label, shard, row, ok). Raises CacheError listing every problem."""
    cache_dir = Path(cache_dir)
    if image_list is None:
        list_path = cache_dir / "images.parquet"
        if not list_path.exists():
            raise CacheError(
                f"{list_path}: missing (the image list from cache-list); pass "
                "--list if it lives elsewhere"
            )
        image_list = read_image_list(list_path)
    n = len(image_list)
    problems: list[str] = []
    covered: dict[int, dict] = {}
    config = None
    for k in range(parts):
        try:
            manifest, probs = verify_part(cache_dir, k)
        except CacheError as exc:
            problems.append(str(exc))
            continue
        problems += probs
        if manifest.get("parts") != parts:
            problems.append(
                f"{part_manifest_path(cache_dir, k)}: written for --parts "
                f"{manifest.get('parts')}, not {parts}"
            )
        if config is None:
            config = manifest["config"]
        elif manifest["config"] != config:
            problems.append(
                f"{part_manifest_path(cache_dir, k)}: configuration differs from part 0"
            )
        for e in manifest["shards"]:
            covered[int(e["shard"])] = {**e, "part": k}
    if config is not None:
        if config["n_images"] != n or config["list_sha256"] != _list_digest(image_list):
            problems.append(
                f"{cache_dir}: parts were filled from another image list than "
                f"{cache_dir / 'images.parquet'}"
            )
        total = n_shards(n, config["shard_size"])
        missing = sorted(set(range(total)) - set(covered))
        if missing:
            problems.append(f"{cache_dir}: shards {missing[:10]} not covered by any part")
    if problems:
        raise CacheError("embedding cache is not valid:\n  " + "\n  ".join(problems))
    size = config["shard_size"]
    idx = np.arange(n)
    ok = np.ones(n, dtype=bool)
    for e in covered.values():
        ok[np.asarray(e.get("bad_rows", []), dtype=np.int64)] = False
    df = pd.DataFrame(
        {
            "path": image_list["path"].to_numpy(),
            "label": image_list["label"].to_numpy(np.int64),
            "shard": (idx // size).astype(np.int64),
            "row": (idx % size).astype(np.int64),
            "ok": ok,
        }
    )
    # What each shard was verified as: write_index stores it in the index for the reader.
    df.attrs["shards"] = {
        str(s): {
            "file": e["file"],
            "bytes": int(e["bytes"]),
            "sha256": e["sha256"],
            "part": int(e["part"]),
        }
        for s, e in sorted(covered.items())
    }
    return df


def write_index(cache_dir, parts: int, out=None, image_list=None) -> pd.DataFrame:
    """build_index, written atomically to `out` (default CACHE_DIR/index.parquet)."""
    if image_list is not None and not isinstance(image_list, pd.DataFrame):
        image_list = read_image_list(image_list)
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = build_index(cache_dir, parts, image_list)
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {**(table.schema.metadata or {}), _SHARDS_KEY: json.dumps(df.attrs["shards"]).encode()}
    with atomic_path(out or Path(cache_dir) / "index.parquet") as tmp:
        pq.write_table(table.replace_schema_metadata(meta), tmp)
    return df


# --------------------------------------------------------------------------- reading
class EmbeddingCache:
    """Random access to cached embeddings through memory-mapped shards.

        cache = EmbeddingCache("results/demo/cache/demo")
        e = cache[i]                  # float32 (emb_dim,), image i of images.parquet
        batch = cache.get([3, 1, 7])  # float32 (3, emb_dim)

    Shards are opened lazily (np.load(mmap_mode="r")) and at most `max_open` stay open (each
    memory map holds a file descriptor). Safe to use in DataLoader workers: maps are opened
    per process on first access. Reading a row whose ok is False raises (skip them).
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        index: str | os.PathLike | None = None,
        max_open: int = 256,
    ):
        import pyarrow.parquet as pq

        self.cache_dir = Path(cache_dir)
        index_path = Path(index) if index else self.cache_dir / "index.parquet"
        if not index_path.exists():
            raise CacheError(
                f"{index_path}: missing; build it with `python -m lipsim "
                f"cache-index --cache-dir {self.cache_dir} --parts N`"
            )
        self.index_path = index_path
        try:
            self.index = pd.read_parquet(index_path)
            shards = json.loads((pq.read_schema(index_path).metadata or {})[_SHARDS_KEY])
        except KeyError:
            raise CacheError(
                f"{index_path}: records no shard checksums (an older index); "
                f"rebuild it with `python -m lipsim cache-index --cache-dir "
                f"{self.cache_dir} --parts N`"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any unreadable index is reported as such
            raise CacheError(
                f"{index_path}: unreadable index ({type(exc).__name__}: {exc}); "
                "rebuild it with `python -m lipsim cache-index`"
            ) from exc
        self._shards = {int(k): v for k, v in shards.items()}
        self.paths = self.index["path"].tolist()
        self.labels = self.index["label"].to_numpy(np.int64)
        self.shard = self.index["shard"].to_numpy(np.int64)
        self.row = self.index["row"].to_numpy(np.int64)
        self.ok = self.index["ok"].to_numpy(bool)
        self.max_open = max_open
        self._open: OrderedDict[int, np.ndarray] = OrderedDict()
        # Every shard against its recorded size and sha256, once, in this process and before
        # any is read (DataLoader workers inherit the result): a shard corrupted in place must
        # not be trained on.
        for shard in sorted(set(self.shard.tolist())):
            self._verify(shard)
        first = self._map(int(self.shard[0])) if len(self.index) else None
        self.emb_dim = int(first.shape[1]) if first is not None else 0
        self.dtype = first.dtype if first is not None else np.dtype("float32")

    def _verify(self, shard: int) -> None:
        path = shard_path(self.cache_dir, shard)
        entry = self._shards.get(shard)
        why = "not recorded in the index" if entry is None else verify_shard(path, entry)
        if why is None:
            return
        part = entry["part"] if entry else None
        if part is not None:
            # Make the workflow refill that part: without its manifest (and the index) the
            # next run reruns cache-fill for it, which keeps the part's verified shards
            # (the manifest becomes its progress record) and rebuilds this one.
            with contextlib.suppress(FileNotFoundError):  # another rank may have done it
                os.replace(
                    part_manifest_path(self.cache_dir, part), _progress_path(self.cache_dir, part)
                )
            self.index_path.unlink(missing_ok=True)
        raise CacheError(
            f"{path}: {why}; "
            + (
                f"part {part} is marked for refilling: rerun the workflow (or cache-fill --part "
                f"{part}, then cache-index)"
                if part is not None
                else "rebuild the cache"
            )
        )

    def __len__(self) -> int:
        return len(self.index)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()  # memory maps are per process
        return state

    def _map(self, shard: int) -> np.ndarray:
        arr = self._open.get(shard)
        if arr is None:
            path = shard_path(self.cache_dir, shard)
            arr = np.load(path, mmap_mode="r")
            self._open[shard] = arr
            if len(self._open) > self.max_open:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(shard)
        return arr

    def __getitem__(self, i: int) -> np.ndarray:
        if not self.ok[i]:
            raise CacheError(
                f"image {i} ({self.paths[i]}) was not decodable (ok=False); "
                "its embedding must not be used"
            )
        return np.asarray(self._map(int(self.shard[i]))[int(self.row[i])], dtype=np.float32)

    def get(self, indices: Iterable[int]) -> np.ndarray:
        return np.stack([self[int(i)] for i in indices])
