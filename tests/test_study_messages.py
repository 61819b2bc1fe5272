"""Each of the misleading messages a user met says one true line now: a study in which no
trial ran (and its resume), a folder without study.json, a run's config.json without its
model, a file given to ``raycert report``, and a radius ramp longer than the run."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest
from helpers import assert_one_line_error, run_cli
from studyruns import run_study_cli, toy, toy_request

from raycert.errors import UserError
from raycert.study.tune.run import run_study
from raycert.training.config import TrainConfig

STUDY = ["synthetic", "--preset", "smoke", "--storage", "st", "--name", "z"]


@pytest.mark.slow
def test_a_study_whose_budget_held_no_trial_says_so_and_resumes_without_a_traceback(tmp_path):
    code, out, err = run_study_cli(*STUDY, "--budget", "1s", cwd=tmp_path)

    assert code == 1, err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last == (
        f"error: no trial of {tmp_path}/st/z ran in its 1s budget; continue it with a larger"
        " --budget and --resume"
    )
    assert "certifying on test took longer" not in out + err

    code, out, err = run_study_cli(*STUDY, "--budget", "15s", "--resume", cwd=tmp_path)

    assert code == 0, err
    assert "Traceback" not in err and "Failed to restore" not in err and "interrupted" not in err
    meta = json.loads((tmp_path / "st" / "z" / "study.json").read_text())
    assert meta["status"] == "finished" and meta["trial_counts"]["completed"] >= 1
    table = pd.read_csv(tmp_path / "st" / "z" / "trials.csv").set_index("number")
    params = table.filter(like="param.")
    assert (params == params.loc[0]).all(axis=1).sum() == 1  # trial 0, the recipe: once


def test_a_folder_without_study_json_sends_neither_run_to_the_other(ray_local, tmp_path):
    request = toy_request(tmp_path, "lost", (0.8,), trials=2)
    study_dir = Path(run_study(request, trainable=toy, progress=False).study_dir)
    (study_dir / "study.json").unlink()

    for resume in (False, True):
        again = dataclasses.replace(request, resume=resume)
        with pytest.raises(UserError) as error:
            run_study(again, trainable=toy, progress=False)
        line = assert_one_line_error(error, str(study_dir), "holds no study.json")
        assert "--resume" not in line and "without --resume" not in line


def test_a_run_whose_config_lost_its_model_names_the_config(tmp_path):
    run = tmp_path / "run"
    done = run_cli("train", "synthetic", "--preset", "smoke", "--out", str(run))
    assert done.returncode == 0, done.stderr
    config = json.loads((run / "config.json").read_text())
    del config["config"]["model"]
    (run / "config.json").write_text(json.dumps(config))

    done = run_cli("certify", str(run), "--limit", "4")

    assert done.returncode == 2
    assert_one_line_error(done.stderr, f"{run}/config.json lacks model")


def test_report_on_a_file_says_it_is_a_file(tmp_path):
    a_file = tmp_path / "study.json"
    a_file.write_text("{}")
    done = run_cli("report", str(a_file))
    assert done.returncode == 2
    assert_one_line_error(done.stderr, f"{a_file} is a file; give the study's folder")


def test_a_ramp_longer_than_the_run_is_a_warning_line():
    ramped = TrainConfig(dataset="mnist", epochs=12, warmup_epochs=1, ramp_epochs=6)
    assert ramped.ramp_warning() is None
    assert ramped.replace(epochs=7).ramp_warning() is None  # the ramp ends at the last epoch
    line = ramped.replace(epochs=5).ramp_warning()
    assert line.startswith("warning: warmup_epochs + ramp_epochs (1 + 6) exceed epochs (5)")
    assert ramped.replace(epochs=5, method="standard").ramp_warning() is None


def test_raycert_train_prints_the_ramp_warning(tmp_path):
    out = str(tmp_path / "r")
    done = run_cli("train", "synthetic", "--preset", "smoke", "--epochs", "1", "--out", out)
    assert done.returncode == 0, done.stderr
    assert "warning: warmup_epochs + ramp_epochs (1 + 1) exceed epochs (1)" in done.stderr
