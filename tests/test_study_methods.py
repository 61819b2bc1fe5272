"""A study of every training method (``--method all``) through real Ray Tune, real Optuna
journal and the real trainer, on the synthetic smoke preset: each trial draws its method and
carries exactly that method's knobs, each method's recipe is a start, the trials table, the
results, the report and the CLI's chosen-model lines name the method, and ``--resume`` extends
the study from the pickled define-by-run space, racing the methods on the front."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from studyruns import journal_study

from raycert.cli.output import print_chosen
from raycert.report.page import build_report
from raycert.report.reading import load_study
from raycert.spec import STUDY_METHODS
from raycert.study.policy.plan import plan
from raycert.study.policy.racing import MethodRun, next_method
from raycert.study.tune.run import StudyRequest, run_study
from raycert.studyfolder import StudyDir, read_trials

TRIALS = 7  # the five recipes, then two drawn by TPE
MORE = 9  # after --resume


@pytest.fixture(scope="module")
def all_methods(ray_local, tmp_path_factory: pytest.TempPathFactory):
    """The study, run to ``TRIALS`` trials: its request, its spec (as planned) and its folder."""
    storage = tmp_path_factory.mktemp("methods") / "runs"
    request = StudyRequest(
        dataset="synthetic",
        targets=(0.6, 0.9),
        method="all",
        preset="smoke",
        trials=TRIALS,
        concurrency=2,
        gpus_per_trial=0,
        storage=str(storage),
    )
    result = run_study(request, progress=False)
    assert result.status == "finished"
    spec, _ = plan(request)
    return request, spec, Path(result.study_dir), result


def carried(spec, params: dict) -> set[str]:
    """The knobs a trial with ``params`` should carry: its method and that method's."""
    method = params["method"]
    adaptive = params.get("adaptive", spec.adaptive_default(method))
    return {"method", *(p.name for p in spec.knobs(method, adaptive))}


def test_each_trial_carries_exactly_its_methods_knobs_and_trains_with_them(all_methods):
    _, spec, study_dir, result = all_methods
    assert result.meta.name == "synthetic-all-smoke"
    trials = journal_study(study_dir, result.meta.name).trials
    assert len(trials) == TRIALS
    for trial in trials:
        assert set(trial.params) == carried(spec, trial.params), trial.params
    table = read_trials(StudyDir.at(study_dir), result.meta.targets)
    assert len(table) == TRIALS and set(table["status"]) == {"completed"}
    by_id = {t.user_attrs["tune_trial_id"]: t.params for t in trials}
    for row in table.to_dict("records"):
        params = {k[6:]: v for k, v in row.items() if k.startswith("param.") and not _empty(v)}
        assert params == by_id[row["trial_id"]]  # empty where the method lacks the knob
        if "attack_steps" in params:  # an int where some trials lack it, not 2.0
            assert type(params["attack_steps"]) is int
        run = json.loads((study_dir / row["run_dir"] / "config.json").read_text())
        config = run["config"]
        assert {k: config[k] for k in params} == params  # what the trainer read
    columns = [c for c in table.columns if c.startswith("param.")]
    assert columns[0] == "param.method" and table[columns].isna().any().any()


def test_every_methods_recipe_is_a_start(all_methods):
    _, spec, study_dir, result = all_methods
    trials = journal_study(study_dir, result.meta.name).trials
    recipes = spec.known_points[: len(STUDY_METHODS)]
    assert [r["method"] for r in recipes] == list(STUDY_METHODS)  # the preset's (acert) first
    assert [t.params for t in trials[: len(recipes)]] == recipes
    assert trials[3].params["sabr_lambda"] == spec.recipes["sabr"]["sabr_lambda"]


def test_results_report_and_cli_name_the_method_of_each_winner(all_methods, tmp_path, capsys):
    _, _, study_dir, result = all_methods
    entries = json.loads((study_dir / "results.json").read_text())["targets"]
    met = [e for e in entries if e["met"]]
    assert met, "a smoke study of the synthetic data meets its lowest target"
    table = pd.read_parquet(study_dir / "trials.parquet").set_index("trial_id")
    for entry in met:
        row = table.loc[entry["trial_id"]]
        assert entry["params"]["method"] == row["param.method"]
        assert all(f"param.{k}" in row and not _empty(row[f"param.{k}"]) for k in entry["params"])
    study = load_study(study_dir)
    methods = sorted(set(table["param.method"]))
    assert study.methods() == methods and set(study.fronts()) == set(methods)
    page = build_report([study_dir], tmp_path / "all.html").read_text()
    targets = re.search(r'<table class="targets">.*?</table>', page, re.S).group(0)
    for entry in met:
        row = re.search(rf'data-target="{entry["target"]:g}">(.*?)</tr>', targets, re.S).group(1)
        assert f'<td class="method">{entry["params"]["method"]}</td>' in row
        assert f"met by {entry['params']['method']} ({entry['trial_id']})" in page
    for method in methods:  # each method's own knobs in its search-space figure
        if (table["param.method"] == method).sum() >= 2:
            assert f'data-figure="parallel-0-{method}"' in page
    capsys.readouterr()
    for chosen in result.targets:
        print_chosen(chosen, result.meta.acr_cap, result.meta.method)
    out = capsys.readouterr().out
    for chosen in result.targets:
        if chosen.met:
            line = f"clean accuracy >= {chosen.target:g}: {chosen.params['method']}, trial"
            assert f"{line} {chosen.number}" in out


def test_resume_continues_the_study_from_its_pickled_space(all_methods):
    request, spec, study_dir, result = all_methods
    before = journal_study(study_dir, result.meta.name).trials
    # By its name alone: the study keeps the methods and targets it started with.
    again = dict(method=None, targets=(), name=result.meta.name, trials=MORE, resume=True)
    more = run_study(dataclasses.replace(request, **again), progress=False)
    assert more.status == "finished" and more.meta.trials_requested == MORE
    assert (more.meta.method, more.meta.targets) == (result.meta.method, result.meta.targets)
    trials = journal_study(study_dir, result.meta.name).trials
    assert len(trials) == MORE
    assert [t.params for t in trials[:TRIALS]] == [t.params for t in before]
    for trial in trials[TRIALS:]:  # drawn by the restored searcher
        assert set(trial.params) == carried(spec, trial.params), trial.params
    # The first new one, asked with every trial before it complete, races the front's methods.
    runs = [
        MethodRun(
            t.params["method"],
            t.user_attrs["fidelity"],
            t.user_attrs["clean_acc"],
            t.user_attrs["acr"],
        )
        for t in before
        if "acr" in t.user_attrs
    ]
    method = next_method(spec.study_methods, runs, [t.params["method"] for t in before])
    assert method is not None
    assert trials[TRIALS].system_attrs["fixed_params"] == {"method": method}
    assert trials[TRIALS].params["method"] == method
    table = pd.read_parquet(study_dir / "trials.parquet")
    assert len(table) == MORE and sorted(table["number"]) == list(range(MORE))


def _empty(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)
