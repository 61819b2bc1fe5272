"""Optuna's journal of a study: the one place that opens it (``StudyDir.journal_file`` says
where it lies; on a URI, in a local cache copied back by ``StudyDir.save_journal``).

Optuna loads when a function here runs, not on import: the study folder's other readers (the
report, the study's policy) never need it."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from raycert.studyfolder.folder import StudyDir

if TYPE_CHECKING:
    import optuna


def journal_storage(store: StudyDir) -> optuna.storages.JournalStorage:
    """The study's Optuna storage, on its journal file (created, with its folder, if new)."""
    import optuna

    journal = store.journal_file()
    journal.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))


def optuna_study(store: StudyDir, name: str) -> optuna.Study | None:
    """The study's Optuna study, loaded from its journal (None before there is one)."""
    import optuna

    if not store.journal_file().exists():
        return None
    try:
        return optuna.load_study(study_name=name, storage=journal_storage(store))
    except KeyError:
        return None


def fail_stale_trials(store: StudyDir, name: str, stopped: Collection[str] = ()) -> None:
    """End the Optuna trials left RUNNING: PRUNED for the Tune trial ids in ``stopped`` (stopped
    mid-run when the study's budget ran out: Tune tells the searcher nothing then), FAIL for the
    rest (asked by a killed driver, then lost with Tune's state). Call it only once every Tune
    trial has finished."""
    from optuna.trial import TrialState

    study = optuna_study(store, name)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if study else []
    for trial in running:
        pruned = trial.user_attrs.get("tune_trial_id") in stopped
        study.tell(trial.number, state=TrialState.PRUNED if pruned else TrialState.FAIL)


def optuna_numbers(store: StudyDir, name: str) -> dict[str, int]:
    """Optuna's trial number of each Tune trial id."""
    study = optuna_study(store, name)
    trials = study.get_trials(deepcopy=False) if study is not None else []
    return {
        t.user_attrs["tune_trial_id"]: t.number for t in trials if "tune_trial_id" in t.user_attrs
    }
