r"""Write the manifest of every artifact under a results folder.

One row per file: path, sha256, bytes, producing rule, config hash, code version, git
commit/dirty, inputs, time (+ params, shellcmd).

    python -m lipsim manifest --root R --config-json R/config.json [--config-hash HASH] \
        --snakemake-dir .snakemake --out R/manifest.parquet

config_hash: --config-hash if given (recorded verbatim), else the `config_hash` of a
--config-json file shaped {"config_hash": ..., "config": {...}}, else sha256 of the canonical
JSON (sorted keys, compact, UTF-8) of the --config-json content or of the --config files
merged in order.

Run it from snakemake's working directory (paths are written relative to the folder holding
--snakemake-dir). Left out: the --out file itself, hidden files (atomic temp files), *.tmp,
*.part, logs/ log/ benchmarks/ folders (unless --include-logs), --exclude globs, and the
contents of symlinked folders. A previous manifest at --out lends its sha256 to files whose
size and mtime are unchanged (--rehash reads every file again).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lipsim.cli._args import parser


def build_parser() -> argparse.ArgumentParser:
    p = parser(__name__, __doc__)
    p.add_argument("--root", required=True, help="results folder, e.g. results/demo")
    cfg = p.add_mutually_exclusive_group()
    cfg.add_argument(
        "--config",
        nargs="+",
        default=None,
        metavar="FILE",
        help="config YAML/JSON files, merged in order like --configfile",
    )
    cfg.add_argument(
        "--config-json",
        default=None,
        metavar="FILE",
        help="one JSON file holding the merged config (preferred from snakemake)",
    )
    p.add_argument(
        "--config-hash",
        default=None,
        help="record this config hash as is (e.g. the workflow's CONFIG_HASH); default: the "
        "config_hash stored in --config-json, else sha256 of the canonical JSON of the config",
    )
    p.add_argument(
        "--snakemake-dir",
        default=".snakemake",
        help="snakemake's state folder",
    )
    p.add_argument("--out", required=True, help="e.g. R/manifest.parquet")
    p.add_argument("--include-logs", action="store_true", help="list log/benchmark files too")
    p.add_argument(
        "--exclude",
        nargs="*",
        default=[],
        metavar="GLOB",
        help="paths relative to --root to leave out, e.g. 'data/imagenet/*'",
    )
    p.add_argument(
        "--rehash", action="store_true", help="hash every file, ignoring the previous manifest"
    )
    p.add_argument(
        "--repo",
        default=None,
        help="git repository for git_commit/git_dirty (default: the lipsim package's)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lipsim import provenance as pv

    # ProvenanceError (a LipSimError): the dispatcher's one error line
    cfg_hash = pv.resolve_config_hash(args.config, args.config_json, args.config_hash)
    if cfg_hash is None:
        print(
            "lipsim manifest: warning: no --config/--config-json/--config-hash: "
            "config_hash left empty",
            file=sys.stderr,
        )
    meta = pv.SnakemakeMetadata.read(args.snakemake_dir)
    previous = None
    if Path(args.out).is_file() and not args.rehash:
        try:
            previous = pv.read_manifest(args.out)
        except pv.ProvenanceError as exc:  # a broken old manifest only costs time
            print(f"lipsim manifest: warning: {exc}; hashing everything", file=sys.stderr)
    manifest = pv.build_manifest(
        args.root,
        meta,
        cfg_hash,
        skip=[args.out],
        include_logs=args.include_logs,
        exclude=args.exclude,
        previous=previous,
        repo=args.repo,
    )
    pv.write_manifest(args.out, manifest)
    unruled = int(manifest["rule"].isna().sum())
    print(
        f"lipsim manifest: {len(manifest)} artifacts ({unruled} without a snakemake record)"
        f" -> {args.out}",
        file=sys.stderr,
    )
    return 0
