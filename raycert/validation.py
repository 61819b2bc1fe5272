"""How raycert's typed records read input: a pydantic ``ValidationError`` as one line naming the
file and the key.

Two kinds of file, two readers:

- input a person writes (spec files, presets, ``--config`` values) validates under ``STRICT``;
  ``validation_error`` names the key as it is written in TOML (``presets.quick.lr``, without
  list positions and union tags) and suggests the closest known key for an unknown one;
- records raycert writes (a study folder's JSON files) are read back by ``record_error``, which
  names the exact place of the first problem, list positions included (``targets.1.met``).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import pydantic

from raycert.errors import UserError

# How every record a person writes reads its values: exact types (no "3" for 3, no true for 1),
# finite numbers, no unknown keys, and frozen once built.
STRICT = pydantic.ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)


def did_you_mean(key: str, known: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` naming the known key closest to a misspelt ``key``, or ""."""
    close = difflib.get_close_matches(key, known, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def validation_error(exc: pydantic.ValidationError, where: str, schema: Any = None) -> UserError:
    """One line for a pydantic ``ValidationError``: ``where``, the dotted key of its first
    problem (an unknown key first; ``presets.quick.lr``, without list positions and union tags)
    and the problem.

    An unknown key gets the closest known key of its table as a hint, and the known keys;
    ``schema`` is the model (or type) that was validated, for finding them.
    """
    errors = exc.errors()  # a misspelt key explains the "missing" one beside it: name it first
    error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    keys, known = _locate(schema, error["loc"])
    key = ".".join(keys)
    prefix = f"{where}: {key}" if key else where
    if error["type"] == "extra_forbidden":
        hint = did_you_mean(keys[-1], known)
        listing = f"; known keys: {', '.join(known)}" if known else ""
        return UserError(f"{prefix}: unknown key{hint}{listing}")
    if error["type"] == "missing":
        return UserError(f"{prefix}: missing; this key is required")
    ctx = error.get("ctx", {})
    if error["type"] == "union_tag_invalid":  # a tagged table with an unknown tag
        tag_key = ctx["discriminator"].strip("'")
        expected = ctx["expected_tags"].replace("'", "")
        return UserError(f"{prefix}: {tag_key} must be one of {expected}; got {ctx['tag']!r}")
    if error["type"] == "union_tag_not_found":
        return UserError(f"{prefix}: missing its {ctx['discriminator']} key")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] != "value_error" and not isinstance(error["input"], dict):
        message += f", got {error['input']!r}"  # pydantic's own messages do not quote the value
    return UserError(f"{prefix}: {message}")


def record_error(exc: pydantic.ValidationError, where: str) -> UserError:
    """One line for a record file ``where`` that does not read back: ``cannot read <where>:``
    and its first problem, as ``lacks targets.1.met``, ``not JSON (<why>)`` or
    ``targets.1: <pydantic's message>``."""
    error = exc.errors()[0]
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        problem = f"lacks {key}"
    elif error["type"] == "json_invalid":
        problem = f"not JSON ({error['msg'].removeprefix('Invalid JSON: ')})"
    else:
        problem = f"{key}: {error['msg']}" if key else error["msg"]
    return UserError(f"cannot read {where}: {problem}")


def _locate(schema: Any, loc: tuple[Any, ...]) -> tuple[list[str], list[str]]:
    """The table keys along ``loc`` (without list positions and union tags) and the keys known
    in the table holding the last one."""
    keys: list[str] = []
    known: list[str] = []
    for part in loc:
        schema = _unwrap(schema)
        members = [m for m in get_args(schema) if m is not type(None)]
        if get_origin(schema) in (Union, UnionType) and len(members) > 1:
            tagged = [m for m in members if part in _tags(m)]
            if tagged:  # pydantic names the member a tagged union picked: not a key
                schema = tagged[0]
                continue
        if isinstance(part, int):
            schema = next(iter(get_args(schema)), None)
            continue
        keys.append(str(part))
        fields = getattr(schema, "model_fields", None)
        if fields is not None:
            known = list(fields)
            schema = fields[part].annotation if part in fields else None
        elif get_origin(schema) is dict:
            known, schema = [], get_args(schema)[1]
        else:
            known, schema = [], None
    return keys, known


def _unwrap(schema: Any) -> Any:
    """``X`` from ``Annotated[X, ...]`` and from ``X | None``."""
    while True:
        if get_origin(schema) is Annotated:
            schema = get_args(schema)[0]
            continue
        members = [m for m in get_args(schema) if m is not type(None)]
        if get_origin(schema) in (Union, UnionType) and len(members) == 1:
            schema = members[0]
            continue
        return schema


def _tags(model: Any) -> tuple[Any, ...]:
    """The literal values of a model's ``type`` field (its tag in a tagged union)."""
    field = getattr(model, "model_fields", {}).get("type")
    return get_args(field.annotation) if field is not None else ()
