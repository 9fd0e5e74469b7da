"""Checks of user-provided image folders: ImageNet train layout and flat natural-image folders.

Neither ImageNet nor COCO can be downloaded by this project (licence / registration), so the
pipeline checks what the user placed at results/{run}/data/imagenet and .../natural and says
precisely what is missing, instead of failing deep inside a training job.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from lipsim.configcheck import FromSchema, with_schema_defaults

__all__ = ["IMAGE_SUFFIXES", "FolderReport", "check_image_folder", "check_imagenet", "HOW_TO_GET"]

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")

HOW_TO_GET = {
    "imagenet": (
        "ImageNet-1k (ILSVRC2012) needs a free account at https://image-net.org (download "
        "ILSVRC2012_img_train.tar, 138 GB) or the Kaggle 'imagenet-object-localization-challenge'"
        " data; extract it so that ROOT/train/n01440764/*.JPEG ... (1000 class folders, "
        "1,281,167 images). For a quick run use `python -m lipsim make-demo-images --layout "
        "imagenet --out ROOT`."
    ),
    "flat": (
        "Any folder of natural images works (the paper uses COCO: val2017 from "
        "https://cocodataset.org/#download, 5,000 images, 1 GB: unzip val2017.zip and point ROOT "
        "at the val2017 folder). For a quick run use `python -m lipsim make-demo-images "
        "--layout flat --out ROOT`."
    ),
}


@dataclasses.dataclass
class FolderReport:
    root: str
    layout: str
    n_images: int = 0
    n_classes: int = 0
    expected_classes: int | None = None
    unreadable: list[str] = dataclasses.field(default_factory=list)  # "path: why"
    empty_classes: list[str] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "ok": self.ok}


def _images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def _decode_all(paths: list[Path], report: FolderReport, decode: bool) -> None:
    from PIL import Image

    for path in paths:
        if path.stat().st_size == 0:
            report.unreadable.append(f"{path}: empty file")
            continue
        if not decode:
            continue
        try:
            with Image.open(path) as im:
                im.load()  # a full decode: truncated files fail here, not in a training job
        except Exception as exc:  # noqa: BLE001 - any decode failure makes the file unusable
            report.unreadable.append(f"{path}: {exc}")


@with_schema_defaults
def check_imagenet(
    root: str | os.PathLike,
    expect_classes: int | None = FromSchema("imagenet.expect_classes"),
    *,
    decode: bool = True,
) -> FolderReport:
    """Check ROOT/train/<class>/<images>: class count vs expected, empty classes, unreadable
    files (`decode=False` only checks for empty files, which is fast on 1.28M images)."""
    root = Path(root)
    report = FolderReport(str(root), "imagenet", expected_classes=expect_classes)
    train = root / "train"
    if not train.is_dir():
        found = "it does not exist" if not root.exists() else "no train/ folder in it"
        report.problems.append(
            f"{train}: expected the ImageNet train layout "
            f"ROOT/train/<class>/<image>, but {found}. {HOW_TO_GET['imagenet']}"
        )
        return report
    classes = sorted(p for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    report.n_classes = len(classes)
    for cls in classes:
        images = _images(cls)
        if not images:
            report.empty_classes.append(cls.name)
        report.n_images += len(images)
        _decode_all(images, report, decode)
    if expect_classes is not None and report.n_classes != expect_classes:
        report.problems.append(
            f"{train}: found {report.n_classes} class folders, expected "
            f"{expect_classes}. {HOW_TO_GET['imagenet']}"
        )
    if report.empty_classes:
        report.problems.append(
            f"{train}: {len(report.empty_classes)} class folder(s) without "
            f"images: {', '.join(report.empty_classes[:10])}"
            + (" ..." if len(report.empty_classes) > 10 else "")
        )
    if report.unreadable:
        report.problems.append(
            f"{train}: {len(report.unreadable)} unreadable image(s), e.g. {report.unreadable[0]}"
        )
    return report


def check_image_folder(
    root: str | os.PathLike, *, decode: bool = True, min_images: int = 1
) -> FolderReport:
    """Check a flat folder of images (ROOT/<image>): count and unreadable files."""
    root = Path(root)
    report = FolderReport(str(root), "flat")
    if not root.is_dir():
        report.problems.append(f"{root}: not a folder. {HOW_TO_GET['flat']}")
        return report
    images = _images(root)
    report.n_images = len(images)
    _decode_all(images, report, decode)
    if report.n_images < min_images:
        report.problems.append(
            f"{root}: found {report.n_images} image(s) "
            f"({', '.join(IMAGE_SUFFIXES)}), need at least {min_images}. "
            f"{HOW_TO_GET['flat']}"
        )
    if report.unreadable:
        report.problems.append(
            f"{root}: {len(report.unreadable)} unreadable image(s), e.g. {report.unreadable[0]}"
        )
    return report
