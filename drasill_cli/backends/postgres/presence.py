"""`Presence` for a PostgreSQL mesh: one `mesh_agents` row per agent (its record, its host, and
its heartbeat by the database clock).

A decision about an agent runs in one transaction holding that agent's row lock (`SELECT ...
FOR UPDATE`); when there is no row yet, a transaction-scoped advisory lock on the name (keyed
by the mesh's id, `mesh_key`) stands in for it, so two registrations of one name (from any
host) decide one after the other.

Each write stores the server's `current_user` in the record (`written_by`), read back as the
record's `Writer.role`. It proves which role wrote the row, not which OS user: anyone with the
mesh's URL may write rows (see docs/howto-multi-host.md for what enforcement trusts).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from drasill_cli.backends.postgres.ops import retried
from drasill_cli.backends.postgres.quarantine import quarantine
from drasill_cli.backends.postgres.schema import mesh_key
from drasill_cli.models import FUTURE_SLACK_S, AgentRecord, RecordError, Writer, stored_agent
from drasill_cli.names import AGENT_NAME_RE, RESERVED_NAMES
from drasill_cli.storage.changes import AGENTS, Change
from drasill_cli.storage.exclusion import deciding
from drasill_cli.storage.presence import REMOVE, Decision

if TYPE_CHECKING:
    import psycopg

    from drasill_cli.backends.postgres import PostgresBackend

# The key of the record where the server writes the role that wrote it (`current_user`, never
# taken from the client): read back as `AgentRecord.writer`, not as a field of the record.
WRITTEN_BY = "written_by"

_SELECT_FOR_UPDATE = "SELECT record FROM mesh_agents WHERE name = %s FOR UPDATE"


def _checked(name: str, raw: Any) -> AgentRecord:
    """`raw` as the record of agent `name` (RecordError when it is not one), with the database
    role that wrote it (`WRITTEN_BY`, set by the server at the write) as its writer."""
    role = None
    if isinstance(raw, dict):
        raw = dict(raw)
        written_by = raw.pop(WRITTEN_BY, None)
        role = written_by if isinstance(written_by, str) and written_by else None
    return stored_agent(name, raw).replace(writer=Writer(role=role))


class PostgresPresence:
    def __init__(self, backend: PostgresBackend) -> None:
        self.backend = backend

    def _record(self, cur: psycopg.Cursor[Any], name: str, row: Any) -> AgentRecord | None:
        """The validated record of a fetched row; a damaged one is quarantined (None)."""
        if row is None:
            return None
        try:
            return _checked(name, row[0])
        except RecordError as exc:
            quarantine(
                self.backend, cur, table="mesh_agents", column="name", key=name, reason=exc.reason
            )
            return None

    def get(self, name: str) -> AgentRecord | None:
        with self.backend.transaction() as cur:
            cur.execute("SELECT record FROM mesh_agents WHERE name = %s", (name,))
            return self._record(cur, name, cur.fetchone())

    def names(self) -> list[str]:
        with self.backend.transaction() as cur:
            cur.execute("SELECT name FROM mesh_agents")
            found = [row[0] for row in cur.fetchall()]
        return sorted(n for n in found if AGENT_NAME_RE.fullmatch(n) and n not in RESERVED_NAMES)

    def is_registered(self, name: str) -> bool:
        return bool(self.backend.statement("SELECT 1 FROM mesh_agents WHERE name = %s", (name,)))

    def _lock(self, cur: psycopg.Cursor[Any], name: str) -> Any:
        """The agent's row, locked for this transaction; with no row, the name's advisory lock
        held instead (then the row looked for again: another may have made it meanwhile)."""
        cur.execute(_SELECT_FOR_UPDATE, (name,))
        row = cur.fetchone()
        if row is None:
            cur.execute(
                "SELECT pg_advisory_xact_lock(%s)",
                (mesh_key(self.backend.changes.mesh_id, "agent", name),),
            )
            cur.execute(_SELECT_FOR_UPDATE, (name,))
            row = cur.fetchone()
        return row

    def change(
        self, name: str, decide: Callable[[AgentRecord | None], Decision], *, beat: bool = False
    ) -> AgentRecord | None:
        """One try, and a second when the connection was lost midway (`retried`): the
        second decides again on what is stored, so a registration the first try committed is
        found and refreshed, not refused or doubled."""
        return retried(
            self.backend,
            f"look with `mesh agents --all` (is {name} there as you meant?)",
            lambda: self._change(name, decide, beat=beat),
        )

    def _change(
        self, name: str, decide: Callable[[AgentRecord | None], Decision], *, beat: bool
    ) -> AgentRecord | None:
        with self.backend.transaction() as cur:
            current = self._record(cur, name, self._lock(cur, name))
            decision = deciding("Presence.change", decide, current)
            if decision is None:
                return current
            if decision is REMOVE:
                cur.execute("DELETE FROM mesh_agents WHERE name = %s", (name,))
                self.backend.changes.notify(Change(AGENTS, name))
                return None
            cur.execute(
                "INSERT INTO mesh_agents (name, host, record, heartbeat)"
                " VALUES (%(name)s, %(host)s,"
                " jsonb_set(%(record)s, '{written_by}', to_jsonb(current_user::text)),"
                " CASE WHEN %(beat)s THEN now() END)"
                " ON CONFLICT (name) DO UPDATE SET host = EXCLUDED.host,"
                " record = EXCLUDED.record, updated_at = now(),"
                " heartbeat = CASE WHEN %(beat)s THEN now() ELSE mesh_agents.heartbeat END",
                {"name": name, "host": decision.host, "record": _json(decision), "beat": beat},
            )
            self.backend.changes.notify(Change(AGENTS, name))
            return decision

    def remove(self, name: str) -> bool:
        with self.backend.transaction() as cur:
            cur.execute("DELETE FROM mesh_agents WHERE name = %s", (name,))
            gone = cur.rowcount > 0
            if gone:
                self.backend.changes.notify(Change(AGENTS, name))
            return gone

    def beat(self, name: str) -> bool:
        with self.backend.transaction() as cur:
            cur.execute("UPDATE mesh_agents SET heartbeat = now() WHERE name = %s", (name,))
            return cur.rowcount > 0

    def last_seen(self, name: str) -> float | None:
        with self.backend.transaction() as cur:
            cur.execute(
                "SELECT extract(epoch FROM heartbeat)::float8, extract(epoch FROM now())::float8"
                " FROM mesh_agents WHERE name = %s",
                (name,),
            )
            row = cur.fetchone()
            if row is None or row[0] is None:
                return None
            seen, now = float(row[0]), float(row[1])
            if seen > now + FUTURE_SLACK_S:  # a clock that stepped back: it ages from now
                if not self.backend.read_only:
                    cur.execute("UPDATE mesh_agents SET heartbeat = now() WHERE name = %s", (name,))
                return now
            return seen


def _json(record: AgentRecord) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(record.to_record())
