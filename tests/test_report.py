"""The study report: page content, the ACR-as-area identity, bad study directories, and the
page rendered offline in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.offline
import pytest
from helpers import assert_one_line_error
from studyfiles import MET_TARGET, TARGETS, UNMET_TARGET, write_journal, write_study
from typer.testing import CliRunner

from raycert.cli import app
from raycert.errors import UserError
from raycert.report.figures import cert_acc_curve, curve_area, curves_figure, front_figure
from raycert.report.page import build_report, default_report_path
from raycert.report.reading import load_study
from raycert.study.run import StudyRequest, run_study
from raycert.studyfolder import (
    JOURNAL,
    StudyDir,
    read_meta,
    read_trials,
    write_meta,
    write_trials,
)

if TYPE_CHECKING:
    from playwright.sync_api import Route

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PARAMS = {"lr", "kappa", "reg_weight", "optimizer"}


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("storage")
    return [write_study(root), write_study(root, name="ibp-mnist", method="ibp", seed=1)]


@pytest.fixture(scope="module")
def page(studies: list[Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report(studies, tmp_path_factory.mktemp("reports") / "acert+ibp.html")


def copy_study(study: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(study, tmp_path / study.name))


# ---------------------------------------------------------------------------------------------
# Page content
# ---------------------------------------------------------------------------------------------


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
    assert "chosen/0.8" in table


def test_summary_metadata_and_importances_are_on_the_page(page: Path):
    text = page.read_text()
    for needle in ("acert-mnist", "ibp-mnist", "finished", "ray 2.60.0", "12.6 min"):
        assert needle in text
    assert 'data-figure="importance" data-traces="2"' in text
    assert 'data-figure="parallel-0"' in text and 'data-figure="parallel-1"' in text
    assert "The area under each curve" in text


def test_both_studies_overlay_on_one_front(studies: list[Path]):
    loaded = [load_study(d) for d in studies]
    names = [trace.name for trace in front_figure(loaded).data]
    for study in ("acert-mnist", "ibp-mnist"):
        assert [n.split(": ")[1] for n in names if n.startswith(study + ":")] == [
            "feasible",
            "infeasible",
            "pruned / failed",
            "Pareto front",
        ]
    front = next(t for t in front_figure(loaded[:1]).data if t.name.endswith("Pareto front"))
    trials = pd.read_parquet(studies[0] / "trials.parquet")
    assert sorted(front.x) == sorted(trials.loc[trials["pareto"], "clean_acc"])
    assert front.line.shape == "vh"


def pareto_trace(study_dir: Path):
    traces = front_figure([load_study(study_dir)]).data
    return next(t for t in traces if t.name.endswith("Pareto front"))


def test_the_front_is_the_stored_pareto_column(studies: list[Path], tmp_path: Path):
    """The report draws the ``pareto`` column the study stored; it does not recompute it."""
    study = copy_study(studies[0], tmp_path)
    store = StudyDir.at(study)
    trials = read_trials(store, list(TARGETS))
    on_front = trials.index[trials["pareto"]]
    dominated = trials.index[(trials["status"] == "completed") & ~trials["pareto"]]
    trials.loc[on_front[0], "pareto"] = False
    trials.loc[dominated[0], "pareto"] = True
    write_trials(store, trials)
    front = pareto_trace(study)
    expected = trials.loc[trials["pareto"]].sort_values(["clean_acc", "acr"])
    assert list(front.x) == list(expected["clean_acc"]) and list(front.y) == list(expected["acr"])


def metadata_cell(page_text: str, label: str) -> str:
    return re.search(rf"<tr><th>{label}</th><td>(.*?)</td>", page_text).group(1)


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


def test_area_under_the_certified_accuracy_curve_is_the_acr(studies: list[Path]):
    study = studies[0]
    radii = pd.read_csv(study / "chosen" / f"{MET_TARGET:g}" / "test_radii.csv")
    results = json.loads((study / "results.json").read_text())["targets"]
    test_acr = next(r for r in results if r["met"])["test"]["acr"]
    cap = json.loads((study / "study.json").read_text())["acr_cap"]

    (trace,) = curves_figure([load_study(study)]).data
    eps, accuracy = np.asarray(trace.x), np.asarray(trace.y)
    radius, correct = radii["radius"].to_numpy(), radii["correct"].to_numpy(dtype=bool)
    assert trace.line.shape == "vh" and eps[0] == 0 and eps[-1] == cap
    # each point is the certified accuracy at its eps, straight from the CSV
    expected = [(correct & (radius >= e)).mean() for e in eps]
    np.testing.assert_allclose(accuracy, expected, rtol=0, atol=1e-15)
    assert accuracy[0] == pytest.approx(correct.mean())
    # a vh step holds its right end's value: the area is the mean capped radius, i.e. the ACR
    area = float(np.sum(np.diff(eps) * accuracy[1:]))
    assert area == pytest.approx(np.minimum(radius, cap).mean(), rel=1e-12)
    assert area == pytest.approx(test_acr, rel=1e-12)
    assert curve_area(eps, accuracy) == pytest.approx(area, rel=1e-12)


def test_cert_acc_curve_of_a_hand_made_case():
    eps, accuracy = cert_acc_curve(
        np.array([0.0, 0.1, 0.1, 0.3, 0.5]), np.array([False, True, True, True, True]), cap=0.4
    )
    np.testing.assert_allclose(eps, [0.0, 0.1, 0.3, 0.4])
    np.testing.assert_allclose(accuracy, [0.8, 0.8, 0.4, 0.2])
    assert curve_area(eps, accuracy) == pytest.approx((0.1 + 0.1 + 0.3 + 0.4) / 5)


def test_importances_from_the_journal_else_from_the_trials_table(studies: list[Path], tmp_path):
    study = load_study(studies[0])
    assert set(study.importances) == PARAMS
    assert sum(study.importances.values()) == pytest.approx(1.0)
    assert "optuna.journal" in study.importance_note

    broken = copy_study(studies[0], tmp_path)
    (broken / JOURNAL).write_text('{"op_code": 0, "worker_id": broken\n')
    from_table = load_study(broken)
    assert set(from_table.importances) == PARAMS
    assert "trials table" in from_table.importance_note
    assert "optuna.journal not used" in from_table.importance_note

    (broken / JOURNAL).unlink()
    assert "no optuna.journal" in load_study(broken).importance_note


def _with_journal(study: Path, tmp_path: Path, objectives: tuple[str, ...] | None) -> Path:
    copy = copy_study(study, tmp_path / str(objectives))
    (copy / JOURNAL).unlink()
    write_journal(copy, copy.name, read_trials(StudyDir.at(copy), list(TARGETS)), objectives)
    return copy


def test_the_acr_objective_is_found_by_its_name(studies: list[Path], tmp_path: Path):
    """Importances rank ACR's objective wherever the journal's metric names put it."""
    named = load_study(studies[0])
    reordered = load_study(_with_journal(studies[0], tmp_path, ("acr", "clean_acc")))
    assert "on optuna.journal" in reordered.importance_note
    assert reordered.importances == named.importances
    by_accuracy = load_study(_with_journal(studies[0], tmp_path, ("clean_acc",)))
    assert "optuna.journal not used (it names no acr objective)" in by_accuracy.importance_note
    unnamed = load_study(_with_journal(studies[0], tmp_path, None))
    assert "optuna.journal not used (it names no acr objective)" in unnamed.importance_note


def test_too_few_trials_give_no_importances_but_a_page(tmp_path):
    study = write_study(tmp_path, n_trials=4)  # trials 0-2 completed, 3 pruned
    loaded = load_study(study)
    assert loaded.importances == {} and "need 4 completed trials" in loaded.importance_note
    text = build_report([study], tmp_path / "few.html").read_text()
    assert 'data-figure="importance"' not in text and "need 4 completed trials" in text


def test_a_running_study_without_results_still_reports(studies: list[Path], tmp_path):
    running = copy_study(studies[0], tmp_path)
    meta = json.loads((running / "study.json").read_text())
    (running / "study.json").write_text(json.dumps({**meta, "status": "running"}))
    (running / "results.json").unlink()
    text = build_report([running], tmp_path / "running.html").read_text()
    assert "no results.json yet (study running)" in text
    assert 'data-figure="front"' in text and 'data-figure="curves"' not in text


def test_csv_is_read_when_there_is_no_parquet(studies: list[Path], tmp_path):
    study = copy_study(studies[0], tmp_path)
    (study / "trials.parquet").unlink()
    loaded = load_study(study)
    assert len(loaded.trials) == 24 and set(loaded.params) == PARAMS


def test_default_path_names_every_study():
    assert default_report_path(["acert-mnist"]) == Path("reports/acert-mnist.html")
    assert default_report_path(["a", "b/c"]) == Path("reports/a+b_c.html")


def test_the_report_imports_nothing_that_trains():
    code = (
        "import sys, raycert.report; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray') or m in "
        "('raycert.training.loop', 'raycert.study', 'raycert.study.trial', 'raycert.cert.certify', "
        "'raycert.cert.radius', 'raycert.cert.bounds')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Bad study directories: one line naming the file, exit code 2 from the CLI
# ---------------------------------------------------------------------------------------------


def _no_study_json(d: Path) -> None:
    (d / "study.json").unlink()


def _bad_study_json(d: Path) -> None:
    (d / "study.json").write_text('{"name": "acert-mnist", ')


def _study_json_without_targets(d: Path) -> None:
    meta = json.loads((d / "study.json").read_text())
    del meta["targets"]
    (d / "study.json").write_text(json.dumps(meta))


def _corrupt_parquet(d: Path) -> None:
    """A damaged parquet and no csv to fall back on (with the csv, the report reads it)."""
    (d / "trials.parquet").write_bytes(b"PAR1 this is not a parquet file")
    (d / "trials.csv").unlink()


def _no_trials(d: Path) -> None:
    (d / "trials.parquet").unlink()
    (d / "trials.csv").unlink()


def _no_acr_column(d: Path) -> None:
    pd.read_parquet(d / "trials.parquet").drop(columns="acr").to_parquet(d / "trials.parquet")


def _no_pareto_column(d: Path) -> None:
    pd.read_parquet(d / "trials.parquet").drop(columns="pareto").to_parquet(d / "trials.parquet")


def _unknown_status(d: Path) -> None:
    trials = pd.read_parquet(d / "trials.parquet")
    trials.loc[0, "status"] = "finished"
    trials.to_parquet(d / "trials.parquet")


def _old_study_json(d: Path) -> None:
    """study.json as the report's old reader expected it: counts under ``trials``."""
    meta = json.loads((d / "study.json").read_text())
    meta["trials"] = meta.pop("trial_counts")
    (d / "study.json").write_text(json.dumps(meta))


def _target_without_met(d: Path) -> None:
    results = json.loads((d / "results.json").read_text())
    del results["targets"][1]["met"]
    (d / "results.json").write_text(json.dumps(results))


def _bad_results(d: Path) -> None:
    (d / "results.json").write_text('{"targets": 3}')


def _no_results_when_finished(d: Path) -> None:
    (d / "results.json").unlink()


def _no_test_radii(d: Path) -> None:
    (d / "chosen" / f"{MET_TARGET:g}" / "test_radii.csv").unlink()


BROKEN = {
    "no study.json": (_no_study_json, "study.json is missing"),
    "bad study.json": (_bad_study_json, "cannot read"),
    "no targets": (_study_json_without_targets, "study.json: lacks targets"),
    "old study.json": (_old_study_json, "study.json: lacks trial_counts"),
    "corrupt parquet": (_corrupt_parquet, "cannot read"),
    "no trials file": (_no_trials, "neither trials.parquet nor trials.csv"),
    "no acr column": (_no_acr_column, "lacks the column(s) acr"),
    "no pareto column": (_no_pareto_column, "trials.parquet lacks the column(s) pareto"),
    "unknown status": (_unknown_status, "unknown status 'finished'"),
    "bad results.json": (_bad_results, "results.json: targets: Input should be a valid array"),
    "target without met": (_target_without_met, "results.json: lacks targets.1.met"),
    "no results.json": (_no_results_when_finished, "results.json is missing"),
    "no test radii": (_no_test_radii, "test_radii.csv is missing"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_a_broken_study_is_a_one_line_error(case: str, studies: list[Path], tmp_path: Path):
    damage, message = BROKEN[case]
    study = copy_study(studies[0], tmp_path)
    damage(study)
    with pytest.raises(UserError) as exc:
        build_report([study], tmp_path / "out.html")
    assert_one_line_error(exc, message, str(study))
    assert not (tmp_path / "out.html").exists()


def test_a_missing_study_directory_is_a_one_line_error(tmp_path: Path):
    with pytest.raises(UserError) as exc:
        build_report([tmp_path / "nope"], tmp_path / "out.html")
    assert_one_line_error(exc, "does not exist", "nope")


# ---------------------------------------------------------------------------------------------
# The page in a real browser, offline
# ---------------------------------------------------------------------------------------------

# Traces per figure for the two helper studies: the front has feasible, infeasible, stopped and
# front per study; one curve per met target; progress has all trials plus one line per met
# target; one importance series per study; one parallel-coordinates trace per study.
EXPECTED_TRACES = {
    "fig-front": 8,
    "fig-curves": 2,
    "fig-progress": 4,
    "fig-importance": 2,
    "fig-parallel-0": 1,
    "fig-parallel-1": 1,
}


def _sync_playwright():
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} not found: install Chromium with 'apt-get install chromium' "
            "(Debian; CI does this before the tests)",
            pytrace=False,
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[test]'", pytrace=False)
    return sync_playwright


def test_the_page_renders_offline_in_chromium(page: Path):
    """Every non-file request is recorded and aborted (the context is offline too)."""
    sync_playwright = _sync_playwright()
    attempted: list[str] = []
    problems: list[str] = []

    def only_files(route: Route) -> None:
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1400, "height": 1000})
            context.route("**/*", only_files)
            tab = context.new_page()
            tab.on(
                "request", lambda r: None if r.url.startswith("file:") else attempted.append(r.url)
            )
            tab.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: problems.append(str(e)))
            tab.goto(page.as_uri(), wait_until="load")
            tab.wait_for_function(
                f"document.querySelectorAll('.js-plotly-plot').length === {len(EXPECTED_TRACES)}",
                timeout=30_000,
            )
            rendered = tab.evaluate(
                "Object.fromEntries([...document.querySelectorAll('.js-plotly-plot')]"
                ".map(d => [d.id, d.data.length]))"
            )
            drawn = tab.evaluate("document.querySelectorAll('.js-plotly-plot .main-svg').length")
            rows = tab.locator("table.targets tbody tr").count()
            ARTIFACTS.mkdir(exist_ok=True)
            screenshot = ARTIFACTS / "report.png"
            tab.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    print(f"report screenshot: {screenshot}")
    assert attempted == [], f"the page tried the network: {attempted}"
    assert problems == [], f"console errors: {problems}"
    assert rendered == EXPECTED_TRACES
    assert drawn >= len(EXPECTED_TRACES)
    assert rows == 2 * len(TARGETS)


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


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


def test_cli_broken_study_is_one_line_and_exit_2(studies: list[Path], tmp_path: Path):
    study = copy_study(studies[0], tmp_path)
    _corrupt_parquet(study)
    result = subprocess.run(
        [sys.executable, "-m", "raycert.cli", "report", str(study)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    line = assert_one_line_error(result.stderr, "trials.parquet")
    assert line.startswith("error: cannot read ")
    assert not (tmp_path / "reports").exists()


# ---------------------------------------------------------------------------------------------
# A real study, end to end
# ---------------------------------------------------------------------------------------------


def test_report_of_a_real_tiny_study(ray_local, tmp_path: Path):
    request = StudyRequest(
        dataset="synthetic",
        targets=(0.8, 0.999),
        preset="smoke",
        trials=3,
        concurrency=2,
        storage=str(tmp_path),
    )
    result = run_study(request, progress=False)
    assert result.status == "finished"
    study_dir = Path(result.study_dir)
    text = build_report([study_dir], tmp_path / "real.html").read_text()

    rows = re.findall(r'<tr class="(met|unmet)" data-target="([0-9.]+)">', text)
    assert [float(t) for _, t in rows] == [r.target for r in result.targets]
    study = load_study(study_dir)
    met = [c for c in study.chosen if c.result.met and c.radii is not None]
    assert len(met) == text.count("(ACR ") and 'data-figure="front"' in text
    for chosen in met:
        eps, accuracy = cert_acc_curve(chosen.radii, chosen.correct, study.acr_cap)
        assert curve_area(eps, accuracy) == pytest.approx(chosen.result.test["acr"], rel=1e-12)

    # The counts the study wrote to study.json are the ones on the page, and they add up.
    counts = json.loads((study_dir / "study.json").read_text())["trial_counts"]
    assert counts == result.meta.trial_counts and counts["completed"] + counts["pruned"] > 0
    listed = ", ".join(f"{status} {n}" for status, n in counts.items())
    assert metadata_cell(text, "trials") == f"3 recorded: {listed}"
    # The front drawn is the Pareto column the study stored.
    table = pd.read_parquet(study_dir / "trials.parquet")
    stored = table[table["pareto"]].sort_values(["clean_acc", "acr"])
    assert len(stored) and list(pareto_trace(study_dir).x) == list(stored["clean_acc"])
