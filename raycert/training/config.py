"""Typed training configs and the presets in ``raycert/study/presets/<dataset>.toml``.

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raycert.cert.models import ARCHITECTURES
from raycert.data import dataset_info
from raycert.errors import UserError
from raycert.units import parse_eps

PRESETS_DIR = Path(__file__).resolve().parents[1] / "studies"
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
