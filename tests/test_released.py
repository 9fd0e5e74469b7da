"""The authors' released checkpoints in one command: the Google Drive fetch (confirmation page,
resume, wrong size / hash) against a Drive-like loopback server, the fetch_released rule, its
record in the manifest, and a released.yaml DAG without any training job."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest
import torch
from helpers import FAST as DOWNLOAD_FAST
from loopback_server import LoopbackServer

import lipsim
from lipsim.data.download import DownloadError
from lipsim.data.gdrive import confirmed_url, drive_url, fetch_drive
from lipsim.errors import LipSimError

ROOT = Path(__file__).resolve().parents[1]
FAST = {**DOWNLOAD_FAST, "retries": 2}
UUID = "u-7f3a"

pytestmark = pytest.mark.network


class DriveServer(LoopbackServer):
    """Drive's two steps on 127.0.0.1: /download?id=ID&export=download answers an HTML page;
    the URL its form (or link) builds, with confirm= and the page's uuid=, serves the file
    (served as /ID by LoopbackServer: Ranges, drops and lies as configured with behave)."""

    PAGES = {
        # drive.usercontent.google.com today: a form whose hidden inputs make the URL.
        "form": (
            "<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>"
            '</head><body><form id="download-form" action="{base}" method="get">'
            '<input type="submit" value="Download anyway"/>'
            '<input type="hidden" name="id" value="{id}">'
            '<input type="hidden" name="export" value="download">'
            '<input type="hidden" name="confirm" value="t">'
            '<input type="hidden" name="uuid" value="{uuid}"></form></body></html>'
        ),
        # Older pages: a link carrying confirm=.
        "link": (
            "<html><head><title>Google Drive</title></head><body>"
            '<a id="uc-download-link" href="/download?id={id}&amp;export=download&amp;'
            'confirm=t&amp;uuid={uuid}">Download anyway</a></body></html>'
        ),
        "quota": (
            "<html><head><title>Google Drive - Quota exceeded</title></head><body>"
            "Too many users have viewed or downloaded this file recently.</body></html>"
        ),
    }

    def __init__(self, files: dict[str, bytes], page: str = "form", uuid: str = UUID):
        super().__init__({f"/{fid}": data for fid, data in files.items()})
        self.page, self.uuid, self.pages_sent = page, uuid, 0

    def _handler_class(self):
        server, base = self, super()._handler_class()

        class Handler(base):
            def do_GET(self):
                url = urlsplit(self.path)
                q = {k: v[0] for k, v in parse_qs(url.query).items()}
                fid = q.get("id", "")
                if url.path == "/download" and (
                    server.page == "direct" or (q.get("confirm") and q.get("uuid") == UUID)
                ):
                    self.path = f"/{fid}"
                    return super().do_GET()
                body = (
                    server.PAGES[server.page if server.page != "direct" else "form"]
                    .format(base=f"{server.url}/download", id=fid, uuid=server.uuid)
                    .encode()
                )
                server.pages_sent += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture(scope="module")
def payload() -> bytes:
    # A real torch.save file (a zip), big enough for drops and resumes to matter.
    buf = io.BytesIO()
    torch.save({"model_state_dict": {"w": torch.randn(175_000)}}, buf)
    return buf.getvalue()


@pytest.mark.parametrize("page", ["form", "link", "direct"])
def test_fetch_through_the_confirmation_page(page, payload, tmp_path):
    with DriveServer({"abc": payload}, page=page) as srv:
        base = f"{srv.url}/download"
        target = confirmed_url(drive_url("abc", base), retries=0)
        if page == "direct":
            assert target == drive_url("abc", base) and srv.pages_sent == 0
        else:
            assert "confirm=t" in target and f"uuid={UUID}" in target and srv.pages_sent == 1
        res = fetch_drive(
            "abc",
            tmp_path / "ckpt.pth",
            base=base,
            sha256=hashlib.sha256(payload).hexdigest(),
            **FAST,
        )
    assert (tmp_path / "ckpt.pth").read_bytes() == payload
    assert res.sha256 == hashlib.sha256(payload).hexdigest() and res.size == len(payload)


def test_resume_after_a_dropped_connection(payload, tmp_path):
    with DriveServer({"abc": payload}) as srv:
        srv.behave("/abc", drop_after=[200_000])
        res = fetch_drive("abc", tmp_path / "ckpt.pth", base=f"{srv.url}/download", **FAST)
        ranges = [r for p, r, _ in srv.requests if p == "/abc"]
    assert (tmp_path / "ckpt.pth").read_bytes() == payload
    assert ranges[0] is None and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert res.received < 2 * len(payload)  # resumed, not restarted
    # An interrupted run leaves a .part; the next run resumes it through a new confirmation.
    part = tmp_path / "again.pth.part"
    part.write_bytes(payload[:300_000])
    with DriveServer({"abc": payload}) as srv:
        res = fetch_drive("abc", tmp_path / "again.pth", base=f"{srv.url}/download", **FAST)
        assert srv.pages_sent == 1
    assert res.resumed_from == 300_000 and res.received == len(payload) - 300_000
    assert (tmp_path / "again.pth").read_bytes() == payload


def test_wrong_size_hash_or_page_fails_clearly(payload, tmp_path):
    with DriveServer({"abc": payload}) as srv:
        base = f"{srv.url}/download"
        srv.behave("/abc", extra_length=1000)  # announces more bytes than it sends
        with pytest.raises(
            DownloadError,
            match=r"download failed: http://127.0.0.1:\d+/download"
            rf"\?id=abc.* but announced {len(payload) + 1000}",
        ):
            fetch_drive("abc", tmp_path / "short.pth", base=base, **FAST)
        assert not (tmp_path / "short.pth").exists()
        srv.behave("/abc")
        with pytest.raises(DownloadError, match="sha256 .* != expected 0000"):
            fetch_drive("abc", tmp_path / "bad.pth", base=base, sha256="0" * 64, **FAST)
        assert not (tmp_path / "bad.pth").exists()
        srv.page = "quota"
        with pytest.raises(
            DownloadError,
            match=r"id=xyz.*'Google Drive - Quota exceeded'.*no "
            "download",
        ):
            fetch_drive("xyz", tmp_path / "quota.pth", base=base, **FAST)
        srv.page, srv.uuid = "form", "u-stale"  # the confirmed URL answers the page again
        with pytest.raises(
            DownloadError, match=r"uuid=u-stale: .*HTML page.*not a torch checkpoint"
        ):
            fetch_drive("abc", tmp_path / "html.pth", base=base, **FAST)
        # Refused before the final name: no checkpoint-named page, no .part to resume.
        assert not list(tmp_path.glob("html.pth*"))
        # The command: one `error:` line naming the URL, exit 1, no traceback.
        srv.uuid = UUID
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "lipsim",
                "fetch-released",
                "--id",
                "abc",
                "--url",
                base,
                "--out",
                str(tmp_path / "cli.pth"),
                "--sha256",
                "1" * 64,
                "--retries",
                "0",
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"lipsim fetch-released: error: download failed: {base}?id=abc"
    ), proc.stderr
    assert not (tmp_path / "cli.pth").exists() and not (tmp_path / "cli.json").exists()


@pytest.mark.parametrize(
    "body", [b"PK\x03\x04" + bytes(5000), b"GIF89a" + bytes(5000)], ids=["broken-zip", "gif"]
)
def test_a_body_that_is_not_a_checkpoint_never_gets_the_name(body, tmp_path):
    with DriveServer({"abc": body}) as srv:
        with pytest.raises(DownloadError, match=r"id=abc.*not a torch checkpoint"):
            fetch_drive("abc", tmp_path / "ckpt.pth", base=f"{srv.url}/download", **FAST)
    assert not list(tmp_path.glob("ckpt.pth*"))


def _snakemake(
    workdir: Path, *args: str, overlay: Path | None = None
) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    configs = [str(ROOT / "config" / "released.yaml"), *([str(overlay)] if overlay else [])]
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(ROOT / "workflow" / "Snakefile"),
        "-d",
        str(workdir),
        *args,
        "--configfile",
        *configs,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


def test_released_config_plans_no_training(tmp_path):
    proc = _snakemake(tmp_path, "-n")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rules = re.findall(r"^(?:local)?rule (\w+):", proc.stdout, flags=re.M)
    assert not {
        "distill",
        "finetune",
        "cache_list",
        "cache_fill",
        "cache_index",
        "check_imagenet",
        "make_demo_imagenet",
    } & set(rules), sorted(set(rules))
    assert rules.count("fetch_released") == 3 and rules.count("import_pretrained") == 1
    assert rules.count("import_finetuned") == 2
    for want in (
        "table1",
        "table2",
        "fig3a",
        "fig3b",
        "table_retrieval",
        "table_bapps",
        "download_night",
        "download_bapps",
        "fetch_weights",
    ):
        assert want in rules, want


@pytest.mark.slow
def test_fetch_rule_against_loopback_and_manifest(payload, tmp_path):
    fid = "11JoY5jrm4qmk0QmncQ5eVqXQpXQNLG1X"  # margin 0.5 in config/released.yaml
    sha = hashlib.sha256(payload).hexdigest()
    target = "results/released/released-checkpoints/margin0.5.pth"
    with DriveServer({fid: payload}) as srv:
        srv.behave(f"/{fid}", drop_after=[100_000])
        overlay = tmp_path / "overlay.yaml"
        overlay.write_text(
            json.dumps(
                {
                    "released": {"url": f"{srv.url}/download", "sha256": {"0.5": sha}},
                    # Only the fetch runs: the natural-image folder is not needed (nor checked).
                    "natural_images": {"source": "generate"},
                }
            )
        )
        proc = _snakemake(tmp_path, "--cores", "1", target, overlay=overlay)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert srv.pages_sent == 1 and srv.count(f"/{fid}") == 2  # dropped once, resumed
    assert (tmp_path / target).read_bytes() == payload
    record = json.loads((tmp_path / target).with_suffix(".json").read_text())
    assert record["sha256"] == sha and record["drive_id"] == fid and record["bytes"] == len(payload)
    manifest = tmp_path / "manifest.parquet"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lipsim",
            "manifest",
            "--root",
            "results/released",
            "--snakemake-dir",
            ".snakemake",
            "--out",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = pd.read_parquet(manifest)
    row = rows[rows["path"].astype(str).str.endswith("released-checkpoints/margin0.5.pth")]
    assert len(row) == 1 and row["sha256"].iloc[0] == sha
    assert row["rule"].iloc[0] == "fetch_released"
    shutil.rmtree(tmp_path / ".snakemake", ignore_errors=True)


def test_released_value_needs_a_drive_id():
    import yaml

    from lipsim.configcheck import ConfigError, validate_config

    schema = ROOT / "workflow" / "schemas" / "config.schema.yaml"
    cfg = validate_config(yaml.safe_load((ROOT / "config" / "released.yaml").read_text()), schema)
    assert set(cfg["released"]["ids"]) == {"pretrained", "0.2", "0.5"}
    with pytest.raises(
        ConfigError,
        match=r"finetuned_checkpoints.0.3: 'released' but "
        r"released.ids has no '0.3'",
    ):
        validate_config(
            {"margins": [0.3, 0.5], "finetuned_checkpoints": {"0.3": "released"}}, schema
        )
    with pytest.raises(ConfigError, match="pretrained_checkpoint: 'released' but released.ids"):
        validate_config({"pretrained_checkpoint": "released", "released": {"ids": {}}}, schema)


def test_load_by_name_fetches_once_into_the_cache(tmp_path, monkeypatch):
    """lipsim.load("released:margin0.5") goes through Drive's page once, converts the authors'
    file once, and later calls read the cache (a tiny model in the authors' layout stands in
    for the 250 MB original; the code path is the one users take)."""
    import torch
    from test_import_released import CFG, _reference_embedding, _save_finetuner_style

    import lipsim
    from lipsim.configcheck import schema_default
    from lipsim.hub import released_checkpoint

    fid = schema_default("released.ids")["0.5"]
    layout, _ = _save_finetuner_style(tmp_path / "authors.pth")
    with DriveServer({fid: (tmp_path / "authors.pth").read_bytes()}) as srv:
        path = released_checkpoint(
            "released:margin0.5",
            folder=tmp_path / "cache",
            base_url=f"{srv.url}/download",
            arch=CFG,
            progress=False,
        )
        assert srv.pages_sent == 1
        again = released_checkpoint(
            "released:margin0.5",
            folder=tmp_path / "cache",
            base_url=f"{srv.url}/download",
            arch=CFG,
            progress=False,
        )
        assert again == path and srv.pages_sent == 1  # nothing fetched the second time
    m = lipsim.load(path)
    assert (m.metric, m.info["margin"], m.info["teacher"]) == ("cosine", 0.5, "dreamsim_ensemble")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(
            m.raw_embed(x), _reference_embedding(layout, x), rtol=1e-4, atol=1e-5
        )
    with pytest.raises(LipSimError, match="unknown released model 'released:margin0.3'"):
        released_checkpoint("released:margin0.3", folder=tmp_path / "cache")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def _refused_file(kind: str) -> bytes:
    buf = io.BytesIO()
    if kind == "pickle-payload":
        torch.save({"model_state_dict": {}, "evil": _RunsCode()}, buf)
    elif kind == "wrong-layout":
        torch.save({"model_state_dict": {"encoder.weight": torch.zeros(3, 3)}}, buf)
    else:  # a zip that is no checkpoint at all, saved by a misbehaving server (no sha256 pinned)
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("index.html", "<html>Service unavailable</html>")
    return buf.getvalue()


@pytest.mark.parametrize("bad", ["pickle-payload", "wrong-layout", "not-a-checkpoint"])
def test_a_refused_released_file_is_never_kept_under_the_cache_name(bad, tmp_path):
    """issue 23: a file refused at import is moved aside, so the next call fetches again and,
    once the server serves the right file, succeeds."""
    from test_import_released import CFG, _save_finetuner_style

    from lipsim.configcheck import schema_default
    from lipsim.hub import released_checkpoint
    from lipsim.models import CheckpointError

    fid = schema_default("released.ids")["0.5"]
    _save_finetuner_style(tmp_path / "authors.pth")
    cache = tmp_path / "cache"
    args = dict(folder=cache, arch=CFG, progress=False)
    with DriveServer({fid: _refused_file(bad)}) as srv:
        for attempt in (1, 2):  # every call fetches again while the server is wrong
            with pytest.raises(CheckpointError, match=r"moved to .*\.refused; the next call"):
                released_checkpoint("released:margin0.5", base_url=f"{srv.url}/download", **args)
            assert srv.count(f"/{fid}") == attempt
            assert sorted(p.name for p in cache.iterdir()) == ["released-margin0.5.pth.refused"]
        srv.files[f"/{fid}"] = (tmp_path / "authors.pth").read_bytes()
        path = released_checkpoint("released:margin0.5", base_url=f"{srv.url}/download", **args)
        assert srv.count(f"/{fid}") == 3
    assert path.is_file() and (cache / "released-margin0.5.pth").is_file()
    assert lipsim.load(path).info["margin"] == 0.5
