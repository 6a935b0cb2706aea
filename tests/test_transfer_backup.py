"""`mesh export` as a backup and `mesh import` as its restore (issues 23 and 24), through the
real CLI: every kind of record, a 15 MiB attachment and damaged entries go across directory ->
directory, directory -> PostgreSQL and PostgreSQL -> directory; nothing readable is lost, what
is not readable is reported; a restore is idempotent by ids; a bad input is refused whole."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import agents, clock, locks, messages, tasks, transfer
from drasill_cli.config import Config
from drasill_cli.errors import InvalidInput
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner

BIG = bytes(range(256)) * (15 * 4096)  # 15 MiB: under the default 16 MiB attachment limit
NUL_BODY = "before \x00 after"


def _runner(tmp_path: Path, name: str, kind: str, request: pytest.FixtureRequest) -> MeshRunner:
    home = tmp_path / f"home-{name}"
    home.mkdir()
    url = request.getfixturevalue("pg_mesh_url") if kind == "postgres" else None
    return MeshRunner(tmp_path / name, home, url=url)


def _fill(source: MeshRunner, tmp_path: Path) -> dict[str, Any]:
    """Every kind of record: agents, read and unread mail (a body with NUL, a 15 MiB
    attachment and one named like a temp file), tasks with a dependency, a lock."""
    big, tmp_named = tmp_path / "big.bin", tmp_path / ".tmp-notes"
    big.write_bytes(BIG)
    tmp_named.write_bytes(b"notes")
    with source.open() as mesh:
        for name in ("alice", "bob"):
            agents.register(mesh, name)
        messages.send(mesh, "bob", "first", sender="alice")
        assert messages.consume(mesh, "bob") is not None  # read
        nul = messages.send(mesh, "bob", NUL_BODY, sender="alice")[0]
        attached = [str(big), str(tmp_named)]
        files = messages.send(mesh, "bob", "files", sender="alice", attachments=attached)[0]
        one = tasks.add_task(mesh, "one", actor="alice")
        tasks.add_task(mesh, "two", actor="alice", depends_on=[one["id"]])
        locks.acquire(mesh, [str(tmp_path / "src")], "alice")
    return {"nul": nul["id"], "files": files["id"]}


def _damage(source: MeshRunner, made: dict[str, Any]) -> int:
    """Damaged entries the export must skip and report; how many."""
    if source.kind == "directory":
        folder = source.mesh_dir / "attachments" / made["files"]
        os.mkfifo(folder / "a-fifo")
        (folder / "a-folder").mkdir()
        (folder / "a-link").symlink_to(folder / "big.bin")
        return 3
    import psycopg

    assert source.url is not None
    with psycopg.connect(source.url, autocommit=True) as conn:
        conn.execute("UPDATE mesh_agents SET record = record - 'host' WHERE name = 'alice'")
    return 1


@pytest.mark.parametrize(
    ("source_kind", "target_kind"),
    [("directory", "directory"), ("directory", "postgres"), ("postgres", "directory")],
)
def test_a_backup_round_trip_loses_nothing_readable_and_reports_the_rest(
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    source_kind: str,
    target_kind: str,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # PostgreSQL attachments
    source = _runner(tmp_path, "source", source_kind, request)
    target = _runner(tmp_path, "target", target_kind, request)
    made = _fill(source, tmp_path)
    damaged = _damage(source, made)

    done = source.run("export")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("warning: export skipped") == damaged, done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"mesh export: {len(done.stdout.splitlines())} items written; {damaged} damaged "
        f"entr{'y' if damaged == 1 else 'ies'} skipped (said above): everything else readable "
        "is in the export"
    )

    restored = target.run("import", "--json", input=done.stdout)
    assert restored.returncode == 0, restored.stderr[-2000:]
    assert json.loads(restored.stdout)["kinds"]["message"] == {"restored": 3, "present": 0}
    again = target.run("import", "--json", input=done.stdout)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["restored"] == 0

    with target.open() as mesh:
        unread = [messages.consume(mesh, "bob") for _ in range(3)]
        assert unread[2] is None  # the read one stays read, nothing came twice
        assert [m["id"] for m in unread if m] == [made["nul"], made["files"]]
        assert unread[0] is not None
        assert unread[0]["body"] == NUL_BODY
        assert unread[1] is not None
        files = {a["name"]: Path(a["path"]).read_bytes() for a in unread[1]["attachments"]}
        assert hashlib.sha256(files["big.bin"]).digest() == hashlib.sha256(BIG).digest()
        assert files[".tmp-notes"] == b"notes"
        assert [t.id for t in mesh.backend.board.all()] == ["t-0001", "t-0002"]
        assert [lock["holder"] for lock in mesh.backend.locks.all()] == ["alice"]


def _open(tmp_path: Path, kind: str, request: pytest.FixtureRequest, config: Config) -> Mesh:
    if kind == "postgres":
        return Mesh.open(config=config, mesh_url=request.getfixturevalue("pg_mesh_url"))
    return Mesh.open(tmp_path / "target", config)


@pytest.mark.parametrize("target_kind", ["directory", "postgres"])
def test_reimporting_after_history_expired_does_not_deliver_read_mail_again(
    tmp_path: Path, request: pytest.FixtureRequest, target_kind: str
) -> None:
    source = Mesh.open(tmp_path / "source", Config())
    for name in ("alice", "bob"):
        agents.register(source, name)
    sent = messages.send(source, "bob", "hello", sender="alice")[0]
    backup: list[str] = []
    transfer.export(source, backup.append)  # taken while the mail is unread
    given = "".join(backup).encode()
    # history expires within a millisecond
    config = dataclasses.replace(
        Config(), messages=dataclasses.replace(Config().messages, history_days=1e-8)
    )
    target = _open(tmp_path, target_kind, request, config)
    try:
        transfer.import_items(target, transfer.read_items(io.BytesIO(given), config))
        assert (messages.consume(target, "bob") or {}).get("id") == sent["id"]
        assert messages.expire_history(target, clock.now())  # prune: the read copy goes
        again = transfer.import_items(target, transfer.read_items(io.BytesIO(given), config))
        assert again["message"] == {"restored": 0, "present": 1}
        assert messages.consume(target, "bob") is None
    finally:
        target.backend.close()


NOW = clock.iso()
META = {"kind": "meta", "format": 1, "source": "directory"}
ALICE: dict[str, Any] = {
    "kind": "agent",
    "record": {"name": "alice", "host": "h", "registered_at": NOW},
    "last_seen": None,
}


def _task(task_id: str, *depends: str) -> dict[str, Any]:
    record = {"id": task_id, "title": "x", "state": "queued", "created_at": NOW}
    return {"kind": "task", "record": {**record, "updated_at": NOW, "depends_on": list(depends)}}


def _lock(holder: str) -> dict[str, Any]:
    record = {"path": "/srv/a.py", "mode": "write", "holder": holder, "ttl": 60.0}
    return {"kind": "lock", "record": {**record, "acquired_at": NOW, "expires_at": NOW}}


def _message(msg_id: str, priority: str) -> dict[str, Any]:
    head = {"id": msg_id, "from": "alice", "to": "bob", "body": "hi", "priority": priority}
    message = {**head, "created_at": NOW, "attachments": []}
    return {"kind": "message", "message": message, "state": "unread", "sent": False}


def _line(item: dict[str, Any]) -> bytes:
    return json.dumps(item).encode()


MSG_ID = clock.new_id("m")
# (the bad lines after the meta and alice lines, the line named, what is said)
BAD_INPUTS: dict[str, tuple[list[bytes], int, str]] = {
    "not utf-8": (
        [
            b'{"kind": "audit", "event": {"time": "%s", "event": "x", "note": "\xff"}, "nth": 1}'
            % NOW.encode()
        ],
        3,
        "not UTF-8",
    ),
    "deep json": ([b"[" * 30_000 + b"]" * 30_000], 3, "nests too deep"),
    "nan": ([b'{"kind": "wake", "agent": "alice", "record": {"x": NaN}}'], 3, "not JSON"),
    "huge counter": ([b'{"kind": "task-sequence", "last": 1' + b"0" * 30 + b"}"], 3, "`last`"),
    "huge task id": ([_line(_task("t-z" + "9" * 30))], 3, "task id"),
    "cycle": ([_line(_task("t-0001", "t-0002")), _line(_task("t-0002", "t-0001"))], 3, "cycle"),
    "reserved name": (
        [_line({**ALICE, "record": {**ALICE["record"], "name": "all"}})],
        3,
        "has a bad `record.name`: 'all' is not an agent name",
    ),
    "two write locks": ([_line(_lock("alice")), _line(_lock("bob"))], 4, "conflicts"),
    "huge last_seen": ([_line({**ALICE, "last_seen": 1e300})], 3, "`last_seen`"),
    "huge priority": (
        [_line({**_task("t-0001"), "record": {**_task("t-0001")["record"], "priority": 10**30}})],
        3,
        "priority",
    ),
    "audit time": (
        [b'{"kind": "audit", "event": {"time": "soon", "event": "x"}, "nth": 1}'],
        3,
        "no time",
    ),
    "bad wake record": (
        [_line({"kind": "wake", "agent": "alice", "record": {"attempts": "many"}})],
        3,
        "attempts",
    ),
    "one id twice": (
        [_line(_message(MSG_ID, "normal")), _line(_message(MSG_ID, "urgent"))],
        4,
        "repeats the message of line 3",
    ),
    "infinity": ([b'{"kind": "agent", "record": {}, "last_seen": Infinity}'], 3, "not JSON"),
    "1e400": ([b'{"kind": "agent", "record": {}, "last_seen": 1e400}'], 3, "infinity"),
    "deep within the parser": (
        [b'{"kind": "wake", "agent": "alice", "record": {"x": ' + b"[" * 100 + b"]" * 100 + b"}}"],
        3,
        "nests deeper",
    ),
    "huge number": (
        [
            b'{"kind": "agent", "record": {"name": "bob", "host": "h", "registered_at": "%s", '
            b'"ram_gb": 1%s}}' % (NOW.encode(), b"0" * 400)
        ],
        3,
        "has a bad `record.ram_gb`",
    ),
    "lone surrogate": (
        [b'{"kind": "wake", "agent": "alice", "record": {"note": "a\\ud800"}}'],
        3,
        "lone surrogate",
    ),
    "a bool for a number": (
        [_line({**_lock("alice"), "record": {**_lock("alice")["record"], "ttl": True}})],
        3,
        "has a bad `record.ttl`",
    ),
    "a text for a number": ([_line({"kind": "task-sequence", "last": "7"})], 3, "has a bad `last`"),
    "nul in a task": ([_line(_task("t-0001")).replace(b'"x"', b'"a\\u0000b"')], 3, "NUL"),
    "a line too long": (
        [_line({**ALICE, "record": {**ALICE["record"], "name": "bob", "note": "x" * 80_000}})],
        3,
        "is over 71680 bytes",
    ),
}


def _given(lines: list[bytes]) -> bytes:
    return b"\n".join([_line(META), _line(ALICE), *lines]) + b"\n"


SMALL = dataclasses.replace(
    Config(),
    messages=dataclasses.replace(Config().messages, max_body_bytes=1024, max_attachment_bytes=1024),
)


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_a_bad_input_is_refused_whole_naming_its_line(case: str) -> None:
    lines, number, says = BAD_INPUTS[case]
    with pytest.raises(InvalidInput) as refused:
        transfer.read_items(io.BytesIO(_given(lines)), SMALL)
    assert str(refused.value).startswith(f"line {number}: "), refused.value
    assert says in str(refused.value)
    assert "nothing was imported" in str(refused.value)


@pytest.mark.parametrize("case", ["not utf-8", "deep json", "one id twice", "huge number"])
def test_the_cli_exits_2_and_writes_nothing(cli: MeshRunner, case: str) -> None:
    lines, number, _says = BAD_INPUTS[case]
    done = subprocess.run(
        cli.argv("import"),
        input=_given(lines),
        capture_output=True,
        env=cli.env,
        check=False,
        timeout=60,
    )
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 2, (done.returncode, stderr[-2000:])
    assert stderr.startswith(f"error: line {number}: ")
    assert cli.is_empty()  # not even the good agent line before it


def test_a_task_text_with_nul_is_refused_on_every_backend(tmp_path: Path) -> None:
    """A task is jsonb on PostgreSQL, which cannot hold U+0000: both backends refuse it alike
    (a message body keeps any text on both)."""
    mesh = Mesh.open(tmp_path / "mesh")
    with pytest.raises(InvalidInput, match="NUL"):
        tasks.add_task(mesh, "title", body="a\x00b")
    assert not (tmp_path / "mesh" / "tasks").exists() or not any(
        (tmp_path / "mesh" / "tasks").iterdir()
    )
