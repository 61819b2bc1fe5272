"""Spec files: the presets, search space and study settings in ``presets/<dataset>.toml``.

A spec file is read once and validated whole against ``SpecFile``, whose models declare every
table and key with its rule:

- ``[presets.<preset>]``: ``TrainConfig`` keys (``dataset`` comes from the file's dataset).
- ``[search.<field>]``: one searched ``TrainConfig`` field (``raycert.spec.search``), searched
  for every method that reads it (``raycert.spec.methods``).
- ``[methods.<method>]``: one training method's own knobs (``search``, searched in its trials
  only) and its ``recipe``, a start of every study that searches the method
  (``raycert.spec.methods``). A knob is declared once: in ``[search]`` or in one method's table.
- ``[study]``: default accuracy ``targets``; ``[study.<preset>]`` may set ``trials``,
  ``budget`` (wall clock, ``"10m"``), ``targets``, ``asha`` and ``grace_period`` (epochs
  before ASHA may stop a trial), ``rungs`` and ``eta`` (multi-fidelity search over the run's
  length, ``raycert.study.policy.fidelity``), ``sampler`` (``tpe``, or ``random`` for a
  baseline), ``recipe_first`` (default true: the study starts from the recipes, the preset's
  own configuration first), ``starts`` (known-good configurations tried next, each a recipe with
  some searched fields changed: ``starts = [{ max_eps = 0.2 }]`` changes the preset's method's,
  ``{ method = "sabr", sabr_lambda = 0.3 }`` SABR's) and ``polish`` (once no whole trial fits
  the budget, fine-tune the front's models with these ``TrainConfig`` changes:
  ``raycert.study.policy.polish``).

What a study of the file searches, and from where, is a ``StudySpec`` (``raycert.spec.study``).
Any problem, an unknown table or key included, is a one-line ``UserError`` naming the file and
the key (``presets.quick.lr``), with the closest known key for a misspelt one.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from raycert.data import dataset_info
from raycert.errors import UserError
from raycert.spec.methods import STUDY_METHODS, MethodTable, method_tables, named_tables, reads
from raycert.spec.search import SearchParam, read_as_fields
from raycert.training.config import TrainConfig
from raycert.units import parse_duration
from raycert.validation import STRICT, did_you_mean, validation_error

PRESETS_DIR = Path(__file__).resolve().parent / "presets"
PRESETS = ("smoke", "quick", "paper")
# A fine-tuning continues its parent's model on its parent's data: these stay the parent's.
UNPOLISHABLE = ("dataset", "model", "init", "train_limit", "val_limit")


def _accuracy(value: float) -> float:
    if not 0 < value < 1:
        raise ValueError(f"target {value!r} is outside (0, 1); write 0.9 for 90%")
    return value


# Clean-accuracy targets: distinct numbers strictly between 0 and 1, kept sorted.
Targets = Annotated[
    tuple[Annotated[float, AfterValidator(_accuracy)], ...],
    Field(strict=False),
    AfterValidator(lambda targets: tuple(sorted(set(targets)))),
]


def _duration(value: Any) -> float:
    """``parse_duration`` for pydantic: a wall-clock budget like ``"10m"``."""
    if not isinstance(value, str):
        raise ValueError(f'must be a duration like "10m" or "2h", got {value!r}')
    try:
        return parse_duration(value)
    except UserError as exc:
        raise ValueError(str(exc)) from None


# Wall-clock seconds, written "90s", "10m", "2h" or "1.5d".
Duration = Annotated[float, BeforeValidator(_duration)]


def _rungs(rungs: tuple[float, ...]) -> tuple[float, ...]:
    if list(rungs) != sorted(set(rungs)) or rungs[-1] != 1 or rungs[0] <= 0:
        raise ValueError(
            f"must be increasing shares of the run in (0, 1] ending at 1, got {list(rungs)}"
        )
    return rungs


# A multi-fidelity study's rungs: increasing shares of the preset's run, the last one whole.
Rungs = Annotated[tuple[float, ...], Field(strict=False, min_length=1), AfterValidator(_rungs)]


class PresetStudy(BaseModel):
    """``[study.<preset>]``: the preset's trial count and wall-clock ``budget`` (a study ends at
    whichever comes first), its own targets, whether ASHA stops weak trials after
    ``grace_period`` epochs, the ``rungs`` of a multi-fidelity search and its ``eta`` (a rung's
    best ``1/eta`` are re-run at the next), the Optuna ``sampler`` (``random`` is a baseline),
    whether the study starts from the recipes (``recipe_first``), the known-good ``starts``
    tried after them (each a few searched fields changed from a method's recipe, checked
    against its search space by ``SpecFile``; none without ``recipe_first``), and ``polish``: the
    ``TrainConfig`` changes of the fine-tuning trials that spend the end of a budget on the
    models of the front (``raycert.study.polish``; none without a budget)."""

    model_config = STRICT

    trials: int | None = Field(None, ge=1)
    budget: Duration | None = None
    targets: Targets | None = None
    asha: bool = False
    grace_period: int = Field(1, ge=1)
    rungs: Rungs = (1.0,)
    eta: int = Field(3, ge=2)
    sampler: Literal["tpe", "random"] = "tpe"
    recipe_first: bool = True
    starts: Annotated[tuple[dict[str, Any], ...], Field(strict=False)] = ()
    polish: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _one_kind_of_early_stop(self) -> PresetStudy:
        if self.asha and len(self.rungs) > 1:
            raise ValueError("asha and rungs are two ways to spend less on weak trials: pick one")
        return self

    @field_validator("polish")
    @classmethod
    def _polish_changes_training(cls, polish: dict[str, Any] | None) -> dict[str, Any] | None:
        if polish is None:
            return None
        fields = [name for name in TrainConfig.model_fields if name not in UNPOLISHABLE]
        for key in polish:
            if key not in fields:
                hint = did_you_mean(key, fields)
                raise ValueError(f"{key!r} is not a field a fine-tuning may change{hint}")
        return read_as_fields(polish, "")


class StudyTable(BaseModel):
    """``[study]``: default ``targets`` and one optional table per preset."""

    model_config = STRICT

    targets: Targets = ()
    smoke: PresetStudy = PresetStudy()
    quick: PresetStudy = PresetStudy()
    paper: PresetStudy = PresetStudy()


class SpecFile(BaseModel):
    """A whole spec file. Validate it with ``context={"dataset": name}`` so that preset tables
    need not repeat the dataset (one that names another dataset is an error)."""

    model_config = STRICT

    presets: dict[str, TrainConfig]
    search: dict[str, SearchParam] = {}
    methods: dict[str, MethodTable] = {}
    study: StudyTable = StudyTable()

    @field_validator("presets", mode="before")
    @classmethod
    def _presets_of_this_dataset(cls, presets: Any, info: ValidationInfo) -> Any:
        dataset = (info.context or {}).get("dataset")
        if dataset is None or not isinstance(presets, dict):
            return presets
        for preset, table in presets.items():
            if isinstance(table, dict) and table.get("dataset", dataset) != dataset:
                raise ValueError(f"[presets.{preset}] is for {table['dataset']!r}, not {dataset!r}")
        return {
            p: {"dataset": dataset, **t} if isinstance(t, dict) else t for p, t in presets.items()
        }

    @field_validator("search", mode="before")
    @classmethod
    def _searchable_fields(cls, search: Any) -> Any:
        return named_tables(search)

    @field_validator("methods", mode="before")
    @classmethod
    def _study_methods(cls, methods: Any) -> Any:
        return method_tables(methods)

    def space_of(self, method: str | None) -> dict[str, tuple[SearchParam, str]]:
        """The knobs searched in ``method``'s trials, each with the table declaring it:
        ``[search]``'s fields it reads, then its own ``[methods.<method>.search]``; every
        declared knob for ``None`` (a start of a preset the file lacks)."""
        space = {
            key: (param, f"[search.{key}]")
            for key, param in self.search.items()
            if method is None or reads(method, key)
        }
        for name, table in self.methods.items():
            if method in (None, name):
                for key, param in table.search.items():
                    space[key] = (param, f"[methods.{name}.search.{key}]")
        return space

    @model_validator(mode="after")
    def _each_knob_declared_once(self) -> SpecFile:
        declared = {key: f"[search.{key}]" for key in self.search}
        for method, table in self.methods.items():
            for key in table.search:
                where = f"[methods.{method}.search.{key}]"
                if key in declared:
                    raise ValueError(
                        f"{where} declares {key} again, after {declared[key]}: declare a knob "
                        f"once ([search.{key}] searches it for every method that reads it)"
                    )
                declared[key] = where
        return self

    @model_validator(mode="after")
    def _recipes_lie_in_their_search_space(self) -> SpecFile:
        for method, table in self.methods.items():
            space = self.space_of(method)
            for key, value in table.recipe.items():
                _check_in_space(f"methods.{method}.recipe.{key}", method, key, value, space)
        return self

    @model_validator(mode="after")
    def _starts_lie_in_the_search_space(self) -> SpecFile:
        for preset in PRESETS:
            own = self.presets[preset].method if preset in self.presets else None
            for number, start in enumerate(getattr(self.study, preset).starts):
                where = f"study.{preset}.starts[{number}]"
                if not set(start) - {"method"}:
                    raise ValueError(f"{where} changes nothing: name a searched field")
                method = start.get("method", own)
                if method is not None and method not in STUDY_METHODS:
                    raise ValueError(
                        f"{where}.method: {method!r} is not a method a study searches; one of "
                        + ", ".join(STUDY_METHODS)
                    )
                written = dict(start)
                read_as_fields(start, f"{where}.")
                space = self.space_of(method)
                for key, value in start.items():
                    if key != "method":
                        where_key = f"{where}.{key}"
                        _check_in_space(where_key, method, key, value, space, written)
        return self


def _check_in_space(
    where: str,
    method: str | None,
    key: str,
    value: Any,
    space: dict[str, tuple[SearchParam, str]],
    written: dict[str, Any] | None = None,
) -> None:
    """A ``ValueError`` when ``key`` is not in ``space``, ``method``'s search space (``None``:
    every method's), or ``value`` lies outside its range (``written``: the values as the file
    spells them, for the message)."""
    if key not in space:
        searched = ", ".join(space) or "nothing"
        whom = f"for {method}" if method else "for any method"
        raise ValueError(f"{where} is not searched {whom} (it searches {searched})")
    param, table = space[key]
    if not param.holds(value):
        shown = (written or {}).get(key, value)
        raise ValueError(f"{where} = {shown!r} is outside {table}")


def spec_file(dataset: str, spec_path: str | Path | None = None) -> Path:
    """The spec file of ``dataset``: ``spec_path``, else the packaged preset file."""
    name = dataset_info(dataset).name
    return Path(spec_path) if spec_path is not None else PRESETS_DIR / f"{name}.toml"


def read_spec(dataset: str, path: Path) -> SpecFile:
    """Read and validate the whole spec file ``path`` of ``dataset``, once."""
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.toml"))
        listing = f"; spec files there: {', '.join(known)}" if known else ""
        raise UserError(f"no spec file {path}{listing}")
    try:
        table = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None
    try:
        return SpecFile.model_validate(table, context={"dataset": dataset_info(dataset).name})
    except ValidationError as exc:
        raise validation_error(exc, str(path), SpecFile) from None


def load_preset(dataset: str, preset: str, spec_path: str | Path | None = None) -> TrainConfig:
    """The ``[presets.<preset>]`` config of ``presets/<dataset>.toml`` (or ``spec_path``)."""
    path = spec_file(dataset, spec_path)
    return preset_config(read_spec(dataset, path), path, preset)


def preset_config(spec: SpecFile, path: Path, preset: str) -> TrainConfig:
    """The ``[presets.<preset>]`` config of the file read as ``spec`` from ``path``."""
    if preset not in spec.presets:
        choices = ", ".join(spec.presets) or "none"
        raise UserError(f"{path} has no preset {preset!r}; presets there: {choices}")
    return spec.presets[preset]


def parse_targets(values: Any, where: str = "targets") -> tuple[float, ...]:
    """Accuracy targets as sorted distinct floats, each strictly between 0 and 1."""
    try:
        return TypeAdapter(Targets, config=STRICT).validate_python(values)
    except ValidationError as exc:
        raise validation_error(exc, where, Targets) from None
