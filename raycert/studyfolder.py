"""The files of a study under ``<storage>/<name>/``: one typed contract for the study that writes
them and the report that reads them.

- ``study.json`` (``StudyMeta``): settings, search space, hardware, versions, times, status and
  the trial counts per status.
- ``trials.parquet`` and ``trials.csv``: one row per finished trial (``TrialRow``), in columns
  ``TRIAL_COLUMNS``, ``param.<name>``, the final val metrics, ``feasible@<target>``, ``pareto``
  and ``run_dir`` (``trials_table`` writes them, ``read_trials`` checks them).
- ``results.json`` (``TargetResult`` per target): the chosen trial with its val and test
  metrics, or ``met: false`` and the closest trial.
- ``chosen/<target>/``: the chosen run, ``test_metrics.json`` (``Metrics``) and
  ``test_radii.csv`` (one certified radius per test sample).
- ``optuna.journal`` (Optuna's JournalStorage, opened only by ``journal_storage``) and
  ``tune/`` (Ray Tune's experiment).

The rules that read the table live here too, once: ``is_completed`` (a trial that ran to the end
with finite accuracy and ACR), the ``feasible@<target>`` columns (completed and accurate enough),
the ``pareto`` column (on the (clean_acc, acr) front of completed trials) and ``choose`` (the
winner per target). The table is rewritten whenever a trial finishes, so a running or
interrupted study can be read too. A file that is missing, corrupt or of another shape is a
one-line ``UserError`` naming it.

Storage is a local or shared path, or a URI (``s3://...``) read and written through
``pyarrow.fs``. Optuna's journal needs a local file: on a URI it lives in a local cache and is
copied to the study directory when the study stops. Nothing here imports torch or ray.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import optuna
import pandas as pd
import pyarrow.fs as pafs
import pydantic
from optuna.trial import TrialState
from pydantic.dataclasses import dataclass
from typing_extensions import TypedDict

from raycert.errors import UserError, one_line
from raycert.files import atomic_path, cache_dir

STUDY_JSON = "study.json"
RESULTS_JSON = "results.json"
TRIALS_PARQUET = "trials.parquet"
TRIALS_CSV = "trials.csv"
JOURNAL = "optuna.journal"
TUNE_DIR = "tune"
TUNE_STATE_BACKUP = "tune-state-backup"
CHOSEN = "chosen"
TEST_METRICS_JSON = "test_metrics.json"
TEST_RADII_CSV = "test_radii.csv"

TRIAL_STATUSES = ("completed", "pruned", "diverged", "error")
TRIAL_COLUMNS = ("trial_id", "number", "status", "node", "seconds")
METRIC_COLUMNS = ("clean_acc", "acr", "acr_cap", "acr_pct", "epoch", "train_seconds", "device")
PARETO = "pareto"
RADII_COLUMNS = ("radius", "correct")


def target_label(target: float) -> str:
    """How a target names columns and folders: ``0.8``, ``0.95``."""
    return f"{target:g}"


def feasible_column(target: float) -> str:
    """The trials-table column saying which trials are completed with ``clean_acc >= target``."""
    return f"feasible@{target_label(target)}"


# ---------------------------------------------------------------------------------------------
# The records
# ---------------------------------------------------------------------------------------------


@pydantic.with_config(pydantic.ConfigDict(extra="allow"))
class Metrics(TypedDict, total=False):
    """Val or test metrics of one model: ``clean_acc``, ``acr`` (pixel units, capped at
    ``acr_cap``), ``acr_pct`` (% of the cap); other keys (``cert_acc@<eps>``, ``epoch``, ``n``,
    ``eval_split``...) are kept as they are. ``None`` where a trial did not report one."""

    clean_acc: float | None
    acr: float | None
    acr_cap: float | None
    acr_pct: float | None


@dataclass
class TrialResources:
    """What each trial asked Ray for."""

    cpus_per_trial: float
    gpus_per_trial: float


@dataclass
class Hardware:
    """The alive Ray nodes when the study started: how many, and their CPUs and GPUs in total."""

    nodes: int
    cpus: float
    gpus: float


@dataclass
class TrialError:
    """Why a trial failed: Optuna's trial number (its Tune id when the journal lacks it), its
    Tune id and the error's one-line message."""

    trial: int | str
    trial_id: str
    message: str | None


@dataclass
class StudyMeta:
    """``study.json``: what a study was asked to do, where it ran and how far it got.

    ``status`` is ``running``, ``interrupted``, ``stopped`` (a trial raised a user error,
    named in ``error``) or ``finished``; ``trial_counts`` (trials per status of
    ``TRIAL_STATUSES``) and ``errors`` (one ``TrialError`` per failed trial) are filled when the
    study stops (empty while it runs); ``resources``, ``concurrency`` and ``hardware`` once Ray
    is up. ``acr_cap`` and ``eps_list`` are in pixel units.
    """

    name: str
    dataset: str
    preset: str
    method: str
    targets: list[float]
    trials_requested: int
    seed: int
    search_space: dict[str, Any]
    asha: bool
    base_config: dict[str, Any]
    acr_cap: float
    eps_list: list[float]
    storage: str
    address: str
    spec_file: str
    versions: dict[str, str]
    started: str
    finished: str | None
    status: str
    trial_counts: dict[str, int]
    resources: TrialResources | None = None
    concurrency: int | None = None
    hardware: Hardware | None = None
    error: TrialError | None = None
    errors: list[TrialError] = dataclasses.field(default_factory=list)


@dataclass
class ClosestTrial:
    """The completed trial nearest an unmet target (highest accuracy, then ACR)."""

    trial_id: str
    params: dict[str, Any]
    val: Metrics


@dataclass
class TargetResult:
    """One accuracy target's entry of ``results.json``.

    Met: the winning trial, its hyperparameters and val metrics, and once certified its test
    metrics and ``run_dir`` (``chosen/<target>``, relative to the study folder). Unmet: the
    ``closest`` trial (``None`` when no trial completed).
    """

    target: float
    met: bool
    trial_id: str | None = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    val: Metrics | None = None
    test: Metrics | None = None
    run_dir: str | None = None
    closest: ClosestTrial | None = None


@dataclass
class _Results:
    """``results.json``: one entry per target, in the study's order."""

    targets: list[TargetResult]


@dataclasses.dataclass(frozen=True)
class TrialRow:
    """One row of the trials table: a finished trial as Ray Tune last saw it.

    ``params`` are the searched hyperparameters by name (columns ``param.<name>``), ``metrics``
    the last reported val metrics (``METRIC_COLUMNS`` and ``cert_acc@<eps>``), ``run_dir`` the
    trial's checkpoint (a path or URI), ``seconds`` its wall time.
    """

    trial_id: str
    number: int
    status: str
    node: str | None
    seconds: float | None
    params: dict[str, Any]
    metrics: Metrics
    run_dir: str | None
    error: str | None = None

    def columns(self) -> dict[str, Any]:
        """The row as the table's columns, in their order."""
        row = {name: getattr(self, name) for name in TRIAL_COLUMNS}
        row.update({f"param.{name}": value for name, value in self.params.items()})
        row.update(self.metrics)
        row["error"] = self.error
        row["run_dir"] = self.run_dir
        return row

    @classmethod
    def from_columns(cls, row: dict[str, Any]) -> TrialRow:
        """A row read back from the table (numpy scalars as Python ones, NaN as None)."""
        metric_keys = [*METRIC_COLUMNS, *(k for k in row if k.startswith("cert_acc@"))]
        return cls(
            trial_id=str(row["trial_id"]),
            number=int(row["number"]),
            status=str(row["status"]),
            node=_plain(row.get("node")),
            seconds=_plain(row.get("seconds")),
            params={k.removeprefix("param."): _plain(v) for k, v in row.items() if _is_param(k)},
            metrics=Metrics(**{k: _plain(row[k]) for k in metric_keys if k in row}),
            run_dir=_plain(row.get("run_dir")),
            error=_plain(row.get("error")),
        )


# ---------------------------------------------------------------------------------------------
# The folder
# ---------------------------------------------------------------------------------------------


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

    @classmethod
    def at(cls, folder: str | Path) -> StudyDir:
        """The study folder ``folder`` itself (a local path or URI)."""
        parent, _, name = str(folder).rstrip("/").rpartition("/")
        return cls(parent or ".", name)

    def exists(self) -> bool:
        """Whether anything is stored at the study's path."""
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def has(self, rel: str) -> bool:
        return self.fs.get_file_info(self._p(rel)).type != pafs.FileType.NotFound

    def where(self, rel: str) -> str:
        """The full path or URI of ``rel``, as messages name it."""
        return f"{self.uri}/{rel}"

    def read_bytes(self, rel: str) -> bytes:
        """A file's whole content (``OSError`` if it cannot be read)."""
        with self.fs.open_input_stream(self._p(rel)) as stream:
            return stream.read()

    def list_dir(self, rel: str) -> list[str]:
        """Names of the entries of folder ``rel`` (none if it does not exist)."""
        selector = pafs.FileSelector(self._p(rel), allow_not_found=True)
        return [info.base_name for info in self.fs.get_file_info(selector)]

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a file whole; on a local path through a rename, so readers never see half."""
        path = self._p(rel)
        self.fs.create_dir(path.rpartition("/")[0], recursive=True)
        if not self.remote:
            with atomic_path(path) as tmp:
                tmp.write_bytes(data)
            return
        with self.fs.open_output_stream(path) as stream:
            stream.write(data)

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
        local = cache_dir("journals", key) / JOURNAL
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


# ---------------------------------------------------------------------------------------------
# Writing and reading the records
# ---------------------------------------------------------------------------------------------

Record = TypeVar("Record")


def _write_record(store: StudyDir, rel: str, record: Any) -> None:
    text = pydantic.TypeAdapter(type(record)).dump_json(record, indent=2)
    store.write_bytes(rel, text + b"\n")


def _read_record(store: StudyDir, rel: str, kind: type[Record]) -> Record:
    """``rel`` as a ``kind``; missing, unreadable or of another shape: a one-line UserError."""
    where = store.where(rel)
    if not store.has(rel):
        raise UserError(f"{where} is missing: is {store.uri} a raycert study folder?")
    try:
        return pydantic.TypeAdapter(kind).validate_json(store.read_bytes(rel))
    except OSError as exc:
        raise UserError(f"cannot read {where}: {one_line(exc)}") from None
    except pydantic.ValidationError as exc:
        raise UserError(f"cannot read {where}: {_validation_problem(exc)}") from None


def _validation_problem(exc: pydantic.ValidationError) -> str:
    """The first problem pydantic found, as ``lacks targets`` or ``targets.0: <message>``."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return f"lacks {where}"
    if error["type"] == "json_invalid":
        return f"not JSON ({error['msg'].removeprefix('Invalid JSON: ')})"
    return f"{where}: {error['msg']}" if where else error["msg"]


def write_meta(store: StudyDir, meta: StudyMeta) -> None:
    """Write ``study.json``."""
    _write_record(store, STUDY_JSON, meta)


def read_meta(store: StudyDir) -> StudyMeta:
    """Read ``study.json``."""
    return _read_record(store, STUDY_JSON, StudyMeta)


def write_results(store: StudyDir, results: list[TargetResult]) -> None:
    """Write ``results.json``, one entry per target."""
    _write_record(store, RESULTS_JSON, _Results(results))


def read_results(store: StudyDir) -> list[TargetResult] | None:
    """Read ``results.json``; ``None`` when there is none (the study has not finished)."""
    if not store.has(RESULTS_JSON):
        return None
    return _read_record(store, RESULTS_JSON, _Results).targets


def write_test(store: StudyDir, run_dir: str, metrics: Metrics, radii_csv: str) -> None:
    """Write a chosen run's test outcome: ``test_metrics.json`` and ``test_radii.csv`` (one row
    per test sample with at least ``RADII_COLUMNS``; ``Certificates.to_csv`` writes it)."""
    store.write_bytes(f"{run_dir}/{TEST_RADII_CSV}", radii_csv.encode())
    store.write_bytes(
        f"{run_dir}/{TEST_METRICS_JSON}",
        pydantic.TypeAdapter(Metrics).dump_json(metrics, indent=2) + b"\n",
    )


def read_test_metrics(store: StudyDir, run_dir: str) -> Metrics:
    """Read a chosen run's ``test_metrics.json``."""
    return _read_record(store, f"{run_dir}/{TEST_METRICS_JSON}", Metrics)


def read_test_radii(store: StudyDir, run_dir: str) -> tuple[np.ndarray, np.ndarray]:
    """A chosen run's certified radius (pixel units) per test sample, and whether each sample is
    classified correctly."""
    rel = f"{run_dir}/{TEST_RADII_CSV}"
    where = store.where(rel)
    if not store.has(rel):
        raise UserError(f"{where} is missing: the chosen model's test radii are not there")
    try:
        table = pd.read_csv(io.BytesIO(store.read_bytes(rel)))
    except Exception as exc:  # pandas raises many types for a damaged CSV
        raise UserError(f"cannot read {where}: {one_line(exc)}") from None
    missing = [c for c in RADII_COLUMNS if c not in table]
    if missing:
        raise UserError(f"{where} lacks the column(s) {', '.join(missing)}")
    radii = pd.to_numeric(table["radius"], errors="coerce").to_numpy(dtype=float)
    if len(radii) == 0 or np.isnan(radii).any() or (radii < 0).any():
        raise UserError(f"{where}: needs one radius >= 0 per test sample")
    correct = table["correct"].map(_truth)
    if correct.isna().any():
        raise UserError(f"{where}: 'correct' must be true/false or 1/0")
    return radii, correct.to_numpy(dtype=bool)


def _truth(value: Any) -> bool | None:
    """A CSV truth value: True/False, true/false or 1/0 (None when it is none of these)."""
    text = str(value).strip().lower()
    return {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}.get(
        text
    )


# ---------------------------------------------------------------------------------------------
# The trials table
# ---------------------------------------------------------------------------------------------


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
    error: str | None = None,
) -> TrialRow:
    """One row of the trials table from what Ray Tune kept of a trial (its last report);
    ``error`` says why a failed trial failed."""
    cert = sorted(k for k in metrics if k.startswith("cert_acc@"))
    return TrialRow(
        trial_id=trial_id,
        number=number,
        status=trial_status(errored, metrics),
        node=metrics.get("node") or metrics.get("node_ip") or metrics.get("hostname"),
        seconds=metrics.get("time_total_s"),
        params={p: config.get(p) for p in params},
        metrics=Metrics(**{k: metrics.get(k) for k in (*METRIC_COLUMNS, *cert)}),
        run_dir=run_dir,
        error=error,
    )


def is_completed(table: pd.DataFrame) -> pd.Series:
    """Per trial: ran to the end with a finite ``clean_acc`` and ``acr``. Only these trials
    can be feasible, win a target or lie on the Pareto front."""
    acc = pd.to_numeric(table["clean_acc"], errors="coerce")
    acr = pd.to_numeric(table["acr"], errors="coerce")
    return (table["status"] == "completed") & np.isfinite(acc) & np.isfinite(acr)


def trials_table(rows: list[TrialRow], targets: list[float]) -> pd.DataFrame:
    """The trials table: rows by ``number``, then per target ``feasible@<target>`` (completed
    and ``clean_acc >= target``) and ``pareto`` (on the (clean_acc, acr) front of completed
    trials)."""
    records = [row.columns() for row in rows]
    empty = [*TRIAL_COLUMNS, *METRIC_COLUMNS, "run_dir"]
    columns = list(dict.fromkeys(key for record in records for key in record)) or empty
    table = pd.DataFrame(records, columns=columns)
    table = table.sort_values("number", kind="stable").reset_index(drop=True)
    for column in ("clean_acc", "acr"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    completed = is_completed(table)
    for target in targets:
        table[feasible_column(target)] = completed & (table["clean_acc"] >= target)
    pareto = np.zeros(len(table), dtype=bool)
    if completed.any():
        pareto[completed.to_numpy()] = pareto_mask(
            table.loc[completed, ["clean_acc", "acr"]].to_numpy()
        )
    table[PARETO] = pareto
    table["run_dir"] = table.pop("run_dir")
    return table


def write_trials(store: StudyDir, table: pd.DataFrame) -> None:
    """``trials.parquet`` and ``trials.csv``, the same rows (``trials_table`` makes them)."""
    buffer = io.BytesIO()
    table.to_parquet(buffer, index=False)
    store.write_bytes(TRIALS_PARQUET, buffer.getvalue())
    store.write_bytes(TRIALS_CSV, table.to_csv(index=False).encode())


def read_trials(store: StudyDir, targets: list[float]) -> pd.DataFrame:
    """The trials table (from ``trials.parquet``, else ``trials.csv``) with its columns checked:
    ``TRIAL_COLUMNS``, ``clean_acc``, ``acr``, ``feasible@<target>`` per target and ``pareto``.
    Extra columns are kept; list-valued parameters become JSON text."""
    present = [rel for rel in (TRIALS_PARQUET, TRIALS_CSV) if store.has(rel)]
    if not present:
        raise UserError(f"{store.uri} has neither {TRIALS_PARQUET} nor {TRIALS_CSV}")
    for rel in present:  # the csv stands in for a damaged parquet
        where = store.where(rel)
        try:
            data = io.BytesIO(store.read_bytes(rel))
            table = pd.read_parquet(data) if rel == TRIALS_PARQUET else pd.read_csv(data)
            break
        except Exception as exc:  # pyarrow and pandas raise many types for a damaged file
            if rel == present[-1]:
                raise UserError(f"cannot read {where}: {one_line(exc)}") from None
    flags = [*(feasible_column(t) for t in targets), PARETO]
    missing = [c for c in (*TRIAL_COLUMNS, "clean_acc", "acr", *flags) if c not in table]
    if missing:
        raise UserError(f"{where} lacks the column(s) {', '.join(missing)}")
    for column in ("clean_acc", "acr", "number"):
        table[column] = pd.to_numeric(table[column], errors="coerce")
    if table["number"].isna().any() or (table["number"] % 1 != 0).any():
        raise UserError(f"{where}: the column number must hold an integer in every row")
    unknown = sorted(set(table["status"].astype(str)) - set(TRIAL_STATUSES))
    if unknown:
        raise UserError(f"{where}: unknown status {unknown[0]!r} (not one of {TRIAL_STATUSES})")
    for column in flags:
        if not pd.api.types.is_bool_dtype(table[column]):
            raise UserError(f"{where}: the column {column} must hold true or false in every row")
    table["number"] = table["number"].astype(int)
    table["trial_id"] = table["trial_id"].astype(str)
    table["status"] = table["status"].astype(str)
    for column in table.columns:
        if _is_param(column) and table[column].dtype == object:
            table[column] = table[column].map(_scalar)
    return table.sort_values("number", kind="stable").reset_index(drop=True)


def trial_counts(table: pd.DataFrame) -> dict[str, int]:
    """How many trials of the table ended in each of ``TRIAL_STATUSES``."""
    return {s: int((table["status"] == s).sum()) for s in TRIAL_STATUSES}


def choose(table: pd.DataFrame, target: float) -> tuple[TrialRow | None, TrialRow | None]:
    """The winner for ``target``: highest ACR, then accuracy, among the ``feasible@<target>``
    trials; when none is, the closest completed trial (highest accuracy, then ACR)."""
    feasible = table[table[feasible_column(target)]]
    if len(feasible):
        best = feasible.sort_values(["acr", "clean_acc", "number"], ascending=[False, False, True])
        return TrialRow.from_columns(best.iloc[0].to_dict()), None
    done = table[is_completed(table)]
    if len(done):
        near = done.sort_values(["clean_acc", "acr", "number"], ascending=[False, False, True])
        return None, TrialRow.from_columns(near.iloc[0].to_dict())
    return None, None


def won(target: float, winner: TrialRow) -> TargetResult:
    """A met target's result before test certification (no ``test`` or ``run_dir`` yet)."""
    return TargetResult(target, True, winner.trial_id, winner.params, winner.metrics)


def unmet(target: float, closest: TrialRow | None) -> TargetResult:
    """An unmet target's result, naming the closest trial when one completed."""
    near = closest and ClosestTrial(closest.trial_id, closest.params, closest.metrics)
    return TargetResult(target, False, closest=near)


def _is_param(column: str) -> bool:
    return column.startswith("param.")


def _scalar(value: Any) -> Any:
    """A parameter value as a scalar: lists and arrays (say, LR milestones) become JSON text."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)
    return value


def _plain(value: Any) -> Any:
    """JSON-ready scalars: numpy to Python, NaN to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------------------------------
# Optuna's journal
# ---------------------------------------------------------------------------------------------


def journal_storage(store: StudyDir) -> optuna.storages.JournalStorage:
    """The study's Optuna storage, on its journal file (created, with its folder, if new)."""
    journal = store.journal_file()
    journal.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))


def optuna_study(store: StudyDir, name: str) -> optuna.Study | None:
    """The study's Optuna study, loaded from its journal (None before there is one)."""
    if not store.journal_file().exists():
        return None
    try:
        return optuna.load_study(study_name=name, storage=journal_storage(store))
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


# ---------------------------------------------------------------------------------------------
# Pareto membership
# ---------------------------------------------------------------------------------------------


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
