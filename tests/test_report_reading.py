"""Reading study folders for the report: the CSV fallback, and every damaged folder a one-line
error naming the file (exit code 2 from the CLI)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import assert_one_line_error, copy_study
from studyfiles import MET_TARGET, SEARCH_SPACE

from raycert.errors import UserError
from raycert.report.page import build_report
from raycert.report.reading import load_study


def test_csv_is_read_when_there_is_no_parquet(studies: list[Path], tmp_path):
    study = copy_study(studies[0], tmp_path)
    (study / "trials.parquet").unlink()
    loaded = load_study(study)
    assert len(loaded.trials) == 24 and set(loaded.params) == set(SEARCH_SPACE)


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
