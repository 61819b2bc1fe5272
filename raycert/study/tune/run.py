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
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import optuna
import ray
from ray import tune

from raycert import interrupts
from raycert.data import dataset_info, load
from raycert.errors import UserError, one_line
from raycert.files import out_of_space
from raycert.interrupts import Interrupted
from raycert.spec import StudySpec
from raycert.study.policy.budget import Clock
from raycert.study.policy.plan import StudyRequest, check_resumable, plan, resolve_paths
from raycert.study.tune import cluster, failures, logs, outcome
from raycert.study.tune.driver import Driver
from raycert.study.tune.lock import StudyLock
from raycert.study.tune.outcome import StudyResult
from raycert.study.tune.running import RunningStudy, lend
from raycert.study.tune.storage import check_storage, cluster_warning
from raycert.study.tune.tuner import build_tuner
from raycert.studyfolder import (
    STUDY_JSON,
    TUNE_DIR,
    Hardware,
    StudyDir,
    StudyMeta,
    TrialError,
    TrialResources,
    optuna_numbers,
    read_meta,
    repair_journal,
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
    Raises ``UserError`` for bad input, a busy study, or a trial that raised one; and
    ``Interrupted`` (naming the study folder, or None when nothing was written yet) for a
    ``KeyboardInterrupt`` (Ctrl-C; SIGTERM acts so while the trials run), which leaves a
    resumable study.
    """
    started = time.monotonic()
    request = resolve_paths(request)
    spec, meta = plan(request)  # bad input fails before the storage is reached
    storage = check_storage(request.storage)
    store = StudyDir(storage, meta.name)
    resumed = _as_saved(request, store)
    if resumed != request:
        request = resumed
        spec, meta = plan(request)
    warning = spec.base.ramp_warning()
    if warning and progress:
        print(warning, file=sys.stderr, flush=True)
    try:
        with StudyLock(storage, meta.name):
            return _run_locked(request, spec, meta, store, started, trainable, progress)
    except KeyboardInterrupt:
        raise Interrupted(store.uri if store.has(STUDY_JSON) else None) from None
    except Exception as exc:  # a full disk, wherever a write found it: one line, resumable
        if not out_of_space(exc):
            raise
        raise UserError(
            f"no space left where {store.uri} is written ({one_line(exc)}); free some, then"
            " continue the study with --resume"
        ) from None


def _as_saved(request: StudyRequest, store: StudyDir) -> StudyRequest:
    """A resumed study keeps the methods and targets it started with where the request names
    none (no ``--method``, no ``--min-acc``): ``--name`` and ``--resume`` continue it."""
    if not request.resume or not store.has(STUDY_JSON):
        return request
    saved = read_meta(store)
    return dataclasses.replace(
        request,
        method=request.method or saved.method,
        targets=request.targets or tuple(saved.targets),
    )


def _run_locked(
    request: StudyRequest,
    spec: StudySpec,
    meta: StudyMeta,
    store: StudyDir,
    started: float,
    trainable: Callable | None,
    progress: bool,
) -> StudyResult:
    """``run_study`` once the study's lock is held."""
    saved = _saved_meta(request, meta, store)
    if saved is not None and saved.status == "finished" and not _extends(meta, saved):
        return outcome.finished_result(store, saved)
    if saved is not None and tune.Tuner.can_restore(f"{store.uri}/{TUNE_DIR}"):
        warning = repair_journal(store, meta.name)  # a damaged tail is cut, with a backup
        if warning:
            print(warning, file=sys.stderr, flush=True)
    if trainable is None:  # missing data fails here, before Ray starts
        load(spec.base.dataset, "val", request.data_dir, download=request.download, limit=1)
    driver = Driver(request, spec, meta, store, saved, started - meta.spent_s)
    return _run_on_ray(driver, trainable, progress)


def _saved_meta(request: StudyRequest, meta: StudyMeta, store: StudyDir) -> StudyMeta | None:
    """The study.json an earlier driver wrote, when resuming (checked against ``meta``, which
    takes its trial count, budget and time spent); None for a new study."""
    if store.exists() and not store.has(STUDY_JSON):
        raise UserError(
            f"{store.uri} exists but holds no {STUDY_JSON} (not a raycert study, or that file was"
            " deleted), so it can be neither resumed nor started; choose another --name"
        )
    if not request.resume:
        if store.exists():
            raise UserError(
                f"study {store.uri} exists; pass --resume to continue it or choose another --name"
            )
        return None
    if not store.exists():
        raise UserError(f"no study to resume at {store.uri}; run it without --resume first")
    saved = read_meta(store)
    check_resumable(saved, meta, request.trials, store.uri, request.attack, request.budget_s)
    meta.started = saved.started
    return saved


def _extends(meta: StudyMeta, saved: StudyMeta) -> bool:
    """Whether ``meta`` asks for more trials or a larger budget than ``saved`` had."""
    more_trials = meta.trials_requested > saved.trials_requested
    return more_trials or (meta.budget_s or 0) > (saved.budget_s or 0)


def _run_on_ray(driver: Driver, trainable: Callable | None, progress: bool) -> StudyResult:
    """Connect to Ray, run the trials and finish the study; Ray's own cluster ends with it."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A checkpoint per epoch snapshots Tune's state each epoch, by design.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's own console output (its legacy engine at verbose=0 is silent); progress is ours.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune records every trial's error; Ray's echo of those it dropped on a stop is noise.
    os.environ.setdefault("RAY_IGNORE_UNHANDLED_ERRORS", "1")
    store, meta = driver.store, driver.meta
    if progress and driver.request.address is None:  # joining a cluster takes no time
        print(f"study {store.uri}: starting Ray's local cluster", file=sys.stderr, flush=True)
    owned, ours = False, cluster.Descendants()
    try:
        # Held until Tune runs: cut, Ray's start-up leaves processes behind or crashes, and
        # the set-up's libraries turn an interrupt in their imports into other errors.
        with interrupts.held():
            owned = cluster.connect(driver.request.address)
            if owned:
                ours.note()
            res = _resources(driver)
            clock = _clock(driver, res)
            if progress:
                print(_start_line(store, meta, res), file=sys.stderr, flush=True)
            tuner = build_tuner(driver, res, trainable, progress)
        signalled = _fit(driver, tuner, clock)
        budget_spent = clock is not None and not clock.fits()
        data_dir = driver.request.data_dir
        result = outcome.finish(store, meta, res, data_dir, budget_spent, driver.spend, progress)
        result.signalled = signalled
        return result
    except KeyboardInterrupt:
        if meta.status == "running":  # written by _resources: the study got that far
            meta.status = "interrupted"
            driver.spend()
            write_meta(store, meta)
        raise
    finally:
        with interrupts.held():
            store.save_journal()
            if owned:
                ours.note()
                ray.shutdown()
                ours.kill()  # what a Ctrl-C to the process group left of Ray's cluster


def _resources(driver: Driver) -> cluster.Resources:
    """What each trial gets on this cluster (warning once when a local storage serves several
    nodes); recorded in study.json, which is written as the study starts running."""
    request, meta = driver.request, driver.meta
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
    meta.resources = TrialResources(res.cpus_per_trial, res.gpus_per_trial)
    meta.concurrency = res.concurrency
    meta.hardware = Hardware(**hw.to_dict())
    meta.status, meta.error = "running", None
    write_meta(driver.store, meta)
    return res


def _clock(driver: Driver, res: cluster.Resources) -> Clock | None:
    """The study's budget clock (None without a budget): it knows the trials completed before
    a resume, and certifies each winner in ``res.concurrency`` shards."""
    meta = driver.meta
    if meta.budget_s is None:
        return None
    completed = [] if driver.saved is None else outcome.completed_runs(driver.store, meta.targets)
    test_size = dataset_info(meta.dataset).test_size
    targets = tuple(meta.targets)
    return Clock(meta.budget_s, driver.origin, targets, test_size, res.concurrency, completed)


def _fit(driver: Driver, tuner: tune.Tuner, clock: Clock | None) -> bool:
    """Run the trials with the study (its folder, ``clock``) lent to Tune's searcher, callbacks
    and stopper; whether Ctrl-C or SIGTERM stopped them. They stop gracefully (Tune saves its
    state; the study is then interrupted); a trial's ``UserError`` stops the study (raised as
    the study's). Tune's signal handlers go with the run: later signals stop the study at
    once."""
    store, meta = driver.store, driver.meta
    study = RunningStudy(store, meta.name, clock)
    with (
        interrupts.handlers_kept(signal.SIGINT, signal.SIGUSR1, signal.SIGTERM),
        _sigterm_as_sigint(),
        lend(study),
        failures.quiet_user_errors(),
        logs.noting_stop_signals(study),
        logs.quiet_state_copies(),
        contextlib.suppress(failures.StudyStopped),
    ):
        try:
            tuner.fit()
        except Exception:
            # Tune's summary of a run a trial's UserError stopped can fail reading what that
            # trial could not write (its error file, cut by a full disk): the error is known.
            if study.user_error is None:
                raise
    if study.user_error is not None:
        driver.spend()
        raise _stopped(store, meta, *study.user_error)
    return study.signalled


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
