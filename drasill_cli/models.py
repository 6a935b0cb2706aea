"""Pydantic models of the records the mesh keeps (agents, tasks, locks).

Records are validated when read, so a file that is valid JSON but not a valid record is
quarantined instead of crashing a command. Messages are plain dicts (see messages.py): they sit
on the hottest path, where pydantic's import cost would dominate `mesh send`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drasill_cli import SCHEMA_VERSION

Backend = Literal["heimdall", "tmux"]


class Record(BaseModel):
    """Base of every stored record: unknown keys are kept, a schema version is written."""

    model_config = ConfigDict(extra="allow")
    schema_version: int = SCHEMA_VERSION

    def to_record(self) -> dict[str, Any]:
        """The JSON object written to disk."""
        return self.model_dump(mode="json")


class AgentRecord(Record):
    """What is stored for a registered agent. State, last_seen and unread are derived."""

    name: str
    pid: int | None = None
    pid_started: float | None = None
    host: str
    session: str | None = None
    backend: Backend | None = None
    role: str | None = None
    tool: str | None = None
    cwd: str | None = None
    ram_gb: float | None = Field(default=None, ge=0)
    vram_gb: float | None = Field(default=None, ge=0)
    registered_at: str
    dead_at: str | None = None


TaskState = Literal["queued", "claimed", "working", "review", "completed", "failed", "abandoned"]


class Task(Record):
    """A task's stored record: the single truth about it (the queue and held indexes are hints).

    `attempts` counts claimants that died holding the task; `claimed_by` stays set after `done`
    and `fail` (who did it) and is cleared when the task goes back to the queue.
    """

    id: str
    title: str
    body: str = ""
    state: TaskState
    priority: int = 0
    created_by: str | None = None
    claimed_by: str | None = None
    claimed_at: str | None = None
    created_at: str
    updated_at: str
    attempts: int = Field(default=0, ge=0)
    result: str | None = None
    depends_on: list[str] = Field(default_factory=list)
    review: bool = False
    approved_by: str | None = None
    review_note: str | None = None
    cwd: str | None = None
