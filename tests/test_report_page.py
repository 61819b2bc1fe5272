"""The report page: self-contained, its targets table and metadata, what it shows for a study
still running, its default path, the imports it needs, and the CLI that writes it."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import plotly.offline
from helpers import copy_study, metadata_cell
from studyfiles import MET_TARGET, UNMET_TARGET
from typer.testing import CliRunner

from raycert.cli import app
from raycert.report.page import build_report, default_report_path
from raycert.studyfolder import StudyDir, read_meta, write_meta


def test_page_is_self_contained_with_plotly_inlined_once(page: Path):
    text = page.read_text()
    plotly_js = plotly.offline.get_plotlyjs()
    assert text.count(plotly_js[:200]) == 1, "plotly.js must be inlined exactly once"
    rest = text.replace(plotly_js, "")
    assert not re.search(r"https?://|//cdn|@import|@font-face", rest), "a network reference"
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=", rest)
    assert "mathjax" not in rest.lower()


def test_targets_table_has_one_row_per_target_and_study(page: Path):
    text = page.read_text()
    table = re.search(r'<table class="targets">.*?</table>', text, re.S).group(0)
    rows = re.findall(r'<tr class="(met|unmet)" data-target="([0-9.]+)">(.*?)</tr>', table, re.S)
    assert [(status, float(t)) for status, t, _ in rows] == [
        ("met", MET_TARGET),
        ("unmet", UNMET_TARGET),
    ] * 2
    assert all("closest: t0" in cells for status, _, cells in rows if status == "unmet")
    assert "test cert acc@0.1" in table and "test cert acc@0.3" in table
    assert "test pgd acc@0.1" in table and "test pgd acc@0.3" in table  # acert-mnist attacked
    assert "chosen/0.8" in table


def test_summary_metadata_and_importances_are_on_the_page(page: Path):
    text = page.read_text()
    for needle in ("acert-mnist", "ibp-mnist", "finished", "ray 2.60.0", "12.6 min"):
        assert needle in text
    assert 'data-figure="importance" data-traces="2"' in text
    assert 'data-figure="parallel-0"' in text and 'data-figure="parallel-1"' in text
    assert "The area under each certified curve" in text


def test_the_trial_counts_are_those_study_json_recorded(studies: list[Path], tmp_path: Path):
    study = copy_study(studies[0], tmp_path)
    text = build_report([study], tmp_path / "counts.html").read_text()
    assert metadata_cell(text, "trials") == (
        "24 recorded: completed 20, pruned 2, diverged 1, error 1"
    )
    store = StudyDir.at(study)
    meta = read_meta(store)
    meta.trial_counts = {"completed": 30, "pruned": 0, "diverged": 0, "error": 0}
    write_meta(store, meta)  # the report shows what study.json says, not a recount
    text = build_report([study], tmp_path / "counts.html").read_text()
    assert metadata_cell(text, "trials") == (
        "30 recorded: completed 30, pruned 0, diverged 0, error 0"
    )
    meta.trial_counts, meta.status = {}, "running"
    write_meta(store, meta)
    text = build_report([study], tmp_path / "counts.html").read_text()
    assert metadata_cell(text, "trials") == (
        "24 finished so far; counted when the study stops (running)"
    )


def test_a_running_study_without_results_still_reports(studies: list[Path], tmp_path):
    running = copy_study(studies[0], tmp_path)
    meta = json.loads((running / "study.json").read_text())
    (running / "study.json").write_text(json.dumps({**meta, "status": "running"}))
    (running / "results.json").unlink()
    text = build_report([running], tmp_path / "running.html").read_text()
    assert "no results.json yet (study running)" in text
    assert 'data-figure="front"' in text and 'data-figure="curves"' not in text


def test_default_path_names_every_study():
    assert default_report_path(["acert-mnist"]) == Path("reports/acert-mnist.html")
    assert default_report_path(["a", "b/c"]) == Path("reports/a+b_c.html")


def test_the_report_imports_nothing_that_trains():
    code = (
        "import sys, raycert.report; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray') or m in "
        "('raycert.training.loop', 'raycert.study', 'raycert.study.tune.trial', "
        "'raycert.cert.certify', 'raycert.cert.radius', 'raycert.cert.bounds')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_writes_the_report(studies: list[Path], tmp_path: Path):
    out = tmp_path / "both.html"
    result = CliRunner().invoke(app, ["report", *map(str, studies), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and out.is_file()


def test_cli_default_path_is_under_reports(studies: list[Path], tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["report", str(studies[0])])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "reports" / "acert-mnist.html").is_file()
