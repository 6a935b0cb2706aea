"""Advisory file locks with leases: four modes, directory coverage, waiting, run-while-holding.

Each lock is one record per (path, holder) in the backend's lock table (`mesh.backend.locks`),
holding the contract's lock object (path, mode, holder, acquired_at, expires_at) plus its ttl.
Every decision that reads the lock table and then changes it (acquire, renew, release, clear) is
one `LockTable.transact`: it runs on the whole table with every other decision shut out and its
changes are applied whole, so two agents can never both be granted conflicting locks.

The lease rule: a lock binds until its lease (`ttl`) has run out both since it was taken or
renewed and since its holder's last sign of life (any mesh command run as it: every command is
a heartbeat). So an agent that is alive and still working keeps its locks through a long edit
without renewing them one by one, while a lock frees once its holder has been silent for a whole
lease, and at once when its holder is a registered agent found dead (process or session gone).
Stale locks never block anyone; `acquire` drops the stale locks it would otherwise conflict
with, and tells each live holder by message (a lock is never lost silently), and `clear_stale`
drops them all (for prune).

Records are plain dicts checked by the table (`storage.locktable.check_lock`); this module
keeps only the rules. Agent records are loaded only to judge a conflicting holder that is
registered.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from drasill_cli import SCHEMA_VERSION, clock, lockpaths
from drasill_cli.errors import InvalidInput, MeshError, NegativeOutcome, NotFound, OrdinaryOutcome
from drasill_cli.liveness import hostname
from drasill_cli.lockpaths import Target
from drasill_cli.mesh import Mesh
from drasill_cli.models import FUTURE_SLACK_S, LOCK_MODES
from drasill_cli.names import check_agent_name
from drasill_cli.storage.locktable import LockChanges
from drasill_cli.waiting import check_wait

if TYPE_CHECKING:
    from drasill_cli import presence

MODES = LOCK_MODES

# held mode -> modes another agent may be granted on an overlapping path (the contract's table)
COMPATIBLE: dict[str, frozenset[str]] = {
    "read": frozenset({"read", "intent"}),
    "intent": frozenset({"read"}),
    "write": frozenset(),
    "co_write": frozenset({"co_write"}),
}

MAX_TTL_S = 30 * 24 * 3600  # 2,592,000 s: a lease longer than this is a typo, not a plan
WAIT_FIRST_S = 0.005
WAIT_MAX_S = 0.1
VIEW_KEYS = ("path", "mode", "holder", "acquired_at", "expires_at", "ttl")


# ---- input -------------------------------------------------------------------------------


def check_options(mode: str = "write", ttl: float | None = None, wait: float | None = None) -> None:
    """Refuse a bad mode, ttl or wait (exit 2) before anything is written."""
    if mode not in MODES:
        raise InvalidInput(
            f"unknown lock mode {mode!r}; use one of: {', '.join(MODES)}", code="invalid-mode"
        )
    if ttl is not None:
        check_ttl(ttl, "--ttl")
    if wait is not None:
        check_wait(wait, "until granted")


def check_ttl(ttl: float, source: str) -> float:
    """Refuse (exit 2) a lease that is not a number of seconds in (0, MAX_TTL_S]."""
    if not (math.isfinite(ttl) and 0 < ttl <= MAX_TTL_S):
        in_config = source != "--ttl"
        raise InvalidInput(
            f"{source} must be more than 0 and at most {MAX_TTL_S} seconds (30 days), "
            f"got {ttl:g}; {'fix the config file' if in_config else 'give a lease in that range'}"
            " (a lock held longer is renewed by locking it again, or by `mesh lock -- COMMAND`)",
            code="invalid-config" if in_config else "invalid-ttl",
        )
    return ttl


def resolve(path: str) -> str:
    """The lock key of `path` (see `lockpaths`): inside a git work tree its repository and
    place in the tree, else its absolute real path, so agents in different directories, clones
    and worktrees name one file alike."""
    return resolve_target(path).key


def resolve_target(path: str) -> Target:
    """`path` as a lock target: a path (resolved to its real path first), or a repository
    key as `mesh locks` lists it (`git:<root commit>/src/a.py`) when no such file is here."""
    if not path or "\0" in path:
        raise InvalidInput(
            f"invalid lock path {path!r}: give a non-empty file or directory path",
            code="invalid-path",
        )
    if lockpaths.split_key(path) is not None and not os.path.lexists(path):
        return lockpaths.of_key(path)
    return lockpaths.target(os.path.realpath(path))


def resolve_all(paths: Sequence[str]) -> list[Target]:
    """Resolved targets, de-duplicated by key in the order given; at least one is required."""
    if not paths:
        raise InvalidInput("give at least one PATH to lock", code="missing-path")
    found: dict[str, Target] = {}
    for path in paths:
        target = resolve_target(path)
        found.setdefault(target.key, target)
    return list(found.values())


def _held_key(mesh: Mesh, text: str) -> str | None:
    """The key of a lock named as `mesh locks` shows it ("src/a.py in repository
    1a2b3c4d (at ...)", or "/a/path on HOST"), matched against the locks held; None when
    `text` is not such a form or names no lock (then it is taken as a path)."""
    if os.path.lexists(text):
        return None
    keys = {lock["path"] for lock in mesh.backend.locks.all() if isinstance(lock.get("path"), str)}
    parsed = lockpaths.parse_shown(text)
    if parsed is None:
        plain, _on, _host = text.rpartition(" on ")
        return plain if plain in keys else None
    prefix, rel, _at = parsed
    found = sorted(
        key
        for key in keys
        if (parts := lockpaths.split_key(key)) is not None
        and parts[0].startswith(prefix)
        and parts[1] == rel
    )
    if len(found) > 1:
        raise InvalidInput(
            f"{text!r} names locks in several repositories: {', '.join(found)}; give the whole key",
            code="ambiguous-lock-path",
        )
    return found[0] if found else None


def _release_targets(mesh: Mesh, paths: Sequence[str]) -> list[str]:
    """The keys `mesh unlock` releases: each PATH as `mesh lock` took it, or as `mesh locks`
    shows it (the human form, or the key from --json)."""
    if not paths:
        raise InvalidInput("give at least one PATH to unlock", code="missing-path")
    keys: dict[str, None] = {}
    for path in paths:
        key = _held_key(mesh, path) if path else None
        keys.setdefault(key if key is not None else resolve_target(path).key)
    return list(keys)


def covers(outer: str, inner: str) -> bool:
    """Whether a lock on `outer` covers `inner`, by whole path components."""
    if outer == inner:
        return True
    prefix = outer if outer.endswith("/") else outer + "/"
    return inner.startswith(prefix)


def overlaps(one: str, two: str) -> bool:
    """Whether locks on the two paths guard any file in common."""
    return covers(one, two) or covers(two, one)


def meets(lock: dict[str, Any], target: Target) -> bool:
    """Whether `lock` guards a file of `target`: their keys overlap (a repository key on any
    host; an absolute path only on the host it was taken on: outside a work tree, the same path
    on two machines is two files), or both were taken on this host at overlapping real paths (a
    lock on a folder that holds a work tree covers the files of that work tree, whose keys name
    their repository instead)."""
    if overlaps(lock["path"], target.key):
        return lockpaths.split_key(target.key) is not None or lock.get("host") in (None, hostname())
    where = lockpaths.local(lock)
    return (
        where is not None
        and bool(target.local)
        and where[0] == hostname()
        and overlaps(where[1], target.local)
    )


def compatible(held: str, asked: str) -> bool:
    """The contract's table: may another agent get `asked` while `held` is held?"""
    return asked in COMPATIBLE[held]


# ---- records -------------------------------------------------------------------------------


def view(lock: dict[str, Any]) -> dict[str, Any]:
    """The contract's lock object (plus ttl), with the `host` it was taken on when the record
    says (an absolute path is a path on that host); a lock on a repository key adds
    `repository` (its root commit), `repository_path` (the path in the work tree) and
    `local_path` (where its holder took it)."""
    shown = {key: lock[key] for key in VIEW_KEYS}
    if isinstance(lock.get("host"), str):
        shown["host"] = lock["host"]
    parts = lockpaths.split_key(lock["path"])
    if parts is not None:
        shown["repository"], shown["repository_path"] = parts
        shown["host"], shown["local_path"] = lock.get("host"), lock.get("local_path")
    return shown


def _prepared(
    table: list[dict[str, Any]], now: float, *, save: bool = True
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each lock of the table with its lease end parsed (`_expires`), and (with `save`) the
    stored form of each lock whose lease end had to be reset, for a decision to put back.

    A lease that ends more than its ttl from now was stamped by a clock that has since stepped
    back: it is reset to start now, so it ages from here.
    """
    prepared, reset = [], []
    for record in table:
        lock = {**record, "_expires": clock.parse_iso(record["expires_at"])}
        if lock["_expires"] > now + lock["ttl"] + FUTURE_SLACK_S:
            lock["_expires"] = now + lock["ttl"]
            lock["acquired_at"], lock["expires_at"] = clock.iso(now), clock.iso(lock["_expires"])
            if save:
                reset.append(_stored(lock))
        prepared.append(lock)
    return prepared, reset


def _stored(lock: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in lock.items() if not k.startswith("_")}


class _Judge:
    """Decides staleness; agent records are loaded once, and only for registered holders.

    A judge made by `_judge_holders` has looked every holder up before the lock table's
    exclusion, so a decision inside it only compares (issue 26): a holder it did not see then
    (a lock taken since) counts as alive and seen now, which binds (the next try judges it).
    """

    def __init__(self, mesh: Mesh, now: float) -> None:
        self.mesh = mesh
        self.now = now
        self._dead: dict[str, bool] = {}
        self._seen: dict[str, float | None] = {}
        self._observer: presence.Observer | None = None
        self._primed = False

    def prime(self, holders: set[str]) -> _Judge:
        """Look each of `holders` up now; after this, nothing is looked up any more."""
        for holder in sorted(holders):
            self.holder_dead(holder)
            self.last_seen(holder)
        self._primed = True
        return self

    def holder_dead(self, holder: str) -> bool:
        """Whether `holder` is a registered agent that is dead (unregistered: never)."""
        if holder not in self._dead and self._primed:
            return False
        if holder not in self._dead:
            dead = False
            if self.mesh.is_registered(holder):
                from drasill_cli import presence

                self._observer = self._observer or presence.Observer(self.mesh)
                dead = presence.is_dead(self.mesh, holder, self._observer)
            self._dead[holder] = dead
        return self._dead[holder]

    def last_seen(self, holder: str) -> float | None:
        """The holder's last heartbeat (a time from the future counts as now); None if none."""
        if holder not in self._seen and self._primed:
            return self.now
        if holder not in self._seen:
            beat = self.mesh.backend.presence.last_seen(holder)
            self._seen[holder] = None if beat is None else min(beat, self.now)
        return self._seen[holder]

    def lapses_at(self, lock: dict[str, Any]) -> float:
        """When the lock stops binding by the lease rule: a whole lease after both its last
        renewal and its holder's last sign of life."""
        seen = self.last_seen(lock["holder"])
        lease = min(float(lock["ttl"]), MAX_TTL_S)
        return float(lock["_expires"]) if seen is None else max(lock["_expires"], seen + lease)

    def expired(self, lock: dict[str, Any]) -> bool:
        """Whether the lease ran out: neither renewed nor a sign of life from the holder."""
        return self.lapses_at(lock) <= self.now

    def effective(self, lock: dict[str, Any]) -> dict[str, Any]:
        """The lock with `expires_at` set to when it lapses if its holder stays silent."""
        lapses = self.lapses_at(lock)
        return {**lock, "_expires": lapses, "expires_at": clock.iso(lapses)}

    def stale(self, lock: dict[str, Any]) -> bool:
        """Expired, or held by a dead agent: it blocks no one."""
        return self.expired(lock) or self.holder_dead(lock["holder"])


def _judge_holders(mesh: Mesh) -> _Judge:
    """A judge of every holder in the table, asked now, before the lock table's exclusion
    (liveness can probe processes and sessions: no waiting inside an exclusion)."""
    judge = _Judge(mesh, clock.now())
    return judge.prime({lock["holder"] for lock in mesh.backend.locks.all()})


def _describe(lock: dict[str, Any], now: float) -> str:
    left = max(0, round(lock["_expires"] - now))
    return (
        f"{lock['holder']} holds a {lock['mode']} lock on {lockpaths.shown(lock)} "
        f"(expires {lock['expires_at']}, in {left}s)"
    )


def _audit_cleared(
    mesh: Mesh, locks: Sequence[dict[str, Any]], actor: str | None, why: str
) -> None:
    """Audit each lock a decision removed from the table."""
    for lock in locks:
        mesh.append_audit_event(
            "lock-cleared", actor, path=lock["path"], holder=lock["holder"], reason=why
        )


# ---- acquire -------------------------------------------------------------------------------


Locks = list[dict[str, Any]]


def _gives(held: str, asked: str) -> bool:
    """Whether holding `held` excludes at least whom `asked` would (write excludes all)."""
    return COMPATIBLE[held] <= COMPATIBLE[asked]


def _run_mode(held: str, asked: str) -> str:
    """The mode that gives both what is held and what is asked: the stronger of the two, or
    write when neither gives the other (read and co_write)."""
    if _gives(held, asked):
        return held
    return asked if _gives(asked, held) else "write"


def _try_grant(
    mesh: Mesh, targets: list[Target], holder: str, mode: str, ttl: float, *, keep: bool = False
) -> tuple[Locks, Locks, Locks, Locks]:
    """One read-decide-write of the table: (granted, [], lapsed locks dropped for it, the
    holder's live locks on the targets before) or ([], conflicts, [], []).

    With `keep`, a lock the holder already holds is never weakened: it takes the mode that
    gives both what it had and what is asked (`_run_mode`), so changing it back later can
    conflict with no one."""
    judge = _judge_holders(mesh)  # before the exclusion: inside, it only compares

    def decide(records: Locks) -> LockChanges[tuple[Locks, Locks, Locks, Locks, Locks]]:
        now = judge.now = clock.now()
        table, reset = _prepared(records, now, save=not mesh.backend.read_only)
        conflicts: list[dict[str, Any]] = []
        stale: list[dict[str, Any]] = []
        for lock in table:
            if lock["holder"] == holder or compatible(lock["mode"], mode):
                continue
            if not any(meets(lock, target) for target in targets):
                continue
            if judge.stale(lock):
                stale.append(lock)
            else:
                conflicts.append(judge.effective(lock))
        if conflicts:
            return LockChanges(([], conflicts, [], [], []), put=reset)
        mine = {lock["path"]: lock for lock in table if lock["holder"] == holder}
        stamp = clock.iso(now)
        granted, before = [], []
        for target in targets:
            previous = mine.get(target.key)
            held = previous is not None and not judge.expired(previous)
            if held and previous:
                before.append(_stored(previous))
            granted.append(
                {
                    "schema_version": SCHEMA_VERSION,
                    "path": target.key,
                    "mode": _run_mode(previous["mode"], mode)
                    if keep and previous and held
                    else mode,
                    "holder": holder,
                    "acquired_at": previous["acquired_at"] if held and previous else stamp,
                    "expires_at": clock.iso(now + ttl),
                    "ttl": ttl,
                    **target.record_keys(),
                }
            )
        lapsed = [lock for lock in stale if not judge.holder_dead(lock["holder"])]
        return LockChanges(
            (granted, [], stale, lapsed, before), put=[*reset, *granted], remove=stale
        )

    granted, conflicts, stale, lapsed, before = mesh.backend.locks.transact(decide)
    _audit_cleared(mesh, stale, holder, "stale")
    return granted, conflicts, lapsed, before


def acquire(
    mesh: Mesh,
    paths: Sequence[str],
    holder: str,
    *,
    mode: str = "write",
    ttl: float | None = None,
    wait: float | None = None,
) -> list[dict[str, Any]]:
    """Grant `holder` every path or none; a path it already holds is renewed (or re-moded).

    With `wait`, retries with a short jittered backoff until granted or the time is up. A
    denial is NegativeOutcome (exit 1) naming each conflicting holder, with the conflicting
    lock objects in its `conflicts` detail.
    """
    return [view(lock) for lock in _acquire(mesh, paths, holder, mode, ttl, wait)[0]]


def _acquire(
    mesh: Mesh,
    paths: Sequence[str],
    holder: str,
    mode: str,
    ttl: float | None,
    wait: float | None,
    *,
    keep: bool = False,
) -> tuple[Locks, Locks]:
    """`acquire`: the locks granted as stored, and the holder's live locks on those paths
    before (see `_try_grant` for `keep`)."""
    check_options(mode, ttl, wait)
    check_agent_name(holder)
    targets = resolve_all(paths)
    resolved = [target.key for target in targets]
    lease = (
        ttl if ttl is not None else check_ttl(mesh.config.locks.default_ttl, "locks.default_ttl")
    )
    mesh.require_registered(holder, "take locks")
    deadline = time.monotonic() + (wait or 0.0)
    delay = WAIT_FIRST_S
    while True:
        granted, conflicts, lapsed, before = _try_grant(
            mesh, targets, holder, mode, lease, keep=keep
        )
        if granted:
            mesh.append_audit_event(
                "lock",
                holder,
                paths=resolved,
                mode=mode,
                expires_at=granted[0]["expires_at"],
            )
            _tell_lapsed(mesh, holder, lapsed)
            return granted, before
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _denied(resolved, mode, conflicts, wait)
        time.sleep(min(remaining, delay * random.uniform(0.5, 1.0)))  # noqa: S311 -- jitter
        delay = min(delay * 2, WAIT_MAX_S)


def _tell_lapsed(mesh: Mesh, taker: str, lapsed: list[dict[str, Any]]) -> None:
    """Tell each live holder whose lapsed lock was dropped for `taker` (best effort)."""
    for lock in lapsed:
        if not mesh.is_registered(lock["holder"]):
            continue
        from drasill_cli import messages

        body = (
            f"your {lock['mode']} lock on {lockpaths.shown(lock)} lapsed (no mesh command from "
            f"you for its whole {float(lock['ttl']):g}s lease) and {taker} now holds that path; "
            "do not edit it until you lock it again (mesh lock PATH)"
        )
        try:
            messages.send(mesh, lock["holder"], body, sender=taker, priority="urgent")
        except MeshError as exc:
            mesh.warnings.append(f"could not tell {lock['holder']} its lock lapsed: {exc}")


def _denied(
    paths: list[str], mode: str, conflicts: list[dict[str, Any]], wait: float | None
) -> NegativeOutcome:
    now = clock.now()
    conflicts = sorted(conflicts, key=lambda lock: (lock["path"], lock["holder"]))
    held = "; ".join(_describe(lock, now) for lock in conflicts)
    asked = ", ".join(lockpaths.shown({"path": path}) for path in paths)
    found = [view(lock) for lock in conflicts]
    if wait:
        return OrdinaryOutcome(  # a wait that ran out is an ordinary state
            f"gave up after {wait:g}s waiting for a {mode} lock on {asked}: {held}; "
            "wait longer, or ask the holder to run `mesh unlock`",
            code="lock-wait-timeout",
            conflicts=found,
        )
    return NegativeOutcome(
        f"{mode} lock on {asked} denied: {held}; retry with --wait SECONDS, "
        "or ask the holder to run `mesh unlock`",
        code="lock-conflict",
        conflicts=found,
    )


# ---- renew, release ----------------------------------------------------------------------


def renew(
    mesh: Mesh, paths: Sequence[str], holder: str, ttl: float | None = None
) -> list[dict[str, Any]]:
    """Extend `holder`'s live locks on `paths`; returns those renewed.

    A lock that is gone (force-unlocked, cleared) or already expired is not brought back: in
    the meantime another agent may have been granted a conflicting lock.
    """
    check_options(ttl=ttl)
    check_agent_name(holder)
    return _renew(mesh, [target.key for target in resolve_all(paths)], holder, ttl)


def renew_all(mesh: Mesh, holder: str) -> list[dict[str, Any]]:
    """Extend every live lock `holder` has, each by its own lease; returns those renewed (a
    command waiting as `holder` keeps its locks: `keepalive`)."""
    check_agent_name(holder)
    return _renew(mesh, None, holder, None)


def _renew(
    mesh: Mesh, paths: Sequence[str] | None, holder: str, ttl: float | None
) -> list[dict[str, Any]]:
    """`renew` on already resolved paths (a lease must not re-resolve a replaced symlink);
    `paths` None: every lock of `holder`."""

    judge = _judge_holders(mesh)  # before the exclusion: inside, it only compares

    def decide(records: Locks) -> LockChanges[Locks]:
        now = judge.now = clock.now()
        table, reset = _prepared(records, now, save=not mesh.backend.read_only)
        mine = {lock["path"]: lock for lock in table if lock["holder"] == holder}
        renewed = []
        for path in mine if paths is None else paths:
            lock = mine.get(path)
            if lock is None or judge.expired(lock):
                continue
            # A record written by hand or by an older version may hold a longer ttl.
            lease = ttl if ttl is not None else min(float(lock["ttl"]), MAX_TTL_S)
            renewed.append({**_stored(lock), "expires_at": clock.iso(now + lease), "ttl": lease})
        return LockChanges(renewed, put=[*reset, *renewed])

    return [view(record) for record in mesh.backend.locks.transact(decide)]


def release(
    mesh: Mesh, paths: Sequence[str], holder: str, *, force: bool = False
) -> list[dict[str, Any]]:
    """Release locks on exactly these paths: all or none.

    Only `holder`'s own locks, unless `force`, which also takes other agents' locks and tells
    each registered holder so. A path locked only by others: NegativeOutcome (exit 1); a path
    with no live lock: NotFound (exit 3).
    """
    check_agent_name(holder)
    resolved = _release_targets(mesh, paths)

    # Before the exclusion (inside, it only compares): only other holders of these paths are
    # ever judged, so releasing one's own locks probes no process (no psutil on this path).
    others = (
        set()
        if force
        else {
            lock["holder"]
            for lock in mesh.backend.locks.all()
            if lock.get("path") in resolved and lock.get("holder") != holder
        }
    )
    judge = _Judge(mesh, clock.now()).prime(others)

    def decide(records: Locks) -> LockChanges[Locks]:
        now = judge.now = clock.now()
        table, reset = _prepared(records, now, save=not mesh.backend.read_only)
        removed: Locks = []
        for path in resolved:
            named = lockpaths.shown({"path": path})
            here = [lock for lock in table if lock["path"] == path]
            mine = [lock for lock in here if lock["holder"] == holder]
            others = [lock for lock in here if lock["holder"] != holder]
            if force:
                removed += mine + others
            elif mine:
                removed += mine
            elif any(not judge.stale(lock) for lock in others):
                held = "; ".join(_describe(judge.effective(lock), judge.now) for lock in others)
                raise NegativeOutcome(
                    f"{named} is not locked by {holder}: {held}; only the holder may unlock it "
                    "(or take it with --force, which tells the holder)",
                    code="lock-not-yours",
                    conflicts=[view(judge.effective(lock)) for lock in others],
                )
            else:
                raise NotFound(
                    f"{named} is not locked; see `mesh locks` for what is", code="lock-not-found"
                )
        return LockChanges(removed, put=reset, remove=removed)

    removed = mesh.backend.locks.transact(decide)
    taken = [lock for lock in removed if lock["holder"] != holder]
    if removed:
        mesh.append_audit_event(
            "unlock",
            holder,
            paths=[lock["path"] for lock in removed],
            forced_from=sorted({lock["holder"] for lock in taken}),
        )
    _tell_holders(mesh, holder, taken)
    return [view(lock) for lock in removed]


def _tell_holders(mesh: Mesh, actor: str, taken: list[dict[str, Any]]) -> None:
    """Message each registered holder whose lock was taken; a failure is only a warning."""
    by_holder: dict[str, list[str]] = {}
    for lock in taken:
        by_holder.setdefault(lock["holder"], []).append(f"{lockpaths.shown(lock)} ({lock['mode']})")
    for holder, what in by_holder.items():
        if not mesh.is_registered(holder):
            continue
        from drasill_cli import messages

        body = (
            f"{actor} force-unlocked your lock(s) on {', '.join(what)}; "
            "lock again (mesh lock PATH) before you edit those files"
        )
        try:
            messages.send(mesh, holder, body, sender=actor)
        except MeshError as exc:
            mesh.warnings.append(f"could not tell {holder} about the forced unlock: {exc}")


# ---- listing and cleanup -----------------------------------------------------------------


def list_locks(mesh: Mesh) -> list[dict[str, Any]]:
    """Every lock, sorted by path then holder, with `expires_at` when it lapses if its holder
    stays silent, and `stale`: true when it no longer binds anyone (lease ran out or holder
    dead) and only awaits prune."""
    now = clock.now()
    judge = _Judge(mesh, now)
    table, _reset = _prepared(mesh.backend.locks.all(), now, save=False)  # a look changes nothing
    table.sort(key=lambda lock: (lock["path"], lock["holder"]))
    return [{**view(judge.effective(lock)), "stale": judge.stale(lock)} for lock in table]


def is_stale(mesh: Mesh, lock: dict[str, Any]) -> bool:
    """Whether a lock object no longer binds: its lease ran out or its holder is dead."""
    judge = _Judge(mesh, clock.now())
    record = {**lock, "_expires": clock.parse_iso(lock["expires_at"])}
    return judge.expired(record) or judge.holder_dead(lock["holder"])


def clear_stale(mesh: Mesh, *, dry_run: bool = False) -> list[dict[str, Any]]:
    """Remove expired locks and locks of dead agents (prune); returns them. Idempotent."""

    judge = _judge_holders(mesh)  # before the exclusion: inside, it only compares

    def decide(records: Locks) -> LockChanges[Locks]:
        now = judge.now = clock.now()
        table, reset = _prepared(records, now, save=not mesh.backend.read_only)
        stale = [lock for lock in table if judge.stale(lock)]
        return LockChanges(stale, put=reset, remove=[] if dry_run else stale)

    stale = mesh.backend.locks.transact(decide)
    if not dry_run:
        _audit_cleared(mesh, stale, None, "stale")
    return [view(lock) for lock in stale]


def release_all(
    mesh: Mesh, holder: str, *, dry_run: bool = False, until: float | None = None
) -> list[dict[str, Any]]:
    """Remove every lock of `holder` (a dead or removed agent); returns them. Idempotent.

    With `until` (epoch seconds: when the agent was retired, decided under its exclusion), only
    the locks acquired by then: a process that registered the name since keeps what it took."""
    check_agent_name(holder)

    def decide(records: Locks) -> LockChanges[Locks]:
        table, reset = _prepared(records, clock.now(), save=not mesh.backend.read_only)
        theirs = [
            lock
            for lock in table
            if lock["holder"] == holder
            and (until is None or clock.parse_iso(lock["acquired_at"]) <= until)
        ]
        return LockChanges(theirs, put=reset, remove=[] if dry_run else theirs)

    theirs = mesh.backend.locks.transact(decide)
    if not dry_run:
        _audit_cleared(mesh, theirs, None, "holder-gone")
    return [view(lock) for lock in theirs]


# ---- locks taken by the agent CLIs' hooks (drasill_cli.hooks) -----------------------------

HOOK_KEY = "hook"  # a lock record's mark when a hook took it: {cli, session, task}


def release_hook_locks(
    mesh: Mesh, holder: str, keep: Callable[[dict[str, Any]], bool]
) -> list[dict[str, Any]]:
    """Remove `holder`'s locks that a hook took and for which `keep(mark)` is false; returns
    them (as stored). Idempotent; audited as one `unlock` by the hook. The table is read first
    without its exclusion: when the holder has no such lock (the common case, every task end),
    the exclusion is not taken."""
    check_agent_name(holder)

    def releasable(lock: dict[str, Any]) -> bool:
        mark = lock.get(HOOK_KEY)
        return lock.get("holder") == holder and isinstance(mark, dict) and not keep(mark)

    if not any(releasable(lock) for lock in mesh.backend.locks.all()):
        return []

    def decide(table: Locks) -> LockChanges[Locks]:
        gone = [lock for lock in table if releasable(lock)]
        return LockChanges(gone, remove=gone)

    gone: Locks = mesh.backend.locks.transact(decide)
    if gone:
        mesh.append_audit_event("unlock", holder, paths=[lock["path"] for lock in gone], by="hook")
    return gone


def release_task_hook_locks(mesh: Mesh, holder: str, task_id: str) -> list[dict[str, Any]]:
    """Release the locks hooks took for `holder` while it worked on `task_id` (the task has
    ended: done, failed, released or taken from it)."""
    return release_hook_locks(mesh, holder, lambda mark: mark.get("task") != task_id)


def _taken_unregistered(lock: dict[str, Any], registered: Collection[str], until: float) -> bool:
    """Whether a prepared lock is held by a name not in `registered` (looked up at `until` or
    later) and was taken or last renewed by `until` (its lease started then: a renewal keeps
    `acquired_at`), so not by a process that registered the name after that look."""
    started = lock["_expires"] - float(lock["ttl"])
    return lock["holder"] not in registered and started <= until


def unregistered_locks(
    mesh: Mesh, registered: Collection[str], *, until: float
) -> list[dict[str, Any]]:
    """The locks `release_unregistered` would remove, changing nothing (a dry run)."""
    table, _reset = _prepared(mesh.backend.locks.all(), clock.now(), save=False)
    table.sort(key=lambda lock: (lock["path"], lock["holder"]))
    return [view(lock) for lock in table if _taken_unregistered(lock, registered, until)]


def release_unregistered(
    mesh: Mesh, registered: Collection[str], *, until: float
) -> list[dict[str, Any]]:
    """Remove every lock held by a name that is not registered (prune); returns them.

    Only a registered name may lock, so such a lock binds no one: it was taken before locking
    needed a registered name, or escaped its holder's retirement. `registered` holds the names
    registered when the caller looked, and `until` is a moment before that look: a lock taken
    or renewed later is kept (a process that registered the name since holds it). The decision
    only compares, so racing callers remove each lock once. Idempotent. The table is read
    first without its exclusion: when no such lock is there (the common case), none is taken."""
    if not unregistered_locks(mesh, registered, until=until):
        return []

    def decide(records: Locks) -> LockChanges[Locks]:
        table, reset = _prepared(records, clock.now(), save=not mesh.backend.read_only)
        theirs = [lock for lock in table if _taken_unregistered(lock, registered, until)]
        return LockChanges(theirs, put=reset, remove=theirs)

    theirs = mesh.backend.locks.transact(decide)
    _audit_cleared(mesh, theirs, None, "holder-unregistered")
    return [view(lock) for lock in theirs]


# ---- holding while something runs ----------------------------------------------------------


class Lease:
    """Locks held by `hold`, renewed by a background thread every ttl/3 until released."""

    def __init__(self, mesh: Mesh, locks: list[dict[str, Any]], holder: str) -> None:
        self.mesh = mesh
        self.holder = holder
        self.paths = [lock["path"] for lock in locks]
        self.lost: list[str] = []
        self.errors: list[str] = []
        self._ttl = float(locks[0]["ttl"])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew_loop, name="lock-renewer", daemon=True)

    def _renew_loop(self) -> None:
        # Signals are the main thread's to handle: one delivered to this thread would not
        # wake a main thread blocked waiting for a command (`mesh lock ... -- COMMAND`).
        signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        from drasill_cli.waiting import enduring

        patience = self.mesh.config.store.reconnect_timeout
        while not self._stop.wait(self._ttl / 3):
            held = [p for p in self.paths if p not in self.lost]

            def renew(held: list[str] = held) -> list[dict[str, Any]]:
                self.mesh.touch_heartbeat(self.holder)  # a holder still renewing is alive
                return _renew(self.mesh, held, self.holder, None)

            try:  # across a restart of the store's server
                renewed = {lock["path"] for lock in enduring(renew, patience, self._stop)}
            except (MeshError, OSError) as exc:
                self.errors.append(f"renewing locks failed: {exc}")
                continue
            self.lost += [p for p in held if p not in renewed]

    def start(self) -> None:
        """Begin renewing."""
        self._thread.start()

    def stop(self) -> None:
        """Stop renewing (and wait for a renewal in progress to finish)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


@contextlib.contextmanager
def hold(
    mesh: Mesh,
    paths: Sequence[str],
    holder: str,
    *,
    mode: str = "write",
    ttl: float | None = None,
    wait: float | None = None,
) -> Iterator[Lease]:
    """Acquire, keep renewed while the block runs, then release what is still ours.

    A lock the holder held before keeps holding after, in the mode and with the lease it had:
    it is neither released nor weakened (a write held is kept as write even when `mode` asks
    less; a mode or lease changed for the block is changed back). If the process dies, renewals
    stop and the leases run out by themselves.
    """
    granted, before = _acquire(mesh, paths, holder, mode, ttl, wait, keep=True)
    lease = Lease(mesh, [view(lock) for lock in granted], holder)
    lease.start()
    try:
        yield lease
    finally:
        from drasill_cli.waiting import enduring

        lease.stop()
        kept = {lock["path"]: lock for lock in before}
        left = [p for p in lease.paths if p not in lease.lost]
        patience = mesh.config.store.reconnect_timeout  # across a restart of the store's server
        enduring(lambda: _release_own(mesh, [p for p in left if p not in kept], holder), patience)
        enduring(lambda: _restore(mesh, [kept[p] for p in left if p in kept], holder), patience)


def _restore(mesh: Mesh, previous: Locks, holder: str) -> None:
    """Give each of `holder`'s locks still live the mode and lease it had in `previous` (the
    lease counted from now). The block's mode gave at least as much, so no other lock conflicts.
    """
    if not previous:
        return
    wanted = {lock["path"]: (lock["mode"], float(lock["ttl"])) for lock in previous}
    # The holder looked up before the exclusion: the decision only compares.
    judge = _Judge(mesh, clock.now()).prime({holder})

    def decide(records: Locks) -> LockChanges[Locks]:
        now = judge.now
        table, reset = _prepared(records, now)
        changed = []
        for lock in table:
            if lock["holder"] != holder or lock["path"] not in wanted or judge.expired(lock):
                continue
            mode, ttl = wanted[lock["path"]]
            if (lock["mode"], float(lock["ttl"])) != (mode, ttl):
                renewed = {"mode": mode, "ttl": ttl, "expires_at": clock.iso(now + ttl)}
                changed.append({**_stored(lock), **renewed})
        return LockChanges(changed, put=[*reset, *changed])

    for lock in mesh.backend.locks.transact(decide):
        mesh.append_audit_event(
            "lock", holder, paths=[lock["path"]], mode=lock["mode"], expires_at=lock["expires_at"]
        )


def _release_own(mesh: Mesh, paths: list[str], holder: str) -> None:
    """Drop whichever of `holder`'s locks on `paths` still exist (others may be gone)."""
    if not paths:
        return

    def decide(table: Locks) -> LockChanges[Locks]:
        gone = [lock for lock in table if lock["holder"] == holder and lock["path"] in paths]
        return LockChanges(gone, remove=gone)

    removed = {lock["path"] for lock in mesh.backend.locks.transact(decide)}
    gone = [p for p in paths if p in removed]
    if gone:
        mesh.append_audit_event("unlock", holder, paths=gone, forced_from=[])
