"""The files of a study under ``<storage>/<name>/``, the contract ``report`` reads.

- ``study.json``: settings, search space, hardware, versions, times, status, trial counts.
- ``trials.parquet`` and ``trials.csv``: one row per finished trial (``TRIAL_COLUMNS`` first,
  then ``param.<name>``, final val metrics, ``feasible@<target>``, ``pareto``, ``run_dir``).
- ``results.json``: per target, the chosen trial (highest val ACR among completed trials with
  ``clean_acc >= target``) with its val and test metrics, or ``met: false`` and the closest one.
- ``chosen/<target>/``: the chosen run directory, ``test_metrics.json`` and ``test_radii.csv``.
- ``optuna.journal`` (Optuna's JournalStorage) and ``tune/`` (Ray Tune's experiment).

``TrialsWriter`` rewrites the trials table whenever a trial finishes, so a running or
interrupted study can be read too.

Storage is a local or shared path, or a URI (``s3://...``) read and written through
``pyarrow.fs``. Optuna's journal needs a local file: on a URI it lives in a local cache and is
copied to the study directory when the study stops.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pyarrow.fs as pafs
from optuna.trial import TrialState

from raycert.errors import UserError

STUDY_JSON = "study.json"
RESULTS_JSON = "results.json"
JOURNAL = "optuna.journal"
TUNE_DIR = "tune"
TUNE_STATE_BACKUP = "tune-state-backup"
CHOSEN = "chosen"
TRIAL_STATUSES = ("completed", "pruned", "diverged", "error")
TRIAL_COLUMNS = ("trial_id", "number", "status", "node", "seconds")
METRIC_COLUMNS = ("clean_acc", "acr", "acr_cap", "acr_pct", "epoch", "train_seconds", "device")


def target_label(target: float) -> str:
    """How a target names columns and folders: ``0.8``, ``0.95``."""
    return f"{target:g}"


class StudyDir:
    """``<storage>/<name>/`` on a local or shared path or behind a URI."""

    def __init__(self, storage: str | Path, name: str) -> None:
        storage = str(storage)
        self.remote = "://" in storage
        root = storage.rstrip("/") if self.remote else os.path.abspath(os.path.expanduser(storage))
        self.uri = f"{root}/{name}"
        try:
            self.fs, self.path = pafs.FileSystem.from_uri(self.uri)
        except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
            raise UserError(f"cannot use storage {storage!r}: {exc}") from None

    def exists(self) -> bool:
        """Whether anything is stored at the study's path."""
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def has(self, rel: str) -> bool:
        return self.fs.get_file_info(self._p(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> bytes:
        """A file's whole content (``OSError`` if it cannot be read)."""
        with self.fs.open_input_stream(self._p(rel)) as stream:
            return stream.read()

    def read_json(self, rel: str) -> Any:
        try:
            return json.loads(self.read_bytes(rel).decode())
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read {self.uri}/{rel}: {exc}") from None

    def list_dir(self, rel: str) -> list[str]:
        """Names of the entries of folder ``rel`` (none if it does not exist)."""
        selector = pafs.FileSelector(self._p(rel), allow_not_found=True)
        return [info.base_name for info in self.fs.get_file_info(selector)]

    def write_json(self, rel: str, data: Any) -> None:
        text = json.dumps(_json_ready(data), indent=2, allow_nan=False)
        self.write_bytes(rel, (text + "\n").encode())

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file whole; on a local path through a rename, so readers never see half."""
        path = self._p(rel)
        self.fs.create_dir(path.rpartition("/")[0], recursive=True)
        tmp = path if self.remote else f"{path}.tmp"
        with self.fs.open_output_stream(tmp) as stream:
            stream.write(data)
        if tmp != path:
            self.fs.move(tmp, path)

    def write_trials(self, table: pd.DataFrame) -> None:
        """``trials.parquet`` and ``trials.csv``, the same rows."""
        buffer = io.BytesIO()
        table.to_parquet(buffer, index=False)
        self.write_bytes("trials.parquet", buffer.getvalue())
        self.write_bytes("trials.csv", table.to_csv(index=False).encode())

    def copy_in(self, fs: pafs.FileSystem, path: str, rel: str) -> None:
        """Copy the folder ``path`` of ``fs`` (a trial's checkpoint) to ``rel`` here."""
        self.fs.create_dir(self._p(rel), recursive=True)
        pafs.copy_files(path, self._p(rel), source_filesystem=fs, destination_filesystem=self.fs)

    def journal_file(self) -> Path:
        """The local file of Optuna's journal: in the study directory, or for a URI in a cache
        folder named after it (fetched from the study directory when the cache lacks it)."""
        if not self.remote:
            return Path(self.path) / JOURNAL
        key = hashlib.sha256(self.uri.encode()).hexdigest()[:16]
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        local = cache / "raycert" / "journals" / key / JOURNAL
        if not local.exists() and self.has(JOURNAL):
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(self.read_bytes(JOURNAL))
        return local

    def save_journal(self) -> None:
        """Copy the cached journal into a URI study directory (a local one holds it already)."""
        local = self.journal_file()
        if self.remote and local.exists():
            self.write_bytes(JOURNAL, local.read_bytes())

    def _p(self, rel: str) -> str:
        return f"{self.path}/{rel}" if rel else self.path


def trial_status(errored: bool, metrics: dict[str, Any]) -> str:
    """``error`` (Tune gave up on it), ``diverged``, ``pruned`` (stopped early by the scheduler)
    or ``completed``; a trainable that reports no ``final`` flag completes when it returns."""
    if errored:
        return "error"
    if metrics.get("diverged"):
        return "diverged"
    return "completed" if metrics.get("final", True) else "pruned"


def trial_row(
    number: int,
    trial_id: str,
    errored: bool,
    metrics: dict[str, Any],
    config: dict[str, Any],
    params: list[str],
    run_dir: str | None,
) -> dict[str, Any]:
    """One row of the trials table from what Ray Tune kept of a trial (its last report)."""
    node = metrics.get("node") or metrics.get("node_ip") or metrics.get("hostname")
    row: dict[str, Any] = {
        "trial_id": trial_id,
        "number": number,
        "status": trial_status(errored, metrics),
        "node": node,
        "seconds": metrics.get("time_total_s"),
    }
    row.update({f"param.{p}": config.get(p) for p in params})
    cert = sorted(k for k in metrics if k.startswith("cert_acc@"))
    row.update({k: metrics.get(k) for k in (*METRIC_COLUMNS, *cert)})
    row["run_dir"] = run_dir
    return row


def trials_table(rows: list[dict[str, Any]], targets: list[float]) -> pd.DataFrame:
    """The trials table: rows by ``number``, feasibility per target and the Pareto flag (on the
    (clean_acc, acr) front of completed trials)."""
    columns = list(dict.fromkeys(key for row in rows for key in row)) or list(TRIAL_COLUMNS)
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values("number", kind="stable").reset_index(drop=True)
    for column in ("clean_acc", "acr"):
        table[column] = pd.to_numeric(table.get(column), errors="coerce")
    completed = (table["status"] == "completed") & table["clean_acc"].notna() & table["acr"].notna()
    for target in targets:
        table[f"feasible@{target_label(target)}"] = completed & (table["clean_acc"] >= target)
    pareto = np.zeros(len(table), dtype=bool)
    if completed.any():
        pareto[completed.to_numpy()] = pareto_mask(
            table.loc[completed, ["clean_acc", "acr"]].to_numpy()
        )
    table["pareto"] = pareto
    run_dir = table.pop("run_dir") if "run_dir" in table else pd.Series([None] * len(table))
    table["run_dir"] = run_dir
    return table


def choose(table: pd.DataFrame, target: float) -> tuple[dict | None, dict | None]:
    """The winner for ``target`` (highest ACR, then accuracy, among completed trials that meet
    it) and, when none does, the closest completed trial (highest accuracy, then ACR)."""
    done = table[(table["status"] == "completed") & table["acr"].notna()]
    feasible = done[done["clean_acc"] >= target]
    if len(feasible):
        best = feasible.sort_values(["acr", "clean_acc", "number"], ascending=[False, False, True])
        return best.iloc[0].to_dict(), None
    if len(done):
        near = done.sort_values(["clean_acc", "acr", "number"], ascending=[False, False, True])
        return None, near.iloc[0].to_dict()
    return None, None


def row_params(row: dict[str, Any]) -> dict[str, Any]:
    """The searched hyperparameters of a trials-table row, by name."""
    return {k.removeprefix("param."): _plain(v) for k, v in row.items() if k.startswith("param.")}


def row_metrics(row: dict[str, Any]) -> dict[str, Any]:
    """The val metrics of a trials-table row."""
    keys = [*METRIC_COLUMNS, *(k for k in row if k.startswith("cert_acc@"))]
    return {k: _plain(row[k]) for k in keys if k in row}


def _json_ready(data: Any) -> Any:
    if isinstance(data, dict):
        return {str(k): _json_ready(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_json_ready(v) for v in data]
    return _plain(data)


def _plain(value: Any) -> Any:
    """JSON-ready scalars: numpy to Python, NaN to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def optuna_study(store: StudyDir, name: str) -> optuna.Study | None:
    """The study's Optuna study, loaded from its journal (None before there is one)."""
    journal = store.journal_file()
    if not journal.exists():
        return None
    backend = optuna.storages.journal.JournalFileBackend(str(journal))
    try:
        return optuna.load_study(study_name=name, storage=optuna.storages.JournalStorage(backend))
    except KeyError:
        return None


def fail_stale_trials(store: StudyDir, name: str) -> None:
    """Fail Optuna trials left RUNNING by a killed driver (asked, then lost with Tune's state);
    call it only once every Tune trial has finished."""
    study = optuna_study(store, name)
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)) if study else []
    for trial in running:
        study.tell(trial.number, state=TrialState.FAIL)


def optuna_numbers(store: StudyDir, name: str) -> dict[str, int]:
    """Optuna's trial number of each Tune trial id."""
    study = optuna_study(store, name)
    trials = study.get_trials(deepcopy=False) if study is not None else []
    return {
        t.user_attrs["tune_trial_id"]: t.number for t in trials if "tune_trial_id" in t.user_attrs
    }


def pareto_mask(values: np.ndarray) -> np.ndarray:
    """Which rows of ``values`` (rows = points, columns = objectives to maximize) are undominated.

    A row is dominated when another row is >= in every column and > in one. Duplicates do not
    dominate each other, so all copies of a front point are on the front. Rows holding NaN are
    never on the front and dominate nothing. Two objectives take an O(n log n) sweep; more fall
    back to pairwise comparison.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2:
        raise ValueError(f"expected a 2-d array of points, got shape {values.shape}")
    mask = np.zeros(len(values), dtype=bool)
    finite = ~np.isnan(values).any(axis=1)
    points = values[finite]
    if values.shape[1] == 2:
        on_front = _sweep_2d(points)
    else:
        on_front = np.array(
            [not ((points >= p).all(1) & (points > p).any(1)).any() for p in points], dtype=bool
        )
    mask[np.flatnonzero(finite)] = on_front
    return mask


def _sweep_2d(points: np.ndarray) -> np.ndarray:
    """Front of 2-d points: by first column descending, keep what beats every higher one."""
    on_front = np.zeros(len(points), dtype=bool)
    order = np.lexsort((-points[:, 1], -points[:, 0]))
    best_second = -np.inf  # best second column among points with a strictly greater first
    i = 0
    while i < len(order):
        first = points[order[i], 0]
        j = i
        while j < len(order) and points[order[j], 0] == first:
            j += 1
        group = order[i:j]  # equal first column, second column descending
        top = points[group[0], 1]
        if top > best_second:
            on_front[group[points[group, 1] == top]] = True
            best_second = top
        i = j
    return on_front


def pareto_front(trials: pd.DataFrame, x: str = "clean_acc", y: str = "acr") -> pd.DataFrame:
    """The undominated rows of ``trials`` in columns ``x`` and ``y``, sorted by ``x``."""
    if trials.empty:
        return trials.copy()
    mask = pareto_mask(trials[[x, y]].to_numpy(dtype=float))
    return trials[mask].sort_values([x, y])
