"""Optuna's journal of a study: the one place that opens it (``StudyDir.journal_file`` says
where it lies; on a URI, in a local cache copied back by ``StudyDir.save_journal``).

Optuna loads when a function here runs, not on import: the study folder's other readers (the
report, the study's policy) never need it."""

from __future__ import annotations

import json
import shutil
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING

from raycert.errors import UserError, one_line
from raycert.studyfolder.folder import JOURNAL, StudyDir

if TYPE_CHECKING:
    import optuna


def journal_storage(store: StudyDir) -> optuna.storages.JournalStorage:
    """The study's Optuna storage, on its journal file (created, with its folder, if new)."""
    import optuna

    journal = store.journal_file()
    journal.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))


def optuna_study(store: StudyDir, name: str, must_exist: bool = False) -> optuna.Study | None:
    """The study's Optuna study, loaded from its journal (None before there is one, or
    ``KeyError`` with ``must_exist``)."""
    import optuna

    if not store.journal_file().exists() and not must_exist:
        return None
    try:
        return optuna.load_study(study_name=name, storage=journal_storage(store))
    except KeyError:
        if must_exist:
            raise
        return None


def fail_stale_trials(
    store: StudyDir, name: str, stopped: Collection[str] = (), keep: Collection[str] = ()
) -> None:
    """End the Optuna trials left RUNNING, but those of the Tune trial ids in ``keep``: PRUNED
    for the Tune trial ids in ``stopped`` (stopped mid-run when the study's budget ran out: Tune
    tells the searcher nothing then), FAIL for the rest (asked by a driver that was killed, or
    stopped by a full disk, then lost with Tune's state). Call it once every Tune trial has
    finished, or before a resume with ``keep`` the trials Tune's saved state will resume."""
    from optuna.trial import TrialState

    study = optuna_study(store, name)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if study else []
    for trial in running:
        if trial.user_attrs.get("tune_trial_id") in keep:
            continue
        pruned = trial.user_attrs.get("tune_trial_id") in stopped
        study.tell(trial.number, state=TrialState.PRUNED if pruned else TrialState.FAIL)


def optuna_numbers(store: StudyDir, name: str) -> dict[str, int]:
    """Optuna's trial number of each Tune trial id."""
    study = optuna_study(store, name)
    trials = study.get_trials(deepcopy=False) if study is not None else []
    return {
        t.user_attrs["tune_trial_id"]: t.number for t in trials if "tune_trial_id" in t.user_attrs
    }


def repair_journal(store: StudyDir, name: str) -> str | None:
    """Make the journal of a study to resume readable again; say what was dropped, if anything.

    A driver killed mid-write, or a full disk, leaves a partial last record; bytes appended by
    anything else are not records either. The journal is cut to its whole records before the
    first damaged one, after a backup (``optuna.journal.damaged``) that keeps every byte. A
    journal that is missing, or with nothing readable left, is a one-line ``UserError``: the
    study cannot resume, though its trials table and results stay readable.
    """
    path = store.journal_file()
    where = store.where(JOURNAL)
    if not path.exists():
        raise UserError(
            f"{where} is missing, so the study cannot resume (its trials table and results stay"
            " readable); put the journal back, or start a new study under another --name"
        )
    data = path.read_bytes()
    whole = _whole_records(data)
    if whole == len(data):
        return None
    backup = path.with_name(f"{JOURNAL}.damaged")
    shutil.copyfile(path, backup)
    with path.open("r+b") as stream:
        stream.truncate(whole)
    try:
        optuna_study(store, name, must_exist=True)
    except Exception as exc:  # anything Optuna raises replaying what is left
        shutil.copyfile(backup, path)
        raise UserError(
            f"{where} cannot be read ({one_line(exc)}), so the study cannot resume (its trials"
            " table and results stay readable); start a new study under another --name"
        ) from None
    records = data[:whole].count(b"\n")
    return (
        f"warning: {where} was damaged after its record {records}: dropped its last"
        f" {len(data) - whole} byte(s) (kept in {_shown(store, backup)}), resuming from the rest"
    )


def _whole_records(data: bytes) -> int:
    """The length of the longest prefix of ``data`` made of whole journal records: lines that
    end in a newline and hold a JSON object with an ``op_code``."""
    end = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            record = json.loads(line)
        except ValueError:  # not UTF-8, or not JSON
            break
        if not isinstance(record, dict) or "op_code" not in record:
            break
        end += len(line)
    return end


def _shown(store: StudyDir, local: Path) -> str:
    """A local file of the study as messages name it."""
    return store.where(local.name) if not store.remote else str(local)
