"""`snakemake --report` with the workflow's own captions and report layout: no Docutils system
message, tables as HTML (shown inline), figures as PNG first. The files are small stand-ins
written by a scratch workflow that includes workflow/rules/common.smk, so the report is built
for real in seconds instead of after the whole DAG (tests/test_workflow.py builds that one)."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = sorted((ROOT / "workflow" / "report").glob("*.rst"))

MINI = """
configfile: "{root}/config/config.yaml"
include: "{root}/workflow/rules/common.smk"
report: "../report/workflow.rst"

for _folder, (_exts, _c, _l, _names) in REPORT_FILES.items():
    for _name in _names:
        rule:
            name: f"make_{{_folder}}_{{_name}}"  # radii and study: a table and a figure
            output: report_outputs(_folder, _name)
            log: f"logs/{{_folder}}/{{_name}}.log"
            params: folder=_folder
            run:
                make(params.folder, output)

rule all:
    input: final_outputs()[:-1]  # not the consistency check
    default_target: True


def make(folder, outputs):
    import pandas as pd
    from PIL import Image
    from lipsim.reporting.tables import latex_table, markdown_table, write_table

    prefix = outputs[0].rsplit(".", 1)[0]
    if folder == "tables":
        df = pd.DataFrame({{"model": ["lipsim-margin0.5", "dreamsim_ensemble"],
                            "natural": [85.25, 96.5]}})
        write_table(prefix, df, markdown_table(df.astype(str)), latex_table(df.astype(str)))
    else:
        Image.new("RGB", (8, 8), (200, 30, 30)).save(prefix + ".png")
        Path(prefix + ".pdf").write_bytes(b"%PDF-1.4 stand-in")
"""


def _snakemake(work: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(work / "wf" / "rules" / "mini.smk"),
        "-d",
        str(work),
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("caption", CAPTIONS, ids=lambda p: p.name)
def test_caption_is_clean_restructuredtext(caption):
    # what snakemake does with a caption (after its jinja step, a no-op without {{ }}):
    # docutils to HTML; any warning or error shows up as a "System Message" block
    from docutils.core import publish_parts

    html = publish_parts(
        caption.read_text(),
        writer="html",
        settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": False},
    )["body"]
    assert "System Message" not in html, html


def test_caption_check_catches_a_substitution():
    from docutils.core import publish_parts

    html = publish_parts(
        "R = |d0 - d1| / x", writer="html", settings_overrides={"warning_stream": False}
    )["body"]
    assert "System Message" in html


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> str:
    work = tmp_path_factory.mktemp("report")
    (work / "wf" / "rules").mkdir(parents=True)
    (work / "wf" / "report").symlink_to(ROOT / "workflow" / "report")  # the real captions
    (work / "wf" / "rules" / "mini.smk").write_text(MINI.format(root=ROOT))
    proc = _snakemake(work, "--cores", "1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = work / "report.html"
    proc = _snakemake(work, "--report", str(out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out.read_text()


@pytest.mark.slow
def test_captions_render_without_docutils_messages(report_html):
    assert "System Message" not in report_html
    assert "Docutils System Messages" not in report_html
    # the caption whose `|d0 - d1|` once read as a substitution is there, whole
    assert "|d0 - d1|" in report_html and "exceeds eps" in report_html


@pytest.mark.slow
def test_tables_are_html_and_figures_png_first(report_html):
    # results are embedded as data URIs; the report shows text/html and images inline
    for name in ("table1", "table2", "retrieval"):
        assert f"tables/{name}.html" in report_html, name
    html_tables = [
        base64.b64decode(m).decode()
        for m in re.findall(r"data:text/html;[^,]*base64,([A-Za-z0-9+/=]+)", report_html)
    ]
    assert any("lipsim-margin0.5" in t and "<table" in t for t in html_tables)
    for name in ("fig3a", "fig3b", "margins"):
        assert f"figures/{name}.png" in report_html, name
    # the report sorts each label's values and opens the first: the inline formats must win
    formats = {
        m[0]: m[1]
        for m in re.findall(
            r'"(results/[^"]+)": \{"name": "[^"]+", "filename": "[^"]+", "labels": '
            r'\{"(?:table|figure)": "[^"]+", "format": "([^"]+)"\}',
            report_html,
        )
    }
    assert formats, "no labelled results found in the report"
    for name in ("fig3a", "fig3b", "margins"):
        shown = sorted(v for k, v in formats.items() if f"/figures/{name}." in k)
        assert shown == ["PNG", "pdf"], shown
    for name in ("table1", "table2", "retrieval"):
        shown = sorted(v for k, v in formats.items() if f"/tables/{name}." in k)
        assert shown[0] == "HTML", shown
