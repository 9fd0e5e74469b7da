"""`python -m lipsim check-consistency`: certificates must survive the attacks.

    check-consistency --certify MODEL=CERTIFY.parquet ... --attacks MODEL=ATTACK.parquet ...
                      [--eps-scale 255] [--tolerance 1e-5] --out consistency.csv

For every attack file of a LipSim model (several per model allowed), joined on triplet id
with the model's certify rows of the metric the attack used (column lipsim_metric of the
attack file; certify: id, split, metric, p, d0, d1, score, radius = the sound radius):
- certified: the certified 2AFC score (%) at the attack's eps, mean of score * [radius > r]
  with r = eps for l2 attacks and r = eps sqrt(3 S^2) for linf ones (the linf ball of
  radius eps lies in that l2 ball; S = --image-size; NaN for linf without it);
- attacked: the 2AFC score (%) under the attack on the same triplets;
- broken_certified: triplets with radius > r that the attack broke (score_adv <
  score_clean) -- impossible for a sound certificate;
- violations: triplets broken although their actual perturbation is smaller than their
  certified radius (radius > delta_l2 + tolerance) -- the per-triplet form of the same fact,
  valid for any attack norm.
The check fails when violations > 0, broken_certified > 0 (beyond float tolerance), or
certified > attacked, and when the two files disagree on the clean distances (different
model or data). Rows: model, attack, norm, eps ([0, 1]-pixel units), eps_scaled (eps x
--eps-scale), n, n_certified, certified, attacked, broken_certified, violations, ok.

A passing check writes --out atomically. A failing one writes the table next to it as
<out stem>.FAILED.csv for inspection, removes a stale --out, prints what failed and exits
with status 1, so the snakemake job fails and nothing downstream uses it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from lipsim.cli._args import parser
from lipsim.errors import LipSimError

# Clean distances of the certify and attack files must agree to this (same model, same data;
# both computed in float64 from float32 embeddings, possibly in different batches).
_CLEAN_ATOL = 1e-4


def _pairs(items: list[str], what: str) -> list[tuple[str, str]]:
    out = []
    for item in items:
        if "=" not in item:
            raise LipSimError(f"{what} entries are MODEL=FILE, got {item!r}")
        model, path = item.split("=", 1)
        out.append((model, path))
    return out


def _certify_rows(model: str, cert: pd.DataFrame, att: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The certify rows of the LipSim metric the attack ran with (the sound radius is
    per metric)."""
    if "lipsim_metric" in att and att["lipsim_metric"].nunique() == 1:
        metric = str(att["lipsim_metric"].iloc[0])
    elif "metric" not in cert or cert["metric"].nunique() == 1:
        metric = str(cert["metric"].iloc[0]) if "metric" in cert and len(cert) else "ball"
    else:
        raise ValueError(
            f"{model}: the attack file does not say which LipSim metric it "
            "attacked (column lipsim_metric) and the certify file has several"
        )
    if "metric" in cert:
        cert = cert[cert["metric"] == metric]
        if cert.empty:
            raise ValueError(f"{model}: no certify rows of metric {metric!r} (the attack's)")
    return metric, cert


def check_pair(
    model: str,
    cert: pd.DataFrame,
    att: pd.DataFrame,
    *,
    tolerance: float,
    eps_scale: float = 1.0,
    image_size: int | None = None,
) -> tuple[dict, list[str]]:
    """One csv row and the list of failures for one (certify, attack) pair."""
    problems: list[str] = []
    metric, cert = _certify_rows(model, cert, att)
    for col in ("attack", "norm", "eps"):
        if col not in att or att[col].nunique() != 1:
            raise ValueError(
                f"{model}: attack table needs one value in column {col!r} "
                "(written by `lipsim attack`)"
            )
    attack, norm, eps = (
        str(att["attack"].iloc[0]),
        str(att["norm"].iloc[0]),
        float(att["eps"].iloc[0]),
    )
    merged = att.merge(
        cert[["id", "split", "d0", "d1", "score", "radius"]],
        on="id",
        how="left",
        suffixes=("", "_cert"),
        validate="one_to_one",
    )
    missing = merged["radius"].isna()
    if missing.any():
        problems.append(
            f"{int(missing.sum())} attacked triplet(s) are not in the certify file "
            f"(e.g. id {merged.loc[missing, 'id'].iloc[0]})"
        )
        merged = merged[~missing]
    if (merged["split"] != merged["split_cert"]).any():
        problems.append("split differs between certify and attack files for some ids")
    gap = np.maximum(
        (merged["d0"] - merged["d0_cert"]).abs(), (merged["d1"] - merged["d1_cert"]).abs()
    )
    if len(gap) and float(gap.max()) > _CLEAN_ATOL:
        problems.append(
            f"clean distances differ between the files (max {float(gap.max()):.3g}): "
            "not the same model / data / image size"
        )
    radius = merged["radius"].to_numpy(np.float64)
    broken = merged["score_adv"].to_numpy(np.float64) < merged["score_clean"].to_numpy(np.float64)
    row = {
        "model": model,
        "metric": metric,
        "attack": attack,
        "norm": norm,
        "eps": eps,
        "eps_scaled": eps * eps_scale,
        "n": len(merged),
    }
    violations = broken & (radius > merged["delta_l2"].to_numpy(np.float64) + tolerance)
    attacked = 100.0 * float(merged["score_adv"].mean()) if len(merged) else float("nan")
    # The l2 radius that contains the attack's ball (linf: eps times sqrt of the input size).
    l2_reach = (
        eps
        if norm == "L2"
        else (eps * float(np.sqrt(3 * image_size * image_size)) if image_size else None)
    )
    row["l2_reach"] = float("nan") if l2_reach is None else l2_reach
    if l2_reach is not None:
        cert_mask = radius > l2_reach
        certified = (
            100.0 * float((merged["score"].to_numpy(np.float64) * cert_mask).mean())
            if len(merged)
            else float("nan")
        )
        broken_cert = broken & cert_mask
        beyond = broken & (radius > l2_reach + tolerance)
        if beyond.any():
            problems.append(
                f"{int(beyond.sum())} triplet(s) certified at {norm} eps={eps:.6g} "
                f"(radius > {l2_reach:.6g} + {tolerance:g}) were broken by the "
                "attack"
            )
        if certified > attacked + 1e-9:
            problems.append(f"certified score {certified:.4f} > attacked score {attacked:.4f}")
    else:
        cert_mask = np.zeros(len(merged), dtype=bool)
        certified, broken_cert = float("nan"), np.zeros(len(merged), dtype=bool)
    if violations.any():
        i = int(np.flatnonzero(violations)[0])
        problems.append(
            f"{int(violations.sum())} triplet(s) broken with a perturbation smaller "
            f"than their certified radius (e.g. id {merged['id'].iloc[i]}: radius "
            f"{radius[i]:.6g}, ||delta||_2 {merged['delta_l2'].iloc[i]:.6g})"
        )
    row.update(
        n_certified=int(cert_mask.sum()),
        certified=certified,
        attacked=attacked,
        broken_certified=int(broken_cert.sum()),
        violations=int(violations.sum()),
        ok=not problems,
    )
    return row, problems


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

    certs = {}
    for model, path in _pairs(args.certify, "--certify"):
        if model in certs:
            raise LipSimError(f"model {model!r} given twice in --certify")
        certs[model] = pd.read_parquet(path)
    rows, failures = [], []
    for model, path in _pairs(args.attacks, "--attacks"):
        if model not in certs:
            raise LipSimError(
                f"no --certify file for model {model!r} "
                f"(attack file {path}); certify files: {', '.join(certs)}"
            )
        row, problems = check_pair(
            model,
            certs[model],
            pd.read_parquet(path),
            tolerance=args.tolerance,
            eps_scale=args.eps_scale,
            image_size=args.image_size,
        )
        row["file"] = path
        rows.append(row)
        failures += [f"{model} / {path}: {p}" for p in problems]
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.drop(columns=["file"]).to_string(index=False))
    if failures:
        failed = args.out.with_name(args.out.stem + ".FAILED" + args.out.suffix)
        write_csv(failed, table)
        args.out.unlink(missing_ok=True)
        bar = "!" * 78
        print(
            f"\n{bar}\nCHECK-CONSISTENCY FAILED: the attacks broke what the certificates "
            f"claim cannot be broken.\nA certificate or an attack is wrong.\n  "
            + "\n  ".join(failures)
            + f"\nTable for inspection: {failed}\n{bar}",
            file=sys.stderr,
        )
        return 1
    write_csv(args.out, table)
    print(f"check-consistency: {len(rows)} (model, attack) pair(s) consistent -> {args.out}")
    return 0
