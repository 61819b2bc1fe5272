"""How a study ends: the final trials table, each target's winner certified on the test split,
study.json's closing state, and what an earlier driver already finished (for ``--resume``).

``finish`` writes the table from Tune's records; when every trial finished or the budget is
spent, it picks each target's winner from that persisted table (never Tune's
``get_best_result``, which knows nothing of the accuracy constraint), certifies each winner
once on the test split as a Ray task with a trial's resources (with ``attack``, a setting
study.json keeps for ``--resume``, PGD attacks it there too), and copies it into
``chosen/<target>``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray import tune

from raycert.data import dataset_info
from raycert.errors import UserError
from raycert.study.policy.plan import timestamp
from raycert.study.tune import cluster
from raycert.study.tune.trial import FinishedRun, certify_on_cluster
from raycert.study.tune.trials import trial_rows, with_lost_rows
from raycert.studyfolder import (
    CHOSEN,
    TUNE_DIR,
    StudyDir,
    StudyMeta,
    TargetResult,
    TrialError,
    choose,
    fail_stale_trials,
    read_results,
    read_trials,
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

# Trial statuses whose run is over: a restarted trial with one of them reports it, untrained.
OVER = ("completed", "pruned", "diverged")


@dataclass
class StudyResult:
    """How a study ended; ``study_dir`` holds everything (the report reads it from there).

    ``status`` is ``finished`` or ``interrupted`` (``signalled``: by Ctrl-C or SIGTERM; else
    Ray Tune ended its run early on its own); ``meta`` is study.json, whose ``trial_counts``
    and ``errors`` (one entry per failed trial: number, trial id, message) say how the trials
    went."""

    study_dir: str
    status: str
    meta: StudyMeta
    targets: list[TargetResult]
    signalled: bool = False


def finish(
    store: StudyDir,
    meta: StudyMeta,
    res: cluster.Resources,
    data_dir: str | None,
    budget_spent: bool,
    spend: Callable[[], None],
    progress: bool = False,
) -> StudyResult:
    """Write the final table; if every trial finished or the budget is spent, choose, certify
    (saying so first, with ``progress``) and write the results. ``spend`` records the driver's
    time in ``meta`` before it is written."""
    analysis = tune.ExperimentAnalysis(f"{store.uri}/{TUNE_DIR}")
    rows = trial_rows(analysis.trials, meta.trial_params(), store, meta.name)
    rows = with_lost_rows(rows, store, meta.targets)
    table = trials_table(rows, meta.targets)
    write_trials(store, table)
    meta.trial_counts = trial_counts(table)
    meta.errors = [
        TrialError(row.number, row.trial_id, row.error) for row in rows if row.status == "error"
    ]
    finished = len(table) >= meta.trials_requested or budget_spent
    results: list[TargetResult] = []
    if finished:
        stopped = {row.trial_id for row in rows if row.status == "pruned"}
        fail_stale_trials(store, meta.name, stopped)
        test_size = dataset_info(meta.dataset).test_size
        results = choose_and_certify(
            store, table, meta.targets, res, data_dir, meta.attack, test_size, progress
        )
        write_results(store, results)
    meta.status = "finished" if finished else "interrupted"
    meta.finished = timestamp() if finished else None
    spend()
    write_meta(store, meta)
    return StudyResult(store.uri, meta.status, meta, results)


def choose_and_certify(
    store: StudyDir,
    table: Any,
    targets: list[float],
    res: cluster.Resources,
    data_dir: str | None,
    attack: bool,
    test_size: int | None = None,
    progress: bool = False,
) -> list[TargetResult]:
    """Per target: the winner (certified on test, with ``attack`` attacked by PGD too, copied to
    ``chosen/<target>``) or the closest. With the split's ``test_size``, each winner's split
    is cut into ``res.concurrency`` shards, so the winners share the cluster evenly. With
    ``progress``, a line says when the certification starts."""
    results, runs = [], {}
    for target in targets:
        winner, closest = choose(table, target)
        if winner is None:
            results.append(unmet(target, closest))
            continue
        result = won(target, winner)
        results.append(result)
        checkpoint = tune.Checkpoint(store.locate(winner.run_dir)) if winner.run_dir else None
        if checkpoint is not None and is_run(checkpoint):
            runs[winner.trial_id] = checkpoint
            result.run_dir = f"{CHOSEN}/{target_label(target)}"
    if runs and progress:
        print(f"study {store.uri}: certifying the chosen models on test", file=sys.stderr)
    certified = certify_on_cluster(
        runs,
        data_dir,
        res.cpus_per_trial,
        res.gpus_per_trial,
        attack=attack,
        test_size=test_size,
        shards=res.concurrency,
    )
    for result in results:
        if result.run_dir is None:
            continue
        checkpoint, (certs, summary) = runs[result.trial_id], certified[result.trial_id]
        result.test = summary
        store.copy_in(checkpoint.filesystem, checkpoint.path, result.run_dir)
        write_test(store, result.run_dir, summary, certs.to_csv())
    return results


def finished_runs(store: StudyDir, targets: list[float]) -> dict[str, FinishedRun]:
    """Trials the trials table records as over, with their run folders: a driver killed before
    Tune saved their end restarts them on resume, and they must report, not train again."""
    try:
        table = read_trials(store, targets)
    except UserError:  # no table yet, or a damaged one: nothing is known to be over
        return {}
    over = table[table["status"].isin(OVER) & table["run_dir"].notna()]
    return {
        str(row["trial_id"]): FinishedRun(store.locate(str(row["run_dir"])), str(row["status"]))
        for row in over.to_dict("records")
    }


def completed_runs(store: StudyDir, targets: list[float]) -> list[tuple[int, float]]:
    """(epochs, seconds) of each trial the trials table records as completed (resuming a
    budget)."""
    try:
        table = read_trials(store, targets)
    except UserError:  # no table yet, or a damaged one: nothing is known
        return []
    done = table.loc[table["status"] == "completed", ["epoch", "seconds"]].dropna()
    return [(int(epoch), float(seconds)) for epoch, seconds in done.itertuples(index=False)]


def is_run(checkpoint: tune.Checkpoint) -> bool:
    """Whether a checkpoint holds a raycert run (a custom trainable's may not)."""
    info = checkpoint.filesystem.get_file_info(
        [f"{checkpoint.path}/config.json", f"{checkpoint.path}/model.pt"]
    )
    return all(i.is_file for i in info)


def finished_result(store: StudyDir, meta: StudyMeta) -> StudyResult:
    """A finished study, read back (resuming it has nothing left to do)."""
    return StudyResult(store.uri, "finished", meta, read_results(store) or [])
