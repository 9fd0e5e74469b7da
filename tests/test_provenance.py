"""manifest.parquet and `lipsim provenance`, on synthetic records and a real snakemake run."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import lipsim
from lipsim import provenance as pv
from lipsim.cli import manifest as manifest_cli
from lipsim.cli import provenance as provenance_cli


def test_sha256_streamed(tmp_path):
    f = tmp_path / "x.bin"
    data = os.urandom(1000)
    f.write_bytes(data)
    assert pv.sha256_file(f, block=7) == hashlib.sha256(data).hexdigest()


def test_config_hash_merges_like_configfile(tmp_path):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("run: demo\ntrain: {lr: 0.01, epochs: 2}\nmargins: [0.2]\n")
    b.write_text("train:\n  epochs: 40\nmargins: [0.2, 0.5]\n")
    merged = pv.load_config([a, b])
    assert merged == {"run": "demo", "train": {"lr": 0.01, "epochs": 40}, "margins": [0.2, 0.5]}
    j = tmp_path / "c.json"
    # key order does not change the hash: canonical JSON
    j.write_text(
        json.dumps({"margins": [0.2, 0.5], "train": {"epochs": 40, "lr": 0.01}, "run": "demo"})
    )
    h = pv.config_hash(merged)
    assert h == pv.config_hash(pv.load_config(config_json=j))
    assert (
        h
        == hashlib.sha256(
            json.dumps(merged, sort_keys=True, separators=(",", ":")).encode()
        ).hexdigest()
    )
    assert pv.config_hash(None) is None
    # the workflow's resolved-config file carries its own hash; --config-hash wins over all
    w = tmp_path / "config.json"
    w.write_text(json.dumps({"config_hash": "abc123", "config": merged}))
    assert pv.resolve_config_hash(config_json=w) == "abc123"
    assert pv.resolve_config_hash(config_json=w, given="given") == "given"
    assert pv.resolve_config_hash([a, b]) == h
    j.write_text("{not json")
    with pytest.raises(pv.ProvenanceError, match="c.json"):
        pv.load_config(config_json=j)


def test_list_artifacts_exclusions(tmp_path):
    r = tmp_path / "R"
    for rel in (
        "tables/t.csv",
        "tables/.t.csv.abc.tmp",
        "logs/x.log",
        "benchmarks/b.tsv",
        "data/imagenet/a/b.jpg",
        "manifest.parquet",
        ".snakemake_timestamp",
        "cache/shard.npy.part",
        "figures/f.png",
    ):
        (r / rel).parent.mkdir(parents=True, exist_ok=True)
        (r / rel).write_text(rel)
    got = [
        p.relative_to(r).as_posix()
        for p in pv.list_artifacts(r, skip=[r / "manifest.parquet"], exclude=["data/imagenet/*"])
    ]
    assert got == ["figures/f.png", "tables/t.csv"]
    with_logs = pv.list_artifacts(r, include_logs=True)
    assert {p.name for p in with_logs} >= {"x.log", "b.tsv", "manifest.parquet", "b.jpg"}


def _write_record(metadata: Path, key: str, record: dict, max_len: int = 255):
    # snakemake/persistence/file.py `_record_path`: url-safe base64 of the key, chunked into
    # NAME_MAX - 1 pieces, '@'-prefixed folders for all but the last.
    b64 = base64.urlsafe_b64encode(key.encode()).decode()
    parts = [b64[i : i + max_len - 1] for i in range(0, len(b64), max_len - 1)]
    path = metadata.joinpath(*(["@" + p for p in parts[:-1]] + [parts[-1]]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_metadata_file_backend_long_keys_and_directories(tmp_path):
    smk = tmp_path / ".snakemake"
    long_key = "R/" + "d" * 300 + "/out.txt"
    _write_record(smk / "metadata", long_key, {"rule": "long", "input": ["a"], "incomplete": False})
    _write_record(smk / "metadata", "R/cache/demo", {"rule": "cache_fill", "input": []})
    _write_record(smk / "metadata", "R/broken", {"rule": "x", "incomplete": True})
    meta = pv.SnakemakeMetadata.read(smk)
    assert meta.workdir == tmp_path
    assert meta.lookup(long_key)["rule"] == "long"
    # a file inside a directory() output inherits the folder's record
    assert meta.lookup("R/cache/demo/shard-00000.npy")["rule"] == "cache_fill"
    assert meta.lookup(tmp_path / "R/cache/demo/x")["rule"] == "cache_fill"
    assert meta.lookup("R/broken") is None  # unfinished jobs do not count
    assert meta.lookup("R/other") is None
    assert meta.display(tmp_path / "R/x") == "R/x"


def test_metadata_db_backend(tmp_path):
    import sqlite3

    smk = tmp_path / ".snakemake"
    smk.mkdir()
    con = sqlite3.connect(smk / "metadata.db")
    con.execute(
        "CREATE TABLE snakemake_metadata (rule VARCHAR, input JSON, log JSON, "
        "shellcmd VARCHAR, params JSON, incomplete BOOLEAN, starttime FLOAT, "
        "endtime FLOAT, namespace VARCHAR, target VARCHAR)"
    )
    con.execute(
        "INSERT INTO snakemake_metadata VALUES (?,?,?,?,?,?,?,?,?,?)",
        (
            "r",
            json.dumps(["in.txt"]),
            "[]",
            "echo",
            json.dumps(["1"]),
            False,
            1.0,
            2.0,
            str(smk.absolute()),
            "out.txt",
        ),
    )
    con.commit()
    con.close()
    rec = pv.SnakemakeMetadata.read(smk).lookup("out.txt")
    assert rec["rule"] == "r" and rec["input"] == ["in.txt"] and rec["params"] == ["1"]


SNAKEFILE = """
PY = {py!r}

rule all:
    input: "R/tables/total.txt"

rule make_number:
    output: "R/numbers/{{n}}.txt"
    params: value=lambda wc: int(wc.n) * 2
    shell: PY + " -c \\"open('{{output}}', 'w').write('{{params.value}}')\\""

rule total:
    input: "R/numbers/1.txt", "R/numbers/2.txt", "config.yaml"
    output: "R/tables/total.txt"
    params: scale=10
    shell: PY + " -c \\"import sys; s = sum(int(open(f).read()) for f in sys.argv[1:3]); open('{{output}}', 'w').write(str(s * {{params.scale}}))\\" {{input}}"
"""


@pytest.fixture(scope="module")
def smk_run(tmp_path_factory):
    """A real 2-rule snakemake run (about 3 s)."""
    wd = tmp_path_factory.mktemp("smk")
    (wd / "Snakefile").write_text(textwrap.dedent(SNAKEFILE.format(py=sys.executable)))
    (wd / "config.yaml").write_text("scale: 10\n")
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-c1", "--quiet"],
        cwd=wd,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert (wd / "R/tables/total.txt").read_text() == "60"
    return wd


@pytest.mark.slow
def test_manifest_and_provenance_from_real_snakemake_run(smk_run, monkeypatch, capsys):
    monkeypatch.chdir(smk_run)
    (smk_run / "R/.total.txt.x.tmp").write_text("in flight")  # never an artifact
    assert (
        manifest_cli.main(
            [
                "--root",
                "R",
                "--config",
                "config.yaml",
                "--snakemake-dir",
                ".snakemake",
                "--out",
                "R/manifest.parquet",
            ]
        )
        == 0
    )
    m = pd.read_parquet("R/manifest.parquet")
    assert list(m.columns[:10]) == [
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
    ]
    assert list(m["path"]) == ["R/numbers/1.txt", "R/numbers/2.txt", "R/tables/total.txt"]
    r = m.set_index("path")
    assert list(r["rule"]) == ["make_number", "make_number", "total"]
    assert list(r.loc["R/tables/total.txt", "inputs"]) == [
        "R/numbers/1.txt",
        "R/numbers/2.txt",
        "config.yaml",
    ]
    assert list(r.loc["R/numbers/1.txt", "inputs"]) == []
    assert list(r.loc["R/numbers/2.txt", "params"]) == ["4"]
    assert "{params" not in r.loc["R/tables/total.txt", "shellcmd"]
    for p, row in r.iterrows():
        assert row["sha256"] == hashlib.sha256(Path(p).read_bytes()).hexdigest()
        assert row["bytes"] == Path(p).stat().st_size
    assert r.loc["R/tables/total.txt", "sha256"] == hashlib.sha256(b"60").hexdigest()
    assert (r["config_hash"] == pv.config_hash({"scale": 10})).all()
    assert (r["code_version"] == lipsim.__version__).all()
    assert pd.Timestamp(r.loc["R/tables/total.txt", "time"]).tzinfo is not None

    assert provenance_cli.main(["R/tables/total.txt"]) == 0
    out = capsys.readouterr().out
    assert "rule    total" in out and "rule    make_number" in out
    assert "<- R/numbers/1.txt" in out and "<- config.yaml" in out
    assert "params  10" in out and "not produced by a recorded rule" in out
    assert hashlib.sha256(b"60").hexdigest() in out
    assert provenance_cli.main(["R/tables/total.txt", "--json"]) == 0
    nodes = json.loads(capsys.readouterr().out)
    assert [n["path"] for n in nodes] == [
        "R/tables/total.txt",
        "R/numbers/1.txt",
        "R/numbers/2.txt",
        "config.yaml",
    ]
    assert [n["depth"] for n in nodes] == [0, 1, 1, 1]
    assert nodes[3]["sha256_from"] == "computed" and nodes[0]["sha256_from"] == "manifest"
    assert nodes[1]["params"] == ["2"]


@pytest.mark.slow
def test_provenance_survives_lost_snakemake_dir_and_hash_reuse(
    smk_run, tmp_path, monkeypatch, capsys
):
    work = tmp_path / "copy"
    shutil.copytree(smk_run, work, ignore=shutil.ignore_patterns("manifest.parquet"))
    monkeypatch.chdir(work)
    assert manifest_cli.main(["--root", "R", "--out", "R/manifest.parquet"]) == 0
    capsys.readouterr()
    # results copied elsewhere without .snakemake: the manifest still knows the chain
    shutil.rmtree(".snakemake")
    nodes = pv.provenance_chain(
        "R/tables/total.txt",
        pv.SnakemakeMetadata.read(".snakemake"),
        pv.read_manifest("R/manifest.parquet"),
    )
    assert nodes[0]["rule"] == "total" and nodes[1]["rule"] == "make_number"
    # unchanged files keep the recorded sha256 (not re-read); changed ones are re-hashed
    m = pd.read_parquet("R/manifest.parquet")
    m.loc[m["path"] == "R/numbers/1.txt", "sha256"] = "f" * 64
    pv.write_manifest("R/manifest.parquet", m)
    Path("R/numbers/2.txt").write_text("44")
    assert manifest_cli.main(["--root", "R", "--out", "R/manifest.parquet"]) == 0
    r = pd.read_parquet("R/manifest.parquet").set_index("path")
    assert r.loc["R/numbers/1.txt", "sha256"] == "f" * 64
    assert r.loc["R/numbers/2.txt", "sha256"] == hashlib.sha256(b"44").hexdigest()
    assert r["rule"].isna().all() and r["config_hash"].isna().all()
    capsys.readouterr()
    assert provenance_cli.main(["R/numbers/1.txt", "--manifest", "R/manifest.parquet"]) == 0
    out = capsys.readouterr().out
    assert "not produced by a recorded rule" in out and "nan" not in out
    assert "f" * 64 in out
    with pytest.raises(pv.ProvenanceError, match="R/nothing.txt does not exist and has no record"):
        provenance_cli.main(["R/nothing.txt"])
