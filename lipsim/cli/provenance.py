"""Print the chain of artifacts and parameters behind one result.

    python -m lipsim provenance results/demo/tables/table1.csv

For the file and, recursively, every input of the rule that made it: sha256 (from the
manifest, else computed), producing rule, end time, shell command, params, and the code
version / git commit / config hash recorded in the manifest. Facts come from snakemake's
metadata (--snakemake-dir) and from the manifest (default: the first manifest.parquet found in
the folders above PATH), so the chain survives a lost .snakemake folder. Run it from snakemake's
working directory.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lipsim.cli._args import parser


def build_parser() -> argparse.ArgumentParser:
    p = parser(__name__, __doc__)
    p.add_argument("path", help="a result file")
    p.add_argument(
        "--manifest",
        default=None,
        help="manifest.parquet (default: search the folders above PATH; 'none' to skip)",
    )
    p.add_argument(
        "--snakemake-dir",
        default=".snakemake",
        help="snakemake's state folder",
    )
    p.add_argument("--json", action="store_true", help="print the chain as JSON")
    p.add_argument("--max-depth", type=int, default=None, help="stop after N levels of inputs")
    p.add_argument(
        "--no-hash", action="store_true", help="do not hash files that have no manifest row"
    )
    return p


def _find_manifest(path: Path) -> Path | None:
    for folder in path.absolute().parents:
        candidate = folder / "manifest.parquet"
        if candidate.is_file():
            return candidate
    return None


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lipsim import provenance as pv

    path = Path(args.path)
    # ProvenanceError (a LipSimError): the dispatcher's one error line
    meta = pv.SnakemakeMetadata.read(args.snakemake_dir)
    mpath = (
        None
        if args.manifest == "none"
        else Path(args.manifest)
        if args.manifest
        else _find_manifest(path)
    )
    manifest = pv.read_manifest(mpath) if mpath is not None else None
    shown = meta.display(path)
    known = meta.lookup(path) is not None or (
        manifest is not None and shown in set(manifest["path"])
    )
    if not path.exists() and not known:
        raise pv.ProvenanceError(
            f"{path} does not exist and has no record in "
            f"{args.snakemake_dir} or {mpath or 'any manifest'}"
        )
    nodes = pv.provenance_chain(
        path, meta, manifest, hash_missing=not args.no_hash, max_depth=args.max_depth
    )
    if args.json:
        print(json.dumps(nodes, indent=2, default=str))
    else:
        if mpath is not None:
            print(f"# manifest: {mpath}")
        sys.stdout.write(pv.format_chain(nodes))
    return 0
