"""The training methods in a spec file: which knobs a trial of each method carries, and each
method's own table.

A study may search several methods (``raycert study --method acert,sabr``, or ``all``: every
one of ``STUDY_METHODS``). Each trial then draws its method first and carries only the knobs
that method reads (``MethodSpec.fields`` of ``raycert.training.methods``), so no trial holds a
dimension its method ignores:

- ``[search.<field>]`` declares a knob once for every method that reads it: a field every
  method shares (``lr``, ``max_eps``) is searched in every trial, a method knob (``kappa``,
  ``attack_steps``, ``adaptive``) only in the trials of the methods that read it
  (``search_steps``, ``search_tol`` and ``search_probes`` only at adaptive radii);
- ``[methods.<method>]`` holds one method's own table: ``search`` (``[methods.sabr.search.
  sabr_lambda]``, a knob searched in that method's trials only, not also in ``[search]`` or
  in another method's table), and ``recipe`` (``[methods.sabr.recipe]`` with ``sabr_lambda =
  0.6``, ``attack_steps = 8``: the method's known-good values of knobs it searches, a start of
  every study that searches the method; a knob it leaves out takes the preset's value where
  the search space holds it).

Every knob thus has one declaration and one Optuna distribution, shared by the methods that
carry it. ``reads`` is the rule; ``MethodTable`` validates one ``[methods.<method>]`` table
(``raycert.spec.file.SpecFile`` checks it against ``[search]``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationInfo, field_validator

from raycert.spec.search import SearchParam, read_as_fields
from raycert.training.config import TrainConfig
from raycert.training.methods import METHOD_SPECS
from raycert.validation import STRICT, did_you_mean

# The methods a study can search (``standard`` trains at no radius: it has no front to search).
STUDY_METHODS: tuple[str, ...] = ("acert", "ibp", "mtl-ibp", "sabr", "crown-ibp")
# The fields some method reads and another does not: searched only in the trials that read them.
KNOBS: frozenset[str] = frozenset(f for spec in METHOD_SPECS.values() for f in spec.fields(True))
# What a search table may name: a field of TrainConfig (the dataset is the file's, and the
# method is searched by --method, with each method's knobs conditional on it).
SEARCHABLE: tuple[str, ...] = tuple(
    name for name in TrainConfig.model_fields if name not in ("dataset", "method")
)


def reads(method: str, field: str, adaptive: bool = True) -> bool:
    """Whether a trial of ``method`` reads ``field``: every field but the ``KNOBS``, and the
    knobs its ``MethodSpec`` names at (``adaptive``) or off adaptive radii."""
    return field not in KNOBS or field in METHOD_SPECS[method].fields(adaptive)


def named_tables(tables: Any) -> Any:
    """Search tables (field -> table) checked to name searchable fields, each given its field as
    ``name`` (a ``ValueError`` naming a field that is not one)."""
    if not isinstance(tables, dict):
        return tables
    for key, table in tables.items():
        if key == "method":
            raise ValueError(
                "'method' is searched with --method (several joined by commas, or all), each "
                "method with its own knobs; not as a search table"
            )
        if key not in SEARCHABLE:
            hint = did_you_mean(key, SEARCHABLE)
            raise ValueError(f"{key!r} is not a searchable TrainConfig field{hint}")
        if isinstance(table, dict) and "name" in table:
            raise ValueError(f"{key} has unknown key 'name': the table's name is it")
    return {k: {**t, "name": k} if isinstance(t, dict) else t for k, t in tables.items()}


class MethodTable(BaseModel):
    """``[methods.<method>]``: the knobs searched in this method's trials only (``search``: each
    a field the method reads, ``raycert.spec.search``) and its ``recipe`` (field -> value, read
    by each field's rule; checked against the search space by ``SpecFile``). ``name`` is the
    table's method, given by ``SpecFile``."""

    model_config = STRICT

    name: str
    search: dict[str, SearchParam] = {}
    recipe: dict[str, Any] = {}

    @field_validator("search", mode="before")
    @classmethod
    def _knobs_the_method_reads(cls, search: Any, info: ValidationInfo) -> Any:
        method = info.data.get("name")
        search = named_tables(search)
        if method is None or not isinstance(search, dict):
            return search
        for key in search:
            if not reads(method, key):
                own = ", ".join(f for f in METHOD_SPECS[method].fields(True)) or "none"
                raise ValueError(f"{method} does not read {key} (its own knobs: {own})")
        return search

    @field_validator("recipe")
    @classmethod
    def _recipe_of_fields(cls, recipe: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        method = info.data.get("name")
        for key in recipe:
            if key not in SEARCHABLE:
                hint = did_you_mean(key, SEARCHABLE)
                raise ValueError(f"{key!r} is not a field a recipe may set{hint}")
            if method is not None and not reads(method, key):
                raise ValueError(f"{method} does not read {key}")
        return read_as_fields(recipe, "")


def method_tables(methods: Any) -> Any:
    """``[methods]`` checked to name study methods, each table given its method as ``name``."""
    if not isinstance(methods, dict):
        return methods
    for key, table in methods.items():
        if key not in STUDY_METHODS:
            hint = did_you_mean(key, STUDY_METHODS)
            raise ValueError(
                f"{key!r} is not a method a study searches{hint}; one of {', '.join(STUDY_METHODS)}"
            )
        if isinstance(table, dict) and "name" in table:
            raise ValueError(f"{key} has unknown key 'name': the table's name is it")
    return {k: {**t, "name": k} if isinstance(t, dict) else t for k, t in methods.items()}
