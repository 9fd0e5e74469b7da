"""check-consistency: certified triplets must survive attacks; a wrong certificate must fail."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from lipsim.__main__ import main as lipsim_main
from lipsim.attacks import AttackSpec, attack_triplets
from lipsim.certify import certify_triplets
from lipsim.cli import check_consistency
from lipsim.errors import LipSimError
from lipsim.metric import load

N = 16


def _setup():
    """A seeded tiny LipSim and one batch of N triplets (ids, splits)."""
    metric = load("tiny", device="cpu", pretrained=False)
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(N, 3, 32, 32, generator=g)
    x0 = (ref + 0.15 * torch.randn(N, 3, 32, 32, generator=g)).clamp(0, 1)
    x1 = (ref + 0.3 * torch.randn(N, 3, 32, 32, generator=g)).clamp(0, 1)
    p = np.where(np.arange(N) % 2 == 0, 0.0, 1.0)
    ids, splits = (
        np.arange(500, 500 + N),
        np.array(["test_imagenet", "test_no_imagenet"] * (N // 2)),
    )
    return metric, [(ref, x0, x1, torch.tensor(p), torch.arange(N))], ids, splits


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A certify file and l2 PGD attack files (small and large eps) of a seeded tiny LipSim."""
    tmp = tmp_path_factory.mktemp("consistency")
    metric, loader, ids, splits = _setup()
    cert = certify_triplets(metric, loader, ids=ids, splits=splits)
    cert_path = tmp / "cert.parquet"
    cert.to_parquet(cert_path)
    out = {"cert": cert_path, "cert_df": cert}
    # eps small: some triplets certified; eps large: none certified, some broken
    for name, eps in (("small", float(np.median(cert["radius"]))), ("large", 0.3)):
        df = attack_triplets(
            metric,
            loader,
            AttackSpec("pgd", "L2", eps, steps=15),
            device="cpu",
            ids=ids,
            splits=splits,
            log=None,
        )
        path = tmp / f"pgd-{name}.parquet"
        df.to_parquet(path)
        out[name], out[name + "_df"] = path, df
    return out


def _run(tmp_path, cert, attacks):
    out = tmp_path / "consistency.csv"
    rc = lipsim_main(
        ["check-consistency", "--certify", f"m={cert}", "--attacks"]
        + [f"m={a}" for a in attacks]
        + ["--out", str(out)]
    )
    return rc, out


def test_sound_certificates_pass(files, tmp_path):
    small, large = files["small_df"], files["large_df"]
    cert = files["cert_df"]
    assert (cert["radius"] > small["eps"].iloc[0]).sum() > 0  # something is certified
    assert (large["score_adv"] < large["score_clean"]).sum() > 0  # the attack breaks some
    rc, out = _run(tmp_path, files["cert"], [files["small"], files["large"]])
    assert rc == 0
    table = pd.read_csv(out)
    assert list(table["eps"]) == pytest.approx([small["eps"].iloc[0], 0.3])
    assert (table["broken_certified"] == 0).all() and (table["violations"] == 0).all()
    assert (table["certified"] <= table["attacked"]).all()
    assert table["ok"].all()
    assert table.loc[0, "n_certified"] > 0


def test_inflated_radii_fail_loudly(files, tmp_path, capsys):
    bad = files["cert_df"].copy()
    bad["radius"] = bad["radius"] * 100  # a wrong certificate: claims far too much
    bad_path = tmp_path / "bad.parquet"
    bad.to_parquet(bad_path)
    out = tmp_path / "consistency.csv"
    out.write_text("stale\n")
    rc, out = _run(tmp_path, bad_path, [files["small"], files["large"]])
    assert rc == 1
    assert not out.exists()  # no stale or partial "passing" output remains
    failed = pd.read_csv(tmp_path / "consistency.FAILED.csv")
    assert failed.loc[failed["eps"] == 0.3, "broken_certified"].iloc[0] > 0
    assert not failed["ok"].all()
    assert "CHECK-CONSISTENCY FAILED" in capsys.readouterr().err


def test_files_of_different_models_are_refused(files, tmp_path):
    other = files["cert_df"].copy()
    other["d0"] = other["d0"] + 0.01
    path = tmp_path / "other.parquet"
    other.to_parquet(path)
    rc, _ = _run(tmp_path, path, [files["small"]])
    assert rc == 1


def test_missing_certify_model(files, tmp_path):
    with pytest.raises(LipSimError, match="no --certify file"):
        check_consistency.main(
            [
                "--certify",
                f"m={files['cert']}",
                "--attacks",
                f"x={files['small']}",
                "--out",
                str(tmp_path / "c.csv"),
            ]
        )


def test_linf_attacks_are_checked_through_their_l2_norm(files, tmp_path):
    """An linf attack file is checked too: inflated radii fail it (per-triplet ||delta||_2
    and the certified score at eps sqrt(3 S^2))."""
    cert = files["cert_df"]
    metric, loader, ids, splits = _setup()
    df = attack_triplets(
        metric,
        loader,
        AttackSpec("pgd", "Linf", 0.05, steps=15),
        device="cpu",
        ids=ids,
        splits=splits,
        log=None,
    )
    assert (df["score_adv"] < df["score_clean"]).sum() > 0  # it breaks some
    linf = tmp_path / "pgd-linf.parquet"
    df.to_parquet(linf)
    out = tmp_path / "c.csv"
    args = [
        "--certify",
        f"m={files['cert']}",
        "--attacks",
        f"m={linf}",
        "--image-size",
        "32",
        "--out",
        str(out),
    ]
    assert check_consistency.main(args) == 0
    row = pd.read_csv(out).iloc[0]
    assert row["norm"] == "Linf" and row["l2_reach"] == pytest.approx(0.05 * np.sqrt(3 * 32 * 32))
    bad = cert.assign(radius=cert["radius"] * 1000)
    bad_path = tmp_path / "bad.parquet"
    bad.to_parquet(bad_path)
    args[1] = f"m={bad_path}"
    assert lipsim_main(["check-consistency", *args]) == 1


def test_the_gate_uses_the_sound_radius_of_the_attacked_metric(files, tmp_path):
    """A certify file with both metrics: the attack's lipsim_metric picks the rows."""
    cert = files["cert_df"]
    both = pd.concat(
        [cert.assign(metric="ball"), cert.assign(metric="cosine", radius=cert["radius"] * 100)]
    )
    path = tmp_path / "both.parquet"
    both.to_parquet(path)
    large = files["large_df"]
    for metric, rc in (("ball", 0), ("cosine", 1)):
        att = tmp_path / f"att-{metric}.parquet"
        large.assign(lipsim_metric=metric).to_parquet(att)
        assert _run(tmp_path, path, [att])[0] == rc


def test_certified_score_is_lipsim_certify_s():
    """check-consistency's certified score is lipsim.certify's on the same triplets."""
    from lipsim.certify import certified_mask, certified_scores
    from lipsim.consistency import check_pair

    ids = [f"t{i}" for i in range(6)]
    split = ["test_imagenet"] * 3 + ["test_no_imagenet"] * 3
    d0 = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    d1 = d0 + 0.05
    score = np.array([1.0, 0.5, 0.0, 1.0, 1.0, 0.25])
    radius = np.array([0.3, 0.9, 0.1, 0.5, 0.5 + 1e-9, 2.0])
    cert = pd.DataFrame(
        {
            "id": ids,
            "split": split,
            "metric": "ball",
            "d0": d0,
            "d1": d1,
            "score": score,
            "radius": radius,
        }
    )
    att = pd.DataFrame(
        {
            "id": ids,
            "split": split,
            "lipsim_metric": "ball",
            "attack": "pgd",
            "norm": "L2",
            "eps": 0.5,
            "d0": d0,
            "d1": d1,
            "score_clean": score,
            "score_adv": score,
            "delta_l2": 0.5,
        }
    )
    row, problems = check_pair("m", cert, att, tolerance=1e-5)
    assert problems == []
    expected = certified_scores(cert, [0.5])["certified"][0.5]["test"]
    # radius > eps strictly: 0.9 (score 0.5), 0.5 + 1e-9 (1.0) and 2.0 (0.25) count
    assert row["certified"] == pytest.approx(expected) == pytest.approx(100 * 1.75 / 6)
    assert row["n_certified"] == int(certified_mask(radius, 0.5).sum()) == 3
