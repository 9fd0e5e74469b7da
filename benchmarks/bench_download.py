"""Benchmark the NIGHT downloader over loopback: throughput and memory vs archive size.

    .venv/bin/python benchmarks/bench_download.py [--sizes-mb 16 64] [--file-mb 1]

For each size it builds a NIGHT-shaped zip (nights/data.csv + incompressible "images"),
serves it from a LoopbackServer (tests/loopback_server.py) in this process and measures, in a
fresh child process per size (so peak RSS is per size):
- download: `fetch` over HTTP to a .part file, incl. the final sha256 pass (MB/s);
- extract: `safe_extract` incl. the CRC test and hashing every file (MB/s);
- install: the whole `download_night` (fetch + extract + manifest) (MB/s);
- verify: a rerun's `verify_manifest` with sha256 of every file (MB/s);
- peak memory: ru_maxrss growth over the child's baseline and tracemalloc's peak of Python
  allocations during `download_night`. Both should stay flat when the archive grows.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def build_zip(path: Path, size_mb: int, file_mb: float) -> int:
    n = max(1, int(size_mb / file_mb))
    block = int(file_mb * 2**20)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr(
            "nights/data.csv",
            "id,left_vote,right_vote,votes,ref_path,left_path,"
            "right_path,split,is_imagenet,prompt\n",
        )
        for i in range(n):
            zf.writestr(f"nights/ref/{i // 100:03d}/{i % 100:03d}.png", os.urandom(block))
    return path.stat().st_size


def client(url: str, work: Path) -> dict:
    from lipsim.data.download import download_night, fetch, verify_manifest
    from lipsim.data.extract import safe_extract

    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    out = {}
    t = time.perf_counter()
    res = fetch(url, work / "a.zip", progress=False)
    out["download_MBps"] = res.size / 2**20 / (time.perf_counter() - t)
    t = time.perf_counter()
    safe_extract(work / "a.zip", work / "x", strip="nights")
    out["extract_MBps"] = res.size / 2**20 / (time.perf_counter() - t)
    (work / "a.zip").unlink()
    tracemalloc.start()
    t = time.perf_counter()
    download_night(work / "night", mode="zip", url=url, progress=False)
    out["install_MBps"] = res.size / 2**20 / (time.perf_counter() - t)
    out["tracemalloc_peak_MiB"] = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    t = time.perf_counter()
    _, problems = verify_manifest(work / "night")
    assert not problems, problems
    out["verify_MBps"] = res.size / 2**20 / (time.perf_counter() - t)
    out["rss_growth_MiB"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024
    out["archive_MiB"] = res.size / 2**20
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes-mb", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--file-mb", type=float, default=1.0)
    ap.add_argument("--client", nargs=2, metavar=("URL", "WORKDIR"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        print(json.dumps(client(args.client[0], Path(args.client[1]))))
        return 0
    from loopback_server import LoopbackServer

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-dl-") as tmp, LoopbackServer() as srv:
        for size in args.sizes_mb:
            archive = Path(tmp) / f"nights-{size}.zip"
            build_zip(archive, size, args.file_mb)
            srv.files[f"/{archive.name}"] = archive  # streamed from disk in 64 KiB blocks
            work = Path(tmp) / f"work-{size}"
            work.mkdir()
            proc = subprocess.run(
                [sys.executable, __file__, "--client", f"{srv.url}/{archive.name}", str(work)],
                capture_output=True,
                text=True,
                check=True,
            )
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            archive.unlink()
    keys = [
        "archive_MiB",
        "download_MBps",
        "extract_MBps",
        "install_MBps",
        "verify_MBps",
        "rss_growth_MiB",
        "tracemalloc_peak_MiB",
    ]
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for r in rows:
        print("| " + " | ".join(f"{r[k]:.1f}" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
