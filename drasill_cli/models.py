"""Pydantic models of the records the mesh keeps (agents, tasks, locks).

Records are validated when read, so a file that is valid JSON but not a valid record is
quarantined instead of crashing a command. Messages are plain dicts (see messages.py): they sit
on the hottest path, where pydantic's import cost would dominate `mesh send`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from drasill_cli import SCHEMA_VERSION

AgentState = Literal["active", "idle", "dead"]
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
