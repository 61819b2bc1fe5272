"""Ray Tune's state in the study folder: whole backups, the repair on resume, and pointing it
at the folder where it now lies."""

from __future__ import annotations

import contextlib
import fnmatch
import json
import shutil
from collections.abc import Callable, Collection
from pathlib import Path

from raycert.errors import UserError
from raycert.studyfolder import TUNE_DIR, TUNE_STATE_BACKUP, StudyDir


def _json(data: bytes) -> None:
    json.loads(data)


def _pickle(data: bytes) -> None:
    import ray.cloudpickle

    ray.cloudpickle.loads(data)


# Tune's state files that a resume reads, each with what proves it whole (raises if cut).
STATE_FILES: dict[str, Callable[[bytes], None]] = {
    "experiment_state-*.json": _json,
    "searcher-state-*.pkl": _pickle,
    "search_gen_state-*.json": _pickle,  # a pickle, despite its name
}


def _whole(name: str, data: bytes) -> bool:
    """Whether ``data``, the content of Tune's state file ``name``, reads back whole."""
    for pattern, check in STATE_FILES.items():
        if fnmatch.fnmatch(name, pattern):
            try:
                check(data)
            except Exception:  # any error of a cut JSON or pickle
                return False
    return True


def back_up_tune_state(store: StudyDir, staging_dir: str, session_str: str) -> None:
    """Keep a whole copy of each state file Tune has in its staging folder.

    Tune copies those files into the study folder without a rename, so a driver killed
    mid-copy, or a full disk, leaves truncated ones that ``Tuner.restore`` cannot read;
    ``repair_tune_state`` puts these copies back before a resume. Called from the searcher's
    ``save_to_dir``, which Tune runs right after the experiment state and the searcher's state
    are complete (the search generator's is the previous save's, whole too).
    """
    for pattern in STATE_FILES:
        name = pattern.replace("*", session_str)
        try:
            data = Path(staging_dir, name).read_bytes()
        except OSError:
            continue
        if not _whole(name, data):
            continue  # not complete: keep the previous backup
        with contextlib.suppress(OSError):  # a full disk: the previous backup stays whole
            store.write_bytes(f"{TUNE_STATE_BACKUP}/{name}", data)


def repair_tune_state(store: StudyDir) -> list[str]:
    """When a state file in Tune's folder is unreadable, put back every state file that has a
    backup, so the resume reads one snapshot; return the names put back. An unreadable file
    without a backup is a ``UserError``: that study cannot be resumed."""
    names = [
        name
        for name in store.list_dir(TUNE_DIR)
        if any(fnmatch.fnmatch(name, pattern) for pattern in STATE_FILES)
    ]
    unreadable = [name for name in names if not _readable(store, f"{TUNE_DIR}/{name}")]
    if not unreadable:
        return []
    for name in unreadable:
        if not store.has(f"{TUNE_STATE_BACKUP}/{name}"):
            raise UserError(
                f"Ray Tune's state {store.uri}/{TUNE_DIR}/{name} is unreadable and has no "
                "backup; run the study again under another --name"
            )
    repaired = []
    for name in names:
        backup = f"{TUNE_STATE_BACKUP}/{name}"
        if store.has(backup):
            store.write_bytes(f"{TUNE_DIR}/{name}", store.read_bytes(backup))
            repaired.append(name)
    return repaired


def _readable(store: StudyDir, rel: str) -> bool:
    try:
        return _whole(rel.rsplit("/", 1)[-1], store.read_bytes(rel))
    except OSError:
        return False


def saved_trials(store: StudyDir) -> dict[str, str]:
    """Each trial of Tune's newest saved experiment state (the ones a restore resumes; none
    when there is no state) by id, with its status (``RUNNING``, ``TERMINATED``, ...). Call it
    after ``repair_tune_state``."""
    names = sorted(
        n for n in store.list_dir(TUNE_DIR) if fnmatch.fnmatch(n, "experiment_state-*.json")
    )
    if not names:
        return {}
    state = json.loads(store.read_bytes(f"{TUNE_DIR}/{names[-1]}"))
    trials = (json.loads(trial) for trial, _ in state.get("trial_data", []))
    return {trial["trial_id"]: trial["status"] for trial in trials}


def point_search_state(
    store: StudyDir,
    total_trials: int | None = None,
    kept: Collection[str] | None = None,
    live: Collection[str] | None = None,
) -> None:
    """Point Tune's saved search state at the study folder where it lies now and, with
    ``total_trials``, set its trial budget to that, plus the trials it created that are not
    among ``kept`` (``Tuner.restore`` takes both from that
    file, not from the restored Tuner's settings: new trials would otherwise be written where
    the folder was when it was saved, and no more than its old budget sampled). The searcher
    and its Optuna journal carry on as they were.

    With ``live``, the trials the restored run goes on with, the concurrency limit counts
    those as running. A search state saved after the experiment state (the last save cut short
    by a killed driver or a full disk) counts trials the restored run never ends, and would
    hold back every new one.

    Tune restores the searcher from a local staging folder named after the run's start time,
    which every copy of a study shares: what another copy left there in this Ray session is
    cleared first, or Tune would restore that copy's newer state. Call it with Ray connected.
    """
    import ray.cloudpickle

    names = sorted(
        n for n in store.list_dir(TUNE_DIR) if fnmatch.fnmatch(n, "search_gen_state-*.json")
    )
    if not names:
        raise UserError(
            f"{store.uri}/{TUNE_DIR} has no search state to resume; run a new study under "
            "another --name"
        )
    rel = f"{TUNE_DIR}/{names[-1]}"  # the one Tune restores: the greatest name
    state = ray.cloudpickle.loads(store.read_bytes(rel))
    where = state["experiment"].storage  # Tune's StorageContext: the storage's filesystem
    where.storage_filesystem, where.storage_fs_path = store.fs, store.path
    _clear_staging(where._timestamp)
    if total_trials is not None:
        # Trials Tune created that neither its state nor the trials table kept (asked after
        # its last snapshot, then lost with a killed driver or a full disk) are sampled again.
        lost = 0 if kept is None else max(0, state["counter"] - len(kept))
        state.update(total_samples=total_trials + lost, finished=False)
    limiter = state.get("name:ConcurrencyLimiter")
    if live is not None and limiter is not None:
        limiter.update(live_trials=set(live), num_unfinished_live_trials=len(live))
    store.write_bytes(rel, ray.cloudpickle.dumps(state))


def _clear_staging(started: str) -> None:
    """Remove Tune's driver staging folder of the run that started at ``started`` in this Ray
    session (``StorageContext.experiment_driver_staging_path``), if Ray still lays it out so."""
    from ray.train.constants import _get_ray_train_session_dir

    staging = Path(_get_ray_train_session_dir(), started, TUNE_DIR, "driver_artifacts")
    shutil.rmtree(staging, ignore_errors=True)
