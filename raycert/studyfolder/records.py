"""The typed records of a study folder, and the names of the trials table's columns.

``StudyMeta`` is ``study.json``; ``TargetResult`` one target's entry of ``results.json``;
``Metrics`` a model's val or test metrics; ``TrialRow`` one row of the trials table. Records
are plain data that pydantic validates when they are read back (``raycert.studyfolder.folder``
reads and writes them). Units: ``acr``, ``acr_cap`` and every eps are in pixel units of [0, 1]
images; accuracies are fractions in [0, 1].
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pydantic
from pydantic.dataclasses import dataclass
from typing_extensions import TypedDict

TRIAL_STATUSES = ("completed", "pruned", "diverged", "error")
TRIAL_COLUMNS = ("trial_id", "number", "status", "node", "seconds")
METRIC_COLUMNS = ("clean_acc", "acr", "acr_cap", "acr_pct", "epoch", "train_seconds", "device")
PARAM_PREFIX = "param."
FIDELITY = "fidelity"  # a multi-fidelity study's trial config key: the share of the run trained
POLISHED_FROM = "polished_from"  # a polish trial's: the number of the trial it fine-tuned
PARETO = "pareto"
RADII_COLUMNS = ("radius", "correct")
STAGE_PREFIX = "radius_"  # test_radii.csv: the radius after each verifier stage of a cascade
PGD_COLUMN = "pgd_radius"  # test_radii.csv: the smallest eps where PGD flipped the prediction


def target_label(target: float) -> str:
    """How a target names columns and folders: ``0.8``, ``0.95``."""
    return f"{target:g}"


def feasible_column(target: float) -> str:
    """The trials-table column saying which trials are completed with ``clean_acc >= target``."""
    return f"feasible@{target_label(target)}"


def is_param(column: str) -> bool:
    """Whether a trials-table column holds a searched hyperparameter (``param.<name>``)."""
    return column.startswith(PARAM_PREFIX)


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
    named in ``error``) or ``finished`` (every trial ran, or the budget was spent);
    ``trial_counts`` (trials per status of ``TRIAL_STATUSES``) and ``errors`` (one
    ``TrialError`` per failed trial) are filled when the study stops (empty while it runs);
    ``resources``, ``concurrency`` and ``hardware`` once Ray is up. ``acr_cap`` and
    ``eps_list`` are in pixel units. ``budget_s`` is the wall-clock budget of the whole study
    (``--budget``; ``None``: none), ``spent_s`` the wall time its drivers have run, in seconds.
    ``attack``: the chosen models' test certification also runs PGD (``pgd_acc@<eps>``,
    ``pgd_radius``); false in older studies. ``rungs``: the shares of the preset's run that
    trials train (``[1.0]``: one length; more: a multi-fidelity study). ``polish``: the
    ``TrainConfig`` changes of the study's polish trials (``None``: it polishes nothing).
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
    attack: bool = False
    resources: TrialResources | None = None
    concurrency: int | None = None
    hardware: Hardware | None = None
    error: TrialError | None = None
    errors: list[TrialError] = dataclasses.field(default_factory=list)
    budget_s: float | None = None
    spent_s: float = 0.0
    rungs: list[float] = dataclasses.field(default_factory=lambda: [1.0])
    polish: dict[str, Any] | None = None

    def trial_params(self) -> list[str]:
        """The trials table's parameter columns: the searched fields, and in a multi-fidelity
        study each trial's ``fidelity``."""
        return [*self.search_space, *([FIDELITY] if len(self.rungs) > 1 else [])]


@dataclass
class ClosestTrial:
    """The completed trial nearest an unmet target (highest accuracy, then ACR)."""

    trial_id: str
    params: dict[str, Any]
    val: Metrics
    number: int | None = None  # Optuna's trial number (None in studies written before it)


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
    number: int | None = None  # the winner's Optuna trial number (None before it was recorded)


@dataclass
class Results:
    """``results.json``: one entry per target, in the study's order."""

    targets: list[TargetResult]


@dataclasses.dataclass(frozen=True)
class TrialRow:
    """One row of the trials table: a finished trial as Ray Tune last saw it.

    ``params`` are the searched hyperparameters by name (columns ``param.<name>``), ``metrics``
    the last reported val metrics (``METRIC_COLUMNS`` and ``cert_acc@<eps>``), ``run_dir`` the
    trial's checkpoint (relative to the study folder: ``StudyDir.locate`` finds it), ``seconds``
    its wall time. A polish trial's row names
    the trial whose model it fine-tuned (``polished_from``, a column only where one does).
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
    polished_from: int | None = None

    def columns(self) -> dict[str, Any]:
        """The row as the table's columns, in their order."""
        row = {name: getattr(self, name) for name in TRIAL_COLUMNS}
        row.update({f"{PARAM_PREFIX}{name}": value for name, value in self.params.items()})
        row.update(self.metrics)
        row["error"] = self.error
        if self.polished_from is not None:
            row[POLISHED_FROM] = self.polished_from
        row["run_dir"] = self.run_dir
        return row

    @classmethod
    def from_columns(cls, row: dict[str, Any]) -> TrialRow:
        """A row read back from the table (numpy scalars as Python ones, NaN as None); an
        empty parameter (a knob the trial's method does not read) is left out of ``params``."""
        metric_keys = [*METRIC_COLUMNS, *(k for k in row if k.startswith("cert_acc@"))]
        parent = _plain(row.get(POLISHED_FROM))
        return cls(
            trial_id=str(row["trial_id"]),
            number=int(row["number"]),
            status=str(row["status"]),
            node=_plain(row.get("node")),
            seconds=_plain(row.get("seconds")),
            params={
                k.removeprefix(PARAM_PREFIX): _plain(v)
                for k, v in row.items()
                if is_param(k) and _plain(v) is not None  # empty: a knob the trial lacks
            },
            metrics=Metrics(**{k: _plain(row[k]) for k in metric_keys if k in row}),
            run_dir=_plain(row.get("run_dir")),
            error=_plain(row.get("error")),
            polished_from=None if parent is None else int(parent),
        )


@dataclasses.dataclass(frozen=True)
class SampleRadii:
    """A chosen model's radii per test sample (``test_radii.csv``), in pixel units.

    ``radius`` is the certified radius (of the whole verifier cascade; 0 where misclassified)
    and ``correct`` whether each sample is classified correctly. ``stages`` holds the radius
    after each stage of the cascade, by verifier name in cascade order (``radius_<stage>``
    columns; empty in studies written before cascades). ``pgd`` is the empirical radius, the
    smallest eps at which PGD flipped the prediction (``pgd_radius``: ``inf`` where no flip was
    found up to the cap, 0 where misclassified); ``None`` when the study did not attack.
    """

    radius: np.ndarray
    correct: np.ndarray
    stages: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    pgd: np.ndarray | None = None

    def cascades(self) -> dict[str, np.ndarray]:
        """The radius after each stage, named by the cascade up to it (``ibp``, then
        ``ibp+crown-ibp``): a later stage only searches above an earlier one's radius."""
        names = list(self.stages)
        return {"+".join(names[: i + 1]): self.stages[name] for i, name in enumerate(names)}


def _plain(value: Any) -> Any:
    """JSON-ready scalars: numpy to Python, NaN to None."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
