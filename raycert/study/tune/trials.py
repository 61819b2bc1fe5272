"""From Ray Tune's trials to rows of the study folder's trials table, kept current as trials end."""

from __future__ import annotations

import sys

from ray.tune import Callback
from ray.tune.experiment import Trial

from raycert.errors import UserError
from raycert.study.tune.failures import error_message
from raycert.study.tune.running import current
from raycert.studyfolder import (
    StudyDir,
    TrialRow,
    optuna_numbers,
    read_trials,
    trial_row,
    trials_table,
    write_trials,
)


def trial_rows(
    trials: list[Trial],
    params: list[str],
    store: StudyDir,
    name: str,
    ending: dict[str, bool] | None = None,
) -> list[TrialRow]:
    """Rows of the finished trials (and of those in ``ending``: trial id -> errored), numbered
    as Optuna numbered them (the order the searcher created them, kept across resumes) and
    sorted by that number. A failed trial's row says why in ``error``."""
    ending = ending or {}
    numbers = optuna_numbers(store, name)
    rows = []
    for index, trial in enumerate(trials):
        if trial.trial_id in ending:
            errored = ending[trial.trial_id]
        elif trial.status in (Trial.TERMINATED, Trial.ERROR):
            errored = trial.status == Trial.ERROR
        else:
            continue
        checkpoint = trial.checkpoint
        run_dir = _location(store, checkpoint.path) if checkpoint is not None else None
        number = numbers.get(trial.trial_id, index)
        metrics, config = trial.last_result, trial.config
        error = error_message(trial) if errored else None
        rows.append(
            trial_row(number, trial.trial_id, errored, metrics, config, params, run_dir, error)
        )
    return sorted(rows, key=lambda row: row.number)


def with_lost_rows(rows: list[TrialRow], store: StudyDir, targets: list[float]) -> list[TrialRow]:
    """``rows`` and the stored table's rows of trials Tune no longer knows, by number.

    Tune snapshots its state every 10 s or more; a driver killed in between loses the trials
    that started and ended since the last snapshot, though their runs and rows are on the
    storage (and Optuna's journal has them). Their rows are kept, so no finished trial is lost.
    """
    try:
        table = read_trials(store, targets)
    except UserError:  # no table yet
        return rows
    known = {row.trial_id for row in rows}
    lost = [
        TrialRow.from_columns(record)
        for record in table.to_dict("records")
        if str(record["trial_id"]) not in known
    ]
    return sorted([*rows, *lost], key=lambda row: row.number)


def _location(store: StudyDir, path: str) -> str:
    """A checkpoint's path relative to the study folder (so a copied or moved folder still
    names its own runs); a path outside it (none should be) as it is."""
    return path.removeprefix(f"{store.path.rstrip('/')}/")


class TrialsWriter(Callback):
    """Rewrites the trials table after every finished trial and prints one line about it, so a
    running or interrupted study can be watched and read; with ``progress``, a line per epoch of
    every trial too (trials of the quick preset run for minutes). It writes to the running
    study's folder (``raycert.study.tune.running``)."""

    def __init__(self, targets: list[float], params: list[str]) -> None:
        self.targets, self.params = targets, params
        self.progress = True
        self.epochs: int | None = None  # of every trial, for the progress lines

    def on_trial_result(
        self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info
    ) -> None:
        if not self.progress or "epoch" not in result or result.get("final"):
            return
        study = current()
        number = optuna_numbers(study.store, study.name).get(trial.trial_id)
        epochs = trial.config.get("epochs", getattr(self, "epochs", None))
        line = f"trial {trial.trial_id if number is None else number} epoch {result['epoch']}"
        line += f"/{epochs}" if epochs else ""
        if "clean_acc" in result and "acr_pct" in result:
            line += f": val clean {result['clean_acc']:.2%}, ACR {result['acr_pct']:.1f}% of cap"
        print(line, file=sys.stderr, flush=True)

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._finished(trials, trial, errored=False)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info) -> None:
        self._finished(trials, trial, errored=True)

    def _finished(self, trials: list[Trial], trial: Trial, errored: bool) -> None:
        # Tune calls this before it marks the trial finished; a failure here must not fail it.
        try:
            store, name = current().store, current().name
            rows = trial_rows(trials, self.params, store, name, {trial.trial_id: errored})
            rows = with_lost_rows(rows, store, self.targets)
            write_trials(store, trials_table(rows, self.targets))
        except Exception as exc:  # the table is rewritten at the end of the study anyway
            print(f"warning: cannot update the trials table: {exc}", file=sys.stderr)
            return
        if self.progress:
            row = next(r for r in rows if r.trial_id == trial.trial_id)
            what = f"trial {row.number}"
            if "method" in row.params:  # a study of several methods
                what += f" ({row.params['method']})"
            if row.polished_from is not None:
                what += f" (trial {row.polished_from} polished)"
            line = f"{what} {row.status} ({len(rows)} finished)"
            if row.status != "error":
                line += f": clean_acc {row.metrics['clean_acc']:.4f}, acr {row.metrics['acr']:.4g}"
            print(line, file=sys.stderr, flush=True)
