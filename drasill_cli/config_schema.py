"""The config file's rules as pydantic models: strict types, ranges, sizes, clear messages.

Imported only when a config file must be validated: the first run after the file changed (see
`config.load_config`, which memoizes the result in the user's cache directory). pydantic and the
model build cost about 120 ms, more than a whole `mesh send`, so this module stays off the hot
path. Each model mirrors one dataclass of `config.py` field by field (names, types, defaults);
`tests/test_config_validation.py` checks that the two cannot drift.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from drasill_cli.errors import InvalidInput

# A path or URL longer than PATH_MAX is no path: refuse it here rather than at the first open.
MAX_TEXT = 4096


class _Section(BaseModel):
    """Strict: TOML's own types only (an int may stand for a float; nothing else converts),
    no unknown key, no inf or nan."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


class LifecycleSection(_Section):
    idle_after: float = Field(default=120.0, ge=0)
    dead_after: float = Field(default=600.0, ge=0)
    remove_after: float = Field(default=3600.0, ge=0)
    max_attempts: int = Field(default=3, ge=1)
    stale_tmp_after: float = Field(default=3600.0, ge=0)

    @model_validator(mode="after")
    def _idle_before_dead(self) -> LifecycleSection:
        if not self.idle_after < self.dead_after:
            raise ValueError(
                f"lifecycle.idle_after ({self.idle_after:g}) must be less than "
                f"lifecycle.dead_after ({self.dead_after:g})"
            )
        return self


class MessagesSection(_Section):
    max_body_bytes: int = Field(default=256 * 1024, ge=1)
    max_attachment_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    max_attachments: int = Field(default=8, ge=0)
    history_days: float = Field(default=30.0, ge=0)


class LocksSection(_Section):
    default_ttl: float = Field(default=600.0, gt=0)


class BudgetsSection(_Section):
    ram_gb: float | None = Field(default=None, gt=0)
    vram_gb: float | None = Field(default=None, gt=0)
    reserve_ram_gb: float = Field(default=0.0, ge=0)
    policy: Literal["warn", "pause", "kill"] = "warn"
    kill_grace: float = Field(default=10.0, ge=0)


class WakeSection(_Section):
    idle_ms: int = Field(default=3000, ge=0)
    heimdall_socket_dir: str | None = Field(default=None, max_length=MAX_TEXT)
    retry_max: int = Field(default=5, ge=0)
    retry_base_s: float = Field(default=1.0, ge=0)
    enter_delay_ms: int = Field(default=200, ge=0)


class WatchSection(_Section):
    lifecycle_every: float = Field(default=30.0, ge=0)
    hardware_every: float = Field(default=10.0, ge=0)


class AuditSection(_Section):
    max_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    keep: int = Field(default=5, ge=0)


class BridgeSection(_Section):
    timeout: float = Field(default=3600.0, ge=0)
    output_tail_bytes: int = Field(default=4000, ge=0)


class StoreSection(_Section):
    fsync: bool = True
    url: str | None = Field(default=None, max_length=MAX_TEXT)
    statement_timeout: float = Field(default=5.0, ge=0)
    idle_timeout: float = Field(default=10.0, ge=0)
    reconnect_timeout: float = Field(default=60.0, ge=0)


class ConfigFile(_Section):
    """The whole file. `[tools.NAME]` tables are checked by `tools.py` where they are used."""

    mesh_dir: str | None = Field(default=None, max_length=MAX_TEXT)
    group_shared: bool = False
    lifecycle: LifecycleSection = Field(default_factory=LifecycleSection)
    messages: MessagesSection = Field(default_factory=MessagesSection)
    locks: LocksSection = Field(default_factory=LocksSection)
    budgets: BudgetsSection = Field(default_factory=BudgetsSection)
    wake: WakeSection = Field(default_factory=WakeSection)
    watch: WatchSection = Field(default_factory=WatchSection)
    audit: AuditSection = Field(default_factory=AuditSection)
    bridge: BridgeSection = Field(default_factory=BridgeSection)
    store: StoreSection = Field(default_factory=StoreSection)
    tools: dict[str, dict[str, Any]] = Field(default_factory=dict)


# How a type reads in an error message, for people who write TOML, not Python.
_KIND_WORDS = {
    "float_type": "a number (e.g. 2.5)",
    "int_type": "a whole number (e.g. 3)",
    "bool_type": "true or false",
    "string_type": 'a quoted string (e.g. "text")',
}
_MAX_SHOWN = 5  # problems named in one message; the rest are counted


def validate(table: dict[str, Any], path: Path) -> dict[str, Any]:
    """The file's values, checked and normalized (ints given for floats become floats), as
    plain data: only the keys the file sets. Any problem: InvalidInput naming every problem
    (file, key, what is wrong, the fix)."""
    try:
        model = ConfigFile.model_validate(table)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors(include_url=False)]
        shown = "; ".join(dict.fromkeys(problems[:_MAX_SHOWN]))
        more = len(problems) - _MAX_SHOWN
        extra = f" (and {more} more)" if more > 0 else ""
        raise InvalidInput(
            f"config file {path}: {shown}{extra}; fix the config file", code="invalid-config"
        ) from None
    dumped: dict[str, Any] = model.model_dump(exclude_unset=True)
    return dumped


def _describe(error: Any) -> str:  # noqa: PLR0911 -- one return per kind of error, in its words
    """One pydantic error in TOML words: the section.key, what is wrong, what is wanted."""
    loc = tuple(str(part) for part in error["loc"])
    kind: str = error["type"]
    got = error.get("input")
    ctx = error.get("ctx") or {}
    if loc and loc[-1] in ("float", "int", "bool", "str"):  # the member of `X | None` it tried
        loc = loc[:-1]
    where = ".".join(loc) or "the file"
    if kind == "extra_forbidden":
        section = _section_of(loc[:-1])
        known = ", ".join(sorted(section.model_fields)) if section else ""
        return f"unknown config key {where!r} (known keys here: {known}; remove or rename it)"
    if loc[:1] == ("tools",):
        return (
            f"config key {where} must hold one table per tool, e.g. [tools.mycli] "
            'command = ["mycli", "{prompt}"]'
        )
    if kind in _KIND_WORDS:
        return f"config key {where} must be {_KIND_WORDS[kind]}, got {got!r}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"config key {where} must be a table ([{where}]), got {got!r}"
    if kind == "finite_number":
        return f"config key {where} must be a finite number, got {got!r}"
    negative = isinstance(got, int | float) and got < 0
    if kind in ("greater_than_equal", "greater_than") and negative:
        return f"config key {where} must not be negative, got {got!r}"
    if kind == "greater_than_equal":
        bound = ctx.get("ge")
        return f"{where} must be at least {bound:g}, got {got!r}"
    if kind == "greater_than":
        hint = " (or left out for the machine's)" if loc[:1] == ("budgets",) else ""
        unit = " seconds" if where == "locks.default_ttl" else ""
        return f"{where} must be more than {ctx.get('gt', 0):g}{unit}{hint}, got {got!r}"
    if kind == "literal_error":
        return f"config key {where} must be one of {ctx.get('expected', '')}, got {got!r}"
    if kind == "string_too_long":
        return f"config key {where} is over {MAX_TEXT} characters: not a path or URL"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    return f"config key {where}: {error['msg']}"  # a kind not foreseen above: pydantic's words


def _section_of(loc: tuple[str, ...]) -> type[BaseModel] | None:
    """The model that holds the keys at `loc` (the top level for an empty one)."""
    model: type[BaseModel] = ConfigFile
    for part in loc:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model
