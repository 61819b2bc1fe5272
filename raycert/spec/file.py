"""Spec files: the presets, search space and study settings in ``presets/<dataset>.toml``.

A spec file is read once and validated whole against ``SpecFile``, whose models declare every
table and key with its rule:

- ``[presets.<preset>]``: ``TrainConfig`` keys (``dataset`` comes from the file's dataset).
- ``[search.<field>]``: one searched ``TrainConfig`` field (``raycert.spec.search``).
- ``[study]``: default accuracy ``targets``; ``[study.<preset>]`` may set ``trials``,
  ``budget`` (wall clock, ``"10m"``), ``targets``, ``asha`` and ``grace_period`` (epochs
  before ASHA may stop a trial), ``rungs`` and ``eta`` (multi-fidelity search over the run's
  length, ``raycert.study.policy.fidelity``), ``sampler`` (``tpe``, or ``random`` for a
  baseline), ``recipe_first`` (default true: trial 0 is the preset's own configuration),
  ``starts`` (known-good configurations tried next, each the recipe with some searched fields
  changed: ``starts = [{ max_eps = 0.2 }]``) and ``polish`` (once no whole trial fits the
  budget, fine-tune the front's models with these ``TrainConfig`` changes:
  ``raycert.study.policy.polish``).

Any problem, an unknown table or key included, is a one-line ``UserError`` naming the file and
the key (``presets.quick.lr``), with the closest known key for a misspelt one.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
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
from raycert.spec.search import CategoricalParam, FloatParam, IntParam, SearchParam
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
    whether the preset's recipe is tried first (``recipe_first``), the known-good ``starts``
    tried after it (each a few searched fields changed from the recipe, checked against
    ``[search]`` by ``SpecFile``; none without ``recipe_first``), and ``polish``: the
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
        return _read_as_fields(polish, "")


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
        if not isinstance(search, dict):
            return search
        fields = [name for name in TrainConfig.model_fields if name != "dataset"]
        for key, table in search.items():
            if key not in fields:
                raise ValueError(
                    f"{key!r} is not a searchable TrainConfig field{did_you_mean(key, fields)}"
                )
            if isinstance(table, dict) and "name" in table:
                raise ValueError(f"[search.{key}] has unknown key 'name': the table's name is it")
        return {k: {**t, "name": k} if isinstance(t, dict) else t for k, t in search.items()}

    @model_validator(mode="after")
    def _starts_lie_in_the_search_space(self) -> SpecFile:
        for preset in PRESETS:
            for number, start in enumerate(getattr(self.study, preset).starts):
                where = f"study.{preset}.starts[{number}]"
                if not start:
                    raise ValueError(f"{where} changes nothing: name a searched field")
                for key in start:
                    if key not in self.search:
                        searched = ", ".join(self.search) or "none"
                        raise ValueError(
                            f"{where}.{key} is not searched ([search] holds {searched})"
                        )
                written = dict(start)
                for key, value in _read_as_fields(start, f"{where}.").items():
                    if not self.search[key].holds(value):
                        raise ValueError(
                            f"{where}.{key} = {written[key]!r} is outside [search.{key}]"
                        )
        return self


def _read_as_fields(changes: dict[str, Any], where: str) -> dict[str, Any]:
    """``changes`` (``TrainConfig`` field -> value) with each value read by its field's own rule,
    in place (``"2/255"`` becomes a float); a ``ValueError`` named ``<where><key>`` if one
    is refused."""
    for key, value in changes.items():
        try:
            changes[key] = TrainConfig.check_value(key, value)
        except ValueError as exc:
            raise ValueError(f"{where}{key}: {exc}") from None
    return changes


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
    return _preset(read_spec(dataset, path), path, preset)


def _preset(spec: SpecFile, path: Path, preset: str) -> TrainConfig:
    if preset not in spec.presets:
        choices = ", ".join(spec.presets) or "none"
        raise UserError(f"{path} has no preset {preset!r}; presets there: {choices}")
    return spec.presets[preset]


@dataclass(frozen=True)
class StudySpec:
    """What a study searches and how long: the preset's config, the search space, default
    accuracy targets and trial budget, and how it spends less on weak trials (ASHA, or the
    ``rungs`` of a multi-fidelity search with its ``eta``).

    ``search_space`` is the ``[search]`` table as read (bounds parsed), for study.json.
    ``recipe`` is the preset's own value of the searched fields: the known-good configuration
    a study tries first.
    """

    path: Path
    preset: str
    base: TrainConfig
    params: tuple[FloatParam | IntParam | CategoricalParam, ...]
    search_space: dict[str, Any]
    targets: tuple[float, ...]
    trials: int | None
    budget_s: float | None = None
    asha: bool = False
    grace_period: int = 1
    rungs: tuple[float, ...] = (1.0,)
    eta: int = 3
    sampler: str = "tpe"
    recipe_first: bool = True
    starts: tuple[dict[str, Any], ...] = ()
    polish: dict[str, Any] | None = None

    @property
    def recipe(self) -> dict[str, Any]:
        """The preset's value of each searched field that the search space holds (inside a
        range, or one of the choices); a field whose preset value lies outside is sampled."""
        return {
            param.name: getattr(self.base, param.name)
            for param in self.params
            if param.holds(getattr(self.base, param.name))
        }

    @property
    def known_points(self) -> list[dict[str, Any]]:
        """What the study tries first, in order (Optuna's enqueued trials): the recipe, then
        each start (the recipe with the start's fields changed); none without
        ``recipe_first``. Fields in none of them are sampled."""
        if not self.recipe_first:
            return []
        points = [self.recipe, *({**self.recipe, **start} for start in self.starts)]
        return [point for point in points if point]


def load_study_spec(dataset: str, preset: str, spec_path: str | Path | None = None) -> StudySpec:
    """The preset, search space and study settings of ``presets/<dataset>.toml`` (or
    ``spec_path``) for a study of ``preset``; the file must have a ``[search]`` table."""
    path = spec_file(dataset, spec_path)
    spec = read_spec(dataset, path)
    base = _preset(spec, path, preset)
    if not spec.search:
        raise UserError(f"{path} has no [search] table: a study needs hyperparameters to search")
    settings = getattr(spec.study, preset) if preset in PRESETS else PresetStudy()
    ramp_end = min(base.warmup_epochs + base.ramp_epochs, base.epochs)
    if settings.asha and settings.grace_period < ramp_end:
        raise UserError(
            f"{path}: study.{preset}.grace_period {settings.grace_period} lets ASHA rank trials "
            f"before their radius ramp ends at epoch {ramp_end}; set it to {ramp_end} or more"
        )
    return StudySpec(
        path=path,
        preset=preset,
        base=base,
        params=tuple(spec.search.values()),
        search_space={
            key: param.model_dump(mode="json", exclude={"name"})
            for key, param in spec.search.items()
        },
        targets=spec.study.targets if settings.targets is None else settings.targets,
        trials=settings.trials,
        budget_s=settings.budget,
        asha=settings.asha,
        grace_period=settings.grace_period,
        rungs=settings.rungs,
        eta=settings.eta,
        sampler=settings.sampler,
        recipe_first=settings.recipe_first,
        starts=settings.starts,
        polish=settings.polish,
    )


def parse_targets(values: Any, where: str = "targets") -> tuple[float, ...]:
    """Accuracy targets as sorted distinct floats, each strictly between 0 and 1."""
    try:
        return TypeAdapter(Targets, config=STRICT).validate_python(values)
    except ValidationError as exc:
        raise validation_error(exc, where, Targets) from None
