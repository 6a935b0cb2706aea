"""pydantic models of the stored records, built from the records' own rules (`models`), for
the places off the hot path that validate with pydantic (`mesh import`'s lines).

`models` holds the one definition of each record's rules (a `Field` per key: its kind,
whether it is required or may be null, its choices and minimum, and the name, text and time
rules of `names` and `clock`); the plain checks of every command read it, and `model_of` turns
the same rules into a strict pydantic model. So the two cannot drift: each kind of key maps to
one pydantic type here, and tests/test_records.py feeds both the same inputs.

Importing this module imports pydantic: only import/export does (tests/test_import_guard.py).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    create_model,
    model_validator,
)

from drasill_cli import clock, models
from drasill_cli.names import is_utf8

__all__ = ["ValidationError", "error_text", "model_of"]


def _utf8(value: str) -> str:
    if not is_utf8(value):
        raise ValueError("is not UTF-8 text (it holds a lone surrogate)")
    return value


def _agent_name(value: str) -> str:
    if not models.is_agent_name(value):
        raise ValueError(f"{value[:40]!r} is not an agent name (or is a reserved word)")
    return value


def _time(value: str) -> str:
    if len(value) > 64:
        raise ValueError("is not a timestamp (too long)")
    try:
        moment = clock.parse_iso(value)
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"{value[:40]!r} is not an ISO-8601 time") from None
    if not math.isfinite(moment):
        raise ValueError(f"{value[:40]!r} is not an ISO-8601 time")
    return value


Text = Annotated[StrictStr, AfterValidator(_utf8)]
Name = Annotated[StrictStr, AfterValidator(_agent_name)]
Time = Annotated[StrictStr, AfterValidator(_time)]
# An int is a number too (never a bool: strict), and neither NaN nor infinity passes.
Number = Annotated[float, Field(allow_inf_nan=False)]


class AttachmentRef(BaseModel):
    """One attachment as a stored message names it (other keys are kept)."""

    model_config = ConfigDict(strict=True, extra="allow")

    name: Text
    path: Text = ""  # only in an older version's record; never null when there
    sha256: Text
    size: StrictInt


def _type(rule: models.Field) -> Any:
    """The pydantic type of one key's rule (its kind, choices and minimum)."""
    kinds: dict[str, Any] = {
        "str": Text,
        "name": Name,
        "time": Time,
        "int": Annotated[StrictInt, Field(ge=rule.minimum)],
        "float": Annotated[Number, Field(ge=rule.minimum)],
        "bool": StrictBool,
        "strs": list[Text],
        "attachments": list[AttachmentRef],
    }
    if rule.kind == "choice":
        return Literal[rule.choices]
    return kinds[rule.kind]


class _Record(BaseModel):
    """Base of the record models: strict types, unknown keys kept (for newer versions) but never
    deeper than `models.MAX_EXTRA_DEPTH` nor holding what JSON cannot keep."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=False)

    @model_validator(mode="before")
    @classmethod
    def _extras(cls, raw: Any) -> Any:
        if isinstance(raw, dict):
            known = {f.alias or name for name, f in cls.model_fields.items()}
            for key, value in raw.items():
                if key not in known and not models.nests_within(value, models.MAX_EXTRA_DEPTH):
                    raise ValueError(f"has an unusable extra key {str(key)[:40]!r}")
        return raw


_MODELS: dict[type[models.Record], type[BaseModel]] = {}


def model_of(record: type[models.Record]) -> type[BaseModel]:
    """The strict pydantic model of `record`'s stored form, from its `models` rules (built
    once per kind)."""
    if record in _MODELS:
        return _MODELS[record]
    fields: dict[str, Any] = {}
    for key, rule in record.rules().items():
        kind = _type(rule)
        if rule.nullable:
            kind = kind | None
        default = ... if rule.required else None
        fields[key] = (kind, Field(default))
    model = create_model(record.__name__ + "Model", __base__=_Record, **fields)
    _MODELS[record] = model
    return model


def error_text(exc: ValidationError) -> str:
    """The first problem pydantic found, naming its field (`record.name`), in the words the
    mesh's other refusals use: `has a bad `record.name`: ...`."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    message = str(first.get("msg", "is not valid")).removeprefix("Value error, ")
    if first.get("type") == "missing":
        return f"lacks `{where}`"
    if not where:
        return message
    return f"has a bad `{where}`: {message}"
