"""Studies survive failures: crashed, diverged and early-stopped trials are recorded and the
study goes on (a study killed with SIGKILL: ``test_study_resume``)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import ray.cloudpickle
from ray import tune
from studyruns import (
    journal_study,
    toy_request,
    toy_spec,
)

from raycert.study.tune.run import run_study

# Trainables defined here go to Ray workers by value: they cannot import this test module.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def flaky(config: dict) -> None:
    """x < 0.4 crashes every time, x > 0.7 diverges; the others complete (seed 0 samples all
    three kinds)."""
    x = config["kappa"]
    if x < 0.4:
        raise RuntimeError("a crash")
    metrics = {"clean_acc": 0.9 - 0.2 * x, "acr": x, "epoch": 1}
    if x > 0.7:
        tune.report({**metrics, "final": False, "diverged": True})
        return
    tune.report({**metrics, "final": True})


def test_crashed_and_diverged_trials_are_recorded_and_the_study_goes_on(ray_local, tmp_path):
    result = run_study(toy_request(tmp_path, "flaky", (0.8,)), trainable=flaky, progress=False)
    table = pd.read_parquet(Path(result.study_dir) / "trials.parquet")
    assert result.status == "finished" and len(table) == 10
    x = table["param.kappa"]
    expected = np.where(x < 0.4, "error", np.where(x > 0.7, "diverged", "completed"))
    assert list(table["status"]) == list(expected)
    assert {"error", "diverged", "completed"} <= set(table["status"])
    assert not table.loc[table["status"] != "completed", "pareto"].any()
    counts = result.meta.trial_counts
    assert counts == {s: int((table["status"] == s).sum()) for s in counts}
    states = {
        t.user_attrs["tune_trial_id"]: t.state
        for t in journal_study(Path(result.study_dir), "flaky").trials
    }
    optuna_state = {"error": "FAIL", "diverged": "PRUNED", "completed": "COMPLETE"}
    for trial_id, status in zip(table["trial_id"], table["status"], strict=True):
        assert states[trial_id].name == optuna_state[status]
    chosen = result.targets[0]
    assert chosen.met and table.set_index("trial_id").loc[chosen.trial_id, "status"] == "completed"


def test_real_trials_that_diverge_are_recorded_as_diverged(ray_local, tmp_path):
    search = (
        '[search.lr]\ntype = "log-float"\nlow = 1e29\nhigh = 1e30\n'
        '[search.optimizer]\ntype = "categorical"\nchoices = ["sgd"]\n'
        '[search.grad_clip]\ntype = "categorical"\nchoices = [0.0]\n'
    )
    spec = toy_spec(tmp_path, search=search)
    request = toy_request(tmp_path, "nan", (0.5,), trials=2, method="ibp", spec=spec)
    result = run_study(request, progress=False)
    table = pd.read_parquet(Path(result.study_dir) / "trials.parquet")
    assert result.status == "finished" and list(table["status"]) == ["diverged", "diverged"]
    assert (table["epoch"] == 0).all() and not table["pareto"].any()
    target = result.targets[0]
    assert not target.met and target.closest is None and target.run_dir is None
    states = {t.state.name for t in journal_study(Path(result.study_dir), "nan").trials}
    assert states == {"PRUNED"}


def epochs(config: dict) -> None:
    """Four epochs; ACR grows with x and epochs, accuracy falls with x (feasible iff x <= 0.5)."""
    x = config["kappa"]
    for epoch in range(1, 5):
        acc, acr = 0.9 - 0.2 * x, x * epoch / 4
        score = acr if acc >= 0.8 else acc - 0.8
        row = {"clean_acc": acc, "acr": acr, "epoch": epoch, "final": epoch == 4}
        tune.report({**row, "sched_score": score})


def test_asha_stops_trials_early_as_pruned(ray_local, tmp_path):
    spec = toy_spec(tmp_path, study="[study.smoke]\nasha = true\ngrace_period = 2\n")
    text = Path(spec).read_text()
    Path(spec).write_text(text.replace("\nepochs = 2\n", "\nepochs = 4\n", 1))  # ramp ends at 2
    request = toy_request(tmp_path, "asha", (0.8,), trials=8, spec=spec)
    result = run_study(request, trainable=epochs, progress=False)
    table = pd.read_parquet(Path(result.study_dir) / "trials.parquet")
    assert result.meta.asha and len(table) == 8
    pruned = table[table["status"] == "pruned"]
    assert len(pruned) > 0 and (pruned["epoch"] < 4).all()
    assert (table.loc[table["status"] == "completed", "epoch"] == 4).all()
    states = {
        t.user_attrs["tune_trial_id"]: t.state.name
        for t in journal_study(Path(result.study_dir), "asha").trials
    }
    assert {states[t] for t in pruned["trial_id"]} == {"PRUNED"}
