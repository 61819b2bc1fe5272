"""Resuming studies as schedulers and users do it: after a SIGKILL, a resume loses, repeats and
trains again no finished trial; ``--resume --trials N`` extends a study (SIGTERM and Ctrl-C:
``test_study_signals``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import optuna
import pandas as pd
import pytest
from studyruns import (
    journal_study,
    toy,
    toy_request,
)

from raycert.errors import UserError
from raycert.study.tune.run import run_study


def test_after_a_sigkill_resume_loses_repeats_and_trains_again_no_finished_trial(killed_study):
    """The driver is killed right after trials finish: Tune may not have saved their end yet
    and restarts them on resume; each must report its run as it was, not train again (a run
    trained again has another ``train_seconds``, a wall-clock measure)."""
    study_dir, before = killed_study.study_dir, killed_study.before
    assert killed_study.status_left == "running"
    assert 2 <= len(before) < 6

    code, out, err = killed_study.code, killed_study.out, killed_study.err
    assert code == 0, err
    after = pd.read_csv(study_dir / "trials.csv").set_index("trial_id")
    assert len(after) >= 6 and set(after["status"]) == {"completed"}  # see with_lost_rows
    assert after.index.is_unique and after["number"].is_unique
    kept = after.loc[before.index]
    assert list(kept["train_seconds"]) == list(before["train_seconds"]), "trained again"
    assert list(kept["acr"]) == list(before["acr"])
    for trial_id, row in kept.iterrows():  # the checkpoint is the finished run's
        lines = (study_dir / row["run_dir"] / "metrics.jsonl").read_text().splitlines()
        assert json.loads(lines[-1])["train_seconds"] == before.loc[trial_id, "train_seconds"]
    meta = json.loads((study_dir / "study.json").read_text())
    assert meta["status"] == "finished" and meta["trial_counts"]["completed"] == len(after)
    complete = journal_study(study_dir, "killed").get_trials(
        states=(optuna.trial.TrialState.COMPLETE,)
    )
    assert sorted(t.user_attrs["tune_trial_id"] for t in complete) == sorted(after.index)
    report = killed_study.storage / "reports" / "killed.html"  # every finished study has one
    assert f"report: {report.relative_to(killed_study.storage)}" in out
    assert report.stat().st_size > 100_000


def test_resume_with_more_trials_extends_a_finished_study(ray_local, tmp_path):
    request = toy_request(tmp_path, "grow", (0.8,), trials=4)
    first = run_study(request, trainable=toy, progress=False)
    study_dir = Path(first.study_dir)
    before = pd.read_parquet(study_dir / "trials.parquet")
    assert first.status == "finished" and len(before) == 4

    with pytest.raises(UserError, match="asked for 4 trials"):
        run_study(dataclasses.replace(request, trials=3, resume=True), progress=False)
    again = run_study(dataclasses.replace(request, trials=None, resume=True), progress=False)
    assert again.status == "finished" and again.meta.trials_requested == 4  # nothing to do

    more = run_study(
        dataclasses.replace(request, trials=7, resume=True), trainable=toy, progress=False
    )
    after = pd.read_parquet(study_dir / "trials.parquet")
    assert more.status == "finished" and len(after) == 7 and after["trial_id"].is_unique
    assert sorted(after["number"]) == list(range(7))
    kept = after.set_index("trial_id").loc[before["trial_id"]]
    assert list(kept["acr"]) == list(before["acr"])  # the first four, not rerun
    assert len(journal_study(study_dir, "grow").trials) == 7  # one Optuna study, extended
    meta = json.loads((study_dir / "study.json").read_text())
    assert meta["trials_requested"] == 7 and meta["trial_counts"]["completed"] == 7
    best = after[after["clean_acc"] >= 0.8].sort_values("acr").iloc[-1]
    assert more.targets[0].trial_id == best["trial_id"]  # chosen again among all seven
