"""Typed training configs and the presets in ``studies/<dataset>.toml``.

A ``TrainConfig`` is plain data: it validates itself on construction (every bad value is a
one-line ``UserError`` naming the field) and round-trips through JSON with ``to_dict`` and
``from_dict``. Fields left at ``None`` mean "the dataset's or the method's default"; ``resolve``
fills them in, and the trainer saves the resolved config next to the model it trains.

Every eps is an L-inf radius in pixel units of [0, 1] images; eps fields also accept the
``2/255`` and ``2px`` spellings of ``raycert.units.parse_eps``.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raycert.data import dataset_info
from raycert.errors import UserError
from raycert.models import ARCHITECTURES
from raycert.units import parse_eps

STUDIES_DIR = Path(__file__).resolve().parents[1] / "studies"
PRESETS = ("smoke", "quick", "paper")

METHODS = ("standard", "ibp", "acert")
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("onecycle", "step", "constant")
INITS = ("ibp", "default")

# Radii at which certified accuracy is reported by default: the ones the literature tabulates
# (MNIST 0.1/0.3, CIFAR-10 2/255 and 8/255, TinyImageNet 1/255; see notes/acert.md section 3).
STANDARD_RADII: dict[str, tuple[float, ...]] = {
    "mnist": (0.1, 0.3),
    "cifar10": (2 / 255, 8 / 255),
    "tinyimagenet": (1 / 255,),
    "synthetic": (0.05,),
}


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides what a training run computes (not where it runs or writes).

    Schedule: ``warmup_epochs`` at eps 0, then a ``ramp_epochs`` ramp to ``max_eps`` that grows
    as ``t ** ramp_power`` up to ``ramp_mid`` of the ramp and linearly after (auto_LiRPA's
    smoothed schedule); the Shi et al. (2021) regularizers run during warm-up and ramp.
    ACERT's radius search takes ``search_steps`` bracketing steps down to ``search_tol``
    (pixel units); per-epoch evaluation certifies the first ``eval_limit`` validation samples
    to ``eval_tol``, and the last epoch certifies the whole validation split.
    """

    dataset: str
    model: str = "cnn_small"
    method: str = "acert"
    epochs: int = 10
    batch_size: int = 128
    max_eps: float | None = None  # pixel units; None: the dataset's ACR cap
    warmup_epochs: int = 1
    ramp_epochs: int = 5
    ramp_mid: float = 0.25
    ramp_power: float = 4.0
    kappa: float = 0.0
    reg_weight: float = 0.5
    reg_tol: float = 0.5
    l1: float = 0.0
    init: str | None = None  # None: "ibp" for ibp/acert, "default" for standard
    optimizer: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    lr_schedule: str = "onecycle"
    lr_milestones: tuple[int, ...] = ()  # epochs where the "step" schedule multiplies lr by 0.2
    grad_clip: float = 10.0  # max L2 norm of the gradient; 0 turns clipping off
    seed: int = 0
    train_limit: int | None = None
    val_limit: int | None = None
    eval_limit: int | None = None
    eval_tol: float = 1e-5  # pixel units
    search_steps: int = 10
    search_tol: float = 1e-6  # pixel units
    cert_cap: float | None = None  # pixel units; None: the dataset's ACR cap
    cert_eps: tuple[float, ...] | None = None  # None: STANDARD_RADII of the dataset
    augment: bool | None = None  # None: the dataset's default
    crop_pad: int | None = None  # None: the dataset's default

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in _OPTIONAL:
                continue
            object.__setattr__(self, f.name, _CHECKS[f.name](f.name, value))

    def resolve(self) -> TrainConfig:
        """This config with every ``None`` replaced by the dataset's or the method's default
        (and ``max_eps`` 0 for the standard method, which trains at no radius)."""
        info = dataset_info(self.dataset)
        standard = self.method == "standard"
        defaults = {
            "max_eps": 0.0 if standard else info.acr_cap,
            "init": "default" if standard else "ibp",
            "cert_cap": info.acr_cap,
            "cert_eps": STANDARD_RADII.get(info.name, ()),
            "augment": info.augment,
            "crop_pad": info.crop_pad,
        }
        missing = {key: value for key, value in defaults.items() if getattr(self, key) is None}
        if standard:  # clean training has no radius: its schedule and regularizers stay at 0
            missing["max_eps"] = 0.0
        return dataclasses.replace(self, **missing)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists); ``from_dict`` reads it back."""
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Build from a dict (JSON, TOML, CLI); unknown keys are a ``UserError`` naming them."""
        known = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise UserError(f"unknown config key {key!r}{hint}; known keys: {', '.join(known)}")
        if "dataset" not in values:
            raise UserError("config needs a 'dataset'")
        return cls(**values)


def load_preset(dataset: str, preset: str, spec_path: str | Path | None = None) -> TrainConfig:
    """The ``[presets.<preset>]`` table of ``studies/<dataset>.toml`` (or ``spec_path``).

    Other top-level tables (a study's ``[search]``) are ignored here. The table holds
    ``TrainConfig`` keys; ``dataset`` comes from the argument.
    """
    name = dataset_info(dataset).name
    path = Path(spec_path) if spec_path is not None else STUDIES_DIR / f"{name}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.toml"))
        listing = f"; spec files there: {', '.join(known)}" if known else ""
        raise UserError(f"no spec file {path}{listing}")
    try:
        spec = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    presets = spec.get("presets", {})
    if not isinstance(presets, dict) or preset not in presets:
        choices = ", ".join(presets) if isinstance(presets, dict) and presets else "none"
        raise UserError(f"{path} has no preset {preset!r}; presets there: {choices}")
    table = dict(presets[preset])
    if table.setdefault("dataset", name) != name:
        raise UserError(f"{path} [presets.{preset}]: dataset {table['dataset']!r} is not {name!r}")
    try:
        return TrainConfig.from_dict(table)
    except UserError as exc:
        raise UserError(f"{path} [presets.{preset}]: {exc}") from None


# ---------------------------------------------------------------------------------------------
# Study specs: the [search] and [study] tables of studies/<dataset>.toml
# ---------------------------------------------------------------------------------------------

PARAM_TYPES = ("float", "log-float", "int", "categorical")
_PARAM_KEYS = {
    "float": {"type", "low", "high"},
    "log-float": {"type", "low", "high"},
    "int": {"type", "low", "high", "step"},
    "categorical": {"type", "choices"},
}
_STUDY_PRESET_KEYS = {"trials", "targets", "asha", "grace_period"}


@dataclass(frozen=True)
class SearchParam:
    """One searched ``TrainConfig`` field: a range (``float``, ``log-float``, ``int`` with an
    optional ``step``) or a list of ``choices``. Bounds of eps fields are in pixel units."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    step: int = 1
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class StudySpec:
    """What a study searches and how long: the preset's config, the search space, default
    accuracy targets and trial budget, and whether ASHA stops weak trials early.

    ``search_space`` is the ``[search]`` table as written in the file (for study.json).
    """

    path: Path
    preset: str
    base: TrainConfig
    params: tuple[SearchParam, ...]
    search_space: dict[str, Any]
    targets: tuple[float, ...]
    trials: int | None
    asha: bool = False
    grace_period: int = 1


def load_study_spec(dataset: str, preset: str, spec_path: str | Path | None = None) -> StudySpec:
    """Read the preset, ``[search]`` and ``[study]`` tables of ``studies/<dataset>.toml``.

    ``[search.<field>]`` tables name ``TrainConfig`` fields: ``type`` is one of ``PARAM_TYPES``
    with ``low``/``high`` (eps fields accept ``"2/255"``) or ``choices``. ``[study]`` holds the
    default ``targets`` (clean accuracies); ``[study.<preset>]`` may set ``trials``, ``targets``,
    ``asha`` and ``grace_period`` (epochs before ASHA may stop a trial). Every problem is a
    ``UserError`` naming the file and the key.
    """
    base = load_preset(dataset, preset, spec_path)
    name = dataset_info(dataset).name
    path = Path(spec_path) if spec_path is not None else STUDIES_DIR / f"{name}.toml"
    spec = tomllib.loads(path.read_text())  # load_preset has read and checked it
    search = spec.get("search")
    if not isinstance(search, dict) or not search:
        raise UserError(f"{path} has no [search] table: a study needs hyperparameters to search")
    params = tuple(_search_param(path, base, key, table) for key, table in search.items())

    study = spec.get("study", {})
    if not isinstance(study, dict):
        raise UserError(f"{path}: [study] must be a table")
    for key, value in study.items():
        if key != "targets" and (key not in PRESETS or not isinstance(value, dict)):
            known = ", ".join(("targets", *(f"[study.{p}]" for p in PRESETS)))
            raise UserError(f"{path} [study]: unknown key {key!r}; known: {known}")
    per_preset = study.get(preset, {})
    where = f"{path} [study.{preset}]"
    bad = sorted(set(per_preset) - _STUDY_PRESET_KEYS)
    if bad:
        known = ", ".join(sorted(_STUDY_PRESET_KEYS))
        raise UserError(f"{where}: unknown key {bad[0]!r}; known keys: {known}")
    targets = parse_targets(per_preset.get("targets", study.get("targets", [])), f"{path} targets")
    trials = per_preset.get("trials")
    if trials is not None:
        trials = _int(1)(f"{where} trials", trials)
    asha = _bool(f"{where} asha", per_preset.get("asha", False))
    grace = _int(1)(f"{where} grace_period", per_preset.get("grace_period", 1))
    return StudySpec(path, preset, base, params, search, targets, trials, asha, grace)


def parse_targets(values: Any, where: str = "targets") -> tuple[float, ...]:
    """Accuracy targets as sorted distinct floats, each strictly between 0 and 1."""
    if not isinstance(values, list | tuple):
        raise UserError(f"{where} must be a list of accuracies, got {values!r}")
    targets = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{where}: a target must be a number in (0, 1), got {value!r}")
        if not 0 < value < 1:
            raise UserError(f"{where}: target {value!r} is outside (0, 1); write 0.9 for 90%")
        targets.append(float(value))
    return tuple(sorted(set(targets)))


def _search_param(path: Path, base: TrainConfig, key: str, table: Any) -> SearchParam:
    """Parse ``[search.<key>]`` and check that its values make valid configs."""
    where = f"{path} [search.{key}]"
    fields = [f.name for f in dataclasses.fields(TrainConfig)]
    if key not in fields or key == "dataset":
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(f"{where}: {key!r} is not a searchable TrainConfig field{hint}")
    if not isinstance(table, dict):
        raise UserError(f"{where}: must be a table with a type, got {table!r}")
    kind = table.get("type")
    if kind not in PARAM_TYPES:
        raise UserError(f"{where}: type must be one of {', '.join(PARAM_TYPES)}; got {kind!r}")
    missing = sorted(_PARAM_KEYS[kind] - {"step"} - set(table))
    extra = sorted(set(table) - _PARAM_KEYS[kind])
    if missing or extra:
        problem = f"lacks {missing[0]!r}" if missing else f"has unknown key {extra[0]!r}"
        known = ", ".join(sorted(_PARAM_KEYS[kind]))
        raise UserError(f"{where}: a {kind} parameter {problem}; its keys: {known}")

    if kind == "categorical":
        choices = table["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: choices must be a non-empty list, got {choices!r}")
        if any(isinstance(c, list | dict) for c in choices):
            raise UserError(f"{where}: choices must be numbers, strings or booleans")
        param = SearchParam(key, kind, choices=tuple(choices))
        samples = list(choices)
    else:
        number = _int(-(2**62)) if kind == "int" else _bound(key)
        low, high = number(f"{where} low", table["low"]), number(f"{where} high", table["high"])
        if not low < high:
            raise UserError(f"{where}: low ({low}) must be below high ({high})")
        if kind == "log-float" and low <= 0:
            raise UserError(f"{where}: a log-float needs low > 0, got {low}")
        step = _int(1)(f"{where} step", table.get("step", 1))
        param = SearchParam(key, kind, low, high, step)
        samples = [low, high] if kind == "int" else [low, high, (low + high) / 2]
    for value in samples:  # every kind of value the search can produce must be a valid config
        try:
            dataclasses.replace(base, **{key: value})
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
    return param


def _bound(key: str):
    """Range bounds: numbers, and for eps fields also ``2/255`` or ``2px``."""
    eps_field = _CHECKS.get(key) is _eps

    def check(name: str, value: Any) -> float:
        if eps_field:
            return _eps(name, value)
        return _float()(name, value)

    return check


# ---------------------------------------------------------------------------------------------
# Field checks: each returns the (coerced) value or raises a one-line UserError naming the field
# ---------------------------------------------------------------------------------------------


def _int(minimum: int):
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{name} must be an integer, got {value!r}")
        if value < minimum:
            raise UserError(f"{name} must be >= {minimum}, got {value}")
        return value

    return check


def _float(low: float = -math.inf, high: float = math.inf, *, positive: bool = False):
    def check(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserError(f"{name} must be a number, got {value!r}")
        value = float(value)
        if not math.isfinite(value) or not low <= value <= high or (positive and value <= 0):
            bound = "> 0" if positive else f"in [{low:g}, {high:g}]"
            raise UserError(f"{name} must be {bound}, got {value!r}")
        return value

    return check


def _eps(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise UserError(f"{name} must be a radius like 0.3, 2/255 or 2px, got {value!r}")
    try:
        return parse_eps(value)
    except UserError as exc:
        raise UserError(f"{name}: {exc}") from None


def _eps_list(name: str, value: Any) -> tuple[float, ...]:
    if not isinstance(value, list | tuple):
        raise UserError(f"{name} must be a list of radii, got {value!r}")
    return tuple(_eps(name, v) for v in value)


def _milestones(name: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        raise UserError(f"{name} must be a list of epochs, got {value!r}")
    epochs = tuple(_int(1)(name, v) for v in value)
    if list(epochs) != sorted(set(epochs)):
        raise UserError(f"{name} must be strictly increasing, got {list(epochs)}")
    return epochs


def _choice(choices: tuple[str, ...]):
    def check(name: str, value: Any) -> str:
        if value not in choices:
            raise UserError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
        return value

    return check


def _dataset(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise UserError(f"{name} must be a dataset name, got {value!r}")
    return dataset_info(value).name


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise UserError(f"{name} must be true or false, got {value!r}")
    return value


_OPTIONAL = {
    "max_eps",
    "init",
    "train_limit",
    "val_limit",
    "eval_limit",
    "cert_cap",
    "cert_eps",
    "augment",
    "crop_pad",
}
_CHECKS = {
    "dataset": _dataset,
    "model": _choice(tuple(ARCHITECTURES)),
    "method": _choice(METHODS),
    "epochs": _int(1),
    "batch_size": _int(2),  # BatchNorm needs two samples per batch
    "max_eps": _eps,
    "warmup_epochs": _int(0),
    "ramp_epochs": _int(0),
    "ramp_mid": _float(0.0, 1.0),
    "ramp_power": _float(2.0),
    "kappa": _float(0.0, 1.0),
    "reg_weight": _float(0.0),
    "reg_tol": _float(positive=True),
    "l1": _float(0.0),
    "init": _choice(INITS),
    "optimizer": _choice(OPTIMIZERS),
    "lr": _float(positive=True),
    "weight_decay": _float(0.0),
    "lr_schedule": _choice(LR_SCHEDULES),
    "lr_milestones": _milestones,
    "grad_clip": _float(0.0),
    "seed": _int(0),
    "train_limit": _int(2),
    "val_limit": _int(1),
    "eval_limit": _int(1),
    "eval_tol": _float(positive=True),
    "search_steps": _int(0),
    "search_tol": _float(positive=True),
    "cert_cap": _eps,
    "cert_eps": _eps_list,
    "augment": _bool,
    "crop_pad": _int(0),
}
