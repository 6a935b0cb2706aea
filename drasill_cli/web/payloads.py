"""What the page may post to each action, as strict pydantic models (imported by the dashboard's
server only: pydantic stays off every other command's path).

The body is parsed by pydantic's own JSON parser: text that is not UTF-8, a lone surrogate
(`"\\ud800"`) and nesting past its recursion limit are refused there, as invalid JSON; then
each field's type is checked strictly (no number for a text, no text for a number), sizes are
capped, and an unknown field is refused. Anything refused is `Invalid` (HTTP 400) before the
mesh is touched; the core's own checks (`dashboard.ACTIONS`) still run after.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from drasill_cli.names import AGENT_NAME_MAX

Text = Annotated[str, Field(max_length=2_000_000)]  # the byte cap on the body binds first
Short = Annotated[str, Field(max_length=4096)]


class Invalid(ValueError):
    """A payload refused before anything acts on it, with a message that names the field."""


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Send(_Payload):
    """`mesh send TO BODY [--priority urgent]`."""

    to: Annotated[str, Field(max_length=AGENT_NAME_MAX)]  # an agent name (or all): names.py
    body: Text
    urgent: bool = False


class AddTask(_Payload):
    """`mesh task add TITLE [--body] [--priority] [--depends ...] [--review]`."""

    title: Short
    body: Text = ""
    priority: Annotated[int, Field(ge=-(10**9), le=10**9)] = 0
    depends: Annotated[list[Annotated[str, Field(max_length=200)]], Field(max_length=100)] = []
    review: bool = False


class Review(_Payload):
    """`mesh task approve|reject ID --note TEXT`."""

    id: Annotated[str, Field(max_length=200)]
    note: Annotated[str, Field(max_length=20_000)] = ""


class Unlock(_Payload):
    """`mesh unlock PATH --force`, confirmed."""

    path: Short
    confirm: bool = False


MODELS: dict[str, type[_Payload]] = {
    "send": Send,
    "task": AddTask,
    "approve": Review,
    "reject": Review,
    "unlock": Unlock,
}


def parse(model: type[_Payload], body: bytes) -> dict[str, Any]:
    """The payload in `body` checked against `model`, as a plain dict; `Invalid` otherwise."""
    try:
        return model.model_validate_json(body or b"{}").model_dump()
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        kind = first.get("type", "")
        if kind == "json_invalid":
            reason = str(first.get("ctx", {}).get("error", first.get("msg", "")))
            raise Invalid(f"send one JSON object of UTF-8 text ({reason})") from None
        if kind == "model_type":
            raise Invalid("send a JSON object") from None
        if kind == "extra_forbidden":
            raise Invalid(f"{where} is not a field of this action; leave it out") from None
        raise Invalid(f"{where or 'the request'}: {first.get('msg', 'not valid')}") from None
