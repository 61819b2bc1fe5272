"""Hyperparameter studies: Optuna samples, Ray Tune runs the trials, the best feasible model wins.

The objective is the val ACR subject to ``clean_acc >= target``, told to Optuna as a
constraint (``trial.set_constraint``), never as a penalty. One target: single-objective TPE on
``acr`` constrained at that target. Several targets from one set of trials: two-objective TPE on
``(clean_acc, acr)`` constrained at the lowest target, which spreads trials along the whole
front, so that every target's best trial gets searched (a single objective at the lowest target
crowds every trial near it). Winners are picked and certified on the test split by
``raycert.study.tune.outcome``.

A study lives in ``<storage>/<name>/`` (see ``raycert.studyfolder``). ``resume=True`` continues an
interrupted or stopped one from Ray Tune's experiment state and the pickled searcher: finished
trials are kept, running ones go on from their last checkpoint, and the total reaches
``trials``; a larger ``trials`` extends a finished study.

A wall-clock ``budget_s`` (``--budget``) bounds the whole study, from start-up to the report
(``raycert.study.policy.budget``): trials stop starting when they would not finish in time,
and the study then finishes with what completed. Time spent before an interruption counts on
resume; a larger budget extends a finished study.

Before Ray starts, the request is checked and its paths made absolute
(``raycert.study.policy.plan``), the storage is checked writable (``storage``), and the study's
lock is taken (one driver per study; ``lock``). SIGTERM stops a study as Ctrl-C does. A
``UserError`` in a trial stops the study at once, without retries (``failures``), and
``--resume`` continues it once the problem is fixed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from raycert.data import dataset_info, load
from raycert.errors import UserError
from raycert.spec import StudySpec
from raycert.study.policy.budget import Clock
from raycert.study.policy.plan import StudyRequest, check_resumable, plan, resolve_paths
from raycert.study.policy.polish import polished
from raycert.study.policy.search import SearchPlan
from raycert.study.tune import cluster, failures, outcome
from raycert.study.tune.lock import StudyLock
from raycert.study.tune.outcome import StudyResult
from raycert.study.tune.searcher import ConstrainedOptunaSearch, distributions
from raycert.study.tune.state import extend_tune_state, repair_tune_state
from raycert.study.tune.stopper import BudgetStopper, lend_clock
from raycert.study.tune.storage import check_storage, cluster_warning
from raycert.study.tune.trial import TrialSetup, train_trial
from raycert.study.tune.trials import TrialsWriter
from raycert.studyfolder import (
    STUDY_JSON,
    TUNE_DIR,
    Hardware,
    StudyDir,
    StudyMeta,
    TrialError,
    TrialResources,
    journal_storage,
    optuna_numbers,
    read_meta,
    write_meta,
)
from raycert.units import format_duration

__all__ = ["StudyRequest", "StudyResult", "run_study"]  # from policy.plan and outcome


def run_study(
    request: StudyRequest,
    *,
    trainable: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
) -> StudyResult:
    """Run (or with ``request.resume`` continue) a study and persist it; see the module note.

    ``trainable`` replaces the trainer with any Ray Tune function trainable that reports
    ``clean_acc`` and ``acr`` (and ``final``/``sched_score`` when they matter); its config holds
    the sampled hyperparameters. Test certification needs a raycert run as its checkpoint.
    Raises ``UserError`` for bad input, a busy study, or a trial that raised one; a
    ``KeyboardInterrupt`` (Ctrl-C, SIGTERM before the trials start) leaves a resumable study.
    """
    started = time.monotonic()
    request = resolve_paths(request)
    spec, meta = plan(request)
    storage = check_storage(request.storage)
    store = StudyDir(storage, meta.name)
    with StudyLock(storage, meta.name):
        return _run_locked(request, spec, meta, store, trainable, progress, started)


def _run_locked(
    request: StudyRequest,
    spec: StudySpec,
    meta: StudyMeta,
    store: StudyDir,
    trainable: Callable[[dict[str, Any]], None] | None,
    progress: bool,
    started: float,
) -> StudyResult:
    """``run_study`` once the study's lock is held; ``started``: its ``time.monotonic()``."""
    saved = None
    if store.exists() and not request.resume:
        raise UserError(
            f"study {store.uri} exists; pass --resume to continue it or choose another --name"
        )
    if request.resume:
        if not store.has(STUDY_JSON):
            raise UserError(f"no study to resume at {store.uri}; run it without --resume first")
        saved = read_meta(store)
        check_resumable(saved, meta, request.trials, store.uri, request.attack, request.budget_s)
        more = meta.trials_requested > saved.trials_requested or (meta.budget_s or 0) > (
            saved.budget_s or 0
        )
        if saved.status == "finished" and not more:
            return outcome.finished_result(store, saved)
        meta.started = saved.started
    spent_before = meta.spent_s

    def spend() -> None:
        meta.spent_s = spent_before + time.monotonic() - started

    if trainable is None:  # missing data fails here, before Ray starts
        load(spec.base.dataset, "val", request.data_dir, download=request.download, limit=1)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A checkpoint per epoch snapshots Tune's state each epoch, by design.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's own console output (its legacy engine at verbose=0 is silent); progress is ours.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune records every trial's error; Ray's echo of those it dropped on a stop is noise.
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    owned = cluster.connect(request.address)
    try:
        with _sigterm_as_sigint():
            hw = cluster.hardware()
            res = cluster.plan_resources(
                hw,
                request.cpus_per_trial,
                request.gpus_per_trial,
                request.concurrency,
                meta.trials_requested,
            )
            warning = cluster_warning(request.storage, hw.nodes)
            if warning:
                print(warning, file=sys.stderr, flush=True)
            clock = None
            if meta.budget_s is not None:  # counted from the start, less earlier drivers' time
                clock = Clock(
                    meta.budget_s,
                    started - spent_before,
                    tuple(meta.targets),
                    dataset_info(meta.dataset).test_size,
                    res.concurrency,
                    runs=outcome.completed_runs(store, meta.targets) if saved is not None else [],
                )
            if progress:
                print(_start_line(store, meta, res), file=sys.stderr, flush=True)
            meta.resources = TrialResources(res.cpus_per_trial, res.gpus_per_trial)
            meta.concurrency = res.concurrency
            meta.hardware = Hardware(**hw.to_dict())
            meta.status, meta.error = "running", None
            write_meta(store, meta)
            failures.forget(store.uri)
            try:
                tuner = _tuner(spec, meta, store, res, trainable, progress, request, saved)
                with (
                    lend_clock(store.uri, clock),
                    failures.quiet_user_errors(),
                    contextlib.suppress(failures.StudyStopped),
                ):
                    tuner.fit()
            except KeyboardInterrupt:
                meta.status = "interrupted"
                spend()
                write_meta(store, meta)
                raise
            stopped = failures.user_error(store.uri)
            if stopped is not None:
                spend()
                raise _stopped(store, meta, *stopped)
            budget_spent = clock is not None and not clock.fits()
            return outcome.finish(store, meta, res, request.data_dir, budget_spent, spend)
    finally:
        failures.forget(store.uri)
        store.save_journal()
        if owned:
            ray.shutdown()


@contextlib.contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """Within: SIGTERM (what batch schedulers send) acts as Ctrl-C, through whatever handles
    SIGINT at that moment (Ray Tune's graceful stop while trials run). Installed after Ray's
    start-up, which sets a SIGTERM handler of its own."""

    def forward(signum: int, frame: Any) -> None:
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, forward)
    except ValueError:  # not the main thread: signals stay as they are
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _stopped(store: StudyDir, meta: StudyMeta, trial_id: str, message: str) -> UserError:
    """Record a study stopped by a trial's ``UserError``; the error to raise."""
    number = _trial_number(store, meta.name, trial_id)
    meta.status, meta.error = "stopped", TrialError(number, trial_id, message)
    write_meta(store, meta)
    return UserError(
        f"{message} (trial {number}; the study stopped: fix this, then continue it with --resume)"
    )


def _trial_number(store: StudyDir, name: str, trial_id: str) -> int | str:
    """Optuna's number of a Tune trial (its id when the journal does not know it)."""
    return optuna_numbers(store, name).get(trial_id, trial_id)


def _tuner(
    spec: StudySpec,
    meta: StudyMeta,
    store: StudyDir,
    res: cluster.Resources,
    trainable: Callable | None,
    progress: bool,
    request: StudyRequest,
    saved: StudyMeta | None,
) -> tune.Tuner:
    """A new Tuner, or the interrupted one restored when resuming and Tune saved its state
    (with more trials to run if ``meta`` asks for more than ``saved`` did)."""
    targets = meta.targets
    path = f"{store.uri}/{TUNE_DIR}"
    restore = saved is not None and tune.Tuner.can_restore(path)
    if trainable is None:
        setup = TrialSetup(
            meta.base_config,
            request.data_dir,
            res.gpus_per_trial,
            min(targets),
            finished=outcome.finished_runs(store, targets) if restore else {},
            attack=meta.attack,
            polish=meta.polish or {},
        )
        trainable = tune.with_parameters(train_trial, setup=setup)
    trainable = tune.with_resources(
        trainable, {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial}
    )
    if restore:
        repair_tune_state(store)
        if meta.trials_requested > saved.trials_requested or meta.budget_s is not None:
            # More trials, or a budget whose searcher may have said it was done: go on.
            extend_tune_state(store, meta.trials_requested)
        # A study a trial's UserError stopped gives its failed trials another go.
        stopped = saved.status == "stopped"
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=stopped)

    several = len(targets) > 1
    searcher = ConstrainedOptunaSearch(
        space=distributions(spec.params),
        metric=["clean_acc", "acr"] if several else "acr",
        mode=["max", "max"] if several else "max",
        sampler=_sampler(spec.sampler, request.seed),
        study_name=meta.name,
        storage=journal_storage(store),
        min_value=min(targets),
        study_uri=store.uri,
        plan=SearchPlan.build(
            min_target=min(targets),
            val_size=_val_size(spec),
            rungs=spec.rungs,
            eta=spec.eta,
            epochs=spec.base.epochs,
            polish_epochs=None if meta.polish is None else polished(spec.base, meta.polish).epochs,
        ),
        # Trial 0: the preset's own configuration, then the spec's starts (at the top rung).
        points_to_evaluate=spec.known_points or None,
    )
    scheduler = None
    if spec.asha:
        scheduler = ASHAScheduler(
            metric="sched_score",
            mode="max",
            time_attr="training_iteration",
            max_t=spec.base.epochs,
            grace_period=min(spec.grace_period, spec.base.epochs),
        )
    writer = TrialsWriter(request.storage, meta.name, targets, meta.trial_params())
    writer.progress = progress
    writer.epochs = spec.base.epochs
    stop_on_user_error = failures.StopOnUserError(store.uri)
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
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
            callbacks=[writer, stop_on_user_error],
            stop=BudgetStopper(store.uri, spec.base.epochs),
            verbose=0,
        ),
    )


def _start_line(store: StudyDir, meta: StudyMeta, res: cluster.Resources) -> str:
    """What the study is about to do, in one line."""
    each = f"{res.cpus_per_trial:g} CPU"
    if res.gpus_per_trial:
        each += f" + {res.gpus_per_trial:g} GPU"
    line = f"study {store.uri}: {res.concurrency} trial(s) at a time, {each} each"
    if meta.budget_s is not None:
        line += f", within {format_duration(meta.budget_s)}"
        if meta.spent_s:
            line += f" ({format_duration(meta.spent_s)} spent before)"
    return line + "; Ctrl-C stops it, --resume continues it"


def _val_size(spec: StudySpec) -> int:
    """Validation images behind a trial's accuracy."""
    size = dataset_info(spec.base.dataset).val_size
    return size if spec.base.val_limit is None else min(size, spec.base.val_limit)


def _sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """The spec's Optuna sampler: TPE, or random search (a baseline for benchmarks)."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)
