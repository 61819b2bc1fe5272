"""Hyperparameter studies: Optuna samples, Ray Tune runs the trials, the best feasible model wins.

The objective is the val ACR subject to ``clean_acc >= target``, told to Optuna as a
constraint (``trial.set_constraint``), never as a penalty. One target: single-objective TPE on
``acr`` constrained at that target. Several targets from one set of trials: two-objective TPE on
``(clean_acc, acr)`` constrained at the lowest target, which spreads trials along the whole
front, so that every target's best trial gets searched (a single objective at the lowest target
crowds every trial near it). Winners are picked afterwards from the persisted trials table,
never by Tune's ``get_best_result``, which knows nothing of the constraint. Each winner is then
certified on the test split, once, as a Ray task with a trial's resources.

A study lives in ``<storage>/<name>/`` (see ``raycert.studyfolder``). ``resume=True`` continues an
interrupted one from Ray Tune's experiment state and the pickled searcher: finished trials are
kept, running ones go on from their last checkpoint, and the total reaches ``trials``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import optuna
import ray
import torch
from ray import tune
from ray.tune.schedulers import ASHAScheduler

from raycert import __version__
from raycert.data import dataset_info, load
from raycert.errors import UserError
from raycert.study import cluster
from raycert.study.searcher import ConstrainedOptunaSearch, distributions
from raycert.study.spec import StudySpec, load_study_spec, parse_targets
from raycert.study.trial import TrialSetup, certify_on_cluster, train_trial
from raycert.study.tune_state import repair_tune_state
from raycert.study.tune_trials import TrialsWriter, trial_rows
from raycert.studyfolder import (
    CHOSEN,
    STUDY_JSON,
    TUNE_DIR,
    Hardware,
    StudyDir,
    StudyMeta,
    TargetResult,
    TrialResources,
    choose,
    fail_stale_trials,
    journal_storage,
    read_meta,
    read_results,
    target_label,
    trial_counts,
    trials_table,
    unmet,
    won,
    write_meta,
    write_results,
    write_test,
    write_trials,
)

STUDY_METHODS = ("acert", "ibp")
# Settings a resumed study must share with the one it continues.
RESUME_KEYS = ("dataset", "preset", "method", "targets", "trials_requested", "seed")


@dataclass(frozen=True)
class StudyRequest:
    """A study as asked for on the command line; ``None`` means the spec file's default."""

    dataset: str
    targets: tuple[float, ...] = ()
    method: str | None = None
    preset: str = "quick"
    trials: int | None = None
    concurrency: int | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float | str = "auto"
    address: str | None = None
    storage: str = "runs"
    name: str | None = None
    resume: bool = False
    seed: int = 0
    data_dir: str | None = None
    spec: str | None = None


@dataclass
class StudyResult:
    """How a study ended; ``study_dir`` holds everything (the report reads it from there)."""

    study_dir: str
    status: str
    meta: StudyMeta
    targets: list[TargetResult]


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
    """
    spec, meta = _plan(request)
    store = StudyDir(request.storage, meta.name)
    if store.exists() and not request.resume:
        raise UserError(
            f"study {store.uri} exists; pass --resume to continue it or choose another --name"
        )
    if request.resume:
        if not store.has(STUDY_JSON):
            raise UserError(f"no study to resume at {store.uri}; run it without --resume first")
        saved = read_meta(store)
        _check_resumable(saved, meta, store.uri)
        if saved.status == "finished":
            return _finished_result(store, saved)
        meta.started = saved.started
    if trainable is None:
        load(spec.base.dataset, "val", request.data_dir, limit=1)  # missing data fails here

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # A checkpoint per epoch with num_to_keep=1 snapshots Tune's state each epoch, by design.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # Tune's own console output (its legacy engine at verbose=0 is silent); progress is ours.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    owned = cluster.connect(request.address)
    try:
        hw = cluster.hardware()
        res = cluster.plan_resources(
            hw,
            request.cpus_per_trial,
            request.gpus_per_trial,
            request.concurrency,
            meta.trials_requested,
        )
        meta.resources = TrialResources(res.cpus_per_trial, res.gpus_per_trial)
        meta.concurrency = res.concurrency
        meta.hardware = Hardware(**hw.to_dict())
        meta.status = "running"
        write_meta(store, meta)
        try:
            tuner = _tuner(spec, meta, store, res, trainable, progress, request)
            tuner.fit()
        except KeyboardInterrupt:
            meta.status = "interrupted"
            write_meta(store, meta)
            raise
        return _finish(store, meta, res, request.data_dir)
    finally:
        store.save_journal()
        if owned:
            ray.shutdown()


def _plan(request: StudyRequest) -> tuple[StudySpec, StudyMeta]:
    """Check a request without Ray and describe the study it asks for (study.json's settings)."""
    info = dataset_info(request.dataset)
    spec = load_study_spec(info.name, request.preset, request.spec)
    method = request.method or spec.base.method
    if method not in STUDY_METHODS:
        raise UserError(f"unknown study method {method!r}; choose {' or '.join(STUDY_METHODS)}")
    targets = parse_targets(list(request.targets or spec.targets), "--min-acc")
    if not targets:
        raise UserError(f"no accuracy target: pass --min-acc or set [study] targets in {spec.path}")
    trials = request.trials if request.trials is not None else spec.trials
    if trials is None:
        raise UserError(f"no trial count: pass --trials or set [study.{spec.preset}] trials")
    if trials < 1 or (request.concurrency is not None and request.concurrency < 1):
        raise UserError("--trials and --concurrency must be at least 1")
    name = request.name or f"{info.name}-{method}-{spec.preset}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise UserError(f"study name {name!r}: use letters, digits, '.', '_' and '-'")
    base = spec.base.replace(method=method, seed=request.seed).resolve()
    spec = dataclasses.replace(spec, base=base)
    meta = StudyMeta(
        name=name,
        dataset=info.name,
        preset=spec.preset,
        method=method,
        targets=list(targets),
        trials_requested=trials,
        seed=request.seed,
        search_space=spec.search_space,
        asha=spec.asha,
        base_config=base.to_dict(),
        acr_cap=base.cert_cap,
        eps_list=list(base.cert_eps or ()),
        storage=request.storage,
        address=request.address or "local",
        spec_file=str(spec.path),
        versions=_versions(),
        started=_now(),
        finished=None,
        status="running",
        trial_counts={},
    )
    return spec, meta


def _check_resumable(saved: StudyMeta, meta: StudyMeta, where: str) -> None:
    changed = [k for k in RESUME_KEYS if getattr(saved, k) != getattr(meta, k)]
    if changed:
        diffs = "; ".join(
            f"{k} was {getattr(saved, k)!r}, now {getattr(meta, k)!r}" for k in changed
        )
        raise UserError(f"cannot resume {where} with other settings ({diffs})")


def _tuner(
    spec: StudySpec,
    meta: StudyMeta,
    store: StudyDir,
    res: cluster.Resources,
    trainable: Callable | None,
    progress: bool,
    request: StudyRequest,
) -> tune.Tuner:
    """A new Tuner, or the interrupted one restored when resuming and Tune saved its state."""
    targets = meta.targets
    if trainable is None:
        setup = TrialSetup(meta.base_config, request.data_dir, res.gpus_per_trial, min(targets))
        trainable = tune.with_parameters(train_trial, setup=setup)
    trainable = tune.with_resources(
        trainable, {"cpu": res.cpus_per_trial, "gpu": res.gpus_per_trial}
    )
    path = f"{store.uri}/{TUNE_DIR}"
    if request.resume and tune.Tuner.can_restore(path):
        repair_tune_state(store)
        return tune.Tuner.restore(path, trainable=trainable, resume_errored=False)

    several = len(targets) > 1
    searcher = ConstrainedOptunaSearch(
        space=distributions(spec.params),
        metric=["clean_acc", "acr"] if several else "acr",
        mode=["max", "max"] if several else "max",
        sampler=optuna.samplers.TPESampler(seed=request.seed),
        study_name=meta.name,
        storage=journal_storage(store),
        min_value=min(targets),
        study_uri=store.uri,
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
    writer = TrialsWriter(request.storage, meta.name, targets, [p.name for p in spec.params])
    writer.progress = progress
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
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            callbacks=[writer],
            verbose=0,
        ),
    )


def _finish(
    store: StudyDir, meta: StudyMeta, res: cluster.Resources, data_dir: str | None
) -> StudyResult:
    """Write the final table; if every trial finished, choose, certify and write the results."""
    analysis = tune.ExperimentAnalysis(f"{store.uri}/{TUNE_DIR}")
    params = list(meta.search_space)
    rows = trial_rows(analysis.trials, params, store, meta.name)
    table = trials_table(rows, meta.targets)
    write_trials(store, table)
    meta.trial_counts = trial_counts(table)
    finished = len(table) >= meta.trials_requested
    results: list[TargetResult] = []
    if finished:
        fail_stale_trials(store, meta.name)
        results = _choose_and_certify(store, table, meta.targets, res, data_dir)
        write_results(store, results)
    meta.status = "finished" if finished else "interrupted"
    meta.finished = _now() if finished else None
    write_meta(store, meta)
    return StudyResult(store.uri, meta.status, meta, results)


def _choose_and_certify(
    store: StudyDir,
    table: Any,
    targets: list[float],
    res: cluster.Resources,
    data_dir: str | None,
) -> list[TargetResult]:
    """Per target: the winner (certified on test, copied to ``chosen/<target>``) or the closest."""
    results, runs = [], {}
    for target in targets:
        winner, closest = choose(table, target)
        if winner is None:
            results.append(unmet(target, closest))
            continue
        result = won(target, winner)
        results.append(result)
        checkpoint = tune.Checkpoint(winner.run_dir) if winner.run_dir else None
        if checkpoint is not None and _is_run(checkpoint):
            runs[winner.trial_id] = checkpoint
            result.run_dir = f"{CHOSEN}/{target_label(target)}"
    certified = certify_on_cluster(runs, data_dir, res.cpus_per_trial, res.gpus_per_trial)
    for result in results:
        if result.run_dir is None:
            continue
        checkpoint, (certs, summary) = runs[result.trial_id], certified[result.trial_id]
        result.test = summary
        store.copy_in(checkpoint.filesystem, checkpoint.path, result.run_dir)
        write_test(store, result.run_dir, summary, certs.to_csv())
    return results


def _is_run(checkpoint: tune.Checkpoint) -> bool:
    """Whether a checkpoint holds a raycert run (a custom trainable's may not)."""
    info = checkpoint.filesystem.get_file_info(
        [f"{checkpoint.path}/config.json", f"{checkpoint.path}/model.pt"]
    )
    return all(i.is_file for i in info)


def _finished_result(store: StudyDir, meta: StudyMeta) -> StudyResult:
    """A finished study, read back (resuming it has nothing left to do)."""
    return StudyResult(store.uri, "finished", meta, read_results(store) or [])


def _versions() -> dict[str, str]:
    return {
        "raycert": __version__,
        "ray": ray.__version__,
        "optuna": optuna.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
