"""The trials table (``trials.parquet`` and ``trials.csv``) and the rules that read it, once.

``is_completed``: a trial that ran to the end with finite accuracy and ACR. ``feasible@<target>``:
completed and accurate enough. ``pareto``: on the (clean_acc, acr) front of completed trials.
``choose``: the winner per target. The table is rewritten whenever a trial finishes, so a running
or interrupted study can be read too. A study that searches several methods has a
``param.<name>`` column per knob, empty (NaN) in the rows of trials whose method does not read it.
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pandas as pd

from raycert.errors import UserError, one_line
from raycert.studyfolder.folder import TRIALS_CSV, TRIALS_PARQUET, StudyDir
from raycert.studyfolder.pareto import pareto_mask
from raycert.studyfolder.records import (
    METRIC_COLUMNS,
    PARETO,
    POLISHED_FROM,
    TRIAL_COLUMNS,
    TRIAL_STATUSES,
    ClosestTrial,
    Metrics,
    TargetResult,
    TrialRow,
    feasible_column,
    is_param,
)


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
    ``error`` says why a failed trial failed. A parameter of ``params`` the trial's config
    lacks (a knob its method does not read) is not in its row: empty in the table."""
    cert = sorted(k for k in metrics if k.startswith("cert_acc@"))
    return TrialRow(
        trial_id=trial_id,
        number=number,
        status=trial_status(errored, metrics),
        node=metrics.get("node") or metrics.get("node_ip") or metrics.get("hostname"),
        seconds=metrics.get("time_total_s"),
        params={p: config[p] for p in params if p in config},
        metrics=Metrics(**{k: metrics.get(k) for k in (*METRIC_COLUMNS, *cert)}),
        run_dir=run_dir,
        error=error,
        polished_from=config.get(POLISHED_FROM),
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
    trials). An integer parameter some trials lack is a nullable integer column, so that it
    reads back as integers (``attack_steps`` 2, not 2.0) where present."""
    records = [row.columns() for row in rows]
    empty = [*TRIAL_COLUMNS, *METRIC_COLUMNS, "run_dir"]
    columns = list(dict.fromkeys(key for record in records for key in record)) or empty
    table = pd.DataFrame(records, columns=columns)
    table = table.sort_values("number", kind="stable").reset_index(drop=True)
    for column in (c for c in columns if is_param(c)):
        values = [r[column] for r in records if r.get(column) is not None]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            table[column] = table[column].astype("Int64")  # stays an int where some lack it
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
        if is_param(column) and table[column].dtype == object:
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
    return TargetResult(
        target, True, winner.trial_id, winner.params, winner.metrics, number=winner.number
    )


def unmet(target: float, closest: TrialRow | None) -> TargetResult:
    """An unmet target's result, naming the closest trial when one completed."""
    near = closest and ClosestTrial(
        closest.trial_id, closest.params, closest.metrics, number=closest.number
    )
    return TargetResult(target, False, closest=near)


def _scalar(value: Any) -> Any:
    """A parameter value as a scalar: lists and arrays (say, LR milestones) become JSON text."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)
    return value
