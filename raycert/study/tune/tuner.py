"""The study's Ray Tune ``Tuner``: a new one, with the constrained searcher, the trials table's
writer, the stop on a user's mistake and the budget's stopper, or the saved one restored on
``--resume`` once its state is repaired, its lost Optuna trials failed and its search state
pointed at the folder where it now lies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from raycert.data import dataset_info
from raycert.errors import UserError
from raycert.spec import StudySpec
from raycert.study.policy.fidelity import accuracy_margin
from raycert.study.policy.polish import polished
from raycert.study.policy.search import SearchPlan
from raycert.study.tune import cluster, failures, outcome
from raycert.study.tune.driver import Driver
from raycert.study.tune.searcher import ConstrainedOptunaSearch
from raycert.study.tune.space import MethodSpace
from raycert.study.tune.state import point_search_state, repair_tune_state, saved_trials
from raycert.study.tune.stopper import BudgetStopper
from raycert.study.tune.trial import TrialSetup, train_trial
from raycert.study.tune.trials import TrialsWriter
from raycert.studyfolder import (
    TUNE_DIR,
    StudyDir,
    StudyMeta,
    fail_stale_trials,
    journal_storage,
    read_trials,
)


def build_tuner(
    driver: Driver, res: cluster.Resources, trainable: Callable | None, progress: bool
) -> tune.Tuner:
    """A new Tuner, or the interrupted one restored when resuming and Tune saved trials (with
    more trials to run if the study now asks for more than it did, or lost some)."""
    store, meta, saved = driver.store, driver.meta, driver.saved
    path = f"{store.uri}/{TUNE_DIR}"
    trials: dict[str, str] = {}  # Tune's saved trials by id, with their status
    if saved is not None and tune.Tuner.can_restore(path):
        repair_tune_state(store)
        trials = saved_trials(store)
        # Optuna trials asked after Tune's last saved state never finish in the restored run.
        fail_stale_trials(store, meta.name, keep=set(trials))
    # Tune cannot restore a state without trials (a budget that ended before the first).
    restore = bool(trials)
    if trainable is None:
        setup = TrialSetup(
            store.uri,
            meta.base_config,
            driver.request.data_dir,
            res.gpus_per_trial,
            min(meta.targets),
            finished=outcome.finished_runs(store, meta.targets) if restore else {},
            attack=meta.attack,
            polish=meta.polish or {},
        )
        trainable = tune.with_parameters(train_trial, setup=setup)
    resources = {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial}
    trainable = tune.with_resources(trainable, resources)
    if not restore:
        return _new_tuner(driver, res, trainable, progress)
    # A study a trial's UserError stopped gives its failed trials another go.
    stopped = saved.status == "stopped"
    ended = {"TERMINATED"} if stopped else {"TERMINATED", "ERROR"}
    point_search_state(
        store,
        meta.trials_requested,
        kept=set(trials) | _table_ids(store, meta),
        live={trial_id for trial_id, status in trials.items() if status not in ended},
    )
    return tune.Tuner.restore(path, trainable=trainable, resume_errored=stopped)


def _table_ids(store: StudyDir, meta: StudyMeta) -> set[str]:
    """The Tune trial ids the trials table holds (none before it exists)."""
    try:
        return {str(trial_id) for trial_id in read_trials(store, meta.targets)["trial_id"]}
    except UserError:
        return set()


def _new_tuner(
    driver: Driver, res: cluster.Resources, trainable: Any, progress: bool
) -> tune.Tuner:
    """A Tuner for a new study: the constrained searcher, ASHA where the spec asks for it, the
    trials table's writer, the stop on a user's mistake and the budget's stopper."""
    spec, meta, store = driver.spec, driver.meta, driver.store
    scheduler = None
    if spec.asha:
        scheduler = ASHAScheduler(
            metric="sched_score",
            mode="max",
            time_attr="training_iteration",
            max_t=spec.base.epochs,
            grace_period=min(spec.grace_period, spec.base.epochs),
        )
    writer = TrialsWriter(meta.targets, meta.trial_params())
    writer.progress = progress
    writer.epochs = spec.base.epochs
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=_searcher(driver),
            scheduler=scheduler,
            num_samples=meta.trials_requested,
            max_concurrent_trials=res.concurrency,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=store.uri,
            failure_config=tune.FailureConfig(max_failures=1),
            # Two, not one: Tune copies its state into the study folder behind the trials, so a
            # driver killed mid-copy can leave a state naming the previous checkpoint.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
            callbacks=[writer, failures.StopOnUserError()],
            stop=BudgetStopper(spec.base.epochs),
            verbose=0,
        ),
    )


def _searcher(driver: Driver) -> ConstrainedOptunaSearch:
    """Optuna on the study's journal: single-objective ACR for one target, (clean accuracy,
    ACR) for several, constrained at the lowest target; each trial draws its method, then that
    method's knobs (``MethodSpace``); the recipes and the spec's starts first."""
    spec, meta = driver.spec, driver.meta
    several = len(meta.targets) > 1
    polish_epochs = None if meta.polish is None else polished(spec.base, meta.polish).epochs
    return ConstrainedOptunaSearch(
        space=MethodSpace(spec),
        metric=["clean_acc", "acr"] if several else "acr",
        mode=["max", "max"] if several else "max",
        sampler=_sampler(spec.sampler, driver.request.seed),
        study_name=meta.name,
        storage=journal_storage(driver.store),
        min_value=min(meta.targets),
        plan=SearchPlan(
            min_target=min(meta.targets),
            margin=accuracy_margin(min(meta.targets), _val_size(spec)),
            rungs=spec.rungs,
            eta=spec.eta,
            epochs=spec.base.epochs,
            polish_epochs=polish_epochs,
            methods=tuple(spec.study_methods),
        ),
        # Trial 0: the preset's own configuration, then the other methods' recipes and the
        # spec's starts (at the top rung);
        # a study that ran none before has them waiting in its journal already.
        points_to_evaluate=None if driver.saved is not None else spec.known_points or None,
    )


def _val_size(spec: StudySpec) -> int:
    """Validation images behind a trial's accuracy."""
    size = dataset_info(spec.base.dataset).val_size
    return size if spec.base.val_limit is None else min(size, spec.base.val_limit)


def _sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The spec's Optuna sampler: TPE, or random search (a baseline for benchmarks)."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)
