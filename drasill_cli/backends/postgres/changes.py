"""`Changes` for a PostgreSQL mesh: LISTEN/NOTIFY, one channel per topic, no polling loop.

Every operation that changes something a waiter cares about calls `PostgresChanges.notify` in
its own transaction: the notification goes out once (and only if) the transaction has committed
(`Database.announce` says why after, not at, the commit), to
the channel of the exact topic (`inbox:bob`) and to the channels that cover it (`inbox`,
`mesh`). A watch has its own connection and LISTENs on its topics' channels when it is entered,
before the waiter's first look, so a change made between a look and the next wait still ends
that wait: the notification waits in the connection until it is read.

A notification is a hint, never the truth: after a dropped connection the watch reconnects (with
backoff, for up to `[store] reconnect_timeout`; a tolerant watch for as long as it is waited on)
and reports every topic as changed, and every `RECHECK_S` it does so anyway (a slow safety
re-check), so a waiter that re-reads the tables after each wake-up never misses a change.

Channel names are database-wide while meshes are per schema, so a channel is named by a hash
of the mesh's random id (`mesh_identity`, readable only by roles with rights on the mesh) and
the topic, never by anything a role outside the mesh could guess, such as the schema's name
(and stays under PostgreSQL's 63-byte identifier limit).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import time
from typing import TYPE_CHECKING, Any

from drasill_cli.backends.postgres.schema import mesh_key
from drasill_cli.errors import MeshError, StoreUnreachable
from drasill_cli.storage.changes import (
    AGENTS,
    INBOXES,
    MESH,
    SIGNALLED,
    STOPPED,
    TASKS,
    TIMEOUT,
    Change,
    inbox,
)

if TYPE_CHECKING:
    import threading

    import psycopg

    from drasill_cli.backends.postgres.connection import Database

# How long a watch gathers notifications after the first one (a burst comes back as one set).
BATCH_S = 0.02
# How often `next` wakes to check its `stop` event.
STOP_STEP_S = 0.05
# The slow safety re-check: every topic reported as changed this often, in case a notification
# was lost (the waiter then reads the tables again).
RECHECK_S = 30.0
# The longest pause between attempts to reconnect (they start at `waiting.RETRY_FIRST_S` and
# double).
RECONNECT_STEP_S = 1.0

_KINDS = (INBOXES, TASKS, AGENTS, MESH)


@functools.lru_cache(maxsize=1024)
def channel(mesh_id: str, topic: str) -> str:
    """The notification channel of `topic` in the mesh whose id is `mesh_id`."""
    digest = hashlib.sha256(f"{mesh_id}\0{topic}".encode()).hexdigest()[:40]
    return f"mesh_{digest}"


def _check_topic(topic: str) -> str:
    kind, colon, name = topic.partition(":")
    if kind not in _KINDS or (colon and (kind != INBOXES or not name)):
        raise ValueError(f"unknown topic {topic!r}")
    return topic


def covering(change: Change) -> list[str]:
    """The topics a change is announced on: its own, and those that cover it."""
    if change.topic == INBOXES and change.agent:
        return [inbox(change.agent), INBOXES, MESH]
    if change.topic == MESH:
        return [MESH]
    return [change.topic, MESH]


def _payload(change: Change) -> str:
    return f"{change.topic}\n{change.agent or ''}"


def _from_payload(payload: str) -> Change | None:
    topic, _, agent = payload.partition("\n")
    if topic not in _KINDS:
        return None
    return Change(topic, agent or None)


class PostgresChanges:
    """`Changes` on LISTEN/NOTIFY; also the one place that announces a change (`notify`)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def schema(self) -> str:
        if self.db.schema is None:
            self.db.conn  # noqa: B018 -- connecting learns the mesh's schema
        assert self.db.schema is not None  # noqa: S101 -- ensure_schema sets it or raises
        return self.db.schema

    @property
    def mesh_id(self) -> str:
        """The mesh's random id (MIGRATION_3): what its channels and advisory locks are keyed
        by."""
        if self.db.mesh_id is None:
            self.db.conn  # noqa: B018 -- connecting reads the mesh's id
        assert self.db.mesh_id is not None  # noqa: S101 -- ensure_schema sets it or raises
        return self.db.mesh_id

    def announcing(self, *changes: Change) -> tuple[list[str], list[str]]:
        """The channels of `changes` and their payloads (for `Database.announce`)."""
        pairs = [
            (channel(self.mesh_id, topic), _payload(change))
            for change in changes
            for topic in covering(change)
        ]
        return [c for c, _ in pairs], [p for _, p in pairs]

    def notify(self, *changes: Change) -> None:
        """Announce `changes` once this thread's open transaction has committed (never if it
        rolls back; `Database.announce`)."""
        self.db.announce(*self.announcing(*changes))

    def watch(self, *topics: str, tolerant: bool = False) -> PostgresWatch:
        for topic in topics:
            _check_topic(topic)
        return PostgresWatch(self.db, self.mesh_id, topics, tolerant=tolerant)


class PostgresWatch:
    """An entered watch: its own connection, LISTENing on its topics' channels."""

    def __init__(
        self, db: Database, mesh_id: str, topics: tuple[str, ...], *, tolerant: bool
    ) -> None:
        self._db = db
        self._listen_key = mesh_key(mesh_id, "listen")
        self._topics = {channel(mesh_id, topic): topic for topic in topics}
        self._tolerant = tolerant
        self._conn: psycopg.Connection[Any] | None = None
        self._recheck_at = 0.0
        # Since when the connection is lost (None: connected); the current backoff, and when
        # the next attempt to reconnect is due.
        self._lost: float | None = None
        self._pause = 0.0
        self._next_try = 0.0

    def __enter__(self) -> PostgresWatch:
        self._conn = self._listen()
        self._recheck_at = time.monotonic() + RECHECK_S
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._conn is not None:
            import psycopg

            with contextlib.suppress(psycopg.Error):  # gone with its session anyway
                self._conn.execute("DELETE FROM mesh_listening WHERE pid = pg_backend_pid()")
            self._conn.close()
            self._conn = None

    def _listen(self) -> psycopg.Connection[Any]:
        """A new connection LISTENing on every channel of the watch and listed as listening on
        them (`mesh_listening`: writers announce only what someone listens to), in one
        transaction (see MIGRATION_2 for why a change is never missed). The rows of sessions
        that are gone are deleted on the way."""
        from psycopg import sql

        conn = self._db.connect()
        with self._db.errors_mapped():
            try:
                with conn.transaction():
                    for name in self._topics:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))
                    conn.execute(
                        "DELETE FROM mesh_listening WHERE pid <> pg_backend_pid()"
                        " AND pid NOT IN (SELECT pid FROM pg_stat_activity)"
                    )
                    conn.execute(
                        "INSERT INTO mesh_listening (channel, pid)"
                        " SELECT c, pg_backend_pid() FROM unnest(%s::text[]) AS c"
                        " ON CONFLICT DO NOTHING",
                        (list(self._topics),),
                    )
                    # Last: waits for the writers that looked for listeners before these rows
                    # were there (`mesh_listened`) to commit, so the first look finds theirs.
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._listen_key,))
            except BaseException:
                conn.close()
                raise
        return conn

    def _everything(self) -> set[Change]:
        """Every watched topic as changed, whose unknown: the waiter looks again."""
        found = set()
        for topic in self._topics.values():
            kind, _, name = topic.partition(":")
            found.add(Change(kind, name or None))
        return found

    def next(self, seconds: float, stop: threading.Event | None = None) -> set[Change] | str:
        if self._conn is None and self._lost is None:
            raise RuntimeError("enter the watch (with ...) before waiting on it")
        deadline = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if stop is not None and stop.is_set():
                return STOPPED
            if now >= self._recheck_at:
                self._recheck_at = now + RECHECK_S
                return self._everything()
            if now >= deadline:
                return TIMEOUT
            step = min(deadline, self._recheck_at) - now
            if stop is not None:
                step = min(step, STOP_STEP_S)
            try:
                found = self._receive(step)
            except KeyboardInterrupt:
                return SIGNALLED
            if found:
                return found

    def wait(self, seconds: float) -> None:
        if self.next(seconds) == SIGNALLED:
            raise KeyboardInterrupt

    def _receive(self, seconds: float) -> set[Change]:
        """The changes notified within `seconds` (gathered for `BATCH_S` after the first)."""
        import psycopg

        if self._conn is None:  # lost: trying to get it back
            return self._reconnect(seconds)
        try:
            notes = list(self._conn.notifies(timeout=max(seconds, 0.001), stop_after=1))
            if notes:
                notes += self._conn.notifies(timeout=BATCH_S)
        except psycopg.Error:  # the connection failed: `_reconnect` says what it finds
            self._conn.close()
            self._conn = None
            self._lost = time.monotonic()
            return self._reconnect(seconds)
        found = set()
        for note in notes:
            change = _from_payload(note.payload)
            if note.channel in self._topics and change is not None:
                found.add(change)
        return found

    def _reconnect(self, seconds: float) -> set[Change]:
        """After a dropped connection: LISTEN again and report every topic (notifications may
        have been lost meanwhile). Tried with backoff for up to `seconds` per call, across
        calls for `[store] reconnect_timeout` from the loss, then exit 4 (once, naming the
        key); a tolerant watch keeps trying as long as it is waited on."""
        from drasill_cli.waiting import RETRY_FIRST_S, gave_up

        assert self._lost is not None  # noqa: S101 -- set when the connection was dropped
        deadline = time.monotonic() + seconds
        while True:
            now = time.monotonic()
            if now < self._next_try:  # backing off, across calls too
                if now >= deadline:
                    return set()
                time.sleep(min(self._next_try, deadline) - now)
                continue
            try:
                self._conn = self._listen()
            except MeshError as exc:
                now = time.monotonic()
                if not self._tolerant:
                    if not isinstance(exc, StoreUnreachable):
                        raise  # reached, and refused: no use trying again
                    if now >= self._lost + self._db.reconnect_timeout:
                        raise gave_up(exc, self._db.reconnect_timeout) from None
                self._pause = min(max(self._pause * 2, RETRY_FIRST_S), RECONNECT_STEP_S)
                self._next_try = now + self._pause
                continue
            self._lost, self._pause, self._next_try = None, 0.0, 0.0
            return self._everything()
