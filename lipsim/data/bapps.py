"""BAPPS 2AFC (Zhang et al. 2018, the LPIPS data set): loader, checker, download, demo set.

Layout (the LPIPS authors' `twoafc_val.tar.gz` extracts to `val/<category>/...`):

    <root>/<category>/ref/NNNNNN.png     reference (64 x 64)
    <root>/<category>/p0/NNNNNN.png      distortion 0 (x0)
    <root>/<category>/p1/NNNNNN.png      distortion 1 (x1)
    <root>/<category>/judge/NNNNNN.npy   share of human judges preferring p1 (a number in [0, 1])

with the six validation categories of `CATEGORIES`. `root` may also be the folder holding
`val/` (the extracted archive). The loader's table has the columns the NIGHT code relies on
(id, split, p, ref_path, left_path, right_path) with split = category, so evaluation and
certification (lipsim.baselines.evaluate_triplets, lipsim.certify.certify_triplets) run on
BAPPS unchanged; p is the judge value, as NIGHT's p is the share of votes for x1.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from lipsim.data import atomic_dir
from lipsim.data.night import load_image
from lipsim.errors import LipSimError

__all__ = [
    "BAPPS_VAL_SHA256",
    "BAPPS_VAL_URL",
    "CATEGORIES",
    "GROUPS",
    "BappsFormatError",
    "BappsTriplets",
    "check_bapps",
    "download_bapps",
    "find_bapps_root",
    "layout_problems",
    "make_bapps",
    "read_bapps",
]

CATEGORIES = ("traditional", "cnn", "superres", "deblur", "color", "frameinterp")
# The LPIPS paper's two groups (its table: "Distortions" and "Real algorithms"). The LipSim
# authors' code certifies BAPPS on the first group only (traditional + cnn, size-weighted).
GROUPS = {
    "distortions": ("traditional", "cnn"),
    "real_algorithms": ("superres", "deblur", "color", "frameinterp"),
}
BAPPS_VAL_URL = "https://perceptual-similarity.s3.us-west-2.amazonaws.com/dataset/twoafc_val.tar.gz"
# As recorded by a third party (not checked here: no network); a mismatch fails the download.
BAPPS_VAL_SHA256 = "41486671b06de923e7ba277c4797d4d9d86d609863ba35ecdb576133f8b9d859"
_FOLDERS = ("ref", "p0", "p1", "judge")
_PATH_COLUMNS = ("ref_path", "left_path", "right_path")
BAPPS_SIZE = 64  # side of every BAPPS image (the demo writes the same)


class BappsFormatError(LipSimError, ValueError):
    """A BAPPS folder does not match the layout; the message names the folder or file."""


def find_bapps_root(root: str | os.PathLike) -> Path:
    """The folder holding the category folders: `root` itself or `root/val`."""
    root = Path(root).expanduser().resolve()
    for cand in (root, root / "val"):
        if any((cand / c).is_dir() for c in CATEGORIES):
            return cand
    raise BappsFormatError(
        f"BAPPS: no category folder ({', '.join(CATEGORIES)}) in {root} or {root / 'val'}; "
        "download it with `python -m lipsim download-bapps` or make a demo set with "
        "`python -m lipsim make-demo-bapps`"
    )


def _judge(path: Path) -> float:
    """The judge value of one .npy file; errors name the file."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any read failure is a format error
        raise BappsFormatError(f"BAPPS: cannot read judge file {path}: {exc}") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        # strings, records, complex, booleans, an .npz archive: not a share of judges
        what = f"dtype {arr.dtype}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise BappsFormatError(
            f"BAPPS: judge file {path} holds {what}, not a number (BAPPS stores one float)"
        )
    arr = arr.astype(np.float64).reshape(-1)
    if arr.size != 1 or not np.isfinite(arr[0]) or not 0.0 <= arr[0] <= 1.0:
        raise BappsFormatError(
            f"BAPPS: judge file {path} must hold one number in [0, 1], "
            f"got {arr[:4].tolist()}{'...' if arr.size > 4 else ''}"
        )
    return float(arr[0])


def _category_items(folder: Path) -> tuple[list[str], list[str]]:
    """(stems with a reference image, problems) of one category folder."""
    missing = [f"{folder / sub}: missing folder" for sub in _FOLDERS if not (folder / sub).is_dir()]
    if missing:
        return [], missing
    stems = {
        sub: {p.stem for p in (folder / sub).iterdir() if p.suffix == _suffix(sub)}
        for sub in _FOLDERS
    }
    return sorted(stems["ref"]), _pairing(folder, stems)


def _suffix(sub: str) -> str:
    return ".npy" if sub == "judge" else ".png"


def _pairing(folder: Path | str, stems: dict[str, set[str]]) -> list[str]:
    """Problems of one category's files: every reference has its p0, p1 and judge file, and
    nothing is unpaired."""
    problems = []
    for sub in _FOLDERS[1:]:
        ext = _suffix(sub)
        for stem in sorted(stems["ref"] - stems[sub]):
            problems.append(f"{folder}/{sub}/{stem}{ext}: missing (ref/{stem}.png exists)")
        for stem in sorted(stems[sub] - stems["ref"]):
            problems.append(f"{folder}/{sub}/{stem}{ext}: no ref/{stem}.png")
    if not stems["ref"]:
        problems.append(f"{folder}/ref: no images")
    return problems


def layout_problems(names: Iterable[str]) -> list[str]:
    """Problems of an archive's file list (paths inside it) against the BAPPS layout, before
    anything is extracted: no category at all, unpaired triplets. Files beside the layout
    (a README, macOS `._` files) are ignored, as the folder check ignores them."""
    found: dict[str, dict[str, set[str]]] = {}
    for name in names:
        parts = name.split("/")
        parts = parts[1:] if parts[:1] == ["val"] else parts
        if len(parts) != 3 or parts[0] not in CATEGORIES or parts[1] not in _FOLDERS:
            continue
        stem, dot, ext = parts[2].rpartition(".")
        if dot and f".{ext}" == _suffix(parts[1]) and not stem.startswith("._"):
            found.setdefault(parts[0], {sub: set() for sub in _FOLDERS})[parts[1]].add(stem)
    if not found:
        return [
            f"no file in <category>/{{{','.join(_FOLDERS)}}}/ for any of {', '.join(CATEGORIES)}"
        ]
    return [p for cat, stems in found.items() for p in _pairing(cat, stems)]


def _categories(categories: Iterable[str] | str | None) -> list[str]:
    if categories is None:
        return list(CATEGORIES)
    cats = [categories] if isinstance(categories, str) else list(categories)
    unknown = [c for c in cats if c not in CATEGORIES]
    if unknown:
        raise BappsFormatError(
            f"BAPPS: unknown categor{'y' if len(unknown) == 1 else 'ies'} "
            f"{', '.join(unknown)}; expected {', '.join(CATEGORIES)}"
        )
    return cats


def read_bapps(
    root: str | os.PathLike, categories: Iterable[str] | str | None = None
) -> pd.DataFrame:
    """The BAPPS triplets as a table, in category order then file order.

    Columns: id (`<category>/<NNNNNN>`), split (the category), p (judge: share preferring
    p1 = x1), ref_path, left_path (p0), right_path (p1), all paths absolute. Raises
    BappsFormatError naming the folder or file when the layout is broken (run `check-bapps`
    for every problem at once).
    """
    base = find_bapps_root(root)
    rows = []
    for cat in _categories(categories):
        folder = base / cat
        if not folder.is_dir():
            raise BappsFormatError(f"BAPPS: category folder {folder} is missing")
        stems, problems = _category_items(folder)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise BappsFormatError(f"BAPPS: {problems[0]}{more}")
        for stem in stems:
            rows.append(
                (
                    f"{cat}/{stem}",
                    cat,
                    _judge(folder / "judge" / f"{stem}.npy"),
                    str(folder / "ref" / f"{stem}.png"),
                    str(folder / "p0" / f"{stem}.png"),
                    str(folder / "p1" / f"{stem}.png"),
                )
            )
    return pd.DataFrame(rows, columns=["id", "split", "p", *_PATH_COLUMNS])


class BappsTriplets:
    """torch Dataset over a `read_bapps` table: item i is (ref, x0, x1, p, i), as
    lipsim.data.night.NightTriplets, with images resized to image_size (bicubic)."""

    def __init__(self, df: pd.DataFrame, image_size: int | None = 224):
        self.df = df.reset_index(drop=True)
        self.image_size = image_size
        self._paths = self.df[list(_PATH_COLUMNS)].to_numpy()
        self._p = self.df["p"].to_numpy(np.float32)

    def __len__(self) -> int:
        return len(self.df)

    def __getitem__(self, index: int):
        import torch

        images = []
        for path in self._paths[index]:
            try:
                images.append(load_image(path, self.image_size))
            except Exception as exc:  # noqa: BLE001 - re-raised with the file
                raise BappsFormatError(f"BAPPS: cannot read image {path}: {exc}") from exc
        ref, x0, x1 = images
        return ref, x0, x1, torch.tensor(self._p[index]), index


def check_bapps(
    root: str | os.PathLike, *, decode: bool = True, categories: Iterable[str] | str | None = None
) -> tuple[list[str], dict]:
    """(problems, triplets per category) of a BAPPS folder; no problem = the layout is right.

    Checks: every category folder exists with ref/, p0/, p1/, judge/; every reference has its
    p0, p1 and judge file (and nothing is unpaired); judge files hold one number in [0, 1];
    with `decode`, every image decodes.
    """
    from PIL import Image

    try:
        base = find_bapps_root(root)
        cats = _categories(categories)
    except BappsFormatError as exc:
        return [str(exc)], {}
    problems: list[str] = []
    counts: dict[str, int] = {}
    for cat in cats:
        folder = base / cat
        if not folder.is_dir():
            problems.append(f"{folder}: category folder missing")
            continue
        stems, found = _category_items(folder)
        problems += found
        counts[cat] = len(stems)
        for stem in stems:
            judge = folder / "judge" / f"{stem}.npy"
            if judge.is_file():
                try:
                    _judge(judge)
                except BappsFormatError as exc:
                    problems.append(str(exc))
            if not decode:
                continue
            for sub in ("ref", "p0", "p1"):
                path = folder / sub / f"{stem}.png"
                if not path.is_file():
                    continue
                try:
                    with Image.open(path) as im:
                        im.load()  # decodes the whole file: catches truncated images
                except Exception as exc:  # noqa: BLE001 - any decode failure is a problem
                    problems.append(f"{path}: unreadable image: {exc}")
    return problems, counts


def download_bapps(
    out: str | os.PathLike,
    *,
    url: str = BAPPS_VAL_URL,
    sha256: str | None = BAPPS_VAL_SHA256,
    retries: int = 8,
    timeout: float = 60.0,
    workdir: str | os.PathLike | None = None,
    keep_archive: bool = False,
    progress: bool = True,
    max_members: int | None = None,
) -> Path:
    """Download the BAPPS 2AFC validation archive and extract it safely into `out`.

    The archive is fetched resumably (lipsim.data.transfer.fetch, verified against `sha256`
    when given; a page or anything that is no archive is refused before it gets the archive's
    name) into `workdir` (default `.{out name}.download` beside `out`), extracted with
    lipsim.data.extract.safe_extract (member limit `max_members`, default the schema's) into
    a temporary folder that replaces `out` only when complete, then checked (`check_bapps`,
    without decoding); an archive that the extraction or the check refuses is deleted.
    Returns `out`; an `out` that already passes the check is kept as it is.
    """
    from lipsim.configcheck import resolve
    from lipsim.data.extract import MAX_MEMBERS, removed_if_refused, safe_extract
    from lipsim.data.transfer import fetch

    out = Path(out).expanduser().resolve()
    if out.is_dir() and any(out.iterdir()) and not check_bapps(out, decode=False)[0]:
        return out  # a complete folder (this layout is only ever renamed into place whole)
    workdir = Path(workdir).resolve() if workdir else out.parent / f".{out.name}.download"
    archive = workdir / Path(url.split("?", 1)[0]).name
    fetch(
        url,
        archive,
        sha256=sha256,
        retries=retries,
        timeout=timeout,
        progress=progress,
        expect="archive",
    )
    limit = resolve(MAX_MEMBERS) if max_members is None else max_members

    def refuse(problems: list[str]) -> None:
        if problems:
            shown = "\n  ".join(problems[:10])
            raise BappsFormatError(
                f"BAPPS: {archive} (from {url}) does not hold the BAPPS "
                f"2AFC layout ({len(problems)} problem(s)):\n  {shown}"
            )

    with removed_if_refused(archive, BappsFormatError), atomic_dir(out) as tmp:
        # The file list is checked before extraction, the files themselves after it.
        safe_extract(archive, tmp, max_members=limit, accept=lambda n: refuse(layout_problems(n)))
        refuse(check_bapps(tmp, decode=False)[0])
    if not keep_archive:
        archive.unlink(missing_ok=True)
        if workdir.is_dir() and not any(workdir.iterdir()):
            workdir.rmdir()
    return out


# --------------------------------------------------------------------------- demo set
# Which demo distortions stand in for each category (the real ones: traditional
# distortions, CNN-based ones, super-resolution, deblurring, colourisation, frame
# interpolation).
_DEMO_KINDS = {
    "traditional": ("blur", "noise", "jpeg", "contrast"),
    "cnn": ("warp", "pixelate", "noise"),
    "superres": ("pixelate", "blur"),
    "deblur": ("blur", "noise"),
    "color": ("colour", "contrast"),
    "frameinterp": ("warp", "blur"),
}
_DEMO_JUDGES = 5  # judges per demo triplet (BAPPS val: several judgements per triplet)


@dataclasses.dataclass(frozen=True)
class _DemoItem:
    ref: np.ndarray
    x0: np.ndarray
    x1: np.ndarray
    p: float


def _demo_item(seed: int, cat_index: int, i: int, size: int) -> _DemoItem:
    from lipsim.data.synthetic import _OBSERVER_TEMPERATURE, DISTORTIONS, procedural_image

    rng = np.random.default_rng([seed, 7, cat_index, i])
    ref, _ = procedural_image(rng, size)
    kinds = _DEMO_KINDS[CATEGORIES[cat_index]]
    k0, k1 = (kinds[rng.integers(len(kinds))] for _ in range(2))
    s0, s1 = (float(s) for s in rng.uniform(0.05, 1.0, 2))  # PIL filters take plain floats
    x0 = np.clip(DISTORTIONS[k0](ref, s0, rng), 0, 1)
    x1 = np.clip(DISTORTIONS[k1](ref, s1, rng), 0, 1)
    # The judges prefer the less distorted image, with logistic noise (as the NIGHT demo).
    p_right = 1.0 / (1.0 + np.exp(-(s0 - s1) / _OBSERVER_TEMPERATURE))
    return _DemoItem(ref, x0, x1, rng.binomial(_DEMO_JUDGES, p_right) / _DEMO_JUDGES)


def make_bapps(
    out: str | os.PathLike, *, seed: int = 3, n_per_category: int = 16, image_size: int = BAPPS_SIZE
) -> Path:
    """Write a BAPPS-layout demo set (`out/val/<category>/{ref,p0,p1,judge}/`) from the demo
    images (lipsim.data.synthetic), replacing `out` atomically; a pure function of the seed."""
    from lipsim.data.synthetic import _save_png, _to_uint8

    if n_per_category < 1:
        raise ValueError(f"make_bapps: n_per_category must be >= 1, got {n_per_category}")
    if image_size < 8:
        raise ValueError(f"make_bapps: image_size must be >= 8, got {image_size}")
    out = Path(out)
    with atomic_dir(out) as tmp:
        for c, cat in enumerate(CATEGORIES):
            folder = tmp / "val" / cat
            (folder / "judge").mkdir(parents=True)
            for i in range(n_per_category):
                item = _demo_item(seed, c, i, image_size)
                stem = f"{i:06d}"
                for sub, img in (("ref", item.ref), ("p0", item.x0), ("p1", item.x1)):
                    _save_png(_to_uint8(img), folder / sub / f"{stem}.png")
                # BAPPS stores the judgement as a float array of shape (1,).
                np.save(folder / "judge" / f"{stem}.npy", np.array([item.p], dtype=np.float32))
    return out
