"""`mesh watch`: wake idle agents that have new mail; run the lifecycle and budgets on time.

Wake state is kept apart from delivery, one record per agent (`mesh.backend.wake_book`):
- `state`: `queued` (new mail, wake pending), `woken` (the notice was typed), `consumed` (the
  mail it announced has been read), `failed` (gave up after `wake.retry_max` attempts; new mail
  queues a fresh wake) or `dead` (the session is gone; the lifecycle takes it from there);
- `queued_ids` (mail the pending wake is for), `notified_ids` (announced mail still unread) and
  `notified_id` (the newest id announced), `attempts`, `next_attempt_at` (backoff after a failure,
  or settle time after a wake), `busy`, `blocked` (why it cannot be woken), `last_error`.

The record is rewritten after every change and read back on each look, so a watcher killed at any
point and started again loses no pending wake and does not wake anyone twice for the same mail
(a kill between typing and recording can at worst repeat one notice: at least once, never lost).
Only the holder of the wake book's guard writes these records or types into sessions, one look at a
time, so a session never receives two injections at once.

The loop waits on changes to inboxes and agents (`mesh.backend.changes`); its timeout is the
next scheduled job: the lifecycle, a hardware pass, a retry, or the re-check of a busy agent.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from drasill_cli import clock, liveness
from drasill_cli.errors import MeshError, NegativeOutcome, NotFound
from drasill_cli.names import AGENT_NAME_RE
from drasill_cli.wake import (
    HeimdallBackend,
    SessionGone,
    Supervisor,
    TmuxBackend,
    WakeFailed,
    notice,
)

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh
    from drasill_cli.models import AgentRecord
    from drasill_cli.storage.changes import Change
    from drasill_cli.storage.wakebook import WatchGuard

BUSY_RECHECK_S = 0.5
# How often the watcher confirms it still holds its guard (a database session can be cut).
GUARD_CHECK_S = 10.0
MAX_BACKOFF_S = 300.0
ACTOR = "watch"

Report = Callable[[dict[str, Any]], None]


def load_state(mesh: Mesh, name: str) -> dict[str, Any] | None:
    """An agent's wake state, or None when no wake was ever queued for it."""
    return mesh.backend.wake_book.load(name)


@contextlib.contextmanager
def single_instance(mesh: Mesh) -> Iterator[WatchGuard]:
    """Be the one watcher of this mesh (on this host) for the block; a second one gets
    NegativeOutcome naming the first. Yields the guard, for `Watcher(guard=...)`."""
    from drasill_cli.storage.wakebook import AlreadyWatching

    host = liveness.hostname()
    me = {"pid": os.getpid(), "host": host, "started_at": clock.iso()}
    with contextlib.ExitStack() as stack:
        try:
            guard = stack.enter_context(mesh.backend.wake_book.watching(host, me))
        except AlreadyWatching as exc:
            raise _running(mesh, exc.holder) from None
        yield guard


def _running(mesh: Mesh, holder: dict[str, Any], *, took_over: bool = False) -> NegativeOutcome:
    who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    if took_over:
        return NegativeOutcome(
            f"this mesh watch lost its hold on {mesh.location} (its database session was cut) "
            f"and another one took over meanwhile ({who}); that one does the work now, so this "
            "one stopped",
            code="watch-running",
            holder=holder,
        )
    return NegativeOutcome(
        f"another mesh watch is already running on {mesh.location} ({who}); it does this work "
        "already: stop it first if you want to run this one",
        code="watch-running",
        holder=holder,
    )


class Watcher:
    """Wakes agents and runs scheduled work; `report` receives one dict per thing it does."""

    def __init__(self, mesh: Mesh, report: Report, guard: WatchGuard | None = None) -> None:
        self.mesh = mesh
        self.report = report
        self.guard = guard  # confirmed every GUARD_CHECK_S (`single_instance` yields it)
        self.next_guard_check = clock.now() + GUARD_CHECK_S
        self.taken_over: dict[str, Any] | None = None  # the holder, once another took over
        wake = mesh.config.wake
        delay = wake.enter_delay_ms / 1000
        self.supervisors: dict[str, Supervisor] = {
            "heimdall": HeimdallBackend(mesh.config.heimdall_socket_dir(), enter_delay=delay),
            "tmux": TmuxBackend(wake.idle_ms, enter_delay=delay),
        }
        self.due: dict[str, float] = {}
        now = clock.now()
        self.next_lifecycle = now
        self.next_hardware = now
        self._stop = threading.Event()

    # ---- the loop ----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run` to return after the current step (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> None:
        """Full pass, then react to file events and due jobs until `stop` is called."""
        from drasill_cli.storage.changes import AGENTS, INBOXES, SIGNALLED, STOPPED

        self.report({"event": "start", "mesh": self.mesh.location, "pid": os.getpid()})
        with self.mesh.backend.changes.watch(INBOXES, AGENTS, tolerant=True) as watch:
            self.full_pass()
            while not self._stop.is_set():
                changes = watch.next(self._next_due() - clock.now(), self._stop)
                if changes in (STOPPED, SIGNALLED):
                    break
                names = set() if isinstance(changes, str) else self._names_in(changes)
                self.tick(names)
        self.report({"event": "stop"})
        if self.taken_over is not None:
            raise _running(self.mesh, self.taken_over, took_over=True)

    def _next_due(self) -> float:
        return min(
            [self.next_lifecycle, self.next_hardware, self.next_guard_check, *self.due.values()]
        )

    def _confirm_guard(self) -> None:
        """Still the watcher? Another that took over while this one's session was cut stops
        this one; a mesh out of reach is reported and asked again later."""
        from drasill_cli.storage.wakebook import AlreadyWatching

        if self.guard is None:
            return
        try:
            self.guard.confirm()
        except AlreadyWatching as exc:
            self.taken_over = exc.holder
            self.report({"event": "error", "job": "guard", "agent": None, "error": exc.message})
            self._stop.set()
        except MeshError as exc:
            self.report({"event": "error", "job": "guard", "agent": None, "error": exc.message})

    def _names_in(self, changes: set[Change]) -> set[str]:
        """Agents whose inbox or record a batch of changes touched."""
        names = {change.agent for change in changes if change.agent is not None}
        return {n for n in names if AGENT_NAME_RE.fullmatch(n)}

    def full_pass(self) -> None:
        """A look at every agent that has mail or wake state, then the lifecycle and hardware."""
        self.tick(self._known_names(), force=True)

    def tick(self, names: set[str], *, force: bool = False) -> None:
        """Look at `names` and at agents whose re-check is due, then run the jobs that are due."""
        now = clock.now()
        if now >= self.next_guard_check:
            self.next_guard_check = now + GUARD_CHECK_S
            self._confirm_guard()
            if self._stop.is_set():
                return
        due = {name for name, when in self.due.items() if when <= now}
        for name in sorted(names | due):
            self.due.pop(name, None)
            self._guarded("wake", name, functools.partial(self._look, name))
        now = clock.now()
        if force or now >= self.next_lifecycle:
            self.next_lifecycle = now + self.mesh.config.watch.lifecycle_every
            self._guarded("lifecycle", None, self._lifecycle)
        if force or now >= self.next_hardware:
            self.next_hardware = now + self.mesh.config.watch.hardware_every
            self._guarded("hardware", None, self._hardware)
        self._flush_warnings()

    def _known_names(self) -> set[str]:
        names = set(self.mesh.agent_names())
        names.update(self.mesh.backend.mailbox.owners())  # an unregistered name with mail too
        names.update(self.mesh.backend.wake_book.agents())
        return {n for n in names if AGENT_NAME_RE.fullmatch(n)}

    def _guarded(self, job: str, agent: str | None, action: Callable[[], None]) -> None:
        """Run one job; a failure is reported and retried later, never the end of the watch."""
        try:
            action()
        except Exception as exc:  # noqa: BLE001 -- one bad record or session must not stop the watch
            self.report({"event": "error", "job": job, "agent": agent, "error": _describe(exc)})
            if agent is not None:
                self.due[agent] = clock.now() + self.mesh.config.wake.retry_base_s

    def _flush_warnings(self) -> None:
        for warning in self.mesh.warnings:
            self.report({"event": "warning", "message": warning})
        self.mesh.warnings.clear()

    # ---- scheduled work ----------------------------------------------------------------

    def _lifecycle(self) -> None:
        from drasill_cli import lifecycle

        done = lifecycle.prune(self.mesh)
        if not lifecycle.report_is_empty(done):
            summary = {k: len(v) for k, v in done.items() if k != "dry_run" and v}
            self.report({"event": "lifecycle", **summary})

    def _hardware(self) -> None:
        from drasill_cli import hardware

        for action in hardware.enforce(self.mesh):
            self.report({"event": "hardware", **action})

    # ---- waking --------------------------------------------------------------------------

    def _look(self, name: str) -> None:
        """Bring one agent's wake state up to date, waking it if it is due and idle."""
        from drasill_cli import messages

        try:
            unread = messages.list_unread(self.mesh, name)
        except NotFound:
            unread = []
        old = load_state(self.mesh, name) or {}
        state = dict(old)
        unread_ids = {m["id"] for m in unread}
        notified = [i for i in state.get("notified_ids", []) if i in unread_ids]
        state["notified_ids"] = notified
        pending = [m for m in unread if m.get("wake") is not False and m["id"] not in notified]
        if not pending:
            self._settle(name, old, state, unread)
            return
        pending_ids = sorted(m["id"] for m in pending)
        if not set(pending_ids) <= set(state.get("queued_ids", [])):
            if state.get("state") != "queued":
                state["queued_at"] = clock.iso()
            state.update(state="queued", attempts=0, last_error=None)
            self.report({"event": "queued", "agent": name, "messages": len(pending_ids)})
        state["queued_ids"] = pending_ids
        when = self._attempt(name, state, pending)
        if when is not None:
            self.due[name] = when
        self._save(name, old, state)

    def _settle(
        self, name: str, old: dict[str, Any], state: dict[str, Any], unread: list[dict[str, Any]]
    ) -> None:
        """No wake needed: note consumption, or forget an agent that is gone with no mail."""
        if not old:
            return
        if not unread and not self.mesh.is_registered(name):
            self.mesh.backend.wake_book.forget(name)
            return
        state.update(queued_ids=[], busy=False, blocked=None)
        if state.get("state") in ("queued", "woken", "failed") and not state["notified_ids"]:
            state.update(state="consumed", consumed_at=clock.iso(), attempts=0)
            self.report({"event": "consumed", "agent": name})
        self._save(name, old, state)

    def _attempt(
        self, name: str, state: dict[str, Any], batch: list[dict[str, Any]]
    ) -> float | None:
        """Wake now if allowed; returns when to look again (None: on the next event only)."""
        from drasill_cli import agents

        if state.get("state") == "failed":
            return None
        not_before = state.get("next_attempt_at")
        if not_before and clock.parse_iso(not_before) > clock.now():
            return clock.parse_iso(not_before)
        agent = agents.load(self.mesh, name)
        blocked = _blocked(agent)
        if state.get("blocked") != blocked and blocked is not None:
            self.report({"event": "blocked", "agent": name, "reason": blocked})
        state["blocked"] = blocked
        if blocked is not None or agent is None:
            state["busy"] = False
            return None
        return self._wake(name, state, agent, batch)

    def _wake(
        self, name: str, state: dict[str, Any], agent: AgentRecord, batch: list[dict[str, Any]]
    ) -> float | None:
        """Type the notice if the session is idle; never into a busy or a vanished one."""
        session, kind = agent.session or "", agent.supervisor or ""
        state.update(session=session, backend=kind)
        supervisor = self.supervisors[kind]
        line = notice(name, batch)
        try:
            idle = supervisor.is_idle(session)
            if idle:
                supervisor.type_line(session, line)
        except SessionGone:
            idle = None
        except WakeFailed as exc:
            return self._failed(name, state, agent, str(exc))
        if idle is None:
            self._dead(name, state, agent)
            return None
        if not idle:
            if not state.get("busy"):
                self.report({"event": "busy", "agent": name, "session": session})
            state["busy"] = True
            return clock.now() + BUSY_RECHECK_S
        self._woken(name, state, agent, batch, line)
        return None

    def _woken(
        self,
        name: str,
        state: dict[str, Any],
        agent: AgentRecord,
        batch: list[dict[str, Any]],
        line: str,
    ) -> None:
        now = clock.now()
        ids = sorted({*state["notified_ids"], *(m["id"] for m in batch)})
        newest = max(m["id"] for m in batch)
        state.update(
            state="woken",
            notified_ids=ids,
            notified_id=newest,
            queued_ids=[],
            attempts=0,
            busy=False,
            last_error=None,
            dead_session=None,
            woken_at=clock.iso(now),
            # The woken agent needs time to start its turn before it can look idle again.
            next_attempt_at=clock.iso(now + self.mesh.config.wake.idle_ms / 1000),
        )
        details = {"session": agent.session, "backend": agent.supervisor, "messages": len(batch)}
        self.mesh.append_audit_event(
            "wake", ACTOR, agent=name, outcome="woken", newest=newest, text=line, **details
        )
        self.report({"event": "wake", "agent": name, "text": line, **details})

    def _dead(self, name: str, state: dict[str, Any], agent: AgentRecord) -> None:
        """The session is gone: type nothing, report the agent dead, let the lifecycle act."""
        reported = state.get("dead_session") == agent.session
        state.update(state="dead", dead_session=agent.session, busy=False)
        if reported:
            return
        details = {"session": agent.session, "backend": agent.supervisor}
        self.mesh.append_audit_event(
            "wake", ACTOR, agent=name, outcome="dead", reason="session is gone", **details
        )
        self.report({"event": "dead", "agent": name, **details})
        self.next_lifecycle = clock.now()

    def _failed(
        self, name: str, state: dict[str, Any], agent: AgentRecord, error: str
    ) -> float | None:
        """A wake that could not be done now: back off, or give up after `retry_max`."""
        config = self.mesh.config.wake
        attempts = int(state.get("attempts", 0)) + 1
        state.update(attempts=attempts, last_error=error, busy=False)
        details = {"session": agent.session, "backend": agent.supervisor, "attempts": attempts}
        if attempts >= config.retry_max:
            state.update(state="failed", next_attempt_at=None)
            self.mesh.append_audit_event(
                "wake", ACTOR, agent=name, outcome="failed", error=error, **details
            )
            self.report({"event": "failed", "agent": name, "error": error, **details})
            return None
        delay = min(MAX_BACKOFF_S, config.retry_base_s * 2.0 ** (attempts - 1))
        when = clock.now() + delay
        state["next_attempt_at"] = clock.iso(when)
        self.report({"event": "retry", "agent": name, "error": error, "in_s": delay, **details})
        return when

    def _save(self, name: str, old: dict[str, Any], state: dict[str, Any]) -> None:
        if state != old:
            state.update(agent=name, updated_at=clock.iso())
            self.mesh.backend.wake_book.save(name, state)


def _blocked(agent: AgentRecord | None) -> str | None:
    """Why an agent cannot be woken from here, or None when it can."""
    if agent is None:
        return "not registered"
    if agent.dead_at is not None:
        return f"dead since {agent.dead_at}"
    if agent.session is None or agent.supervisor is None:
        return "no session to wake (register with --session and --backend)"
    if agent.host != liveness.hostname():
        return f"its session is on host {agent.host}; run mesh watch there"
    return None


def _describe(exc: Exception) -> str:
    if isinstance(exc, MeshError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
