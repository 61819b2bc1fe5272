"""Studies fail loudly and early: a user's mistake inside a trial stops the study at once (no
retry) and ``--resume`` continues it once fixed; a study where no trial completed exits 1 with
the first failure's message; partial failures are counted and explained; a killed worker is
still retried. Real Ray Tune and Optuna on the session's local Ray cluster; toy trainables
stand in for the trainer where only failure handling is under test."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import sys
from pathlib import Path

import pandas as pd
import pytest
import ray.cloudpickle
from ray import tune
from studyruns import toy_request
from typer.testing import CliRunner

import raycert.study.tune.run as study_run
from raycert.cli import app
from raycert.errors import UserError
from raycert.study.tune.run import run_study

# Trainables defined here go to Ray workers by value: they cannot import this test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

MISSING = "mnist not found: /nowhere/MNIST/raw/train-images-idx3-ubyte; pass --data-dir"


def attempts(folder: Path) -> list[str]:
    """Trial ids of every attempt the trainables below logged, one file per attempt."""
    return sorted(p.name.split(".")[0] for p in folder.glob("*.attempt"))


def log_attempt(folder: str) -> str:
    trial_id = tune.get_context().get_trial_id()
    index = len(list(Path(folder).glob(f"{trial_id}.*.attempt")))
    Path(folder, f"{trial_id}.{index}.attempt").write_text("")
    return trial_id


def needs_data(config: dict, folder: str, fixed: str) -> None:
    """A trial that raises the UserError the trainer raises for missing data, until ``fixed``
    exists; then it reports like ``test_study.toy``."""
    log_attempt(folder)
    if not Path(fixed).exists():
        raise UserError(MISSING)
    x = config["kappa"]
    tune.report({"clean_acc": 0.9 - 0.2 * x, "acr": x, "final": True, "epoch": 1})


def crashes(config: dict) -> None:
    raise RuntimeError("a bug in the trainer")


def crashes_below(config: dict) -> None:
    """x < 0.5 crashes (a bug, not the user's mistake); the others complete."""
    x = config["kappa"]
    if x < 0.5:
        raise RuntimeError(f"a crash at x={x:.3f}")
    tune.report({"clean_acc": 0.9 - 0.2 * x, "acr": x, "final": True, "epoch": 1})


def worker_killed_once(config: dict, folder: str) -> None:
    """The first attempt of each trial kills its own worker process (a transient failure)."""
    trial_id = log_attempt(folder)
    if len(list(Path(folder).glob(f"{trial_id}.*.attempt"))) == 1:
        os._exit(1)
    x = config["kappa"]
    tune.report({"clean_acc": 0.9 - 0.2 * x, "acr": x, "final": True, "epoch": 1})


def test_a_user_error_in_a_trial_stops_the_study_without_retry_and_resume_continues(
    ray_local, tmp_path
):
    folder, fixed = tmp_path / "attempts", tmp_path / "data-fixed"
    folder.mkdir()
    trainable = functools.partial(needs_data, folder=str(folder), fixed=str(fixed))
    request = toy_request(tmp_path, "stops", (0.8,), trials=6)
    with pytest.raises(UserError) as stopped:
        run_study(request, trainable=trainable, progress=False)
    message = str(stopped.value)
    assert message.startswith(MISSING) and "--resume" in message and "\n" not in message
    tried = attempts(folder)
    assert tried and len(tried) == len(set(tried)), "a trial that raised a UserError was retried"
    assert len(tried) <= 2  # the study stopped at once: only the trials already running ran
    study_dir = tmp_path / "runs" / "stops"
    meta = json.loads((study_dir / "study.json").read_text())
    assert meta["status"] == "stopped" and meta["error"]["message"] == MISSING
    assert not (tmp_path / "runs" / ".stops.lock").exists()

    fixed.write_text("")  # the user fixes the problem, then resumes
    resumed = dataclasses.replace(request, resume=True)
    result = run_study(resumed, trainable=trainable, progress=False)
    table = pd.read_parquet(study_dir / "trials.parquet")
    assert result.status == "finished" and len(table) == 6
    assert set(table["status"]) == {"completed"}, table[["status", "error"]]
    assert result.targets[0].met


def test_a_killed_worker_is_still_retried(ray_local, tmp_path):
    folder = tmp_path / "attempts"
    folder.mkdir()
    trainable = functools.partial(worker_killed_once, folder=str(folder))
    result = run_study(
        toy_request(tmp_path, "transient", (0.8,), trials=2), trainable=trainable, progress=False
    )
    table = pd.read_parquet(Path(result.study_dir) / "trials.parquet")
    assert set(table["status"]) == {"completed"} and len(table) == 2
    tried = attempts(folder)
    assert sorted(set(tried)) == sorted(table["trial_id"])
    assert all(tried.count(t) == 2 for t in set(tried))  # killed once, retried once


def run_cli_with(monkeypatch, trainable, *args: str):
    """``raycert study`` in this process, on the session's Ray cluster, with ``trainable`` in
    place of the trainer (everything else, from the CLI's output to the study folder, is real)."""
    real = study_run.run_study
    monkeypatch.setattr(study_run, "run_study", functools.partial(real, trainable=trainable))
    return CliRunner().invoke(app, ["study", *args], env={"COLUMNS": "200"})


def test_a_study_where_no_trial_completed_exits_1_with_the_first_error(
    ray_local, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # the report (reports/nothing.html) stays out of the checkout
    request = toy_request(tmp_path, "nothing", (0.8,), trials=2)
    args = ["synthetic", "--preset", "smoke", "--trials", "2", "--min-acc", "0.8"]
    args += ["--storage", request.storage, "--name", "nothing", "--spec", request.spec]
    result = run_cli_with(monkeypatch, crashes, *args, "--gpus-per-trial", "0")
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "no trial of" in errors[0]
    assert "2 failed" in errors[0] and "RuntimeError: a bug in the trainer" in errors[0]
    meta = json.loads((Path(request.storage) / "nothing" / "study.json").read_text())
    assert meta["trial_counts"]["error"] == 2
    assert [e["message"] for e in meta["errors"]] == ["RuntimeError: a bug in the trainer"] * 2


def test_partial_failures_exit_0_and_say_how_many_and_why(ray_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the report (reports/partial.html) stays out of the checkout
    request = toy_request(tmp_path, "partial", (0.8,), trials=8)
    args = ["synthetic", "--preset", "smoke", "--trials", "8", "--min-acc", "0.8"]
    args += ["--storage", request.storage, "--name", "partial", "--spec", request.spec]
    result = run_cli_with(monkeypatch, crashes_below, *args, "--gpus-per-trial", "0")
    assert result.exit_code == 0, result.output
    table = pd.read_csv(Path(request.storage) / "partial" / "trials.csv")
    failed = table[table["status"] == "error"].sort_values("number")
    assert 0 < len(failed) < 8, "seed 0 must sample both kinds"
    summary = next(line for line in result.stdout.splitlines() if line.startswith("trials: "))
    assert f"{len(failed)} failed" in summary and f"{8 - len(failed)} completed" in summary
    first = failed.iloc[0]
    assert f"(trial {first['number']}): RuntimeError: a crash at x=" in summary
    assert first["error"].startswith("RuntimeError: a crash at x=")
