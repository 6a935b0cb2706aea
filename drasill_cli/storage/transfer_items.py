"""The items of `mesh export` / `mesh import` as strict pydantic models (`check_item`).

Each kind of item (`storage.transfer.KINDS`) is one model: strict types (no number for a text,
no bool for a number, no NaN or infinity), bounds (times up to year 9999, task numbers up to
MAX_TASK_NUMBER, priorities within PRIORITY_LIMIT), and the records inside built from the
records' own rules (`recordmodels.model_of`, from `models`), so an import applies exactly the
rules every command's plain checks apply. A record's further rules that the plain check of its
kind adds (a lock's key and lease, a message's id and attachment names, a budget record's
shape) are those very checks, called as validators: one definition each.

A refused item is `RecordError` whose reason names the field (`has a bad `record.name`: ...`).
Importing this module imports pydantic: only `mesh import` (and tests) do.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

from drasill_cli import clock, models
from drasill_cli.models import RecordError, nests_within
from drasill_cli.recordmodels import Name, Text, error_text, model_of
from drasill_cli.storage.attachments import is_attachment_name
from drasill_cli.storage.board import MAX_TASK_NUMBER, PRIORITY_LIMIT, id_number
from drasill_cli.storage.budgets import check_pause, check_warning
from drasill_cli.storage.locktable import check_lock
from drasill_cli.storage.mailbox import check_message, is_message_id, stored_form
from drasill_cli.storage.transfer import (
    FORMAT,
    KINDS,
    MAX_EPOCH,
    MAX_ITEM_DEPTH,
    MESSAGE_STATES,
    attachment_bytes,
)

# The kinds whose records a database keeps as `jsonb`, which cannot hold U+0000: refused there
# on every backend alike (a message keeps any text: its rows are `json`, its files JSON).
_NO_NUL_KINDS = frozenset(
    {"agent", "task", "lock", "budget-warning", "budget-pause", "wake", "audit"}
)


def _no_path(_msg_id: str, _name: str) -> str:
    return ""


def _format(value: int) -> int:
    if value != FORMAT:
        raise ValueError(f"is format {value}; this mesh reads format {FORMAT}")
    return value


def _task(record: dict[str, Any]) -> dict[str, Any]:
    """A task record the restore can number: a numbered id, a priority within bounds."""
    task = models.Task.from_record(record)
    number = id_number(task.id)
    if number is None:
        raise RecordError(f"has task id {task.id!r}, not a numbered id like t-0007")
    if number > MAX_TASK_NUMBER:
        raise RecordError(f"has task id {task.id!r}, above the highest task number")
    if not -PRIORITY_LIMIT <= task.priority <= PRIORITY_LIMIT:
        raise RecordError(f"has a priority outside -{PRIORITY_LIMIT}..{PRIORITY_LIMIT}")
    return record


def _message_id(value: str) -> str:
    if not is_message_id(value):
        raise ValueError(f"{value[:40]!r} is not a message id")
    return value


def _file_name(value: str) -> str:
    if not is_attachment_name(value):
        raise ValueError(f"{value[:40]!r} is not a usable file name")
    return value


def _event_time(value: str) -> str:
    try:
        clock.parse_iso(value[:64])
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"{value[:40]!r} is no time") from None
    return value


def _sequence(value: int) -> int:
    if not 0 <= value <= MAX_TASK_NUMBER:
        raise ValueError(f"{str(value)[:40]} is not a task number from 0 to {MAX_TASK_NUMBER}")
    return value


def _record(kind: type[models.Record], *also: Any) -> Any:
    """The field type of a stored record of `kind`, checked by its model and then by `also`
    (the plain checks its kind adds), kept as the dict it was given."""
    return Annotated[
        model_of(kind),
        AfterValidator(lambda model: model.model_dump(exclude_unset=True)),
        *(AfterValidator(check) for check in also),
    ]


def _returns(check: Any) -> Any:
    """`check(value)` as a validator that keeps the value (the check's result is dropped)."""

    def validate(value: Any) -> Any:
        check(value)
        return value

    return validate


class _Item(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class Meta(_Item):
    kind: Literal["meta"]
    format: Annotated[StrictInt, AfterValidator(_format)]


class Agent(_Item):
    kind: Literal["agent"]
    record: _record(models.AgentRecord)  # type: ignore[valid-type]  # built from models' rules
    last_seen: Annotated[float, Field(ge=0, le=MAX_EPOCH, allow_inf_nan=False)] | None = None


class Attachment(_Item):
    kind: Literal["attachment"]
    message_id: Annotated[StrictStr, AfterValidator(_message_id)]
    name: Annotated[StrictStr, AfterValidator(_file_name)]
    size: Annotated[StrictInt, Field(ge=0)]
    sha256: StrictStr
    content: StrictStr

    @model_validator(mode="after")
    def _content(self) -> Attachment:
        attachment_bytes(self.model_dump())
        return self


def _id_first(raw: Any) -> Any:
    """A message's id is checked before the rest (it names the message's attachments)."""
    if isinstance(raw, dict) and not (isinstance(raw.get("id"), str) and is_message_id(raw["id"])):
        raise ValueError(f"has a bad id {str(raw.get('id'))[:40]!r}")
    return raw


class Message(_Item):
    kind: Literal["message"]
    message: Annotated[
        _record(models.MessageRecord, _returns(lambda raw: check_message(raw, _no_path))),  # type: ignore[valid-type]  # built from models' rules
        BeforeValidator(_id_first),
    ]
    state: Literal[MESSAGE_STATES] | None = None  # type: ignore[valid-type]  # the one list
    sent: StrictBool

    @model_validator(mode="after")
    def _kept(self) -> Message:
        if self.state is None and not self.sent:
            raise ValueError("keeps neither a recipient's copy nor the sender's")
        return self


class Task(_Item):
    kind: Literal["task"]
    record: _record(models.Task, _task)  # type: ignore[valid-type]  # built from models' rules


class Sequence(_Item):
    kind: Literal["task-sequence"]
    last: Annotated[StrictInt, AfterValidator(_sequence)]


class Lock(_Item):
    kind: Literal["lock"]
    record: _record(models.LockRecord, _returns(check_lock))  # type: ignore[valid-type]  # built from models' rules


class BudgetWarning(_Item):
    kind: Literal["budget-warning"]
    agent: Name
    record: Annotated[dict[str, Any], AfterValidator(_returns(check_warning))]


class BudgetPause(_Item):
    kind: Literal["budget-pause"]
    agent: Name
    record: Annotated[dict[str, Any], AfterValidator(_returns(check_pause))]


class Wake(_Item):
    kind: Literal["wake"]
    agent: Name
    record: _record(models.WakeRecord)  # type: ignore[valid-type]  # built from models' rules


class Event(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    time: Annotated[StrictStr, AfterValidator(_event_time)]
    event: Text
    actor: StrictStr | None = None


class Audit(_Item):
    kind: Literal["audit"]
    event: Event
    nth: Annotated[StrictInt, Field(ge=1)]


MODELS: dict[str, type[_Item]] = {
    "meta": Meta,
    "agent": Agent,
    "attachment": Attachment,
    "message": Message,
    "task": Task,
    "task-sequence": Sequence,
    "lock": Lock,
    "budget-warning": BudgetWarning,
    "budget-pause": BudgetPause,
    "wake": Wake,
    "audit": Audit,
}


def _checked(raw: dict[str, Any]) -> dict[str, Any]:
    """The item `raw` (a dict of a known kind) as `restore` takes it: validated by its model,
    its record in the form its kind stores (a future time reset to now, a task's defaults
    filled in, a message in stored form); RecordError naming the field otherwise."""
    kind = raw["kind"]
    try:
        MODELS[kind].model_validate(raw)
    except ValidationError as exc:
        raise RecordError(error_text(exc)) from None
    item = dict(raw)
    if kind == "agent":
        item["record"] = models.AgentRecord.check(raw["record"])
        item["last_seen"] = raw.get("last_seen")  # none given: no heartbeat yet
    elif kind == "message":
        message = {"attachments": [], **raw["message"]}  # as every stored message has
        item["message"] = stored_form(check_message(message, _no_path))
    elif kind == "task":
        item["record"] = models.Task.from_record(raw["record"]).to_record()
    elif kind == "lock":
        item["record"] = check_lock(raw["record"])
    return item


def _holds_nul(value: Any) -> bool:
    """Whether a JSON value holds U+0000 in any string (a key included); iterative."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def check_item(raw: Any) -> dict[str, Any]:
    """`raw` as an item `restore` may write (records validated, defaults filled in), or
    RecordError naming what is wrong: its field, by the item's pydantic model
    (`storage.transfer_items`, built from the records' rules in `models`)."""
    if not isinstance(raw, dict):
        raise RecordError("is not a JSON object")
    kind = raw.get("kind")
    if kind not in KINDS:
        shown = kind[:40] if isinstance(kind, str) else kind
        raise RecordError(f"has an unknown kind {shown!r}; known kinds: {', '.join(KINDS)}")
    if not nests_within(raw, MAX_ITEM_DEPTH):
        raise RecordError(
            f"nests deeper than {MAX_ITEM_DEPTH} levels or holds a value JSON cannot keep "
            "(NaN, infinity, a lone surrogate)"
        )
    if kind in _NO_NUL_KINDS and _holds_nul(raw):
        raise RecordError("holds U+0000 (NUL) in a text; the mesh keeps NUL only in message bodies")
    return _checked(raw)
