"""Certificates must survive the attacks: the check of one LipSim model's certify table against
its attack tables (`lipsim check-consistency`).

For an attack table, joined on triplet id with the model's certify rows of the metric the
attack used (column lipsim_metric of the attack table; certify: id, split, metric, p, d0, d1,
score, radius = the sound radius):
- certified: the certified 2AFC score (%) at the attack's eps, mean of score * [radius > r]
  (lipsim.certify.certified_scores, the score Table 1 reports) with r = eps for l2 attacks and
  r = eps sqrt(3 S^2) for linf ones (the linf ball of radius eps lies in that l2 ball; S = the
  image size; NaN for linf without it);
- attacked: the 2AFC score (%) under the attack on the same triplets;
- broken_certified: triplets with radius > r that the attack broke (score_adv < score_clean),
  impossible for a sound certificate;
- violations: triplets broken although their actual perturbation is smaller than their
  certified radius (radius > delta_l2 + tolerance): the per-triplet form of the same fact,
  valid for any attack norm.
A pair fails when violations > 0, broken_certified > 0 (beyond float tolerance), certified >
attacked, or the two tables disagree on the clean distances (different model or data).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lipsim.certify import certified_mask, certified_scores
from lipsim.errors import LipSimError

# Clean distances of the certify and attack files must agree to this (same model, same data;
# both computed in float64 from float32 embeddings, possibly in different batches).
CLEAN_ATOL = 1e-4


class ConsistencyError(LipSimError, ValueError):
    """A certify or attack table cannot be checked (the message names the model and column)."""


def certify_rows(model: str, cert: pd.DataFrame, att: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """The certify rows of the LipSim metric the attack ran with (the sound radius is per
    metric)."""
    if "lipsim_metric" in att and att["lipsim_metric"].nunique() == 1:
        metric = str(att["lipsim_metric"].iloc[0])
    elif "metric" not in cert or cert["metric"].nunique() == 1:
        metric = str(cert["metric"].iloc[0]) if "metric" in cert and len(cert) else "ball"
    else:
        raise ConsistencyError(
            f"{model}: the attack file does not say which LipSim metric it "
            "attacked (column lipsim_metric) and the certify file has several"
        )
    if "metric" in cert:
        cert = cert[cert["metric"] == metric]
        if cert.empty:
            raise ConsistencyError(f"{model}: no certify rows of metric {metric!r} (the attack's)")
    return metric, cert


def _attack_of(model: str, att: pd.DataFrame) -> tuple[str, str, float]:
    for col in ("attack", "norm", "eps"):
        if col not in att or att[col].nunique() != 1:
            raise ConsistencyError(
                f"{model}: attack table needs one value in column {col!r} "
                "(written by `lipsim attack`)"
            )
    return str(att["attack"].iloc[0]), str(att["norm"].iloc[0]), float(att["eps"].iloc[0])


def _joined(cert: pd.DataFrame, att: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The attack rows with their certify row (columns *_cert), and what does not match."""
    problems = []
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
    if len(gap) and float(gap.max()) > CLEAN_ATOL:
        problems.append(
            f"clean distances differ between the files (max {float(gap.max()):.3g}): "
            "not the same model / data / image size"
        )
    return merged, problems


def l2_reach(norm: str, eps: float, image_size: int | None) -> float | None:
    """The l2 radius whose ball holds the attack's (linf: eps times sqrt of the input size)."""
    if norm == "L2":
        return eps
    return eps * float(np.sqrt(3 * image_size * image_size)) if image_size else None


def _certified_part(merged, radius, broken, reach, attacked, *, tolerance, norm, eps):
    """(n_certified, certified score, broken certified triplets, problems) at the l2 reach."""
    if reach is None:
        nothing = np.zeros(len(merged), dtype=bool)
        return 0, float("nan"), nothing, []
    problems = []
    mask = certified_mask(radius, reach)  # lipsim.certify's, over every attacked triplet
    certified = float("nan")
    if len(merged):
        groups = merged[["score", "radius"]].assign(split="attacked")
        certified = certified_scores(groups, [reach])["certified"][float(reach)]["attacked"]
    beyond = broken & (radius > reach + tolerance)
    if beyond.any():
        problems.append(
            f"{int(beyond.sum())} triplet(s) certified at {norm} eps={eps:.6g} "
            f"(radius > {reach:.6g} + {tolerance:g}) were broken by the attack"
        )
    if certified > attacked + 1e-9:
        problems.append(f"certified score {certified:.4f} > attacked score {attacked:.4f}")
    return int(mask.sum()), certified, broken & mask, problems


def check_pair(
    model: str,
    cert: pd.DataFrame,
    att: pd.DataFrame,
    *,
    tolerance: float,
    eps_scale: float = 1.0,
    image_size: int | None = None,
) -> tuple[dict, list[str]]:
    """One row of the consistency table and the list of failures for one (certify, attack)
    pair; eps_scaled = eps x eps_scale (255: pixel levels)."""
    metric, cert = certify_rows(model, cert, att)
    attack, norm, eps = _attack_of(model, att)
    merged, problems = _joined(cert, att)
    radius = merged["radius"].to_numpy(np.float64)
    broken = merged["score_adv"].to_numpy(np.float64) < merged["score_clean"].to_numpy(np.float64)
    violations = broken & (radius > merged["delta_l2"].to_numpy(np.float64) + tolerance)
    attacked = 100.0 * float(merged["score_adv"].mean()) if len(merged) else float("nan")
    reach = l2_reach(norm, eps, image_size)
    n_certified, certified, broken_cert, more = _certified_part(
        merged, radius, broken, reach, attacked, tolerance=tolerance, norm=norm, eps=eps
    )
    problems += more
    if violations.any():
        i = int(np.flatnonzero(violations)[0])
        problems.append(
            f"{int(violations.sum())} triplet(s) broken with a perturbation smaller "
            f"than their certified radius (e.g. id {merged['id'].iloc[i]}: radius "
            f"{radius[i]:.6g}, ||delta||_2 {merged['delta_l2'].iloc[i]:.6g})"
        )
    row = {
        "model": model,
        "metric": metric,
        "attack": attack,
        "norm": norm,
        "eps": eps,
        "eps_scaled": eps * eps_scale,
        "n": len(merged),
        "l2_reach": float("nan") if reach is None else reach,
        "n_certified": n_certified,
        "certified": certified,
        "attacked": attacked,
        "broken_certified": int(broken_cert.sum()),
        "violations": int(violations.sum()),
        "ok": not problems,
    }
    return row, problems


def check_files(
    certify: dict[str, str],
    attacks: list[tuple[str, str]],
    *,
    tolerance: float,
    eps_scale: float = 1.0,
    image_size: int | None = None,
) -> tuple[pd.DataFrame, list[str]]:
    """The consistency table of every (model, attack file) pair (certify: model -> its certify
    file) and every failure, each named by model and file."""
    certs = {model: pd.read_parquet(path) for model, path in certify.items()}
    rows, failures = [], []
    for model, path in attacks:
        if model not in certs:
            raise ConsistencyError(
                f"no --certify file for model {model!r} "
                f"(attack file {path}); certify files: {', '.join(certs)}"
            )
        row, problems = check_pair(
            model,
            certs[model],
            pd.read_parquet(path),
            tolerance=tolerance,
            eps_scale=eps_scale,
            image_size=image_size,
        )
        rows.append({**row, "file": path})
        failures += [f"{model} / {path}: {p}" for p in problems]
    return pd.DataFrame(rows), failures
