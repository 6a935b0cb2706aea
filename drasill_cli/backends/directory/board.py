"""`TaskBoard` for the directory mesh: one record file per task, sidecar flocks, marker indexes.

Each task is one record, `tasks/<id>.json`, and every change to it is a read-decide-write under
the task's own sidecar lock (`task-<id>`), so of any number of racing claimers exactly one wins.
Ids are numbered under one more sidecar lock (`task-ids`) with a counter record
(`counters/tasks.json`) that remembers the last number even if that task is later quarantined.

Two indexes of empty marker files keep the hot paths from reading every record:

- `tasks/queued/<priority key>_<id>.ref`: the queued tasks; the names sort by priority (highest
  first), then by id (oldest first), so `queued` lists them in claim order;
- `tasks/held/<agent>/<id>.ref`: the claimed and working tasks of each agent.

The record is the truth and the markers are hints: a marker is created before the record enters
its state and removed after the record leaves it, so a crash can leave a stale marker but never
hide a queued or held task. A stale marker is this module's own repair: the markers `queued` and
`held_by` hand out are remembered, and a `change` of that task, under its lock, removes the ones
its record no longer matches (under the lock no save is half done, so a marker that disagrees
with the record is a crash's leftover).

`claim_next` walks the queue markers in claim order: each candidate's dependencies are read
before its lock, then the claim is a `change` that only compares (a busy task is passed over at
once and waited for only when nothing else could be claimed); the audit event is appended after
the task's lock is released.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

from drasill_cli.backends.directory.layout import (
    HELD_DIR,
    MARKER_SUFFIX,
    QUEUE_DIR,
    TASK_IDS_LOCK,
    TASK_SEQUENCE,
    TASKS_DIR,
    task_lock,
    task_record,
)
from drasill_cli.backends.directory.store import Busy, FileStore
from drasill_cli.models import Task, stored_task
from drasill_cli.names import AGENT_NAME_RE, RESERVED_NAMES
from drasill_cli.storage.board import (
    CHANGE_TIMEOUT_S,
    PRIORITY_LIMIT,
    Claim,
    Decide,
    Describe,
    TaskBusy,
    busy,
    format_id,
    holder,
    id_number,
)
from drasill_cli.storage.exclusion import deciding, deciding2

RECORD_SUFFIX = ".json"
# An id that can name a record file: no separator, no dot-dot, no hidden name.
_STORABLE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _queue_marker(task: Task) -> str:
    # Fixed width, so that the names sort by priority descending: 0000000 is PRIORITY_LIMIT.
    return f"{QUEUE_DIR}/{PRIORITY_LIMIT - task.priority:07d}_{task.id}{MARKER_SUFFIX}"


def _held_marker(agent: str, task_id: str) -> str:
    return f"{HELD_DIR}/{agent}/{task_id}{MARKER_SUFFIX}"


def _storable(task_id: str) -> bool:
    return _STORABLE_ID.fullmatch(task_id) is not None


def _ready(task: Task, states: dict[str, str]) -> bool:
    """Whether every dependency of `task` is completed by `states` (looked up before)."""
    return all(states.get(dep) == "completed" for dep in task.depends_on)


class DirectoryBoard:
    def __init__(self, store: FileStore, audit: Callable[[dict[str, Any]], None]) -> None:
        self.store = store
        self._audit = audit  # appends a change's audit event (`append_or_warn`)
        # Markers handed out as hints, checked by the next change of their task: task id ->
        # its queue marker; agent -> ids of its held markers.
        self._queue_seen: dict[str, str] = {}
        self._held_seen: dict[str, set[str]] = {}
        self._seen_guard = threading.Lock()

    # ---- reading ---------------------------------------------------------------------------

    def get(self, task_id: str) -> Task | None:
        if not _storable(task_id):
            return None
        return self.store.read_checked(task_record(task_id), lambda raw: stored_task(task_id, raw))

    def exists(self, task_id: str) -> bool:
        return _storable(task_id) and self.store.mtime(task_record(task_id)) is not None

    def ids(self) -> list[str]:
        return [name.removesuffix(RECORD_SUFFIX) for name in self.store.names(TASKS_DIR)]

    def all(self) -> list[Task]:
        return [task for task in map(self.get, self.ids()) if task is not None]

    def queued(self) -> list[str]:
        found: dict[str, str] = {}
        for name in self.store.names(QUEUE_DIR, MARKER_SUFFIX):
            task_id = name.removesuffix(MARKER_SUFFIX).partition("_")[2]
            if not _storable(task_id):
                self.store.remove(f"{QUEUE_DIR}/{name}")  # names no task: nobody's marker
                continue
            found.setdefault(task_id, f"{QUEUE_DIR}/{name}")
        with self._seen_guard:
            self._queue_seen = found
        return list(found)

    def held_by(self, agent: str) -> list[str]:
        folder = f"{HELD_DIR}/{agent}"
        found = []
        for name in self.store.names(folder, MARKER_SUFFIX):
            task_id = name.removesuffix(MARKER_SUFFIX)
            if not _storable(task_id):
                self.store.remove(f"{folder}/{name}")
                continue
            found.append(task_id)
        with self._seen_guard:
            self._held_seen[agent] = set(found)
        return found

    def holders(self) -> list[str]:
        # A folder of `tasks/held/` is named by its agent; one that no agent name could be
        # names no claimant (left for `mesh doctor`).
        return [
            name
            for name in sorted(self.store.subdirs(HELD_DIR))
            if AGENT_NAME_RE.fullmatch(name) and name not in RESERVED_NAMES
        ]

    # ---- writing ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self, task_id: str, timeout: float) -> Iterator[None]:
        try:
            with self.store.lock(task_lock(task_id), timeout=timeout):
                yield
        except Busy:
            raise busy(task_id, timeout) from None

    def _save(self, before: Task | None, after: Task) -> None:
        """Write the record and keep both indexes in step (markers added first, removed last)."""
        store = self.store
        was_queued = before is not None and before.state == "queued"
        # A queued task given a new priority (`mesh task edit`) moves in the queue: its new
        # marker is added and the old one removed, as for a task leaving the queue.
        requeued = was_queued and before is not None and before.priority != after.priority
        old_holder, new_holder = holder(before), holder(after)
        if after.state == "queued" and (requeued or not was_queued):
            store.touch(_queue_marker(after))
        if new_holder is not None and new_holder != old_holder:
            store.touch(_held_marker(new_holder, after.id))
        store.write(task_record(after.id), after.to_record())
        if before is not None and was_queued and (requeued or after.state != "queued"):
            store.remove(_queue_marker(before))
        if old_holder is not None and old_holder != new_holder:
            store.remove(_held_marker(old_holder, after.id))

    def _repair(self, task_id: str, task: Task | None) -> None:
        """Remove the markers of `task_id` handed out as hints that its record (read under
        its lock) no longer matches: leftovers of a writer killed between two steps."""
        with self._seen_guard:
            queue_marker = self._queue_seen.pop(task_id, None)
            agents = [a for a, ids in self._held_seen.items() if task_id in ids]
            for agent in agents:
                self._held_seen[agent].discard(task_id)
        if queue_marker is not None and (task is None or task.state != "queued"):
            self.store.remove(queue_marker)
        for agent in agents:
            if holder(task) != agent:
                self.store.remove(_held_marker(agent, task_id))

    def change(
        self,
        task_id: str,
        decide: Decide,
        *,
        timeout: float = CHANGE_TIMEOUT_S,
        event: Describe | None = None,
    ) -> tuple[Task, Task] | None:
        if not _storable(task_id):
            return None
        with self._locked(task_id, timeout):
            before = self.get(task_id)
            self._repair(task_id, before)
            if before is None:
                return None
            after = deciding("TaskBoard.change", decide, before)
            if after is None:
                return None
            if after.id != task_id:
                raise ValueError(f"a change of task {task_id} returned task {after.id}")
            self._save(before, after)
            if event is not None:
                self._audit(deciding2("TaskBoard.change", event, before, after))
        return before, after

    def claim_next(self, actor: str, at: str, event: dict[str, Any]) -> Claim:
        states: dict[str, str] = {}  # dependencies' states (completed is final: cacheable)
        busy_ids: list[str] = []
        waiting = 0
        for task_id in self.queued():
            seen = self.get(task_id)
            if seen is not None and seen.state == "queued":
                for dep in seen.depends_on:
                    if dep not in states:
                        found = self.get(dep)
                        states[dep] = found.state if found is not None else "missing"
                if not _ready(seen, states):
                    waiting += 1
                    continue
            try:
                won = self._claim(task_id, actor, at, states, 0, event)
            except TaskBusy:
                busy_ids.append(task_id)
                continue
            if won is not None:
                return Claim(won, waiting)
        for task_id in busy_ids:
            won = self._claim(task_id, actor, at, states, CHANGE_TIMEOUT_S, event)
            if won is not None:
                return Claim(won, waiting)
        return Claim(None, waiting)

    def _claim(
        self,
        task_id: str,
        actor: str,
        at: str,
        states: dict[str, str],
        timeout: float,
        event: dict[str, Any],
    ) -> Task | None:
        """`task_id` claimed if it is still queued and ready by `states`; else None (a racer
        took it, its marker was stale, or it changed since its dependencies were looked up)."""

        def decide(task: Task) -> Task | None:
            if task.state != "queued" or not _ready(task, states):
                return None
            return task.replace(state="claimed", claimed_by=actor, claimed_at=at, updated_at=at)

        def audit(_before: Task, after: Task) -> dict[str, Any]:
            return {**event, "task": after.id}

        changed = self.change(task_id, decide, timeout=timeout, event=audit)
        return None if changed is None else changed[1]

    def add(self, make: Callable[[str], Task]) -> Task:
        with self.store.lock(TASK_IDS_LOCK):
            number = self._next_number()
            task = make(format_id(number))
            if task.id != format_id(number):
                raise ValueError(f"a new task was given id {format_id(number)}, not {task.id}")
            self.store.write(TASK_SEQUENCE, {"last": number})
            # Under the task's own lock too: its queue marker appears before its record, and a
            # claimer that met the marker first would otherwise take it for a stale one.
            with self._locked(task.id, CHANGE_TIMEOUT_S):
                self._save(None, task)
        return task

    def restore(self, task: Task) -> bool:
        """Store `task` under its own id (an import); False when a task of that id is stored.
        Under the numbering lock too, so that `add` never hands out the same id meanwhile."""
        with self.store.lock(TASK_IDS_LOCK), self._locked(task.id, CHANGE_TIMEOUT_S):
            if self.exists(task.id):
                return False
            self._save(None, task)
        return True

    def sequence(self) -> int:
        """The last task number handed out (the counter, or the highest numbered record)."""
        raw = self.store.read(TASK_SEQUENCE)
        last = raw.get("last") if raw is not None else None
        numbers = [n for n in map(id_number, self.ids()) if n is not None]
        return max([*numbers, last if isinstance(last, int) else 0])

    def raise_sequence(self, last: int) -> bool:
        """Make `last` the last number handed out, unless the counter is there already
        (it never goes backwards); whether it moved."""
        with self.store.lock(TASK_IDS_LOCK):
            raw = self.store.read(TASK_SEQUENCE)
            current = raw.get("last") if raw is not None else None
            if isinstance(current, int) and current >= last:
                return False
            self.store.write(TASK_SEQUENCE, {"last": last})
        return True

    def _next_number(self) -> int:
        """One above the counter and every numbered record (the caller holds TASK_IDS_LOCK).

        The counter covers a task whose record was quarantined; the listing covers a counter
        that is missing or behind.
        """
        number = self.sequence() + 1
        while self.store.mtime(task_record(format_id(number))) is not None:
            number += 1
        return number
