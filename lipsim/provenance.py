"""Artifact tracking: `manifest.parquet` for a results folder and the chain behind one result.

Where the facts come from
- sha256, bytes, time: the files themselves (sha256 streamed in 1 MiB blocks; time = mtime,
  ISO 8601 UTC).
- rule, inputs, params, shellcmd: snakemake's per-output metadata. Snakemake 9 keeps it, by
  default (`--persistence-backend file`), in `.snakemake/metadata/` as one JSON record per
  output file whose name is `urlsafe_b64encode(output path as written in the Snakefile)`,
  split into chunks of NAME_MAX - 1 characters with every chunk but the last a directory
  prefixed with '@' (snakemake/persistence/file.py, `_record_path`). Record fields
  (snakemake/persistence/__init__.py, `MetadataRecord`): rule, input (sorted list), log,
  shellcmd, params (sorted list of repr() strings), code, starttime, endtime, incomplete,
  input_checksums, ... With `--persistence-backend db` the same records live in the sqlite
  table `snakemake_metadata` of `.snakemake/metadata.db` (namespace = absolute path of the
  .snakemake folder, target = output path); both are read here. A `directory()` output has
  one record for the folder: files inside it inherit it.
- config_hash: the workflow's own hash when given (`--config-hash`, or the `config_hash` key
  of a `{"config_hash": ..., "config": {...}}` JSON file), recorded verbatim; otherwise
  sha256 of the canonical JSON (sorted keys, no whitespace, UTF-8) of the configuration,
  read from one JSON file holding the merged config (`--config-json`: what the Snakefile
  should pass, as it sees `--config k=v` overrides too) or merged from YAML/JSON files in
  order like snakemake's `--configfile` (nested dicts merged recursively, later files win).
- code_version: lipsim.__version__; git_commit / git_dirty: `git` in the repository holding
  the lipsim package (dirty = tracked files modified; untracked files such as results do not
  count). None where there is no git.

Paths in the manifest are relative to snakemake's working directory (the folder holding
`.snakemake`), as snakemake writes them, so `inputs` of one row are `path`s of others.
"""

from __future__ import annotations

import base64
import datetime as dt
import fnmatch
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import lipsim
from lipsim import atomic
from lipsim.checksum import sha256_file
from lipsim.errors import LipSimError

MANIFEST_COLUMNS = (
    "path",
    "sha256",
    "bytes",
    "rule",
    "config_hash",
    "code_version",
    "git_commit",
    "git_dirty",
    "inputs",
    "time",
    "params",
    "shellcmd",
)
# Folders not treated as artifacts unless asked: they change on every run.
LOG_DIRS = ("logs", "log", "benchmarks")
# Never artifacts: in-flight atomic writes (.name.XXXX.tmp), snakemake markers, downloads.
ALWAYS_EXCLUDED_SUFFIXES = (".tmp", ".part")


class ProvenanceError(LipSimError, ValueError):
    """A bad manifest/config input; the message names the file."""


# ----------------------------------------------------------------------------- hashing


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _merge(base: dict, new: dict) -> dict:
    # Snakemake's update_config: nested dicts merge, everything else is replaced.
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def load_config(
    files: list[str | Path] | None = None, config_json: str | Path | None = None
) -> dict | None:
    """The merged configuration (see module doc); None when nothing is given."""
    if config_json is not None:
        try:
            return json.loads(Path(config_json).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ProvenanceError(f"--config-json {config_json}: {exc}") from exc
    if not files:
        return None
    import yaml

    merged: dict = {}
    for f in files:
        try:
            data = yaml.safe_load(Path(f).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ProvenanceError(f"--config {f}: {exc}") from exc
        if not isinstance(data, dict):
            raise ProvenanceError(f"--config {f}: top level must be a mapping")
        _merge(merged, data)
    return merged


def config_hash(config: dict | None) -> str | None:
    if config is None:
        return None
    return hashlib.sha256(canonical_json(config).encode("utf-8")).hexdigest()


def resolve_config_hash(
    files: list[str | Path] | None = None,
    config_json: str | Path | None = None,
    given: str | None = None,
) -> str | None:
    """The config hash a manifest records.

    Precedence: `given` (--config-hash: the workflow's own hash, recorded verbatim) > the
    `config_hash` stored in a `{"config_hash": ..., "config": {...}}` file (the workflow's
    resolved_config output) > sha256 of the canonical JSON of the config (config_hash()).
    """
    config = load_config(files, config_json)
    recorded = None
    if isinstance(config, dict) and set(config) == {"config", "config_hash"}:
        recorded, config = config["config_hash"], config["config"]
    if given and recorded and given != recorded:
        print(
            f"lipsim: warning: --config-hash {given} differs from {recorded} in {config_json}",
            file=sys.stderr,
        )
    return given or recorded or config_hash(config)


def git_info(repo: str | Path | None = None) -> tuple[str | None, bool | None]:
    """(commit, dirty) of the repository holding `repo` (default: the lipsim package)."""
    repo = Path(repo) if repo is not None else Path(lipsim.__file__).resolve().parent.parent

    def git(*args):
        return subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None, None  # no git, not a repository, or a repository without commits
    return commit or None, dirty


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.timezone.utc).isoformat(timespec="microseconds")


# ----------------------------------------------------------------------------- metadata


@dataclass
class SnakemakeMetadata:
    """Snakemake's records, keyed by normalised absolute output path."""

    workdir: Path
    records: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def read(cls, snakemake_dir: str | Path | None) -> SnakemakeMetadata:
        snakemake_dir = Path(snakemake_dir if snakemake_dir is not None else ".snakemake")
        meta = cls(workdir=snakemake_dir.absolute().parent)
        raw = {**_read_file_backend(snakemake_dir / "metadata"), **_read_db_backend(snakemake_dir)}
        for key, rec in raw.items():
            if rec.get("incomplete"):
                continue  # a job that did not finish: its output is not what the record says
            meta.records[meta.abspath(key)] = rec
        return meta

    def abspath(self, path: str | os.PathLike) -> str:
        return os.path.normpath(os.path.join(self.workdir, os.fspath(path)))

    def display(self, path: str | os.PathLike) -> str:
        """Path as snakemake writes it: relative to the working directory when inside it."""
        a = self.abspath(path)
        rel = os.path.relpath(a, self.workdir)
        return a if rel == ".." or rel.startswith(".." + os.sep) else rel

    def lookup(self, path: str | os.PathLike) -> dict | None:
        """The record of `path`, or of the nearest folder above it (directory() outputs)."""
        a = self.abspath(path)
        while True:
            if a in self.records:
                return self.records[a]
            parent = os.path.dirname(a)
            if parent == a or not parent.startswith(str(self.workdir)):
                return None
            a = parent


def _read_file_backend(metadata_dir: Path) -> dict[str, dict]:
    out: dict[str, dict] = {}
    if not metadata_dir.is_dir():
        return out
    for dirpath, _, filenames in os.walk(metadata_dir):
        rel = Path(dirpath).relative_to(metadata_dir).parts
        for name in filenames:
            # Long keys are split into '@'-prefixed folder chunks; '@' is not in the
            # url-safe base64 alphabet, so stripping it is unambiguous.
            encoded = "".join(p[1:] if p.startswith("@") else p for p in (*rel, name))
            try:
                key = base64.urlsafe_b64decode(encoded.encode()).decode()
                with open(os.path.join(dirpath, name), encoding="utf-8") as fh:
                    rec = json.load(fh)
            except (ValueError, OSError):
                continue  # not a record (or one being written: snakemake skips those too)
            if isinstance(rec, dict):
                out[key] = rec
    return out


def _read_db_backend(snakemake_dir: Path) -> dict[str, dict]:
    db = snakemake_dir / "metadata.db"
    if not db.is_file():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        con.row_factory = sqlite3.Row
        rows = con.execute("SELECT * FROM snakemake_metadata").fetchall()
        con.close()
    except sqlite3.Error as exc:
        print(f"lipsim: warning: cannot read {db}: {exc}", file=sys.stderr)
        return {}
    namespace = str(snakemake_dir.absolute())
    mine = [r for r in rows if r["namespace"] == namespace]
    # A copied/moved project has another namespace; one namespace left is still ours.
    if not mine and len({r["namespace"] for r in rows}) == 1:
        mine = rows
    out = {}
    for r in mine:
        rec = dict(r)
        for col in ("input", "log", "params", "input_checksums"):
            if isinstance(rec.get(col), str):
                try:
                    rec[col] = json.loads(rec[col])
                except json.JSONDecodeError:
                    pass
        out[rec.pop("target")] = rec
    return out


# ----------------------------------------------------------------------------- manifest


def _excluded(rel: str, name: str, include_logs: bool, exclude: list[str]) -> bool:
    if name.startswith(".") or name.endswith(ALWAYS_EXCLUDED_SUFFIXES):
        return True
    if not include_logs and any(part in LOG_DIRS for part in Path(rel).parts[:-1]):
        return True
    return any(fnmatch.fnmatch(rel, pat) for pat in exclude)


def list_artifacts(
    root: str | Path,
    skip: list[str | Path] = (),
    include_logs: bool = False,
    exclude: list[str] = (),
) -> list[Path]:
    """Files under root, sorted. Hidden files/folders (atomic temp files, snakemake markers),
    *.tmp/*.part, `skip` paths, log/benchmark folders (unless include_logs) and `exclude`
    globs (relative to root, fnmatch: `*` crosses '/') are left out. Symlinked folders are
    not followed (user data linked into results is not a pipeline artifact)."""
    root = Path(root)
    if not root.is_dir():
        raise ProvenanceError(f"--root {root}: not a folder")
    skip_abs = {os.path.normpath(os.path.abspath(s)) for s in skip}
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(root).as_posix()
            if os.path.normpath(os.path.abspath(path)) in skip_abs:
                continue
            if _excluded(rel, name, include_logs, list(exclude)) or not path.is_file():
                continue
            files.append(path)
    return sorted(files)


def build_manifest(
    root: str | Path,
    meta: SnakemakeMetadata,
    cfg_hash: str | None,
    skip: list[str | Path] = (),
    include_logs: bool = False,
    exclude: list[str] = (),
    previous: pd.DataFrame | None = None,
    repo: str | Path | None = None,
) -> pd.DataFrame:
    """One row per artifact under root (see MANIFEST_COLUMNS).

    `previous` (an older manifest): a file whose path, size and mtime are unchanged keeps its
    recorded sha256 instead of being read again (results hold multi-GB checkpoints).
    """
    commit, dirty = git_info(repo)
    known = {}
    if previous is not None and {"path", "bytes", "time", "sha256"} <= set(previous.columns):
        known = {(r.path, int(r.bytes), r.time): r.sha256 for r in previous.itertuples(index=False)}
    rows = []
    for path in list_artifacts(root, skip, include_logs, exclude):
        st = path.stat()
        shown = meta.display(path)
        time = _iso(st.st_mtime_ns / 1e9)
        sha = known.get((shown, st.st_size, time)) or sha256_file(path)
        rec = meta.lookup(path) or {}
        rows.append(
            {
                "path": shown,
                "sha256": sha,
                "bytes": int(st.st_size),
                "rule": rec.get("rule"),
                "config_hash": cfg_hash,
                "code_version": lipsim.__version__,
                "git_commit": commit,
                "git_dirty": dirty,
                "inputs": (
                    [meta.display(i) for i in rec["input"]]
                    if rec.get("input") is not None
                    else None
                ),
                "time": time,
                "params": list(rec["params"]) if rec.get("params") is not None else None,
                "shellcmd": rec.get("shellcmd"),
            }
        )
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


def write_manifest(path: str | Path, manifest: pd.DataFrame) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # An explicit schema: an all-None column (no git, no snakemake) must still have its type.
    schema = pa.schema(
        [
            ("path", pa.string()),
            ("sha256", pa.string()),
            ("bytes", pa.int64()),
            ("rule", pa.string()),
            ("config_hash", pa.string()),
            ("code_version", pa.string()),
            ("git_commit", pa.string()),
            ("git_dirty", pa.bool_()),
            ("inputs", pa.list_(pa.string())),
            ("time", pa.string()),
            ("params", pa.list_(pa.string())),
            ("shellcmd", pa.string()),
        ]
    )
    table = pa.Table.from_pylist(
        [
            {k: (None if _isna(v) else v) for k, v in row.items()}
            for row in manifest.to_dict("records")
        ],
        schema=schema,
    )
    with atomic.atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def _isna(v) -> bool:
    if v is None or v is pd.NA:
        return True
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):  # lists/arrays: not a missing value
        return False


def read_manifest(path: str | Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except Exception as exc:  # pyarrow's error types vary; name the file
        raise ProvenanceError(f"cannot read manifest {path}: {exc}") from exc
    missing = [c for c in ("path", "sha256", "rule", "inputs") if c not in df.columns]
    if missing:
        raise ProvenanceError(f"manifest {path} lacks columns {missing}")
    return df


# ----------------------------------------------------------------------------- provenance


def _listish(v) -> list | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return [str(x) for x in list(v)]


def provenance_chain(
    path: str | Path,
    meta: SnakemakeMetadata,
    manifest: pd.DataFrame | None = None,
    hash_missing: bool = True,
    max_depth: int | None = None,
) -> list[dict]:
    """Depth-first list of the artifacts behind `path` (itself first), one dict each:
    path, depth, repeat (already listed above), exists, bytes, sha256, sha256_from
    (manifest | computed | None), changed (file differs from its manifest row: size/mtime),
    rule, params, shellcmd, inputs, starttime, endtime, and the manifest's config_hash,
    code_version, git_commit, git_dirty when the file has a row."""
    rows = {}
    if manifest is not None:
        # parquet nulls come back as NaN/None/NA depending on dtype: make them all None
        rows = {
            str(r["path"]): {k: (None if _isna(v) else v) for k, v in r.items()}
            for r in manifest.to_dict("records")
        }
    nodes, seen = [], set()

    def visit(p: str, depth: int) -> None:
        shown = meta.display(p)
        node: dict[str, Any] = {"path": shown, "depth": depth, "repeat": shown in seen}
        nodes.append(node)
        if node["repeat"]:
            return
        seen.add(shown)
        a = Path(meta.abspath(p))
        row = rows.get(shown)
        rec = meta.lookup(p)
        node["exists"] = a.exists()
        node["bytes"] = a.stat().st_size if a.is_file() else None
        node["sha256"], node["sha256_from"], node["changed"] = None, None, None
        if row is not None:
            node["sha256"], node["sha256_from"] = row.get("sha256"), "manifest"
            if a.is_file():
                node["changed"] = int(row.get("bytes", -1)) != a.stat().st_size or row.get(
                    "time"
                ) != _iso(a.stat().st_mtime_ns / 1e9)
            for k in ("config_hash", "code_version", "git_commit", "git_dirty"):
                node[k] = None if _isna(row.get(k)) else row.get(k)
        elif hash_missing and a.is_file():
            node["sha256"], node["sha256_from"] = sha256_file(a), "computed"
        if rec is not None:
            node["rule"], node["shellcmd"] = rec.get("rule"), rec.get("shellcmd")
            node["params"] = _listish(rec.get("params"))
            inputs = _listish(rec.get("input"))
            node["starttime"], node["endtime"] = (
                _iso(rec.get("starttime")),
                _iso(rec.get("endtime")),
            )
        elif row is not None:  # .snakemake gone (results copied elsewhere): the manifest knows
            node["rule"], node["shellcmd"] = row.get("rule"), row.get("shellcmd")
            node["params"] = _listish(row.get("params"))
            inputs = _listish(row.get("inputs"))
        else:
            node["rule"], inputs = None, None
        node["inputs"] = [meta.display(i) for i in inputs] if inputs is not None else None
        if node["inputs"] and (max_depth is None or depth < max_depth):
            for i in node["inputs"]:
                visit(i, depth + 1)

    visit(os.fspath(path), 0)
    return nodes


def format_chain(nodes: list[dict]) -> str:
    lines = []
    for n in nodes:
        pad = "    " * n["depth"]
        arrow = "" if n["depth"] == 0 else "<- "
        if n["repeat"]:
            lines.append(f"{pad}{arrow}{n['path']}  (see above)")
            continue
        lines.append(f"{pad}{arrow}{n['path']}" + ("" if n["exists"] else "  [missing]"))
        pad += "       "
        if n.get("sha256"):
            extra = "  CHANGED since the manifest" if n.get("changed") else ""
            size = f"  {n['bytes']} bytes" if n.get("bytes") is not None else ""
            lines.append(f"{pad}sha256  {n['sha256']} ({n['sha256_from']}){size}{extra}")
        if n.get("rule"):
            when = f"  {n['endtime']}" if n.get("endtime") else ""
            lines.append(f"{pad}rule    {n['rule']}{when}")
            if n.get("shellcmd"):
                lines.append(f"{pad}shell   {' '.join(str(n['shellcmd']).split())}")
            if n.get("params"):
                lines.append(f"{pad}params  {'; '.join(n['params'])}")
        elif n["exists"]:
            lines.append(f"{pad}(source: not produced by a recorded rule)")
        if n.get("code_version") or n.get("config_hash"):
            git = n.get("git_commit")
            git = f"{git[:12]}{' (dirty)' if n.get('git_dirty') else ''}" if git else "unknown"
            cfg = (n.get("config_hash") or "unknown")[:16]
            lines.append(f"{pad}code    lipsim {n.get('code_version')}, git {git}, config {cfg}")
    return "\n".join(lines) + "\n"
