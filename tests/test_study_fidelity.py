"""Multi-fidelity search over the whole run's length: short runs keep the schedule's shape, the
promotion rule respects the accuracy target, and the rung state lives in the Optuna journal
(real Ray, a real journal, and a SIGKILL of the driver mid-rung)."""

from __future__ import annotations

import random
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

from raycert.study.fidelity import (
    PROMOTED_FROM,
    RungRun,
    accuracy_margin,
    next_promotion,
    pareto_ranks,
    promotion_order,
)
from raycert.study.run import run_study
from raycert.study.spec import PRESETS_DIR
from raycert.training.config import TrainConfig
from raycert.training.schedule import ramp_steps, scheduled_eps, shortened

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _run(number: int, clean_acc: float, acr: float, fidelity: float = 0.25) -> RungRun:
    return RungRun(number, fidelity, clean_acc, acr, {"kappa": number / 100})


def test_a_short_run_keeps_the_schedules_shape():
    full = TrainConfig(dataset="mnist", epochs=12, warmup_epochs=1, ramp_epochs=6, max_eps=0.4)
    short = shortened(full, 1 / 3)
    assert (short.epochs, short.warmup_epochs, short.ramp_epochs) == (4, 1 / 3, 2.0)
    for cfg, steps in ((full, 100), (short, 100)):
        start, end = ramp_steps(steps, cfg)
        total = cfg.epochs * steps
        assert (start / total, end / total) == pytest.approx((1 / 12, 7 / 12), abs=0.01)
        assert scheduled_eps(start, steps, cfg) == 0 < scheduled_eps(start + 1, steps, cfg)
        assert scheduled_eps(end - 1, steps, cfg) < 0.4 == scheduled_eps(end, steps, cfg)
    assert shortened(full, 1.0) is full
    with pytest.raises(ValueError, match="fidelity"):
        shortened(full, 0)


def test_pareto_ranks_peel_fronts():
    points = [(0.9, 0.1), (0.8, 0.3), (0.85, 0.05), (0.7, 0.2), (0.9, 0.1)]
    assert pareto_ranks(points) == [0, 0, 1, 1, 0]


def test_an_infeasible_run_is_never_promoted_over_a_feasible_one():
    rng = random.Random(0)
    for _ in range(200):
        runs = [_run(i, rng.uniform(0.6, 1.0), rng.uniform(0, 1)) for i in range(rng.randint(1, 9))]
        order = promotion_order(runs, min_target=0.8, margin=0.02)
        meets = [r.clean_acc >= 0.78 for r in order]
        assert meets == sorted(meets, reverse=True), "a run below the target ranked first"
        meeting = [r for r in runs if r.clean_acc >= 0.78]
        ranks = pareto_ranks([(r.clean_acc, r.acr) for r in meeting])
        front = [r for r, rank in zip(meeting, ranks, strict=True) if rank == 0]
        assert order[0] in front or not meeting


def test_a_rung_promotes_its_best_third_once_each_and_the_highest_rung_first():
    rungs, eta = (0.25, 0.5, 1.0), 3
    runs = [_run(0, 0.95, 0.2), _run(1, 0.70, 0.9), _run(2, 0.90, 0.5)]
    assert next_promotion(runs[:2], set(), rungs, eta, 0.8, 0.0) is None  # fewer than eta
    run, fidelity = next_promotion(runs, set(), rungs, eta, 0.8, 0.0)
    assert (run.number, fidelity) == (2, 0.5), "the feasible run with the most ACR goes on"
    assert next_promotion(runs, {2}, rungs, eta, 0.8, 0.0) is None
    higher = [_run(10 + i, 0.9, 0.1 * i, fidelity=0.5) for i in range(3)]
    run, fidelity = next_promotion([*runs, *higher], {2}, rungs, eta, 0.8, 0.0)
    assert (run.number, fidelity) == (12, 1.0)


def test_the_accuracy_margin_is_two_standard_errors():
    assert accuracy_margin(0.95, 1000) == pytest.approx(2 * (0.95 * 0.05 / 1000) ** 0.5)
    assert accuracy_margin(0.95, 10_000) < accuracy_margin(0.95, 1000)


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
