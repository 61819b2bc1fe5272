"""Read a persisted study folder for the report, and rank its hyperparameters.

Everything is read through ``raycert.studyfolder``, the typed contract the study writes with:
``study.json`` (``StudyMeta``), the trials table, ``results.json`` (``TargetResult`` per
target), each chosen model's test radii and ``optuna.journal``. Missing or unreadable required
files are a one-line ``UserError`` naming the file; extra columns and keys are ignored. Nothing
here imports what trains (no torch, no ray).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd

from raycert.errors import UserError, one_line
from raycert.studyfolder import (
    JOURNAL,
    PARETO,
    RESULTS_JSON,
    STUDY_JSON,
    SampleRadii,
    StudyDir,
    StudyMeta,
    TargetResult,
    feasible_column,
    is_completed,
    optuna_study,
    pareto_mask,
    read_meta,
    read_results,
    read_test_radii,
    read_trials,
)

MIN_TRIALS_FOR_IMPORTANCE = 4


@dataclass
class ChosenModel:
    """One accuracy target's result and, when met and certified, the chosen model's test radii
    (``samples``: certified radius, correctness, per-stage and PGD radii per test sample)."""

    result: TargetResult
    samples: SampleRadii | None = None

    @property
    def radii(self) -> np.ndarray | None:
        """The certified radius per test sample (pixel units), if certified."""
        return None if self.samples is None else self.samples.radius

    @property
    def correct(self) -> np.ndarray | None:
        """Whether each test sample is classified correctly, if certified."""
        return None if self.samples is None else self.samples.correct


@dataclass
class StudyResults:
    """Everything the report shows about one study, read from its folder.

    ``name`` labels the study on the page (``meta.name``, or with a suffix when two studies
    share a name); ``chosen`` is empty until the study has written ``results.json``.
    """

    directory: Path
    meta: StudyMeta
    trials: pd.DataFrame
    chosen: list[ChosenModel]
    name: str = ""
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str = ""

    @property
    def targets(self) -> list[float]:
        return self.meta.targets

    @property
    def acr_cap(self) -> float:
        return self.meta.acr_cap

    @property
    def eps_list(self) -> list[float]:
        """The dataset's standard radii at which certified accuracy is reported."""
        return self.meta.eps_list

    @property
    def params(self) -> list[str]:
        """Searched hyperparameter names (the ``param.<name>`` columns)."""
        return [c.removeprefix("param.") for c in self.trials.columns if c.startswith("param.")]

    def completed(self) -> pd.DataFrame:
        """Trials that ran to the end with finite accuracy and ACR (``is_completed``)."""
        return self.trials[is_completed(self.trials)]

    def feasible(self, target: float) -> pd.Series:
        """Per trial: completed with at least ``target`` clean accuracy (``feasible@<target>``)."""
        return self.trials[feasible_column(target)]

    def pareto(self) -> pd.DataFrame:
        """The trials on the stored Pareto front, by accuracy then ACR."""
        return self.trials[self.trials[PARETO]].sort_values(["clean_acc", "acr"])

    def method_of(self, params: dict[str, Any]) -> str:
        """The method of a trial with ``params``: its ``method`` parameter where the study
        searched several, else the study's."""
        return str(params.get("method", self.meta.method))

    def methods(self) -> list[str]:
        """The methods of the completed trials, where the study searched several (else [])."""
        done = self.completed()
        if "param.method" not in done:
            return []
        return sorted(str(m) for m in done["param.method"].dropna().unique())

    def fronts(self) -> dict[str, pd.DataFrame]:
        """The Pareto front of each searched method (``--method acert,sabr``, or ``all``) by
        method, else ``{"": pareto()}``; each by accuracy then ACR."""
        done, methods = self.completed(), self.methods()
        if len(methods) < 2:
            return {"": self.pareto()}
        fronts = {}
        for method in methods:
            rows = done[done["param.method"] == method]
            on_front = pareto_mask(rows[["clean_acc", "acr"]].to_numpy(dtype=float))
            fronts[str(method)] = rows[on_front].sort_values(["clean_acc", "acr"])
        return fronts


def load_study(directory: Path) -> StudyResults:
    """Read a study folder; a missing or corrupt required file is a one-line UserError."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise UserError(f"{directory} is a file; give the study's folder (it holds {STUDY_JSON})")
    if not directory.is_dir():
        raise UserError(f"study directory {directory} does not exist")
    store = StudyDir.at(directory)
    meta = read_meta(store)
    trials = read_trials(store, meta.targets)
    results = read_results(store)
    if results is None and meta.status == "finished":
        raise UserError(f"{store.where(RESULTS_JSON)} is missing, yet the study has finished")
    chosen = [_chosen(store, result) for result in results or []]
    study = StudyResults(directory, meta, trials, chosen, name=meta.name)
    study.importances, study.importance_note = param_importances(study, store)
    return study


def _chosen(store: StudyDir, result: TargetResult) -> ChosenModel:
    if not (result.met and result.run_dir):
        return ChosenModel(result)
    return ChosenModel(result, read_test_radii(store, result.run_dir))


# ---------------------------------------------------------------------------------------------
# Hyperparameter importance for ACR (Optuna's PED-ANOVA: needs neither scipy nor scikit-learn)
# ---------------------------------------------------------------------------------------------


def param_importances(study: StudyResults, store: StudyDir) -> tuple[dict[str, float], str]:
    """Importance of each hyperparameter for ACR, and a note saying where it came from.

    From the study's Optuna journal when it loads, holds enough completed trials and names its
    ``acr`` objective (the study sets metric names; its distributions know log scales); else
    from the completed rows of the trials table, told to a fresh in-memory Optuna study. Fewer
    than ``MIN_TRIALS_FOR_IMPORTANCE`` completed trials, or no hyperparameter that varies: no
    importances, and the note says why.
    """
    completed = study.completed()
    varied = [p for p in study.params if completed[f"param.{p}"].nunique() > 1]
    if len(completed) < MIN_TRIALS_FOR_IMPORTANCE or not varied:
        return {}, (
            f"importances need {MIN_TRIALS_FOR_IMPORTANCE} completed trials and a varied "
            f"hyperparameter; this study has {len(completed)} completed"
        )
    reason = f"no {JOURNAL}"
    with _quiet_optuna():
        if store.has(JOURNAL):
            try:
                return _journal_importances(store, study), f"Optuna PED-ANOVA on {JOURNAL}"
            except Exception as exc:  # the journal is optional: any failure uses the table
                reason = f"{JOURNAL} not used ({one_line(exc)})"
        importances = _table_importances(completed, varied, study.meta.search_space)
    return importances, f"Optuna PED-ANOVA on the trials table; {reason}"


@contextmanager
def _quiet_optuna() -> Iterator[None]:
    """Optuna without its INFO logs and warnings, restoring its verbosity afterwards."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def _evaluate(study: optuna.Study, objective: int) -> dict[str, float]:
    """PED-ANOVA ranks parameters for *low* target values, so ACR is negated."""
    importances = optuna.importance.get_param_importances(
        study,
        evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
        target=lambda t: -t.values[objective],
    )
    return {name: float(v) for name, v in importances.items() if math.isfinite(v)}


def _journal_importances(store: StudyDir, study: StudyResults) -> dict[str, float]:
    """PED-ANOVA on the journal's completed trials, for the objective named ``acr``."""
    journal_study = optuna_study(store, study.meta.name)
    if journal_study is None:
        raise ValueError(f"it holds no study named {study.meta.name!r}")
    if "acr" not in (journal_study.metric_names or []):
        raise ValueError("it names no acr objective")
    complete = journal_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        raise ValueError(f"only {len(complete)} completed trials")
    importances = _evaluate(journal_study, journal_study.metric_names.index("acr"))
    if not importances:
        raise ValueError("no importances came out")
    return importances


def _table_importances(
    completed: pd.DataFrame, params: list[str], space: dict[str, Any]
) -> dict[str, float]:
    """Importances from table rows; a parameter a trial lacks (NaN, None) is left out of it."""
    distributions = {p: _distribution(completed[f"param.{p}"], space.get(p)) for p in params}
    fresh = optuna.create_study(direction="maximize")
    for row in completed.to_dict("records"):
        values = {p: _python(row[f"param.{p}"]) for p in params if not _missing(row[f"param.{p}"])}
        fresh.add_trial(
            optuna.trial.create_trial(
                value=float(row["acr"]),
                params=values,
                distributions={p: distributions[p] for p in values},
            )
        )
    return _evaluate(fresh, 0)


def is_log_scale(values: pd.Series, spec: Any) -> bool:
    """Whether a numeric hyperparameter was searched on a log scale, per its search-space entry.

    An entry that says ``log`` (``{"log": true}``, ``{"type": "loguniform"}``, ``"loguniform"``)
    decides; without one, positive values spanning two decades or more count as log-scaled.
    """
    if isinstance(spec, dict):
        if "log" in spec:
            return bool(spec["log"])
        spec = " ".join(str(v) for v in spec.values() if isinstance(v, str))
    if isinstance(spec, str):
        return "log" in spec.lower()
    values = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(values) and values.min() > 0 and values.max() / values.min() >= 100)


def _distribution(values: pd.Series, spec: Any) -> optuna.distributions.BaseDistribution:
    values = values[values.notna()]
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return optuna.distributions.CategoricalDistribution(
            sorted({_python(v) for v in values}, key=str)
        )
    low, high = float(values.min()), float(values.max())
    return optuna.distributions.FloatDistribution(low, high, log=is_log_scale(values, spec))


def _missing(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _python(value: Any) -> Any:
    """A plain Python scalar (numpy and pandas scalars are not valid Optuna parameter values)."""
    return value.item() if isinstance(value, np.generic) else value
