"""Spec files: the presets, search space and study settings in ``presets/<dataset>.toml``."""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from raycert.data import dataset_info
from raycert.errors import UserError
from raycert.training.config import _CHECKS, PRESETS, TrainConfig, _bool, _eps, _float, _int

PRESETS_DIR = Path(__file__).resolve().parent / "presets"


def load_preset(dataset: str, preset: str, spec_path: str | Path | None = None) -> TrainConfig:
    """The ``[presets.<preset>]`` table of ``presets/<dataset>.toml`` (or ``spec_path``).

    Other top-level tables (a study's ``[search]``) are ignored here. The table holds
    ``TrainConfig`` keys; ``dataset`` comes from the argument.
    """
    name = dataset_info(dataset).name
    path = Path(spec_path) if spec_path is not None else PRESETS_DIR / f"{name}.toml"
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
# Study specs: the [search] and [study] tables of raycert/study/presets/<dataset>.toml
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
    """Read the preset, ``[search]`` and ``[study]`` tables of ``presets/<dataset>.toml``.

    ``[search.<field>]`` tables name ``TrainConfig`` fields: ``type`` is one of ``PARAM_TYPES``
    with ``low``/``high`` (eps fields accept ``"2/255"``) or ``choices``. ``[study]`` holds the
    default ``targets`` (clean accuracies); ``[study.<preset>]`` may set ``trials``, ``targets``,
    ``asha`` and ``grace_period`` (epochs before ASHA may stop a trial). Every problem is a
    ``UserError`` naming the file and the key.
    """
    base = load_preset(dataset, preset, spec_path)
    name = dataset_info(dataset).name
    path = Path(spec_path) if spec_path is not None else PRESETS_DIR / f"{name}.toml"
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
