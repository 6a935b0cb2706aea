"""The records the mesh keeps (agents, tasks, messages, locks) and the one way they are checked.

Every record read from the store goes through `check` before anything acts on it: required keys
present, every known key of the right type (an int is never a bool, a float is finite), names
valid, timestamps parseable ISO-8601, lists of the right items, and unknown keys (kept, for
newer versions) no deeper than `MAX_EXTRA_DEPTH`. A record that fails is quarantined by its
caller. A timestamp from the future (a clock that stepped back) is reset to now in the checked
copy, and its key is listed in `clock_reset`, so the caller can persist the reset.

Each record kind is a dataclass whose fields carry their `Field` rule; agents and tasks are used
as objects, messages and locks as plain dicts (`Kind.check(raw)`). The rules are plain Python
(no pydantic): this module is on the path of every agent command, whose start-up it must not
slow down.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Self

from drasill_cli import SCHEMA_VERSION, clock
from drasill_cli.names import AGENT_NAME_RE, RESERVED_NAMES, is_utf8

Supervisor = Literal["heimdall", "tmux"]
# The terminal supervisors that type into an agent's session (stored as the key "backend").
SUPERVISORS: tuple[str, ...] = ("heimdall", "tmux")
TaskState = Literal[
    "queued", "claimed", "working", "review", "completed", "failed", "abandoned", "cancelled"
]
TASK_STATES: tuple[str, ...] = (
    "queued",
    "claimed",
    "working",
    "review",
    "completed",
    "failed",
    "abandoned",
    "cancelled",
)
PRIORITIES: tuple[str, ...] = ("normal", "urgent")
LOCK_MODES: tuple[str, ...] = ("read", "write", "intent", "co_write")
# Unknown keys are kept for newer versions, but never as a deeply nested structure.
MAX_EXTRA_DEPTH = 16
# A timestamp at most this far ahead is clock jitter between processes, not a stepped clock.
FUTURE_SLACK_S = 1.0


class RecordError(ValueError):
    """A record that cannot be used; `reason` says why (for the quarantine report)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Field:
    """The rule for one key of a record (a plain class: built on every start-up, so cheap)."""

    __slots__ = ("choices", "kind", "minimum", "nullable", "required")

    def __init__(
        self,
        kind: str,  # str, name, time, int, float, bool, strs, choice, attachments
        required: bool = False,
        nullable: bool = True,
        choices: tuple[str, ...] = (),
        minimum: float | None = None,
    ) -> None:
        self.kind = kind
        self.required = required
        self.nullable = nullable
        self.choices = choices
        self.minimum = minimum


def rule(
    kind: str,
    *,
    default: Any = None,
    required: bool = False,
    nullable: bool = True,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    factory: Any = None,
    key: str | None = None,
) -> Any:
    """A dataclass field carrying its `Field` rule (required fields have no default); `key` is
    the stored key when it differs from the attribute name."""
    meta = {"rule": Field(kind, required, nullable and not required, choices, minimum), "key": key}
    if required:
        return dataclasses.field(metadata=meta)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _is_str(value: Any) -> bool:
    return isinstance(value, str) and is_utf8(value)


def _check_time(value: Any, now: float) -> tuple[str, bool]:
    """The timestamp, reset to now when it lies in the future; and whether it was reset."""
    if not isinstance(value, str) or len(value) > 64:
        raise RecordError("has a timestamp that is not a string")
    try:
        moment = clock.parse_iso(value)
    except (ValueError, OverflowError, OSError):
        raise RecordError(f"has a bad timestamp {value[:40]!r}") from None
    if not math.isfinite(moment):
        raise RecordError(f"has a bad timestamp {value[:40]!r}")
    if moment > now + FUTURE_SLACK_S:
        return clock.iso(now), True
    return value, False


def _check_attachments(value: Any) -> None:
    if not isinstance(value, list):
        raise RecordError("has attachments that are not a list")
    for item in value:
        if not (
            isinstance(item, dict)
            and _is_str(item.get("name"))
            # A stored record names no path (the backend gives one at read time); an older
            # version's record holds one.
            and ("path" not in item or _is_str(item["path"]))
            and _is_str(item.get("sha256"))
            and _is_int(item.get("size"))
        ):
            raise RecordError("has an attachment without name, size and sha256")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_agent_name(value: Any) -> bool:
    """Whether `value` may name an agent in a record: the name rule, and not a reserved word
    (`all` addresses every agent, so no agent is called that)."""
    return (
        isinstance(value, str)
        and AGENT_NAME_RE.fullmatch(value) is not None
        and value not in RESERVED_NAMES
    )


def _is_name(value: Any, _spec: Field) -> bool:
    return is_agent_name(value)


def _is_finite_number(value: Any, _spec: Field) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float is no usable number
        return False


def _has_attachments(value: Any, _spec: Field) -> bool:
    _check_attachments(value)
    return True


# One check per kind of key ("time" is handled by `check` itself: it may reset the value).
_CHECKS: dict[str, Callable[[Any, Field], bool]] = {
    "str": lambda value, _spec: _is_str(value),
    "name": _is_name,
    "choice": lambda value, spec: value in spec.choices,
    "int": lambda value, _spec: _is_int(value),
    "float": _is_finite_number,
    "bool": lambda value, _spec: isinstance(value, bool),
    "strs": lambda value, _spec: isinstance(value, list) and all(map(_is_str, value)),
    "attachments": _has_attachments,
}


def _check_value(key: str, spec: Field, value: Any) -> None:
    if not _CHECKS[spec.kind](value, spec):
        raise RecordError(f"has a bad {key!r} ({type(value).__name__})")
    if spec.minimum is not None and value < spec.minimum:
        raise RecordError(f"has {key!r} below {spec.minimum}")


def _scalar_ok(value: Any) -> bool:
    """A JSON scalar that can be written back (no NaN or infinity, no lone surrogate)."""
    if isinstance(value, float):
        return math.isfinite(value)
    return not isinstance(value, str) or _is_str(value)


def _depth_ok(value: Any, budget: int) -> bool:
    """Whether a JSON value nests at most `budget` levels (iterative: no recursion limit)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > budget:
            return False
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
        elif not _scalar_ok(item):
            return False
    return True


def nests_within(value: Any, depth: int) -> bool:
    """Whether a JSON value nests at most `depth` levels and holds only scalars that can be
    written back (no NaN or infinity, no lone surrogate); iterative, so any input is safe."""
    return _depth_ok(value, depth)


def check(
    rules: Mapping[str, Field], raw: Any, now: float | None = None
) -> tuple[dict[str, Any], list[str]]:
    """A validated copy of `raw` (defaults filled in) and the keys whose future time was reset.

    Raises RecordError naming the first problem found.
    """
    if not isinstance(raw, dict):
        raise RecordError("is not a JSON object")
    moment = clock.now() if now is None else now
    checked: dict[str, Any] = {}
    reset: list[str] = []
    for key, value in raw.items():
        spec = rules.get(key)
        if spec is None:
            if not _depth_ok(value, MAX_EXTRA_DEPTH):
                raise RecordError(f"has an unusable extra key {key[:40]!r}")
            checked[key] = value
            continue
        if value is None and spec.nullable:
            checked[key] = None
            continue
        if spec.kind == "time":
            checked[key], was_reset = _check_time(value, moment)
            if was_reset:
                reset.append(key)
            continue
        _check_value(key, spec, value)
        checked[key] = value
    missing = [key for key, spec in rules.items() if spec.required and key not in raw]
    if missing:
        raise RecordError(f"lacks {', '.join(missing)}")
    return checked, reset


@dataclasses.dataclass(kw_only=True, eq=False, repr=False)
class Record:
    """Base of every stored record: unknown keys are kept, a schema version is written."""

    RULES: ClassVar[dict[str, Field]]
    KEYS: ClassVar[dict[str, str]]  # stored key -> attribute name
    schema_version: int = rule("int", default=SCHEMA_VERSION, nullable=False)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    clock_reset: tuple[str, ...] = dataclasses.field(default=(), repr=False, compare=False)

    @classmethod
    def rules(cls) -> dict[str, Field]:
        """The rule of each stored key, from the dataclass fields."""
        if "RULES" not in cls.__dict__:  # built once per kind, on first use
            cls.RULES, cls.KEYS = {}, {}
            for f in dataclasses.fields(cls):
                if "rule" in f.metadata:
                    key = f.metadata["key"] or f.name
                    cls.RULES[key] = f.metadata["rule"]
                    cls.KEYS[key] = f.name
        return cls.RULES

    @classmethod
    def check(cls, raw: Any, now: float | None = None) -> dict[str, Any]:
        """`raw` validated as this kind of record, as a dict (RecordError if unusable)."""
        return check(cls.rules(), raw, now)[0]

    @classmethod
    def from_record(cls, raw: Any, now: float | None = None) -> Self:
        """The record object for `raw` (RecordError if unusable)."""
        checked, reset = check(cls.rules(), raw, now)
        rules, keys = cls.RULES, cls.KEYS
        known: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in checked.items():
            spec = rules.get(key)
            if spec is None:
                extra[key] = value
            elif value is not None or spec.nullable:  # a null schema_version takes the default
                known[keys[key]] = value
        return cls(**known, extra=extra, clock_reset=tuple(reset))

    def to_record(self) -> dict[str, Any]:
        """The JSON object written to the store."""
        data = dict(self.extra)
        self.rules()
        for key, attribute in self.KEYS.items():
            value = getattr(self, attribute)
            data[key] = list(value) if isinstance(value, list) else value
        return data

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes` applied (not re-validated: the caller's values are trusted)."""
        return dataclasses.replace(self, **changes)


@dataclasses.dataclass(frozen=True)
class Writer:
    """Who wrote an agent's record, as its storage proves it (never read from the record).

    `uid`: the OS user that wrote it, where the storage can prove one (a directory mesh: the
    owner of the record's file, which only that user could have written; None when the file is
    writable by others or linked elsewhere). `role`: the database role that wrote it (a
    PostgreSQL mesh: `current_user` at the write), where the storage records one.
    """

    uid: int | None = None
    role: str | None = None


@dataclasses.dataclass(kw_only=True, eq=False, repr=False)
class AgentRecord(Record):
    """What is stored for a registered agent. State, last_seen and unread are derived."""

    name: str = rule("name", required=True)
    pid: int | None = rule("int", minimum=1)
    pid_started: float | None = rule("float")
    host: str = rule("str", required=True)
    # Who registered it (the real uid of `mesh register`): budget enforcement signals only the
    # processes of that uid. Records of older versions have none (enforcement then reports).
    uid: int | None = rule("int", minimum=0)
    session: str | None = rule("str")
    supervisor: Supervisor | None = rule("choice", choices=SUPERVISORS, key="backend")
    # The start time of the session's process (heimdall's child, the tmux pane's) at
    # registration, so a process that later runs in the session is not taken for the agent.
    session_started: float | None = rule("float")
    role: str | None = rule("str")
    tool: str | None = rule("str")
    cwd: str | None = rule("str")
    ram_gb: float | None = rule("float", minimum=0)
    vram_gb: float | None = rule("float", minimum=0)
    registered_at: str = rule("time", required=True)
    dead_at: str | None = rule("time")
    # Set by the storage that read it (`storage.presence`), never stored in the record.
    writer: Writer | None = dataclasses.field(default=None, compare=False)


@dataclasses.dataclass(kw_only=True, eq=False, repr=False)
class Task(Record):
    """A task's stored record: the single truth about it (the queue and held indexes are hints).

    `attempts` counts claimants that died holding the task; `claimed_by` stays set after `done`
    and `fail` (who did it) and is cleared when the task goes back to the queue.
    """

    id: str = rule("str", required=True)
    title: str = rule("str", required=True)
    body: str = rule("str", default="", nullable=False)
    state: TaskState = rule("choice", required=True, choices=TASK_STATES)
    priority: int = rule("int", default=0, nullable=False)
    created_by: str | None = rule("str")
    claimed_by: str | None = rule("name")
    claimed_at: str | None = rule("time")
    created_at: str = rule("time", required=True)
    updated_at: str = rule("time", required=True)
    attempts: int = rule("int", default=0, nullable=False, minimum=0)
    result: str | None = rule("str")
    depends_on: list[str] = rule("strs", factory=list, nullable=False)
    review: bool = rule("bool", default=False, nullable=False)
    approved_by: str | None = rule("str")
    review_note: str | None = rule("str")
    cwd: str | None = rule("str")


@dataclasses.dataclass(kw_only=True, eq=False, repr=False)
class MessageRecord(Record):
    """The rules of a stored message (messages are handled as dicts: `MessageRecord.check`)."""

    id: str = rule("str", required=True)
    sender: str = rule("name", required=True, key="from")
    to: str = rule("name", required=True)
    body: str = rule("str", required=True)
    priority: str = rule("choice", required=True, choices=PRIORITIES)
    created_at: str = rule("time", required=True)
    reply_to: str | None = rule("str")
    thread: str | None = rule("str")
    attachments: list[dict[str, Any]] = rule("attachments", factory=list, nullable=False)
    wake: bool = rule("bool", default=True, nullable=False)


@dataclasses.dataclass(kw_only=True, eq=False, repr=False)
class LockRecord(Record):
    """The rules of a stored lock (locks are handled as dicts: `LockRecord.check`)."""

    path: str = rule("str", required=True)
    mode: str = rule("choice", required=True, choices=LOCK_MODES)
    holder: str = rule("name", required=True)
    ttl: float = rule("float", required=True, minimum=0)
    acquired_at: str = rule("time", required=True)
    expires_at: str = rule("str", required=True)  # a lease end lies in the future by design


WAKE_STATES: tuple[str, ...] = ("queued", "woken", "consumed", "failed", "dead")


@dataclasses.dataclass(kw_only=True, eq=False, repr=False)
class WakeRecord(Record):
    """The rules of `mesh watch`'s wake state of one agent (see watcher.py; handled as a dict:
    `WakeRecord.check`). Times the watcher plans ahead are plain strings, as a lock's end is."""

    agent: str | None = rule("name")
    state: str | None = rule("choice", choices=WAKE_STATES)
    queued_ids: list[str] = rule("strs", factory=list, nullable=False)
    notified_ids: list[str] = rule("strs", factory=list, nullable=False)
    notified_id: str | None = rule("str")
    attempts: int = rule("int", default=0, nullable=False, minimum=0)
    next_attempt_at: str | None = rule("str")
    busy: bool = rule("bool", default=False, nullable=False)
    blocked: str | None = rule("str")
    last_error: str | None = rule("str")
    dead_session: str | None = rule("str")
    session: str | None = rule("str")
    backend: str | None = rule("str")
    queued_at: str | None = rule("time")
    woken_at: str | None = rule("time")
    consumed_at: str | None = rule("time")
    updated_at: str | None = rule("time")


# ---- the checks every backend applies to a stored agent or task (one definition) -------------


def stored_agent(name: str, raw: Any, now: float | None = None) -> AgentRecord:
    """`raw`, read from where agent `name` is stored, as that agent's record: RecordError
    (its reason the quarantine report) when it is no agent record or names another agent."""
    try:
        agent = AgentRecord.from_record(raw, now)
    except RecordError as exc:
        raise RecordError(f"is not an agent record: it {exc.reason}") from exc
    if agent.name != name:
        raise RecordError(f"holds agent {agent.name!r}, not {name!r}")
    return agent


def stored_task(task_id: str, raw: Any, now: float | None = None) -> Task:
    """`raw`, read from where task `task_id` is stored, as that task: RecordError (its reason
    the quarantine report) when it is no task record or holds another task's id."""
    task = Task.from_record(raw, now)
    if task.id != task_id:
        raise RecordError(f"holds task {task.id!r}, not {task_id!r}")
    return task
