"""A study under a wall-clock budget (``--budget``), with the real trainer on synthetic data:
it ends on time with its results, tries the preset's recipe first, polishes its front once no
whole trial fits, and counts the time spent before when it is resumed with a larger budget."""

from __future__ import annotations

import dataclasses
import functools
import json
import pickle
import time
from pathlib import Path

import pandas as pd
import pytest
from studyruns import journal_study, slow_toy, smoke_request, toy_request, toy_spec

from raycert.data import dataset_info
from raycert.spec import load_study_spec
from raycert.study.policy.budget import Clock
from raycert.study.tune.run import StudyRequest, run_study
from raycert.study.tune.running import RunningStudy, current, lend
from raycert.study.tune.stopper import BudgetStopper
from raycert.studyfolder import StudyDir
from raycert.training.rundir import load_run

BUDGET_S = 40.0


@pytest.fixture(scope="module")
def budgeted(ray_local, tmp_path_factory) -> tuple[StudyRequest, Path, float]:
    """A 40-second study of the synthetic smoke preset (its own search space and polish, no
    trial count): the request, its study folder and the wall time it took."""
    storage = tmp_path_factory.mktemp("runs")
    request = smoke_request(storage, "budget", trials=None, budget_s=BUDGET_S)
    tic = time.monotonic()
    result = run_study(request, progress=False)
    elapsed = time.monotonic() - tic
    assert result.status == "finished"
    return request, Path(result.study_dir), elapsed


def test_a_budgeted_study_ends_on_time_with_certified_results(budgeted):
    _, study_dir, elapsed = budgeted
    assert elapsed <= 1.1 * BUDGET_S, f"a {BUDGET_S:g} s study took {elapsed:.1f} s"
    meta = json.loads((study_dir / "study.json").read_text())
    assert meta["status"] == "finished" and meta["budget_s"] == BUDGET_S
    assert 0.5 * BUDGET_S < meta["spent_s"] <= elapsed + 0.5
    table = pd.read_csv(study_dir / "trials.csv")
    assert (table["status"] == "completed").sum() >= 3, "the budget held several trials"
    (result,) = json.loads((study_dir / "results.json").read_text())["targets"]
    assert result["met"] and result["test"]["clean_acc"] > 0.5
    # Certified in shards, one per trial slot, joined again: every test image once, in order.
    radii = pd.read_csv(study_dir / result["run_dir"] / "test_radii.csv")
    assert result["test"]["n"] == dataset_info("synthetic").test_size == len(radii)
    assert list(radii["index"]) == list(range(len(radii)))
    assert result["test"]["acr"] == pytest.approx(radii["radius"].mean())


def test_the_first_trial_is_the_presets_recipe(budgeted):
    _, study_dir, _ = budgeted
    recipe = load_study_spec("synthetic", "smoke").recipe
    assert set(recipe) == {"max_eps", "kappa", "lr"}
    first = journal_study(study_dir, "budget").trials[0]
    assert first.number == 0 and first.params == pytest.approx(recipe)


def test_each_trials_optuna_state_matches_its_table_status(budgeted):
    # The budget-cut (pruned) case is forced in the slow-toy test below.
    _, study_dir, _ = budgeted
    table = pd.read_csv(study_dir / "trials.csv")
    states = {t.number: t.state.name for t in journal_study(study_dir, "budget").trials}
    expected = {"completed": "COMPLETE", "pruned": "PRUNED"}
    rows = zip(table["number"], table["status"], strict=True)
    assert all(states[number] == expected[status] for number, status in rows)


def test_the_budgets_end_polishes_front_runs_once_each_from_their_models(budgeted):
    _, study_dir, _ = budgeted
    table = pd.read_csv(study_dir / "trials.csv").set_index("number")
    polish = table[table["polished_from"].notna()]
    assert len(polish) >= 1 and (polish["status"] == "completed").all()
    parents = polish["polished_from"].astype(int)
    assert parents.is_unique and (parents < polish.index).all()
    whole = table.loc[parents]
    assert (whole["status"] == "completed").all() and whole["polished_from"].isna().all()
    assert polish.index.min() > table[table["polished_from"].isna()].index.max()
    journal = {t.number: t for t in journal_study(study_dir, "budget").trials}
    for number, parent in parents.items():
        assert journal[number].user_attrs["polished_from"] == parent
        assert journal[number].params == journal[parent].params
        model, cfg = load_run(study_dir / polish.loc[number, "run_dir"])
        parent_model, parent_cfg = load_run(study_dir / table.loc[parent, "run_dir"])
        assert (cfg.epochs, cfg.warmup_epochs, cfg.ramp_epochs, cfg.kappa) == (1, 0, 0, 0.5)
        assert cfg.max_eps == parent_cfg.max_eps and cfg.lr_schedule == "constant"
        moved = max(
            (a - b).abs().max().item()
            for a, b in zip(model.parameters(), parent_model.parameters(), strict=True)
        )
        assert moved < 1e-3, f"trial {number} did not start from trial {parent}'s model"
    meta = json.loads((study_dir / "study.json").read_text())
    assert meta["polish"] == {"kappa": 0.5, "lr": 1e-4}


def test_a_larger_budget_on_resume_counts_the_time_already_spent(budgeted):
    request, study_dir, _ = budgeted
    before = pd.read_csv(study_dir / "trials.csv")
    spent = json.loads((study_dir / "study.json").read_text())["spent_s"]

    same = run_study(dataclasses.replace(request, resume=True), progress=False)
    assert same.status == "finished" and same.meta.spent_s == spent  # nothing left to do

    tic = time.monotonic()
    more = dataclasses.replace(request, resume=True, budget_s=spent + 25.0)
    result = run_study(more, progress=False)
    elapsed = time.monotonic() - tic
    assert result.status == "finished" and elapsed <= 1.1 * 25.0 + 5.0
    after = pd.read_csv(study_dir / "trials.csv")
    assert len(after) > len(before) and after["number"].is_unique
    kept = after.set_index("trial_id").loc[before["trial_id"], "status"]
    assert list(kept) == list(before["status"]), "a finished trial changed on resume"
    assert result.meta.spent_s == pytest.approx(spent + elapsed, abs=2.0)


def test_trials_still_running_when_the_budget_ends_are_stopped_and_pruned(ray_local, tmp_path):
    request = toy_request(tmp_path, "cut", (0.8,), trials=None, budget_s=20.0)
    tic = time.monotonic()
    result = run_study(request, trainable=slow_toy, progress=False)
    elapsed = time.monotonic() - tic
    assert result.status == "finished" and elapsed <= 1.1 * 20.0
    table = pd.read_csv(Path(result.study_dir) / "trials.csv")
    pruned = table[table["status"] == "pruned"]
    assert len(pruned) >= 1 and (pruned["epoch"] < 60).all()  # cut short by the budget
    assert set(table["status"]) == {"completed", "pruned"}
    states = {t.number: t.state.name for t in journal_study(Path(result.study_dir), "cut").trials}
    expected = {"completed": "COMPLETE", "pruned": "PRUNED"}
    assert {states[n] for n in pruned["number"]} == {"PRUNED"}
    rows = zip(table["number"], table["status"], strict=True)
    assert all(states[number] == expected[status] for number, status in rows)
    assert result.targets[0].met


def test_a_budget_too_small_for_one_trial_waits_for_the_first_to_complete(ray_local, tmp_path):
    search = '[search.kappa]\ntype = "float"\nlow = 0.1\nhigh = 0.5\n'  # no recipe: 8 s each
    request = toy_request(
        tmp_path, "small", (0.8,), trials=None, budget_s=3.0, spec=toy_spec(tmp_path, search=search)
    )
    trainable = functools.partial(slow_toy, epochs=16)  # over twice the budget, 8 s
    result = run_study(request, trainable=trainable, progress=False)
    assert result.status == "finished" and result.meta.spent_s > 8.0
    table = pd.read_csv(Path(result.study_dir) / "trials.csv")
    assert (table["status"] == "completed").sum() >= 1 and result.targets[0].met


def test_the_stopper_reads_the_clock_of_the_study_lent_and_only_while_it_is_lent(tmp_path):
    """Tune's copies of the stopper find the driver's clock on the running study; the rules
    are the clock's own (``test_study_policy``)."""
    stopper = pickle.loads(pickle.dumps(BudgetStopper(epochs=12)))
    spent = Clock(100.0, time.monotonic() - 200.0, (0.5,), 1, runs=[(12, 60.0)])
    slow = {"epoch": 2, "time_total_s": 100.0}
    store = StudyDir(tmp_path, "lent")
    with lend(RunningStudy(store, "lent")):  # no clock: no budget
        assert not stopper("t", slow) and not stopper.stop_all()
    with lend(RunningStudy(store, "lent", spent)) as study:
        assert current() is study and stopper("t", slow) and stopper.stop_all()
        with pytest.raises(RuntimeError, match="already in progress"), lend(study):
            pass
    with pytest.raises(RuntimeError, match="no study is running"):
        stopper.stop_all()
