"""Read a persisted study directory for the report, and rank its hyperparameters.

A study writes ``<storage>/<name>/``: ``study.json`` (settings, hardware, versions, status),
``trials.parquet`` (or ``trials.csv``; one row per trial with ``param.<name>`` columns and
validation metrics), ``results.json`` (the chosen model per accuracy target),
``chosen/<target>/test_radii.csv`` (per-sample certified radii on the test split) and
``optuna.journal``. Missing or unreadable required files are a one-line ``UserError`` naming the
file; extra columns and keys are ignored. Nothing here imports what trains (no torch, no ray).
"""

from __future__ import annotations

import json
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

from raycert.errors import UserError
from raycert.units import parse_eps

REQUIRED_STUDY_KEYS = ("name", "dataset", "targets", "acr_cap")
REQUIRED_TRIAL_COLUMNS = ("trial_id", "number", "status", "clean_acc", "acr")
RADII_COLUMNS = ("radius", "correct")
MIN_TRIALS_FOR_IMPORTANCE = 4


@dataclass
class ChosenModel:
    """The model chosen for one accuracy target (or, if unmet, the closest trial)."""

    target: float
    met: bool
    trial_id: str | None
    params: dict[str, Any]
    val: dict[str, float]
    test: dict[str, float]
    run_dir: str | None
    closest: dict[str, Any] | None
    radii: np.ndarray | None  # certified radius per test sample, from test_radii.csv
    correct: np.ndarray | None  # whether each test sample is classified correctly


@dataclass
class StudyResults:
    """Everything the report shows about one study, read from its directory."""

    directory: Path
    meta: dict[str, Any]
    trials: pd.DataFrame
    chosen: list[ChosenModel]
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str = ""

    @property
    def name(self) -> str:
        return str(self.meta["name"])

    @property
    def targets(self) -> list[float]:
        return [float(t) for t in self.meta["targets"]]

    @property
    def acr_cap(self) -> float:
        return float(self.meta["acr_cap"])

    @property
    def eps_list(self) -> list[float]:
        """The dataset's standard radii at which certified accuracy is reported."""
        return [parse_eps(e) for e in self.meta.get("eps_list") or []]

    @property
    def params(self) -> list[str]:
        """Searched hyperparameter names (the ``param.<name>`` columns)."""
        return [c.removeprefix("param.") for c in self.trials.columns if c.startswith("param.")]

    def completed(self) -> pd.DataFrame:
        """Trials that ran to the end with finite accuracy and ACR."""
        t = self.trials
        return t[(t["status"] == "completed") & t["clean_acc"].notna() & t["acr"].notna()]

    def feasible(self, target: float) -> pd.Series:
        """Per trial: completed and at least ``target`` clean accuracy (``feasible@<target>``)."""
        done = (self.trials["status"] == "completed") & self.trials["acr"].notna()
        column = f"feasible@{target:g}"
        if column in self.trials:
            return done & self.trials[column].fillna(False).astype(bool)
        return done & (self.trials["clean_acc"] >= target)


def load_study(directory: Path) -> StudyResults:
    """Read a study directory; a missing or corrupt required file is a one-line UserError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"study directory {directory} does not exist")
    meta = _read_meta(directory / "study.json")
    trials = _read_trials(directory)
    chosen = _read_chosen(directory, meta)
    study = StudyResults(directory, meta, trials, chosen)
    study.importances, study.importance_note = param_importances(study)
    return study


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise UserError(f"{path} is missing: is this a raycert study directory?")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"cannot read {path}: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_meta(path: Path) -> dict[str, Any]:
    meta = _read_json(path)
    if not isinstance(meta, dict):
        raise UserError(f"{path} should hold a JSON object, not {type(meta).__name__}")
    missing = [key for key in REQUIRED_STUDY_KEYS if key not in meta]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}")
    try:
        targets = [float(t) for t in meta["targets"]]
        float(meta["acr_cap"])
        [parse_eps(e) for e in meta.get("eps_list") or []]
    except (TypeError, ValueError, UserError) as exc:
        raise UserError(f"{path}: bad targets, acr_cap or eps_list ({_one_line(exc)})") from None
    meta["targets"] = targets
    return meta


def _read_trials(directory: Path) -> pd.DataFrame:
    parquet, csv = directory / "trials.parquet", directory / "trials.csv"
    paths = [p for p in (parquet, csv) if p.is_file()]  # the csv stands in for a damaged parquet
    if not paths:
        raise UserError(f"{directory} has neither trials.parquet nor trials.csv")
    for path in paths:
        try:
            trials = pd.read_parquet(path) if path == parquet else pd.read_csv(path)
            break
        except Exception as exc:  # pyarrow and pandas raise many types for a damaged file
            if path == paths[-1]:
                raise UserError(f"cannot read {path}: {_one_line(exc)}") from None
    missing = [c for c in REQUIRED_TRIAL_COLUMNS if c not in trials]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}")
    for column in ("clean_acc", "acr", "number"):
        trials[column] = pd.to_numeric(trials[column], errors="coerce")
    if trials["number"].isna().any() or (trials["number"] % 1 != 0).any():
        raise UserError(f"{path}: the column number must hold an integer in every row")
    trials["number"] = trials["number"].astype(int)
    trials["trial_id"] = trials["trial_id"].astype(str)
    trials["status"] = trials["status"].astype(str)
    for column in trials.columns:
        if column.startswith("param.") and trials[column].dtype == object:
            trials[column] = trials[column].map(_scalar)
    return trials.sort_values("number", kind="stable").reset_index(drop=True)


def _scalar(value: Any) -> Any:
    """A parameter value as a scalar: lists and arrays (say, LR milestones) become JSON text."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple | dict):
        return json.dumps(value, default=str)
    return value


def _read_chosen(directory: Path, meta: dict[str, Any]) -> list[ChosenModel]:
    """The chosen models of results.json (absent only while a study has not finished)."""
    path = directory / "results.json"
    if not path.is_file() and meta.get("status") != "finished":
        return []
    results = _read_json(path)
    entries = results.get("targets") if isinstance(results, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise UserError(f"{path} should hold {{'targets': [one object per target]}}")
    chosen = []
    for entry in entries:
        if "target" not in entry or "met" not in entry:
            raise UserError(f"{path}: every target entry needs 'target' and 'met'")
        met = bool(entry["met"])
        run_dir = entry.get("run_dir")
        radii, correct = (
            _read_radii(directory / run_dir / "test_radii.csv") if met and run_dir else (None, None)
        )
        chosen.append(
            ChosenModel(
                target=float(entry["target"]),
                met=met,
                trial_id=entry.get("trial_id"),
                params=entry.get("params") or {},
                val=entry.get("val") or {},
                test=entry.get("test") or {},
                run_dir=run_dir,
                closest=entry.get("closest"),
                radii=radii,
                correct=correct,
            )
        )
    return chosen


def _read_radii(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise UserError(f"{path} is missing: the chosen model's test radii are not there")
    try:
        table = pd.read_csv(path)
    except Exception as exc:  # pandas raises many types for a damaged CSV
        raise UserError(f"cannot read {path}: {_one_line(exc)}") from None
    missing = [c for c in RADII_COLUMNS if c not in table]
    if missing:
        raise UserError(f"{path} lacks the column(s) {', '.join(missing)}")
    radii = pd.to_numeric(table["radius"], errors="coerce").to_numpy(dtype=float)
    if len(radii) == 0 or np.isnan(radii).any() or (radii < 0).any():
        raise UserError(f"{path}: needs one radius >= 0 per test sample")
    correct = table["correct"].map(_truth)
    if correct.isna().any():
        raise UserError(f"{path}: 'correct' must be true/false or 1/0")
    return radii, correct.to_numpy(dtype=bool)


def _truth(value: Any) -> bool | None:
    """A CSV truth value: True/False, true/false or 1/0 (None when it is none of these)."""
    text = str(value).strip().lower()
    return {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}.get(
        text
    )


# ---------------------------------------------------------------------------------------------
# Hyperparameter importance for ACR (Optuna's PED-ANOVA: needs neither scipy nor scikit-learn)
# ---------------------------------------------------------------------------------------------


def param_importances(study: StudyResults) -> tuple[dict[str, float], str]:
    """Importance of each hyperparameter for ACR, and a note saying where it came from.

    From the study's ``optuna.journal`` when it loads and holds enough completed trials (its
    distributions know log scales); else from the completed rows of the trials table, told to a
    fresh in-memory Optuna study. Fewer than ``MIN_TRIALS_FOR_IMPORTANCE`` completed trials,
    or no hyperparameter that varies: no importances, and the note says why.
    """
    completed = study.completed()
    varied = [p for p in study.params if completed[f"param.{p}"].nunique() > 1]
    if len(completed) < MIN_TRIALS_FOR_IMPORTANCE or not varied:
        return {}, (
            f"importances need {MIN_TRIALS_FOR_IMPORTANCE} completed trials and a varied "
            f"hyperparameter; this study has {len(completed)} completed"
        )
    journal = study.directory / "optuna.journal"
    reason = "no optuna.journal"
    with _quiet_optuna():
        if journal.is_file():
            try:
                return _journal_importances(journal, study), "Optuna PED-ANOVA on optuna.journal"
            except Exception as exc:  # the journal is optional: any failure uses the table
                reason = f"optuna.journal not used ({_one_line(exc)})"
        space = study.meta.get("search_space") or {}
        importances = _table_importances(completed, varied, space)
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


def _evaluate(optuna_study: optuna.Study, objective: int) -> dict[str, float]:
    """PED-ANOVA ranks parameters for *low* target values, so ACR is negated."""
    importances = optuna.importance.get_param_importances(
        optuna_study,
        evaluator=optuna.importance.PedAnovaImportanceEvaluator(),
        target=lambda t: -t.values[objective],
    )
    return {name: float(v) for name, v in importances.items() if math.isfinite(v)}


def _journal_importances(path: Path, study: StudyResults) -> dict[str, float]:
    backend = optuna.storages.journal.JournalFileBackend(str(path))
    storage = optuna.storages.JournalStorage(backend)
    names = optuna.get_all_study_names(storage)
    if not names:
        raise ValueError("it holds no study")
    name = study.name if study.name in names else names[-1]
    optuna_study = optuna.load_study(study_name=name, storage=storage)
    complete = optuna_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        raise ValueError(f"only {len(complete)} completed trials")
    importances = _evaluate(optuna_study, _acr_objective(optuna_study, complete, study))
    if not importances:
        raise ValueError("no importances came out")
    return importances


def _acr_objective(
    optuna_study: optuna.Study, complete: list[optuna.trial.FrozenTrial], study: StudyResults
) -> int:
    """Which objective is ACR: by metric name, else the one whose values are the table's ACRs."""
    names = optuna_study.metric_names
    if names and "acr" in names:
        return names.index("acr")
    acrs = study.completed()["acr"].to_numpy(dtype=float)
    for k in range(len(optuna_study.directions)):
        values = np.array([t.values[k] for t in complete], dtype=float)
        if np.isclose(values[:, None], acrs[None, :], rtol=1e-9, atol=1e-12).any(1).all():
            return k
    raise ValueError("no objective matches the trials' ACR")


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
    values = values[~values.map(_missing)]
    if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
        return optuna.distributions.CategoricalDistribution(
            sorted({_python(v) for v in values}, key=str)
        )
    low, high = float(values.min()), float(values.max())
    return optuna.distributions.FloatDistribution(low, high, log=is_log_scale(values, spec))


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float | np.floating) and math.isnan(value))


def _python(value: Any) -> Any:
    """A plain Python scalar (numpy and pandas scalars are not valid Optuna parameter values)."""
    return value.item() if isinstance(value, np.generic) else value
