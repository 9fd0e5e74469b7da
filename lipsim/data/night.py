"""NIGHT (NIGHTS) 2AFC triplets: read data.csv, a torch Dataset, and a full verifier.

Format (DreamSim's release, also what `make-demo-night` writes): a folder holding data.csv
with columns id, left_vote, right_vote, votes, ref_path, left_path, right_path, split,
is_imagenet, prompt, and images ref/XXX/YYY.png, distort/XXX/YYY_0.png (x0 = left) and
YYY_1.png (x1 = right); csv paths are relative to the folder holding data.csv.

p (the share of votes for x1): in the release left_vote / right_vote are shares in [0, 1]
and DreamSim uses right_vote as p directly. A file whose vote columns hold counts (whole
numbers, some > 1) is read as counts: p = right_vote / (left_vote + right_vote); in a file of
shares every value must lie in [0, 1]. The choice is made per file,
not per row, because a row such as (0, 1) means the same in both readings.

`read_night` accepts either the folder holding data.csv or its parent (the folder a
nights.zip was extracted into, which holds nights/data.csv). Image paths must stay inside the
dataset: absolute paths and paths with `..` are refused (reported by `verify_night`).
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from lipsim.configcheck import FromSchema, with_schema_defaults
from lipsim.errors import LipSimError

__all__ = [
    "COLUMNS",
    "SPLITS",
    "NightFormatError",
    "NightTriplets",
    "Problem",
    "find_night_root",
    "load_image",
    "read_night",
    "verify_night",
]

COLUMNS = (
    "id",
    "left_vote",
    "right_vote",
    "votes",
    "ref_path",
    "left_path",
    "right_path",
    "split",
    "is_imagenet",
    "prompt",
)
SPLITS = ("train", "val", "test_imagenet", "test_no_imagenet")
_PATH_COLUMNS = ("ref_path", "left_path", "right_path")
_CSV_SPLITS = ("train", "val", "test")
_DRIVE = re.compile(r"^[A-Za-z]:")


class NightFormatError(LipSimError, ValueError):
    """data.csv or an image does not match the NIGHT format; the message names file and row."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem found by `verify_night`: where (file, csv line, id, column) and what."""

    file: str
    message: str
    line: int | None = None  # 1-based line of data.csv (the header is line 1)
    id: str | None = None
    column: str | None = None

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f" line {self.line}"
        if self.id is not None:
            where += f" (id {self.id})"
        if self.column is not None:
            where += f" [{self.column}]"
        return f"{where}: {self.message}"


def find_night_root(root: str | os.PathLike) -> Path:
    """The folder holding data.csv: `root` itself or `root/nights` (a nights.zip extraction)."""
    root = Path(root).expanduser().resolve()
    for cand in (root, root / "nights"):
        if (cand / "data.csv").is_file():
            return cand
    raise FileNotFoundError(
        f"NIGHT: no data.csv in {root} or {root / 'nights'}; download it with "
        "`python -m lipsim download-night` or make a demo set with `python -m lipsim make-demo-night`"
    )


def _line(pos: int) -> int:
    return pos + 2  # header is line 1, data row 0 is line 2


def _parse_bool(value) -> bool | None:
    s = str(value).strip().lower()
    if s in ("true", "1", "1.0", "yes", "t"):
        return True
    if s in ("false", "0", "0.0", "no", "f"):
        return False
    return None


def _read_csv(csv_path: Path) -> pd.DataFrame:
    try:
        # Everything as text first: the checks below report bad values with their line.
        df = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    except Exception as exc:  # noqa: BLE001 - any parse failure is a format error
        raise NightFormatError(f"{csv_path}: cannot parse as CSV: {exc}") from exc
    df.columns = [str(c).strip() for c in df.columns]
    return df.fillna("")  # short rows: empty fields, reported as such below


class _RowFlags:
    """The problems found in data.csv's rows, and which rows are bad."""

    def __init__(self, df: pd.DataFrame, csv_path: Path) -> None:
        self.df, self.file = df, str(csv_path)
        self.problems: list[Problem] = []
        self.bad = np.zeros(len(df), dtype=bool)

    def flag(self, mask, message, column=None, every=True) -> None:
        """One problem per row in `mask`; `every`=False skips rows already found bad (checks
        that derive from values reported already)."""
        mask = np.asarray(mask, dtype=bool)
        for pos in np.flatnonzero(mask if every else mask & ~self.bad):
            text = message(pos) if callable(message) else message
            self.problems.append(
                Problem(self.file, text, _line(pos), self.df["id"].iloc[pos], column)
            )
            self.bad[pos] = True


def _check_table(df: pd.DataFrame, csv_path: Path) -> tuple[list[Problem], pd.DataFrame]:
    """Parse the text table into typed columns; return (problems, typed table of good rows)."""
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        problem = Problem(
            str(csv_path),
            f"missing column(s) {', '.join(missing)}; "
            f"found {', '.join(df.columns)}; expected {', '.join(COLUMNS)}",
        )
        return [problem], df.iloc[0:0]
    out = df.copy()
    for col in ("left_vote", "right_vote", "votes"):
        out[col] = pd.to_numeric(df[col].str.strip(), errors="coerce")
    out["is_imagenet"] = [_parse_bool(v) for v in df["is_imagenet"]]
    flags = _RowFlags(df, csv_path)
    _check_numbers(flags, out)
    split = df["split"].str.strip()
    _check_text(flags, split)
    out["p"] = _check_votes(flags, out)
    out["line"] = np.arange(len(df)) + 2
    out["split"] = split
    return flags.problems, out[~flags.bad]


def _check_numbers(flags: _RowFlags, out: pd.DataFrame) -> None:
    """Vote columns: numbers, finite, not negative, not huge; votes whole; is_imagenet a bool."""
    df, flag = flags.df, flags.flag
    for col in ("left_vote", "right_vote", "votes"):
        values = out[col].to_numpy(float)
        flag(np.isnan(values), lambda pos, col=col: f"not a number: {df[col].iloc[pos]!r}", col)
        flag(np.isinf(values), lambda pos, col=col: f"not finite: {df[col].iloc[pos]!r}", col)
        flag(
            np.isfinite(values) & (values < 0),
            lambda pos, col=col: f"negative: {df[col].iloc[pos]!r}",
            col,
        )
        # Past 2**53 floats skip whole numbers: no count or share is that large.
        flag(
            np.isfinite(values) & (values >= 2.0**53),
            lambda pos, col=col: f"implausibly large: {df[col].iloc[pos]!r}",
            col,
        )
    votes = out["votes"].to_numpy(float)
    flag(
        np.isfinite(votes) & (votes != np.round(votes)),
        lambda pos: f"not a whole number of votes: {df['votes'].iloc[pos]!r}",
        "votes",
    )
    flag(
        out["is_imagenet"].isna().to_numpy(),
        lambda pos: f"not a boolean: {df['is_imagenet'].iloc[pos]!r}",
        "is_imagenet",
    )


def _check_text(flags: _RowFlags, split: pd.Series) -> None:
    """A known split, image paths present and inside the dataset, unique ids."""
    df, flag = flags.df, flags.flag
    flag(
        ~split.isin(_CSV_SPLITS).to_numpy(),
        lambda pos: f"unknown split {split.iloc[pos]!r}; expected one of {', '.join(_CSV_SPLITS)}",
        "split",
    )
    for col in _PATH_COLUMNS:
        paths = df[col].str.strip()
        flag((paths == "").to_numpy(), "empty path", col)
        flag(
            [_leaves_root(v) for v in paths],
            lambda pos, col=col: (
                f"path {df[col].iloc[pos]!r} "
                "leaves the dataset root (absolute or with '..'); refusing to read it"
            ),
            col,
        )
    flag(
        df["id"].duplicated(keep="first").to_numpy(),
        lambda pos: f"duplicate id {df['id'].iloc[pos]!r}",
        "id",
    )


def _check_votes(flags: _RowFlags, out: pd.DataFrame) -> np.ndarray:
    """Reads the file's votes as counts or shares, checks them as such; returns p per row."""
    df, flag = flags.df, flags.flag
    lv, rv = out["left_vote"].to_numpy(float), out["right_vote"].to_numpy(float)
    # Counts or shares, per file (see the module docstring): counts are whole numbers, and
    # some exceed 1. A file with fractions is read as shares, whose values must lie in [0, 1].
    good = np.concatenate([lv[~flags.bad], rv[~flags.bad]])
    counts = bool(len(good) and (good == np.round(good)).all() and (good > 1).any())
    if not counts:
        for col, values in (("left_vote", lv), ("right_vote", rv)):
            flag(
                np.isfinite(values) & (values > 1),
                lambda pos, col=col: (
                    f"vote share {df[col].iloc[pos]!r} outside [0, 1] (the "
                    "file holds fractions, so its votes are read as shares)"
                ),
                col,
            )
    total = lv + rv
    flag(total <= 0, "left_vote + right_vote is 0: p undefined", every=False)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = rv / np.where(total > 0, total, 1.0) if counts else rv
    if not counts:
        flag(
            np.abs(total - 1.0) > 1e-3,
            lambda pos: f"vote shares do not sum to 1 (left {lv[pos]:g} + right {rv[pos]:g})",
            every=False,
        )
    return p


def _leaves_root(path: str) -> bool:
    """True for a csv path that is absolute (/x, C:\\x, \\\\host) or has a `..` component."""
    name = path.replace("\\", "/")
    return name.startswith("/") or bool(_DRIVE.match(name)) or ".." in name.split("/")


def _resolve_base(base: Path, df: pd.DataFrame) -> Path:
    """The folder csv paths are relative to: data.csv's folder, or its parent when the paths
    carry a leading `nights/` (both conventions exist in the wild)."""
    if len(df):
        first = str(df["ref_path"].iloc[0]).strip()
        if not os.path.exists(base / first) and os.path.exists(base.parent / first):
            return base.parent
    return base


def _finish(typed: pd.DataFrame, base: Path) -> pd.DataFrame:
    split = np.where(
        typed["split"] != "test",
        typed["split"],
        np.where(typed["is_imagenet"].astype(bool), "test_imagenet", "test_no_imagenet"),
    )
    out = pd.DataFrame(
        {
            "id": typed["id"].str.strip().to_numpy(),
            "split": split,
            "p": typed["p"].astype(np.float64).to_numpy(),
            "ref_path": [str(base / s.strip()) for s in typed["ref_path"]],
            "left_path": [str(base / s.strip()) for s in typed["left_path"]],
            "right_path": [str(base / s.strip()) for s in typed["right_path"]],
            "votes": typed["votes"].astype(np.float64).round().astype(np.int64).to_numpy(),
            "is_imagenet": typed["is_imagenet"].astype(bool).to_numpy(),
            "prompt": typed["prompt"].to_numpy(),
            "line": typed["line"].to_numpy(),
        }
    )
    # ids are numeric in NIGHT; keep them as int when they all are (joins with parquet outputs).
    ids = pd.to_numeric(out["id"], errors="coerce")
    if ids.notna().all() and np.isfinite(ids).all() and (ids == ids.round()).all():
        out["id"] = ids.astype(np.int64)
    return out


def _select(df: pd.DataFrame, min_votes: int, splits: Iterable[str] | str | None) -> pd.DataFrame:
    df = df[df["votes"] >= min_votes]
    if splits is not None:
        wanted: set[str] = set()
        for s in [splits] if isinstance(splits, str) else splits:
            if s == "test":  # NIGHT's test = both test splits
                wanted.update(("test_imagenet", "test_no_imagenet"))
            elif s in SPLITS:
                wanted.add(s)
            else:
                raise ValueError(
                    f"unknown split {s!r}; expected one of {', '.join(SPLITS)} or 'test'"
                )
        df = df[df["split"].isin(wanted)]
    return df.reset_index(drop=True)


@with_schema_defaults
def read_night(
    root: str | os.PathLike,
    min_votes: int = FromSchema("night.min_votes"),
    splits: Iterable[str] | str | None = None,
) -> pd.DataFrame:
    """Read NIGHT's data.csv into a DataFrame of usable triplets.

    Columns: id, split (train / val / test_imagenet / test_no_imagenet), p (share of votes for
    x1 = right = distort _1), ref_path, left_path, right_path (absolute), votes, is_imagenet,
    prompt, line (data.csv line, for error messages). Rows with votes < min_votes are dropped
    (NIGHT keeps votes >= 6). `splits` keeps only those splits ('test' = both test splits).
    Raises NightFormatError naming data.csv and the line for bad rows or missing columns, and
    FileNotFoundError naming the image and the line when an image file is missing (images are
    decoded lazily by NightTriplets; `verify_night` decodes them all).
    """
    base = find_night_root(root)
    csv_path = base / "data.csv"
    problems, typed = _check_table(_read_csv(csv_path), csv_path)
    if problems:
        shown = "\n  ".join(str(p) for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise NightFormatError(
            f"NIGHT: {len(problems)} problem(s) in {csv_path}:\n  {shown}{more}"
            "\n(run `python -m lipsim verify-night` for the full list)"
        )
    df = _select(_finish(typed, _resolve_base(base, typed)), min_votes, splits)
    missing = [
        (line, i, col, row[col])
        for line, i, row in zip(df["line"], df["id"], df.to_dict("records"), strict=True)
        for col in _PATH_COLUMNS
        if not os.path.isfile(row[col])
    ]
    if missing:
        shown = "\n  ".join(
            f"{path} (data.csv line {line}, id {i}, {col})" for line, i, col, path in missing[:20]
        )
        more = f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else ""
        raise FileNotFoundError(
            f"NIGHT: {len(missing)} image file(s) listed in {csv_path} are "
            f"missing:\n  {shown}{more}"
        )
    return df


def load_image(path: str | os.PathLike, image_size: int | None):
    """An image file as a float tensor (3, H, W) in [0, 1], resized to image_size x image_size
    with PIL's bicubic filter (antialiased when downsampling; DreamSim's preprocessing)."""
    import torch
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        if image_size is not None and im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.BICUBIC)
        arr = np.asarray(im, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(255.0)


class NightTriplets:
    """torch Dataset over a `read_night` table: item i is (ref, x0, x1, p, i).

    ref, x0 (left, distort _0), x1 (right, distort _1): float tensors (3, S, S) in [0, 1];
    p: float32 tensor, the share of votes for x1; i: the row position in `df` (use
    df.iloc[i] for id / split). An unreadable image raises NightFormatError naming the file
    and the data.csv line.
    """

    def __init__(self, df: pd.DataFrame, image_size: int | None = 224):
        self.df = df.reset_index(drop=True)
        self.image_size = image_size
        self._paths = self.df[list(_PATH_COLUMNS)].to_numpy()
        self._p = self.df["p"].to_numpy(np.float32)
        self._lines = self.df["line"].to_numpy() if "line" in self.df else None

    def __len__(self) -> int:
        return len(self.df)

    def __getitem__(self, index: int):
        import torch

        images = []
        for col, path in zip(_PATH_COLUMNS, self._paths[index], strict=True):
            try:
                images.append(load_image(path, self.image_size))
            except Exception as exc:  # noqa: BLE001 - re-raised with the file and row
                line = f"data.csv line {self._lines[index]}, " if self._lines is not None else ""
                raise NightFormatError(
                    f"NIGHT: cannot read image {path} ({line}id "
                    f"{self.df['id'].iloc[index]}, {col}): {exc}"
                ) from exc
        ref, x0, x1 = images
        return ref, x0, x1, torch.tensor(self._p[index]), index


@with_schema_defaults
def verify_night(
    root: str | os.PathLike,
    min_votes: int = FromSchema("night.min_votes"),
    *,
    decode: bool = True,
) -> list[Problem]:
    """Every problem in a NIGHT folder (empty list = fine).

    Checks data.csv (columns, values, duplicate ids), that every image of every row with
    votes >= min_votes exists and (with `decode`) decodes as an image, that each split
    (train, val, test_imagenet, test_no_imagenet) has rows. Rows below min_votes are not
    checked for images: they are never used.
    """
    from PIL import Image

    try:
        base = find_night_root(root)
    except FileNotFoundError as exc:
        return [Problem(str(Path(root) / "data.csv"), str(exc))]
    csv_path = base / "data.csv"
    try:
        raw = _read_csv(csv_path)
    except NightFormatError as exc:
        return [Problem(str(csv_path), str(exc))]
    problems, typed = _check_table(raw, csv_path)
    if "ref_path" not in raw.columns or not len(typed):
        if not problems:
            problems.append(Problem(str(csv_path), "no rows"))
        return problems
    df = _finish(typed, _resolve_base(base, typed))
    df = df[df["votes"] >= min_votes]
    for split in SPLITS:
        if not (df["split"] == split).any():
            problems.append(
                Problem(str(csv_path), f"no rows with votes >= {min_votes} in split {split}")
            )
    for row in df.to_dict("records"):
        for col in _PATH_COLUMNS:
            path = row[col]
            if not os.path.isfile(path):
                problems.append(Problem(path, "missing image", row["line"], str(row["id"]), col))
                continue
            if decode:
                try:
                    with Image.open(path) as im:
                        im.load()  # decodes the whole file: catches truncated images
                except Exception as exc:  # noqa: BLE001 - any decode failure is a problem
                    problems.append(
                        Problem(path, f"unreadable image: {exc}", row["line"], str(row["id"]), col)
                    )
    return problems
