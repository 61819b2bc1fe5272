"""The folder ``<storage>/<name>/`` of a study, its file names, and reading and writing its JSON
records and the chosen runs' test outcomes.

Storage is a local or shared path, or a URI (``s3://...``) read and written through
``pyarrow.fs``; on a local path every file is written through a rename, so readers never see
half of one. A file that is missing, unreadable or of another shape is a one-line ``UserError``
naming it.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import pydantic

from raycert.errors import UserError, one_line
from raycert.files import atomic_path, cache_dir
from raycert.paths import absolute, is_uri
from raycert.studyfolder.records import (
    PGD_COLUMN,
    RADII_COLUMNS,
    STAGE_PREFIX,
    Metrics,
    Results,
    SampleRadii,
    StudyMeta,
    TargetResult,
)
from raycert.validation import record_error

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


class StudyDir:
    """``<storage>/<name>/`` on a local or shared path or behind a URI; a relative path is
    resolved against the working folder (``raycert.paths.absolute``)."""

    def __init__(self, storage: str | Path, name: str) -> None:
        self.remote = is_uri(storage)
        self.uri = f"{absolute(storage).rstrip('/')}/{name}"
        try:
            self.fs, self.path = pafs.FileSystem.from_uri(self.uri)
        except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
            raise UserError(f"cannot use storage {str(storage)!r}: {exc}") from None

    @classmethod
    def at(cls, folder: str | Path) -> StudyDir:
        """The study folder ``folder`` itself (a local path or URI)."""
        parent, _, name = str(folder).rstrip("/").rpartition("/")
        return cls(parent or ".", name)

    def exists(self) -> bool:
        """Whether anything is stored at the study's path."""
        return self.fs.get_file_info(self.path).type != pafs.FileType.NotFound

    def has(self, rel: str) -> bool:
        """Whether anything is stored at ``rel``, relative to the study folder."""
        return self.fs.get_file_info(self._p(rel)).type != pafs.FileType.NotFound

    def where(self, rel: str) -> str:
        """The full path or URI of ``rel``, as messages name it."""
        return f"{self.uri}/{rel}"

    def locate(self, run_dir: str) -> str:
        """Where a run folder the study records lies now: ``run_dir`` is relative to the study
        folder (so a copied or moved folder names its own runs); an absolute path or a URI, as
        older tables hold, is kept."""
        return run_dir if run_dir.startswith("/") or is_uri(run_dir) else self.where(run_dir)

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
        raise record_error(exc, where) from None


def write_meta(store: StudyDir, meta: StudyMeta) -> None:
    """Write ``study.json``."""
    _write_record(store, STUDY_JSON, meta)


def read_meta(store: StudyDir) -> StudyMeta:
    """Read ``study.json``."""
    return _read_record(store, STUDY_JSON, StudyMeta)


def write_results(store: StudyDir, results: list[TargetResult]) -> None:
    """Write ``results.json``, one entry per target."""
    _write_record(store, RESULTS_JSON, Results(results))


def read_results(store: StudyDir) -> list[TargetResult] | None:
    """Read ``results.json``; ``None`` when there is none (the study has not finished)."""
    if not store.has(RESULTS_JSON):
        return None
    return _read_record(store, RESULTS_JSON, Results).targets


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


def read_test_radii(store: StudyDir, run_dir: str) -> SampleRadii:
    """A chosen run's radii per test sample (pixel units): the certified radius, whether each
    sample is classified correctly and, where the CSV has them, the radius after each verifier
    stage (``radius_<stage>``) and PGD's empirical radius (``pgd_radius``). Older CSVs without
    those columns read as ``SampleRadii`` without stages or PGD radii."""
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
    if len(table) == 0:
        raise UserError(f"{where}: needs one radius >= 0 per test sample")
    correct = table["correct"].map(_truth)
    if correct.isna().any():
        raise UserError(f"{where}: 'correct' must be true/false or 1/0")
    stages = {
        str(c).removeprefix(STAGE_PREFIX): _radii(table, c, where)
        for c in table.columns
        if str(c).startswith(STAGE_PREFIX)
    }
    pgd = _radii(table, PGD_COLUMN, where, infinite=True) if PGD_COLUMN in table else None
    return SampleRadii(_radii(table, "radius", where), correct.to_numpy(dtype=bool), stages, pgd)


def _radii(table: pd.DataFrame, column: str, where: str, infinite: bool = False) -> np.ndarray:
    """A column of radii: numbers >= 0, finite unless ``infinite`` (PGD found no flip)."""
    radii = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
    bad = np.isnan(radii) | (radii < 0) | (~np.isfinite(radii) & (not infinite))
    if bad.any():
        kind = "a radius >= 0 or inf" if infinite else "one radius >= 0"
        raise UserError(f"{where}: column {column!r} needs {kind} per test sample")
    return radii


def _truth(value: Any) -> bool | None:
    """A CSV truth value: True/False, true/false or 1/0 (None when it is none of these)."""
    text = str(value).strip().lower()
    return {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}.get(
        text
    )
