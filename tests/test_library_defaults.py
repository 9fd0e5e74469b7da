"""Library functions that a pipeline step calls take their defaults from the schema (the one
place for pipeline defaults), so calling them by hand runs the pipeline's experiment."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from lipsim import embcache
from lipsim.configcheck import FromSchema, resolve, schema_default
from lipsim.data import download, folders, night
from lipsim.data.extract import MAX_RATIO

# (function, parameter, schema key)
PARAMETERS = [
    (night.read_night, "min_votes", "night.min_votes"),
    (night.verify_night, "min_votes", "night.min_votes"),
    (embcache.fill_part, "shard_size", "cache.shard_size"),
    (embcache.fill_part, "dtype", "cache.dtype"),
    (embcache.fill_part, "batch_size", "cache.batch_size"),
    (embcache.fill_part, "workers", "cache.workers"),
    (embcache.fill_part, "on_bad_image", "cache.on_bad_image"),
    (embcache.fill_part, "crop", "distill.crop"),
    (folders.check_imagenet, "expect_classes", "imagenet.expect_classes"),
    (download.download_night, "chunks", "night.download.chunks"),
    (download.download_night, "retries", "night.download.retries"),
    (download.download_night, "timeout", "night.download.timeout"),
    (download.download_night, "min_rate", "night.download.min_rate"),
    (download.download_night, "stall_time", "night.download.stall_time"),
    (download.download_night, "max_ratio", "night.download.max_ratio"),
    (download.fetch, "retries", "night.download.retries"),
    (download.fetch, "timeout", "night.download.timeout"),
    (download.fetch, "min_rate", "night.download.min_rate"),
    (download.fetch, "stall_time", "night.download.stall_time"),
]


@pytest.mark.parametrize(
    ("func", "param", "key"), PARAMETERS, ids=[f"{f.__name__}.{p}" for f, p, _ in PARAMETERS]
)
def test_library_default_is_the_schema_default(func, param, key):
    default = inspect.signature(func).parameters[param].default
    assert default is not inspect.Parameter.empty, f"{func.__name__}({param}) has no default"
    if isinstance(default, FromSchema):  # looked up at call time (no schema read at import)
        assert default.key == key, (func.__name__, param, key)
        return
    assert default == schema_default(key), (func.__name__, param, key)


def test_schema_defaults_resolve_at_call_time(tmp_path):
    # An ImageNet folder of 2 classes: the schema's default (1000) is what the check expects.
    for cls in ("n01", "n02"):
        (tmp_path / "train" / cls).mkdir(parents=True)
    report = folders.check_imagenet(tmp_path, decode=False)
    assert report.expected_classes == schema_default("imagenet.expect_classes")
    assert folders.check_imagenet(tmp_path, 2, decode=False).expected_classes == 2


def test_module_constants_are_the_schema_defaults():
    assert resolve(download.NIGHT_ZIP_URL) == schema_default("night.download.url")
    assert resolve(download.NIGHT_CHUNKED_URL) == schema_default("night.download.chunked_url")
    assert resolve(MAX_RATIO) == schema_default("night.download.max_ratio")


@pytest.mark.slow  # imports every module (torch, torchvision, matplotlib) in a fresh process
def test_importing_the_package_reads_no_schema():
    # Defaults are looked up when a function is called: importing every module of the package
    # (in a fresh interpreter) leaves the schema unread.
    probe = (
        "import importlib, pkgutil, lipsim, lipsim.configcheck as c\n"
        "for m in pkgutil.walk_packages(lipsim.__path__, 'lipsim.'):\n"
        "    importlib.import_module(m.name)\n"
        "    assert c._schema.cache_info().currsize == 0, m.name\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]


def test_attack_spec_defaults_are_the_schemas():
    from lipsim.attacks import AttackSpec

    spec = AttackSpec("pgd", "L2", 0.5)
    assert spec.steps == schema_default("attacks.pgd_steps")
    assert spec.restarts == schema_default("attacks.pgd_restarts")
    assert spec.seed == schema_default("attacks.seed")
