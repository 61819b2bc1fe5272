"""The typed training config: every field, its default and its rule in one declaration.

A ``TrainConfig`` is frozen plain data (a pydantic model): it validates itself on construction,
and ``from_dict`` turns any bad value or unknown key into a one-line ``UserError`` naming the
field. It round-trips through JSON with ``to_dict`` and ``from_dict``. Fields left at ``None``
mean "the dataset's or the method's default"; ``resolve`` fills them in, and the trainer saves
the resolved config next to the model it trains.

Every eps is an L-inf radius in pixel units of [0, 1] images; eps fields (type ``Eps``) also
accept the ``2/255`` and ``2px`` spellings of ``raycert.units.parse_eps``.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from raycert.cert.models import ARCHITECTURES
from raycert.data import dataset_info
from raycert.errors import UserError
from raycert.units import parse_eps
from raycert.validation import STRICT, validation_error

# The training methods; ``raycert.training.methods.METHOD_SPECS`` declares what each one is.
Method = Literal["standard", "ibp", "acert", "mtl-ibp", "sabr", "crown-ibp"]
METHODS: tuple[str, ...] = get_args(Method)


def _eps(value: Any) -> float:
    """``parse_eps`` for pydantic: a radius written as a number, ``2/255`` or ``2px``."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError(f"must be a radius like 0.3, 2/255 or 2px, got {value!r}")
    try:
        return parse_eps(value)
    except UserError as exc:
        raise ValueError(str(exc)) from None


def _dataset(name: str) -> str:
    try:
        return dataset_info(name).name
    except UserError as exc:
        raise ValueError(str(exc)) from None


def _increasing(epochs: tuple[int, ...]) -> tuple[int, ...]:
    if list(epochs) != sorted(set(epochs)):
        raise ValueError(f"must be strictly increasing, got {list(epochs)}")
    return epochs


# An L-inf radius in pixel units of [0, 1] images: 0.0078, "2/255" or "2px".
Eps = Annotated[float, BeforeValidator(_eps)]
# A tuple field also reads the lists of JSON and TOML (its items stay strict).
Radii = Annotated[tuple[Eps, ...], Field(strict=False)]
Epochs = Annotated[
    tuple[Annotated[int, Field(ge=1)], ...], Field(strict=False), AfterValidator(_increasing)
]


class TrainConfig(BaseModel):
    """Everything that decides what a training run computes (not where it runs or writes).

    Schedule: ``warmup_epochs`` at eps 0, then a ``ramp_epochs`` ramp to ``max_eps`` that grows
    as ``t ** ramp_power`` up to ``ramp_mid`` of the ramp and linearly after (auto_LiRPA's
    smoothed schedule); the Shi et al. (2021) regularizers run during warm-up and ramp.
    Adaptive radii (ACERT's, and an option of every other bound-based method: ``adaptive``)
    come from a radius search of ``search_steps`` bracketing steps down to ``search_tol``
    (pixel units), or with ``search_probes`` k >= 1 from ``search_steps`` rounds of k probes per
    sample in batches of fixed shape (``raycert.cert.sweep``: no host sync on a GPU); per-epoch
    evaluation certifies the first ``eval_limit`` validation samples to ``eval_tol``, and the
    last epoch certifies the whole validation split.

    Method knobs: each method reads only the fields its entry of
    ``raycert.training.methods.METHOD_SPECS`` names (``MethodSpec.fields``); the others keep
    their defaults and change nothing. ``adaptive`` None is the method's own choice (on for
    ``acert``, off for the others) and stays None in ``resolve``, so a config's method can be
    swapped without carrying the other method's choice along. ``ibp`` with adaptive radii is
    ``acert`` and ``acert`` without them is ``ibp``: each training has one name, and the
    other spelling is refused, as are adaptive radii for ``standard``.
    """

    model_config = STRICT

    dataset: Annotated[str, AfterValidator(_dataset)]  # a registry name, any case
    model: Literal[tuple(ARCHITECTURES)] = "cnn_small"  # type: ignore[valid-type]
    method: Method = "acert"
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(128, ge=2)  # BatchNorm needs two samples per batch
    max_eps: Eps | None = None  # pixel units; None: the dataset's ACR cap
    warmup_epochs: float = Field(1, ge=0)  # fractions too: the schedule runs per batch
    ramp_epochs: float = Field(5, ge=0)
    ramp_mid: float = Field(0.25, ge=0, le=1)
    ramp_power: float = Field(4.0, ge=2)
    kappa: float = Field(0.0, ge=0, le=1)  # weight of the clean cross-entropy
    adaptive: bool | None = None  # per-sample certified radii; None: the method's default
    mtl_alpha: float = Field(0.5, ge=0, le=1)  # MTL-IBP: weight of the IBP loss (1: ibp)
    sabr_lambda: float = Field(0.4, gt=0, le=1)  # SABR: small box radius / eps (1: ibp)
    attack_steps: int = Field(1, ge=1)  # PGD steps of the MTL-IBP and SABR attack
    attack_step_size: float = Field(10.0, gt=0)  # per PGD step, in units of the attack's eps
    crown_ibp_final_beta: float = Field(0.0, ge=0, le=1)  # CROWN-IBP weight at the ramp's end
    reg_weight: float = Field(0.5, ge=0)
    reg_tol: float = Field(0.5, gt=0)
    l1: float = Field(0.0, ge=0)
    init: Literal["ibp", "default"] | None = None  # None: default for standard, else ibp
    optimizer: Literal["adam", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    lr_schedule: Literal["onecycle", "step", "constant"] = "onecycle"
    lr_milestones: Epochs = ()  # epochs where the "step" schedule multiplies lr by 0.2
    grad_clip: float = Field(10.0, ge=0)  # max L2 norm of the gradient; 0 turns clipping off
    seed: int = Field(0, ge=0)
    train_limit: int | None = Field(None, ge=2)
    val_limit: int | None = Field(None, ge=1)
    eval_limit: int | None = Field(None, ge=1)
    eval_tol: float = Field(1e-5, gt=0)  # pixel units
    search_steps: int = Field(10, ge=0)
    search_tol: float = Field(1e-6, gt=0)  # pixel units
    search_probes: int = Field(0, ge=0)  # 0: bracketing to search_tol; k: the fixed-shape sweep
    cert_cap: Eps | None = None  # pixel units; None: the dataset's ACR cap
    cert_eps: Radii | None = None  # None: the dataset's standard radii
    augment: bool | None = None  # None: the dataset's default
    crop_pad: int | None = Field(None, ge=0)  # None: the dataset's default

    @field_validator("adaptive")
    @classmethod
    def _adaptive_is_a_choice_of_the_method(
        cls, adaptive: bool | None, info: ValidationInfo
    ) -> bool | None:
        method = info.data.get("method")  # absent when the method itself was refused
        if adaptive is None or method is None:
            return adaptive
        # Imported here: the table holds the losses, which read this module's TrainConfig.
        from raycert.training.methods import METHOD_SPECS

        refusal = METHOD_SPECS[method].refuses(adaptive)
        if refusal:
            raise ValueError(refusal)
        return adaptive

    def resolve(self) -> TrainConfig:
        """This config with every ``None`` but ``adaptive``'s replaced by the dataset's or the
        method's default (and ``max_eps`` 0 for the standard method, which trains at no radius);
        ``adaptive`` None stays the method's own choice (``MethodSpec.is_adaptive``)."""
        info = dataset_info(self.dataset)
        standard = self.method == "standard"
        defaults = {
            "max_eps": 0.0 if standard else info.acr_cap,
            "init": "default" if standard else "ibp",
            "cert_cap": info.acr_cap,
            "cert_eps": info.standard_radii,
            "augment": info.augment,
            "crop_pad": info.crop_pad,
        }
        missing = {key: value for key, value in defaults.items() if getattr(self, key) is None}
        if standard:  # clean training has no radius: its schedule and regularizers stay at 0
            missing["max_eps"] = 0.0
        return self.replace(**missing)

    def ramp_warning(self) -> str | None:
        """One line when the run ends before its radius ramp does (it never trains at
        ``max_eps``), else None."""
        ramp_end = self.warmup_epochs + self.ramp_epochs
        if self.method == "standard" or ramp_end <= self.epochs:
            return None
        return (
            f"warning: warmup_epochs + ramp_epochs ({self.warmup_epochs:g} + "
            f"{self.ramp_epochs:g}) exceed epochs ({self.epochs}): the run ends before its radius"
            " reaches max_eps; shorten the ramp or train longer"
        )

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``, validated like ``from_dict`` (a ``UserError`` if bad)."""
        return self.from_dict({**self.model_dump(), **changes})

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists); ``from_dict`` reads it back."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> TrainConfig:
        """Build from a dict (JSON, TOML, CLI); any problem is a one-line ``UserError`` that
        starts with ``where`` and names the key (an unknown one with the closest known)."""
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            raise validation_error(exc, where, cls) from None

    @classmethod
    def check_value(cls, name: str, value: Any) -> Any:
        """``value`` as field ``name`` holds it (``2/255`` becomes a float), by that field's own
        rule; ``ValueError`` saying why when the field would refuse it."""
        try:
            return _field_adapter(name).validate_python(value)
        except ValidationError as exc:
            raise ValueError(exc.errors()[0]["msg"].removeprefix("Value error, ")) from None


@functools.cache
def _field_adapter(name: str) -> TypeAdapter[Any]:
    field = TrainConfig.model_fields[name]
    return TypeAdapter(Annotated[field.annotation, field], config=STRICT)
