"""`python -m lipsim check-consistency`: certificates must survive the attacks.

    check-consistency --certify MODEL=CERTIFY.parquet ... --attacks MODEL=ATTACK.parquet ...
                      [--eps-scale 255] [--tolerance 1e-5] [--image-size S] --out consistency.csv

Every attack file of a LipSim model (several per model allowed) is checked against the model's
certify file (lipsim.consistency says how: certified vs attacked score, broken certified
triplets, per-triplet violations; linf attacks through the l2 ball of radius eps sqrt(3 S^2),
S = --image-size). Rows: model, metric, attack, norm, eps ([0, 1]-pixel units), eps_scaled
(eps x --eps-scale), n, l2_reach, n_certified, certified, attacked, broken_certified,
violations, ok, file.

A passing check writes --out atomically. A failing one writes the table next to it as
<out stem>.FAILED.csv for inspection, removes a stale --out, lists what failed and ends with
an error (exit 1), so the snakemake job fails and nothing downstream uses it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lipsim.cli._args import parser
from lipsim.errors import LipSimError


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        if "=" not in item:
            raise LipSimError(f"{what} entries are MODEL=FILE, got {item!r}")
        model, path = item.split("=", 1)
        out.append((model, path))
    return out


def _certify_files(items: list[str]) -> dict[str, str]:
    files: dict[str, str] = {}
    for model, path in _pairs(items, "--certify"):
        if model in files:
            raise LipSimError(f"model {model!r} given twice in --certify")
        files[model] = path
    return files


def main(argv: list[str] | None = None) -> int:
    ap = parser(__name__, __doc__)
    ap.add_argument("--certify", nargs="+", required=True, help="MODEL=certify.parquet ...")
    ap.add_argument("--attacks", nargs="+", required=True, help="MODEL=attack.parquet ...")
    ap.add_argument(
        "--eps-scale",
        type=float,
        default=255.0,
        help="eps_scaled column = eps x this (255: pixel levels)",
    )
    ap.add_argument(
        "--tolerance", type=float, default=1e-5, help="float slack on radii ([0, 1]-pixel l2 units)"
    )
    ap.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input side S of the LipSim models: linf attacks are then also "
        "checked against the certified score at eps sqrt(3 S^2)",
    )
    ap.add_argument("--out", required=True, type=Path, help="csv to write when the check passes")
    args = ap.parse_args(argv)

    from lipsim.atomic import write_csv
    from lipsim.consistency import check_files

    table, failures = check_files(
        _certify_files(args.certify),
        _pairs(args.attacks, "--attacks"),
        tolerance=args.tolerance,
        eps_scale=args.eps_scale,
        image_size=args.image_size,
    )
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.drop(columns=["file"]).to_string(index=False))
    if failures:
        failed = args.out.with_name(args.out.stem + ".FAILED" + args.out.suffix)
        write_csv(failed, table)
        args.out.unlink(missing_ok=True)
        print("failed:\n  " + "\n  ".join(failures))
        raise LipSimError(
            "CHECK-CONSISTENCY FAILED: the attacks broke what the certificates claim cannot be "
            f"broken (a certificate or an attack is wrong): {len(failures)} problem(s), the "
            f"first: {failures[0]}; table for inspection: {failed}"
        )
    write_csv(args.out, table)
    print(f"check-consistency: {len(table)} (model, attack) pair(s) consistent -> {args.out}")
    return 0
