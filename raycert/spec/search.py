"""A spec file's search parameters: one table per searched ``TrainConfig`` field
(``[search.<field>]``, or ``[methods.<method>.search.<field>]`` for one method's own knob).

``type`` is ``float`` or ``log-float`` (``low``, ``high``), ``int`` (``low``, ``high``, optional
``step``) or ``categorical`` (``choices``). Bounds and choices are read by the field's own rule,
so eps fields accept ``"2/255"`` (pixel units); ``read_as_fields`` reads a table of values
(a recipe, a start, a polish) by those rules too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    Field,
    ValidationInfo,
    model_validator,
)

from raycert.training.config import TrainConfig
from raycert.validation import STRICT


def _as_field_value(value: Any, info: ValidationInfo) -> Any:
    """A bound or choice of ``[search.<name>]``, read by ``TrainConfig.<name>``'s own rule."""
    name = info.data.get("name")
    return value if name is None else TrainConfig.check_value(name, value)


# A value of the searched field: a number, a string, a boolean, as that field reads it.
FieldValue = Annotated[Any, BeforeValidator(_as_field_value)]


class FloatParam(BaseModel):
    """A float range; ``log-float`` samples it on a log scale (then ``low`` > 0)."""

    model_config = STRICT

    name: str
    type: Literal["float", "log-float"]
    low: FieldValue
    high: FieldValue

    def holds(self, value: Any) -> bool:
        """Whether ``value`` lies in the range."""
        return self.low <= value <= self.high

    @model_validator(mode="after")
    def _a_range(self) -> FloatParam:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.type == "log-float" and self.low <= 0:
            raise ValueError(f"a log-float needs low > 0, got {self.low}")
        try:  # an int field refuses the values in between
            TrainConfig.check_value(self.name, (self.low + self.high) / 2)
        except ValueError as exc:
            raise ValueError(f"{self.name} refuses values inside the range ({exc})") from None
        return self


class IntParam(BaseModel):
    """An integer range from ``low`` to ``high`` in steps of ``step``."""

    model_config = STRICT

    name: str
    type: Literal["int"]
    low: Annotated[int, AfterValidator(_as_field_value)]
    high: Annotated[int, AfterValidator(_as_field_value)]
    step: int = Field(1, ge=1)

    def holds(self, value: Any) -> bool:
        """Whether ``value`` lies in the range (steps aside: a recipe may sit between)."""
        return self.low <= value <= self.high

    @model_validator(mode="after")
    def _a_range(self) -> IntParam:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class CategoricalParam(BaseModel):
    """A list of ``choices``, each a valid value of the field."""

    model_config = STRICT

    name: str
    type: Literal["categorical"]
    choices: Annotated[tuple[FieldValue, ...], Field(strict=False, min_length=1)]

    def holds(self, value: Any) -> bool:
        """Whether ``value`` is one of the choices."""
        return value in self.choices


SearchParam = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


def read_as_fields(changes: dict[str, Any], where: str) -> dict[str, Any]:
    """``changes`` (``TrainConfig`` field -> value) with each value read by its field's own rule,
    in place (``"2/255"`` becomes a float); a ``ValueError`` named ``<where><key>`` if one
    is refused."""
    for key, value in changes.items():
        try:
            changes[key] = TrainConfig.check_value(key, value)
        except ValueError as exc:
            raise ValueError(f"{where}{key}: {exc}") from None
    return changes
