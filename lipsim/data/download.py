"""The NIGHT download: one zip or chunked zips, extracted safely, verified by a manifest.

`download_night(...)` fetches NIGHT (see `NIGHT_ZIP_URL` / `NIGHT_CHUNKED_URL`) with the
package's resumable, verified transfer (lipsim.data.transfer.fetch), extracts each archive
safely (lipsim.data.extract) into a staging folder beside `out`, and renames the staging
folder onto `out` when everything is there, with a manifest `.night-complete.json` (every
file: size, sha256, source archive) written last. A rerun over a complete folder verifies the
files against the manifest instead of downloading, and re-fetches only the archives whose
files fail (missing, wrong size, wrong sha256).

Chunked layout (assumption, documented in the README): `{url}/ref/000.zip .. {url}/ref/NNN.zip`,
the same under `distort/`, each zip holding the files under ref/ (resp. distort/), either with
or without the leading `ref/` (`distort/`) folder; and data.csv at `{url}/data.csv` (override with
`csv_url`), which DreamSim's chunked script does not fetch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import requests

from lipsim.atomic import NoSpaceError, atomic_path, no_space, write_json
from lipsim.checksum import sha256_file
from lipsim.configcheck import FromSchema, resolve, with_schema_defaults
from lipsim.data import replace_dir
from lipsim.data.extract import (
    MAX_MEMBERS,
    MAX_RATIO,
    ExtractClash,
    ExtractError,
    removed_if_refused,
    safe_extract,
)
from lipsim.data.transfer import (
    MIN_RATE,
    RETRIES,
    STALL_TIME,
    TIMEOUT,
    DownloadError,
    FetchResult,
    Session,
    fetch,
)

__all__ = [
    "MANIFEST_NAME",
    "MIN_RATE",
    "NIGHT_CHUNKED_URL",
    "NIGHT_ZIP_URL",
    "STALL_TIME",
    "DownloadError",
    "FetchResult",
    "download_night",
    "fetch",
    "sha256_file",
    "verify_manifest",
]

# The pipeline's defaults (workflow/schemas/config.schema.yaml, night.download) are the library's.
NIGHT_ZIP_URL = FromSchema("night.download.url")
NIGHT_CHUNKED_URL = FromSchema("night.download.chunked_url")
CHUNKS = FromSchema("night.download.chunks")
MANIFEST_NAME = ".night-complete.json"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


# --------------------------------------------------------------------------- NIGHT
@dataclasses.dataclass(frozen=True)
class _Source:
    """One archive (or data.csv) of the NIGHT download."""

    name: str  # key in the manifest, e.g. "nights.zip", "ref/000.zip", "data.csv"
    url: str
    kind: str  # "zip" (extract at root), "ref" / "distort" (extract under that folder), "file"
    sha256: str | None = None


def _expect(kind: str) -> str:
    """What a source's bytes must be before they are accepted (fetch's `expect`)."""
    return "night-csv" if kind == "file" else "zip"


def _sources(
    mode: str, url: str, chunks: int, sha256: str | None, csv_url: str | None
) -> list[_Source]:
    # ConfigError: a bad option is reported as one error line naming it.
    from lipsim.configcheck import ConfigError

    if sha256 and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ConfigError(f"download_night: --sha256 {sha256!r} is not 64 hexadecimal digits")
    if mode == "zip":
        return [_Source("nights.zip", url, "zip", sha256)]
    if mode != "chunked":
        raise ConfigError(f"download_night: --mode must be 'zip' or 'chunked', got {mode!r}")
    if sha256:
        raise ConfigError(
            "download_night: --sha256 applies to --mode zip (one archive); "
            "chunked archives are checked by size and zip CRC"
        )
    if chunks < 1:
        raise ConfigError(f"download_night: --chunks must be >= 1, got {chunks}")
    base = url.rstrip("/")
    out = [_Source("data.csv", csv_url or f"{base}/data.csv", "file")]
    for kind in ("ref", "distort"):
        out += [
            _Source(f"{kind}/{i:03d}.zip", f"{base}/{kind}/{i:03d}.zip", kind)
            for i in range(chunks)
        ]
    return out


def _log(msg: str) -> None:
    print(f"download-night: {msg}", file=sys.stderr, flush=True)


def _install(
    src: _Source, archive: Path, staging: Path, limits: dict, owners: dict[str, str] | None = None
) -> list[dict]:
    """Put one fetched source into `staging`; return its manifest entries.

    `owners` (path -> source name) are the files other archives already put there: a member
    that would overwrite one is refused, naming both archives; a file no record owns is a
    leftover of an interrupted run and is replaced.
    """
    if src.kind == "file":
        target = staging / Path(src.name)
        with atomic_path(target) as tmp:  # never a partial data.csv in the staging folder
            shutil.copyfile(archive, tmp)
        return [
            {
                "path": src.name,
                "size": _size(target),
                "sha256": sha256_file(target),
                "source": src.name,
            }
        ]
    # nights.zip holds nights/...; chunks hold XXX/... or ref/XXX/...: strip the wrapper so the
    # files land at staging/data.csv, staging/ref/..., staging/distort/...
    if src.kind == "zip":
        where = dict(strip=_zip_wrapper(archive))
    else:
        where = dict(into=src.kind, strip=src.kind)
    try:
        entries = safe_extract(archive, staging, replace=owners is None, **where, **limits)
    except ExtractClash as exc:
        owner = (owners or {}).get(exc.path)
        if owner is not None:
            raise ExtractError(
                f"{src.name} ({archive}) entry {exc.entry!r} and {owner} both hold "
                f"{exc.path}; refusing to let one archive overwrite another's "
                "file"
            ) from exc
        entries = safe_extract(archive, staging, **where, **limits)
    return [
        {"path": e.path, "size": e.size, "sha256": e.sha256, "source": src.name} for e in entries
    ]


def _zip_wrapper(archive: Path) -> str:
    """The folder holding data.csv inside the one-zip release ("nights"), "" if at the root."""
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zf:
            names = [n.replace("\\", "/") for n in zf.namelist()]
    except (zipfile.BadZipFile, OSError) as exc:
        raise ExtractError(f"{archive}: not a readable zip archive: {exc}") from exc
    if "data.csv" in names:
        return ""
    tops = {n.split("/")[0] for n in names if "/" in n and not n.startswith("__MACOSX")}
    for top in sorted(tops):
        if f"{top}/data.csv" in names:
            return top
    return ""


def verify_manifest(
    root: str | os.PathLike, *, check_sha256: bool = True
) -> tuple[dict, list[tuple[str, str]]]:
    """(manifest, problems) for `root`/.night-complete.json; a problem is (relative path, what)."""
    root = Path(root)
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text(encoding="utf-8"))
        entries = list(manifest.get("files", []))
    except (OSError, ValueError, AttributeError) as exc:
        raise DownloadError(
            f"{root / MANIFEST_NAME}: unreadable download manifest ({exc}); "
            "remove the folder to download again"
        ) from exc
    problems = []
    for entry in entries:
        path = root / entry["path"]
        size = _size(path) if path.is_file() else None
        if size is None:
            problems.append((entry["path"], "missing"))
        elif size != entry["size"]:
            problems.append((entry["path"], f"{size} bytes, manifest says {entry['size']}"))
        elif check_sha256 and sha256_file(path) != entry["sha256"]:
            problems.append((entry["path"], "sha256 differs from the manifest"))
    return manifest, problems


@with_schema_defaults
def download_night(
    out: str | os.PathLike,
    *,
    mode: str = "zip",
    url: str | None = None,
    sha256: str | None = None,
    chunks: int = CHUNKS,
    retries: int = RETRIES,
    timeout: float = TIMEOUT,
    workdir: str | os.PathLike | None = None,
    csv_url: str | None = None,
    keep_archives: bool = False,
    check_sha256: bool = True,
    backoff: float = 1.0,
    progress: bool = True,
    min_rate: float = MIN_RATE,
    stall_time: float = STALL_TIME,
    max_bytes: int | None = None,
    max_ratio: float | None = MAX_RATIO,
    max_members: int | None = MAX_MEMBERS,
) -> Path:
    """Download NIGHT into `out` (the folder that will hold data.csv, ref/, distort/).

    Archives go to `workdir` (default: `.{out name}.download` beside `out`) as `.part` files
    (resumable across runs) and are deleted after extraction unless `keep_archives`; an
    archive the extraction refuses is deleted too. `min_rate` / `stall_time`: fetch's stall
    rule; `max_bytes` / `max_ratio` / `max_members`: safe_extract's limits per archive.
    Returns `out`. Raises DownloadError / ExtractError with the URL or file at fault,
    NoSpaceError naming the file when the disk is full.
    """
    out = Path(out).expanduser().resolve()
    url = url or resolve(NIGHT_ZIP_URL if mode == "zip" else NIGHT_CHUNKED_URL)
    job = _Job(
        out=out,
        url=url,
        mode=mode,
        sources=_sources(mode, url, chunks, sha256, csv_url),
        own_workdir=workdir is None,  # only a folder we chose may be removed at the end
        workdir=Path(workdir).resolve() if workdir else out.parent / f".{out.name}.download",
        session=Session(),
        net=dict(
            retries=retries,
            timeout=timeout,
            backoff=backoff,
            progress=progress,
            min_rate=min_rate,
            stall_time=stall_time,
        ),
        limits=dict(max_bytes=max_bytes, max_ratio=max_ratio, max_members=max_members),
        keep_archives=keep_archives,
        check_sha256=check_sha256,
    )
    try:
        if (out / MANIFEST_NAME).is_file():
            return _repair(job)
        return _download(job)
    except NoSpaceError:
        raise
    except OSError as exc:  # the disk, not the network: permissions, no space, a bad --out
        full = no_space(exc, exc.filename or out)
        raise full or DownloadError(f"download-night: {exc}") from exc
    finally:
        job.session.close()


@dataclasses.dataclass
class _Job:
    """One download_night call: the sources, where they go, how they are fetched."""

    out: Path
    url: str
    mode: str
    sources: list[_Source]
    workdir: Path
    own_workdir: bool
    session: requests.Session
    net: dict
    limits: dict
    keep_archives: bool
    check_sha256: bool

    def fetch(self, src: _Source) -> tuple[Path, FetchResult]:
        archive = self.workdir / src.name
        res = fetch(
            src.url,
            archive,
            sha256=src.sha256,
            session=self.session,
            expect=_expect(src.kind),
            **self.net,
        )
        return archive, res

    def done_with(self, archive: Path) -> None:
        if not self.keep_archives:
            archive.unlink(missing_ok=True)

    def cleanup(self) -> None:
        """Remove the default workdir once it is empty (only empty folders: never rmtree)."""
        if self.keep_archives or not self.own_workdir or not self.workdir.is_dir():
            return
        for d in sorted((p for p in self.workdir.rglob("*") if p.is_dir()), reverse=True):
            if not any(d.iterdir()):
                d.rmdir()
        if not any(self.workdir.iterdir()):
            self.workdir.rmdir()


def _download(job: _Job) -> Path:
    """A first download: every source into a staging folder, renamed onto `out` at the end."""
    out = job.out
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        # Never replace a folder this downloader did not complete (it may be user data).
        raise DownloadError(
            f"download-night: {out} exists and is not a completed download "
            f"(no {MANIFEST_NAME}); remove it or choose another --out"
        )
    # Staging beside `out` (same filesystem, so the final rename is atomic); it survives an
    # interrupted run together with a progress file, so a rerun skips finished archives.
    staging = out.parent / f".{out.name}.staging"
    done = _fetch_into(job, staging)
    if not (staging / "data.csv").is_file():
        raise DownloadError(
            f"download-night: no data.csv after extracting {job.url}; "
            f"staging folder kept at {staging}"
        )
    files = sorted((e for rec in done.values() for e in rec["files"]), key=lambda e: e["path"])
    manifest = {
        "format": "lipsim-night-download/1",
        "mode": job.mode,
        "url": job.url,
        "archives": {k: {kk: v[kk] for kk in ("url", "size", "sha256")} for k, v in done.items()},
        "files": files,
        "n_files": len(files),
        "bytes": sum(e["size"] for e in files),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_json(staging / MANIFEST_NAME, manifest)  # written last: marks completeness
    replace_dir(staging, out)
    (job.workdir / "progress.json").unlink(missing_ok=True)
    job.cleanup()
    _log(f"complete: {len(files)} files, {manifest['bytes'] / 1e6:.1f} MB in {out}")
    return out


def _fetch_into(job: _Job, staging: Path) -> dict:
    """Fetch and install every source not yet in `staging`; return the record of all of them
    (source name -> url, size, sha256, files), kept in workdir/progress.json as it grows."""
    done_path = job.workdir / "progress.json"
    done = {}
    if staging.is_dir():  # a rerun: keep what the record vouches for, and nothing else
        done = _still_there(_read_progress(done_path), staging)
        _prune(staging, {e["path"] for rec in done.values() for e in rec["files"]})
    staging.mkdir(parents=True, exist_ok=True)
    for i, src in enumerate(job.sources):
        if src.name in done and src.url == done[src.name]["url"]:
            continue
        _log(f"[{i + 1}/{len(job.sources)}] {src.url}")
        archive, res = job.fetch(src)
        owners = {
            e["path"]: name for name, rec in done.items() for e in rec["files"] if name != src.name
        }
        with removed_if_refused(archive):
            entries = _install(src, archive, staging, job.limits, owners)
        done[src.name] = {"url": src.url, "size": res.size, "sha256": res.sha256, "files": entries}
        write_json(done_path, done)  # after the files are in place: a record means done
        job.done_with(archive)
    return done


def _read_progress(path: Path) -> dict:
    """Archives a previous run finished ({} when none, or when the record is unreadable)."""
    try:
        done = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return done if isinstance(done, dict) else {}


def _still_there(done: dict, staging: Path) -> dict:
    """The records whose files are all in `staging` with their recorded size: a source whose
    files went missing or changed since is fetched again."""
    kept = {}
    for name, rec in done.items():
        try:
            files = rec["files"]
            if all(_size(staging / e["path"]) == e["size"] for e in files):
                kept[name] = rec
        except (KeyError, TypeError):
            continue
    return kept


def _prune(staging: Path, keep: set[str]) -> None:
    """Delete the files in `staging` outside `keep` (left by an interrupted run)."""
    for path in list(staging.rglob("*")):
        if (path.is_file() or path.is_symlink()) and path.relative_to(
            staging
        ).as_posix() not in keep:
            path.unlink()


def _repair(job: _Job) -> Path:
    """A rerun over a complete folder: verify; re-fetch only the archives of failing files."""
    out = job.out
    manifest, problems = verify_manifest(out, check_sha256=job.check_sha256)
    if not problems:
        _log(
            f"{out} is complete ({manifest['n_files']} files verified against {MANIFEST_NAME}); "
            "nothing to download"
        )
        return out
    bad_paths = {rel for rel, _ in problems}
    bad_sources = sorted({e["source"] for e in manifest["files"] if e["path"] in bad_paths})
    _log(f"{len(problems)} file(s) fail verification; re-fetching {', '.join(bad_sources)}")
    for rel, what in problems[:10]:
        _log(f"  {out / rel}: {what}")
    files = {e["path"]: e for e in manifest["files"]}
    for name in bad_sources:
        manifest["archives"][name] = _refetch(job, name, manifest["archives"][name], files)
    manifest["files"] = sorted(files.values(), key=lambda e: e["path"])
    manifest["n_files"] = len(files)
    manifest["bytes"] = sum(e["size"] for e in files.values())
    write_json(out / MANIFEST_NAME, manifest)
    _, still = verify_manifest(out, check_sha256=job.check_sha256)
    if still:
        raise DownloadError(
            "download-night: files still fail verification after re-fetching:\n  "
            + "\n  ".join(f"{out / rel}: {what}" for rel, what in still[:20])
        )
    job.cleanup()
    _log(f"repaired {out}")
    return out


def _refetch(job: _Job, name: str, record: dict, files: dict[str, dict]) -> dict:
    """Fetch source `name` again and move its files into `out` one by one (each move atomic),
    updating `files` (path -> manifest entry); return the source's new archive record."""
    # The manifest's own record wins over today's options (the folder may have been made
    # with another mode or URL).
    kind = "file" if name == "data.csv" else "zip" if name == "nights.zip" else name.split("/")[0]
    known = {s.name: s for s in job.sources}.get(name)
    src = _Source(name, record["url"], kind, known.sha256 if known else None)
    archive, res = job.fetch(src)
    # Extract next to `out`, then move the files in.
    tmp = job.out.parent / f".{job.out.name}.repair"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        with removed_if_refused(archive):
            entries = _install(src, archive, tmp, job.limits)
            for e in entries:
                owner = files.get(e["path"], {}).get("source", name)
                if owner != name:
                    raise ExtractError(
                        f"{name} ({archive}) now holds {e['path']}, which "
                        f"{owner} provides; refusing to overwrite it"
                    )
        for e in entries:
            target = job.out / e["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / e["path"], target)
            files[e["path"]] = e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    job.done_with(archive)
    return {"url": src.url, "size": res.size, "sha256": res.sha256}
