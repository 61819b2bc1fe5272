"""Multi-fidelity search over the whole run's length, with real Ray and a real journal: a study
starts short and re-runs the best longer, and the rung state lives in the Optuna journal through
a SIGKILL of the driver mid-rung (the rules themselves: ``test_study_policy``)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest
import ray.cloudpickle
from ray import tune
from studyruns import (
    finished_rows,
    journal_study,
    kill_study_when,
    run_study_cli,
    study_cli,
    toy_request,
    toy_spec,
)

from raycert.spec import PRESETS_DIR
from raycert.study.policy.fidelity import RungRun, accuracy_margin, promotion_order
from raycert.study.tune.run import run_study
from raycert.study.tune.searcher import PROMOTED_FROM

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def fidelity_toy(config: dict) -> None:
    """acc = 0.9 - 0.4 x (the target 0.8 holds for x <= 0.25), acr = x, both a little lower
    for a shorter run; one report per epoch of a 4-epoch run shortened by ``fidelity``."""
    x, fidelity = config["kappa"], config["fidelity"]
    epochs = max(1, round(4 * fidelity))
    for epoch in range(1, epochs + 1):
        metrics = {"clean_acc": 0.9 - 0.4 * x - 0.05 * (1 - fidelity), "acr": x * (0.5 + fidelity)}
        tune.report({**metrics, "epoch": epoch, "epochs": epochs, "final": epoch == epochs})


def _check_promotions(study) -> list:
    """Every promoted trial re-runs its source's params one rung up; no source twice; each
    source was among its rung's best third, by the rule, when the promotion was made."""
    trials = study.get_trials(deepcopy=False)
    by_number = {t.number: t for t in trials}
    promoted = [t for t in trials if PROMOTED_FROM in t.user_attrs]
    sources = [t.user_attrs[PROMOTED_FROM] for t in promoted]
    assert len(sources) == len(set(sources)), "a run was promoted twice"
    for trial in promoted:
        source = by_number[trial.user_attrs[PROMOTED_FROM]]
        assert trial.params == source.params
        assert trial.user_attrs["fidelity"] > source.user_attrs["fidelity"]
        rung = [
            RungRun(
                t.number,
                t.user_attrs["fidelity"],
                t.user_attrs["clean_acc"],
                t.user_attrs["acr"],
                {},
            )
            for t in trials
            if t.datetime_complete is not None
            and t.datetime_complete <= trial.datetime_start
            and "clean_acc" in t.user_attrs
            and t.user_attrs["fidelity"] == source.user_attrs["fidelity"]
        ]
        best = promotion_order(rung, 0.8, accuracy_margin(0.8, 128))[: len(rung) // 3]
        assert source.number in [r.number for r in best]
    return promoted


def test_a_multi_fidelity_study_starts_short_and_re_runs_the_best_longer(ray_local, tmp_path):
    study = "[study.smoke]\nrungs = [0.25, 1.0]\neta = 3\n"
    request = toy_request(tmp_path, "fidelity", (0.8,), trials=10, spec=toy_spec(tmp_path, study))
    result = run_study(request, trainable=fidelity_toy, progress=False)
    assert result.meta.rungs == [0.25, 1.0]
    journal = journal_study(tmp_path / "runs" / "fidelity", "fidelity")
    trials = sorted(journal.get_trials(deepcopy=False), key=lambda t: t.number)
    assert trials[0].user_attrs["fidelity"] == 1.0 and trials[0].params == {"kappa": 0.0}
    assert [t.user_attrs["fidelity"] for t in trials[1:4]] == [0.25] * 3
    promoted = _check_promotions(journal)
    assert len(promoted) >= 2
    table = pd.read_csv(tmp_path / "runs" / "fidelity" / "trials.csv")
    assert sorted(table["param.fidelity"].unique()) == [0.25, 1.0]
    assert result.targets[0].met


@pytest.mark.slow
def test_after_a_sigkill_mid_rung_resume_keeps_the_rungs(tmp_path):
    """The driver is killed while rung-0 runs are under way: on resume no finished trial is lost
    or trained again, and promotions go on from the journal's rung state without repeats."""
    text = (PRESETS_DIR / "synthetic.toml").read_text()
    spec = tmp_path / "rungs.toml"
    spec.write_text(text.replace("[study.smoke]\n", "[study.smoke]\nrungs = [0.5, 1.0]\neta = 2\n"))
    args = ["synthetic", "--preset", "smoke", "--trials", "9", "--concurrency", "2"]
    args += ["--storage", str(tmp_path), "--name", "rungs", "--min-acc", "0.5", "--spec", str(spec)]
    process = study_cli(*args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    study_dir = tmp_path / "rungs"
    kill_study_when(process, lambda: finished_rows(study_dir) >= 4)
    before = pd.read_csv(study_dir / "trials.csv").set_index("trial_id")
    assert 4 <= len(before) < 9
    promoted_before = _sources(journal_study(study_dir, "rungs"))

    code, out, err = run_study_cli(*args, "--resume", cwd=tmp_path)
    assert code == 0, err
    after = pd.read_csv(study_dir / "trials.csv").set_index("trial_id")
    assert len(after) >= 9 and after["number"].is_unique  # see with_lost_rows
    kept = after.loc[before.index]
    assert list(kept["train_seconds"]) == list(before["train_seconds"]), "trained again"
    journal = journal_study(study_dir, "rungs")
    promoted_after = _sources(journal)
    assert promoted_before <= promoted_after and len(promoted_after) >= 2
    for trial in journal.get_trials(deepcopy=False):
        if PROMOTED_FROM in trial.user_attrs:
            source = journal.trials[trial.user_attrs[PROMOTED_FROM]]
            assert trial.params == source.params and trial.user_attrs["fidelity"] == 1.0


def _sources(study) -> set[int]:
    sources = [
        t.user_attrs[PROMOTED_FROM]
        for t in study.get_trials(deepcopy=False)
        if PROMOTED_FROM in t.user_attrs
    ]
    assert len(sources) == len(set(sources)), "a run was promoted twice"
    return set(sources)
