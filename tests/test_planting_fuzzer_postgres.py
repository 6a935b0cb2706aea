"""The planting fuzzer's PostgreSQL mode (issue 23): damaged rows planted into a live database
mesh while real `mesh` commands run.

Any member of a mesh can write any row, so a row is input from another host. A run builds a live
mesh (agents, messages with attachments, a task, a claim, a lock), then goes round after round:
plant a few damaged rows as a member would (straight SQL), then run a random `mesh` command as
one of several agents (the directory fuzzer's `Commander`, reading ids from the tables), each a
real subprocess with a timeout.

What is planted (`PgPlanter`): attachment rows whose digest or name is path-like (the sentinel
folder outside the mesh, `../` climbs, absolute paths, `.`, upper-case or short hex), content
that no longer matches its digest, attachments of live messages turned into such rows; message
and history bodies of the wrong JSON shape (not objects, missing keys, another message's id,
path-like attachment names, nesting 3,000 deep); agents, tasks, locks, wake states, budgets,
watchers and audit rows with records of the wrong shape, path-like keys and times from the
future.

After every command: no traceback, no command past its timeout, an exit code within the
contract, valid JSON under `--json` (the checks of tests/planting_support.py), and the sentinel
folder (where the path-like rows point) unchanged. Every few rounds and at the end, nothing is
lost: the witness messages (sound mail with attachments, never taken by the commands) read back
whole through the API with their attachments' bytes, and every planted row is still in its
table or was set aside in `mesh_quarantine`, never silently deleted.

The short run (32 plantings) runs in CI; the long run (1,500 plantings, marked slow) by hand:
`.venv/bin/pytest -m slow tests/test_planting_fuzzer_postgres.py`. Knobs (environment):
`DRASILL_FUZZ_SEED`, `DRASILL_FUZZ_PLANTINGS`, `DRASILL_FUZZ_TIMEOUT` (seconds per command).
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from drasill_cli import agents, clock, locks, messages, tasks
from drasill_cli.config import Config
from tests.conftest import MeshRunner
from tests.planting_support import (
    AGENTS,
    Commander,
    Outcome,
    Workbench,
    build_sentinel,
    describe,
    env_int,
    problems,
    run_mesh,
    sentinel_diff,
    snapshot,
)

SHORT_PLANTINGS = 32
LONG_PLANTINGS = 1_500
PER_ROUND = 2
CHECK_EVERY = 6  # rounds between two "nothing lost" checks
KEEPER = "keeper"  # the witnesses' recipient: no command runs as it, so its mail stays unread
DEEP = 3_000


class _Deep:
    """JSON nested `DEEP` arrays deep (written as text: Python's json cannot encode it)."""


DEEP_JSON = _Deep()


def _text(value: Any) -> str:
    """`value` as JSON text, for a `%s::json` or `%s::jsonb` parameter."""
    if value is DEEP_JSON:
        return "[" * DEEP + "1" + "]" * DEEP
    return json.dumps(value)


@dataclass
class Planted:
    """One planted row: its table and a marker its key (or its quarantined copy) carries."""

    table: str
    marker: str
    what: str


@dataclass
class PgPlanter:
    rng: random.Random
    url: str
    sentinel: Path
    counter: int = 0
    planted: list[Planted] = field(default_factory=list)

    # ---- values ---------------------------------------------------------------------------

    def _marker(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def path_like_digest(self) -> str:
        real = hashlib.sha256(b"x").hexdigest()
        return self.rng.choice(
            [
                str(self.sentinel),
                str(self.sentinel / "sub"),
                str(self.sentinel / "tmp"),
                "../" * 12 + str(self.sentinel).lstrip("/"),
                real.upper(),
                real[:63],
                real + "/../../..",
                "",
                ".",
                "..",
            ]
        )

    def path_like_name(self) -> str:
        return self.rng.choice(
            [
                "../secret.txt",
                "../../" * 6 + str(self.sentinel / "secret.txt").lstrip("/"),
                str(self.sentinel / "secret.txt"),
                str(self.sentinel / "sub"),
                ".",
                "..",
                "",
                "a/b",
                "line\nbreak",
                "x" * 300,
            ]
        )

    def message_body(self, msg_id: str) -> Any:
        good: dict[str, Any] = {
            "id": msg_id,
            "from": "alice",
            "to": "bob",
            "body": "planted",
            "priority": "normal",
            "created_at": clock.iso(),
            "reply_to": None,
            "thread": msg_id,
            "attachments": [],
            "wake": True,
        }
        sha = hashlib.sha256(b"x").hexdigest()
        return self.rng.choice(
            [
                [],
                "a string",
                5,
                None,
                DEEP_JSON,
                {"id": msg_id},
                {**good, "id": clock.new_id("m")},
                {**good, "created_at": "yesterday"},
                {**good, "priority": {"nested": True}},
                {**good, "attachments": "notes.txt"},
                {
                    **good,
                    "attachments": [{"name": self.path_like_name(), "size": 1, "sha256": sha}],
                },
                {**good, "attachments": [{"name": "ok.txt", "size": 1, "sha256": sha}]},
                {**good, "attachments": [{"name": "ok.txt", "size": -1, "sha256": "zz"}]},
                {**good, "from": "../../etc", "to": str(self.sentinel)},
            ]
        )

    def record(self, key_name: str, key: str) -> Any:
        return self.rng.choice(
            [
                [],
                "text",
                7,
                None,
                DEEP_JSON,
                {key_name: key},
                {key_name: str(self.sentinel)},
                {key_name: key, "pid": "1", "host": "../..", "session": "../../x"},
                {key_name: key, "registered_at": "9999-12-31T23:59:59Z", "pids": [[-1, "x"]]},
                {
                    key_name: key,
                    "at": 1e308,
                    "over": {"ram": "lots"},
                    "paths": [str(self.sentinel)],
                },
            ]
        )

    # ---- plantings ------------------------------------------------------------------------

    def plant(self, conn: psycopg.Connection[Any]) -> str:
        kinds: dict[str, Callable[[psycopg.Connection[Any]], str]] = {
            "attachment-digest": self.attachment_digest,
            "attachment-name": self.attachment_name,
            "attachment-of-live-message": self.live_attachment,
            "attachment-tampered": self.tampered,
            "message": self.message,
            "message-with-bad-attachment-row": self.message_with_row,
            "sent": self.sent,
            "agent": self.agent,
            "task": self.task,
            "lock": self.lock,
            "wake": self.wake,
            "budget": self.budget,
            "watcher": self.watcher,
            "audit": self.audit,
        }
        kind = self.rng.choice(sorted(kinds))
        return f"{kind}: {kinds[kind](conn)}"

    def _attachment(
        self, conn: psycopg.Connection[Any], msg_id: str, name: str, digest: str, data: bytes
    ) -> None:
        conn.execute(
            "INSERT INTO mesh_attachments (message_id, name, size, sha256, data)"
            " VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (msg_id, name, len(data), digest, data),
        )
        self.planted.append(Planted("mesh_attachments", msg_id, f"{msg_id}/{name!r}"))

    def attachment_digest(self, conn: psycopg.Connection[Any]) -> str:
        msg_id, digest = clock.new_id("m"), self.path_like_digest()
        self._attachment(conn, msg_id, "secret.txt", digest, b"x")
        return f"orphan row, sha256 {digest!r}"

    def attachment_name(self, conn: psycopg.Connection[Any]) -> str:
        msg_id, name = clock.new_id("m"), self.path_like_name()
        self._attachment(conn, msg_id, name, hashlib.sha256(b"x").hexdigest(), b"x")
        return f"orphan row, name {name!r}"

    def _live(self, conn: psycopg.Connection[Any]) -> tuple[str, str] | None:
        """An attachment row of a message that is not a witness."""
        rows = conn.execute(
            "SELECT a.message_id, a.name FROM mesh_attachments a"
            " WHERE NOT EXISTS (SELECT 1 FROM mesh_messages m"
            "  WHERE m.id = a.message_id AND m.recipient = %s)"
            ' ORDER BY a.message_id COLLATE "C", a.name COLLATE "C"',
            (KEEPER,),
        ).fetchall()
        return self.rng.choice(rows) if rows else None

    def live_attachment(self, conn: psycopg.Connection[Any]) -> str:
        found = self._live(conn)
        if found is None:
            return self.attachment_digest(conn)
        digest = self.path_like_digest()
        conn.execute(
            "UPDATE mesh_attachments SET sha256 = %s WHERE message_id = %s AND name = %s",
            (digest, *found),
        )
        self.planted.append(Planted("mesh_attachments", found[0], f"live {found}"))
        return f"live row {found}, sha256 {digest!r}"

    def tampered(self, conn: psycopg.Connection[Any]) -> str:
        found = self._live(conn)
        if found is None:
            return self.attachment_name(conn)
        conn.execute(
            "UPDATE mesh_attachments SET data = 'tampered', size = 8"
            " WHERE message_id = %s AND name = %s",
            found,
        )
        self.planted.append(Planted("mesh_attachments", found[0], f"tampered {found}"))
        return f"live row {found} tampered"

    def message(self, conn: psycopg.Connection[Any], recipient: str | None = None) -> str:
        msg_id = clock.new_id("m")
        to = recipient or self.rng.choice([*AGENTS, "nobody"])
        body = self.message_body(msg_id)
        conn.execute(
            "INSERT INTO mesh_messages (id, recipient, rank, body) VALUES (%s, %s, %s, %s::json)",
            (msg_id, to, self.rng.choice([0, 1]), _text(body)),
        )
        self.planted.append(Planted("mesh_messages", msg_id, f"to {to}"))
        return f"message {msg_id} to {to}: {_text(body)[:80]}"

    def message_with_row(self, conn: psycopg.Connection[Any]) -> str:
        """A sound-looking message whose attachment row is damaged (path-like digest, or
        content that does not match)."""
        msg_id = clock.new_id("m")
        to = self.rng.choice(AGENTS)
        sha = hashlib.sha256(b"payload").hexdigest()
        base = self.message_body(msg_id)
        body: dict[str, Any] = dict(base) if isinstance(base, dict) else {}
        body.update(id=msg_id, to=to)
        body["attachments"] = [{"name": "ok.txt", "size": 7, "sha256": sha}]
        digest, data = self.rng.choice([(self.path_like_digest(), b"payload"), (sha, b"tamper!")])
        self._attachment(conn, msg_id, "ok.txt", digest, data)
        conn.execute(
            "INSERT INTO mesh_messages (id, recipient, rank, body) VALUES (%s, %s, 1, %s::json)",
            (msg_id, to, _text(body)),
        )
        self.planted.append(Planted("mesh_messages", msg_id, f"to {to}"))
        return f"message {msg_id} to {to} with attachment row sha256 {digest!r}"

    def sent(self, conn: psycopg.Connection[Any]) -> str:
        msg_id = clock.new_id("m")
        sender = self.rng.choice(AGENTS)
        body = self.message_body(msg_id)
        conn.execute(
            "INSERT INTO mesh_sent (sender, id, body) VALUES (%s, %s, %s::json)",
            (sender, msg_id, _text(body)),
        )
        self.planted.append(Planted("mesh_sent", msg_id, f"from {sender}"))
        return f"sent {msg_id} by {sender}: {_text(body)[:80]}"

    def agent(self, conn: psycopg.Connection[Any]) -> str:
        name = self._marker("fz")
        record = self.record("name", name)
        beat = self.rng.choice(["now()", "'9999-12-31'", "'2001-01-01'", "NULL"])
        conn.execute(
            "INSERT INTO mesh_agents (name, host, record, heartbeat)"  # noqa: S608 -- constants of this test
            f" VALUES (%s, %s, %s::jsonb, {beat})",
            (name, self.rng.choice(["vm", "../..", str(self.sentinel)]), _text(record)),
        )
        self.planted.append(Planted("mesh_agents", name, _text(record)[:60]))
        return f"agent {name}: {_text(record)[:80]}, heartbeat {beat}"

    def task(self, conn: psycopg.Connection[Any]) -> str:
        task_id = self._marker("t-9")
        record = self.record("id", task_id)
        conn.execute(  # numbered past every stored task (as `task add` numbers)
            "INSERT INTO mesh_tasks (id, number, state, priority, claimed_by, record)"
            " VALUES (%s, (SELECT coalesce(max(number), 0) + 1000 FROM mesh_tasks),"
            " %s, 0, %s, %s::jsonb)",
            (
                task_id,
                self.rng.choice(["queued", "claimed", "done", "../x"]),
                self.rng.choice([None, *AGENTS]),
                _text(record),
            ),
        )
        self.planted.append(Planted("mesh_tasks", task_id, _text(record)[:60]))
        return f"task {task_id}: {_text(record)[:80]}"

    def lock(self, conn: psycopg.Connection[Any]) -> str:
        key = self.rng.choice([str(self.sentinel / "secret.txt"), "git:../../x", ""]) + (
            self._marker("#")
        )
        record = self.record("path", key)
        conn.execute(
            "INSERT INTO mesh_locks (key, holder, mode, record) VALUES (%s, %s, %s, %s::jsonb)",
            (key, self.rng.choice(AGENTS), self.rng.choice(["write", "read", "??"]), _text(record)),
        )
        self.planted.append(Planted("mesh_locks", key, _text(record)[:60]))
        return f"lock {key!r}: {_text(record)[:80]}"

    def wake(self, conn: psycopg.Connection[Any]) -> str:
        agent = self.rng.choice([*AGENTS, self._marker("fzw")])
        record = self.record("agent", agent)
        conn.execute(
            "INSERT INTO mesh_wake (agent, host, record) VALUES (%s, 'vm', %s::jsonb)"
            " ON CONFLICT (agent) DO UPDATE SET record = excluded.record",
            (agent, _text(record)),
        )
        return f"wake {agent}: {_text(record)[:80]}"

    def budget(self, conn: psycopg.Connection[Any]) -> str:
        agent = self._marker("fzb")
        record = self.record("agent", agent)
        state = self.rng.choice(["paused", "warned"])
        conn.execute(
            "INSERT INTO mesh_budgets (agent, state, host, record)"
            " VALUES (%s, %s, 'vm', %s::jsonb)",
            (agent, state, _text(record)),
        )
        return f"budget {state} {agent}: {_text(record)[:80]}"

    def watcher(self, conn: psycopg.Connection[Any]) -> str:
        host = self.rng.choice([self._marker("host"), str(self.sentinel)])
        record = self.record("pid", host)
        conn.execute(
            "INSERT INTO mesh_watchers (host, record) VALUES (%s, %s::jsonb)"
            " ON CONFLICT DO NOTHING",
            (host, _text(record)),
        )
        return f"watcher {host!r}: {_text(record)[:80]}"

    def audit(self, conn: psycopg.Connection[Any]) -> str:
        details = self.record("path", str(self.sentinel))
        event = self.rng.choice(["send", "../x", "", "register"])
        at = self.rng.choice(["now()", "'9999-12-31'", "'1970-01-01'"])
        conn.execute(
            "INSERT INTO mesh_audit (event, actor, host, details, at)"  # noqa: S608 -- constants of this test
            f" VALUES (%s, %s, %s, %s::jsonb, {at})",
            (
                event,
                self.rng.choice([None, "alice", "../.."]),
                self.rng.choice([None, "vm"]),
                _text(details),
            ),
        )
        return f"audit {event!r}: {_text(details)[:80]}"


@dataclass
class PgCommander(Commander):
    """The directory fuzzer's commands, with task and message ids read from the tables."""

    url: str = ""

    def ids(self, folder: str, pattern: str) -> list[str]:
        table = {"tasks": "mesh_tasks", "sent": "mesh_sent"}.get(folder)
        if table is None:
            return []
        with psycopg.connect(self.url, autocommit=True) as conn:
            rows = conn.execute(f"SELECT DISTINCT id FROM {table}").fetchall()  # noqa: S608 -- one of two constant names
        return sorted(str(r[0]) for r in rows if re.fullmatch(pattern, f"{r[0]}.json"))

    def command(self) -> list[str | bytes]:
        """Half the time one of the commands that read every kind of row (mail, history,
        agents, the board, prune and watch passes, doctor, export), else any command."""
        rng = self.rng
        if rng.random() < 0.5:
            return super().command()
        me = rng.choice(AGENTS)
        argv: list[str | bytes] = rng.choice(
            [
                ["inbox", "--as", me],
                ["inbox", me, "--list"],
                ["inbox", me, "--peek"],
                ["history", me],
                ["prune"],
                ["prune", "--dry-run"],
                ["watch", "--once"],
                ["status"],
                ["agents", "--all"],
                ["task", "list"],
                ["claim", "--next", "--as", me],
                ["locks"],
                ["log"],
                ["doctor"],
                ["export"],
            ]
        )
        if argv[0] == "export":  # JSON lines, not one value: the plain form only
            return argv
        return [*argv, "--json"] if rng.random() < 0.5 else argv


@dataclass
class Witness:
    msg_id: str
    files: dict[str, bytes]


@dataclass
class PgFuzzRun:
    runner: MeshRunner
    work: Path
    seed: int
    plantings: int
    timeout: float
    failures: list[str] = field(default_factory=list)
    max_failures: int = 5
    witnesses: list[Witness] = field(default_factory=list)
    log: list[str] = field(default_factory=list)  # each round: plantings, command, exit code

    def setup(self, bench: Workbench) -> None:
        """The live mesh, built through the API (the CLI costs a process per step)."""
        with self.runner.open(Config()) as mesh:
            for name in (*AGENTS, KEEPER):
                agents.register(mesh, name)
            for number in range(2):
                data = f"witness {number}\n".encode() * (number + 1)
                path = self.work / f"witness-{number}.txt"
                path.write_bytes(data)
                (sent,) = messages.send(
                    mesh, KEEPER, f"witness {number}", sender="alice", attachments=[str(path)]
                )
                self.witnesses.append(Witness(sent["id"], {path.name: data}))
            messages.send(
                mesh,
                "bob",
                "for bob",
                sender="carol",
                attachments=[str(bench.project / "notes.txt")],
            )
            messages.send(mesh, "alice", "for alice", sender="bob")
            tasks.add_task(mesh, "fix the parser", actor="alice")
            tasks.add_task(mesh, "write docs", actor="bob")
            tasks.claim_next(mesh, "carol")
            locks.acquire(mesh, [str(bench.project / "notes.txt")], "alice")

    def lost(self, planter: PgPlanter) -> list[str]:
        """What was lost: a witness that no longer reads back whole, a planted row gone from
        its table without a copy in mesh_quarantine."""
        found: list[str] = []
        with self.runner.open(Config()) as mesh:
            for witness in self.witnesses:
                message = mesh.backend.mailbox.find(witness.msg_id)
                if message is None:
                    found.append(f"witness {witness.msg_id} lost")
                    continue
                found.extend(
                    f"witness {witness.msg_id}: attachment {item['name']} changed"
                    for item in message["attachments"]
                    if Path(item["path"]).read_bytes() != witness.files.get(item["name"])
                )
        with psycopg.connect(self.runner.url or "", autocommit=True) as conn:
            for row in planter.planted:
                column = {"mesh_attachments": "message_id", "mesh_locks": "key"}.get(
                    row.table,
                    "id" if row.table in ("mesh_messages", "mesh_sent", "mesh_tasks") else "name",
                )
                there = conn.execute(
                    f"SELECT EXISTS (SELECT 1 FROM {row.table} WHERE {column} = %s)"  # noqa: S608 -- constant names of this test
                    " OR EXISTS (SELECT 1 FROM mesh_quarantine WHERE strpos(key, %s) > 0"
                    " OR strpos(raw::text, %s) > 0)",
                    (row.marker, row.marker, row.marker),
                ).fetchone()
                if not (there and there[0]):
                    found.append(f"planted {row.table} row {row.marker} ({row.what}) vanished")
        return found

    def run(self) -> list[str]:
        rng = random.Random(self.seed)
        sentinel = self.work / "sentinel"
        build_sentinel(sentinel)
        bench = Workbench.build(self.work / "project")
        self.setup(bench)
        assert self.runner.url is not None
        planter = PgPlanter(rng, self.runner.url, sentinel)
        commander = PgCommander(rng, self.work / "no-mesh-dir", bench, url=self.runner.url)
        before = snapshot(sentinel)
        rounds = 0
        while rounds * PER_ROUND < self.plantings and len(self.failures) < self.max_failures:
            rounds += 1
            with psycopg.connect(self.runner.url, autocommit=True) as conn:
                planted = [planter.plant(conn) for _ in range(PER_ROUND)]
            argv = commander.command()
            outcome: Outcome = run_mesh(argv, self.runner.env, bench.project, self.timeout)
            self.log.append(f"{planted} | mesh {describe(argv)} -> {outcome.rc}")
            found = problems(outcome, self.timeout)
            found += sentinel_diff(before, snapshot(sentinel))
            if rounds % CHECK_EVERY == 0:
                found += self.lost(planter)
            if found:
                self.failures.append(self.describe(rounds, planted, argv, outcome, found))
                build_sentinel(sentinel)
                before = snapshot(sentinel)
        if not self.failures:
            lost = self.lost(planter)
            if lost:
                self.failures.append(f"at the end: {'; '.join(lost)}")
        return self.failures

    def describe(
        self,
        rounds: int,
        planted: list[str],
        argv: list[str | bytes],
        outcome: Outcome,
        found: list[str],
    ) -> str:
        tail = (outcome.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
        return (
            f"seed {self.seed}, round {rounds}: planted {planted}; ran `mesh {describe(argv)}`"
            f" (exit {outcome.rc}): {'; '.join(found)}; stderr ends {tail}"
        )


def fuzz(runner: MeshRunner, tmp_path: Path, default_seed: int, plantings: int) -> PgFuzzRun:
    work = tmp_path / "fuzz"
    work.mkdir()
    return PgFuzzRun(
        runner=runner,
        work=work,
        seed=env_int("DRASILL_FUZZ_SEED", default_seed),
        plantings=env_int("DRASILL_FUZZ_PLANTINGS", plantings),
        timeout=env_int("DRASILL_FUZZ_TIMEOUT", 30),
    )


@pytest.fixture
def pg_runner(tmp_path: Path, pg_mesh_url: str, monkeypatch: pytest.MonkeyPatch) -> MeshRunner:
    home = tmp_path / "home"
    home.mkdir()
    runner = MeshRunner(tmp_path / "unused", home, url=pg_mesh_url)
    # The in-process checks read attachments through the same private cache as the commands.
    monkeypatch.setenv("XDG_CACHE_HOME", runner.env["XDG_CACHE_HOME"])
    return runner


def report(run: PgFuzzRun) -> str:
    head = f"{len(run.failures)} failure(s); rerun with DRASILL_FUZZ_SEED={run.seed}"
    return "\n".join([head, *run.failures])


def test_planted_rows_never_break_a_command_leak_outside_or_lose_anything(
    pg_runner: MeshRunner, tmp_path: Path
) -> None:
    run = fuzz(pg_runner, tmp_path, default_seed=2301, plantings=SHORT_PLANTINGS)
    if run.run():
        pytest.fail(report(run), pytrace=False)
    assert len(run.log) * PER_ROUND >= run.plantings


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
def test_planting_fuzzer_postgres_long_run(pg_runner: MeshRunner, tmp_path: Path) -> None:
    run = fuzz(pg_runner, tmp_path, default_seed=20261206, plantings=LONG_PLANTINGS)
    run.max_failures = 20
    if run.run():
        pytest.fail(report(run), pytrace=False)
