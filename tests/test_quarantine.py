"""Damage is set aside and never blocks the rest (issue 24, points 9 and 10).

A damaged file with a long name, a file its owner cannot read, a damaged message's
attachments, a send racing the removal of its recipient, and a consumed message whose reader
was killed before it showed it (`mesh inbox --last`).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import lifecycle, messages
from drasill_cli.agents import register
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner
from tests.harness import directory_of
from tests.other_user import dac_skip_reason, without_dac

pytestmark = pytest.mark.both_backends

NAME_MAX = 255
LONG = "x" * 226  # with the folder and the quarantine stamp, far over NAME_MAX


def _quarantined(cli: MeshRunner) -> dict[str, bytes]:
    folder = cli.mesh_dir / "quarantine"
    return {p.name: p.read_bytes() for p in folder.iterdir()} if folder.is_dir() else {}


def _no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stdout + done.stderr, done.stderr


# ---- 9: a long name, an unreadable file ---------------------------------------------------------


@pytest.mark.directory_only("plants files with long names")
def test_a_damaged_file_with_a_long_name_is_quarantined_and_blocks_nothing(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.json("register", "bob")
    sent = cli.json("send", "bob", "hello", "--as", "alice")
    target = tmp_path / "notes.txt"
    target.write_text("x")
    planted = {
        cli.mesh_dir / "inbox" / "bob" / "new" / f"0-{LONG}.json": b"garbage 1",
        cli.mesh_dir / "locks" / f"{LONG}.json": b"garbage 2",
        cli.mesh_dir / "inbox" / "bob" / "new" / os.fsdecode(b"1-" + b"\xe9" * 230 + b".json"): (
            b"garbage, under a name that is not UTF-8"
        ),
    }
    for path, data in planted.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for args, code in (
        (("inbox", "bob"), 0),
        (("locks",), 0),
        (("lock", str(target), "--as", "bob"), 0),
        (("agents", "--all"), 0),
        (("task", "list"), 0),
        (("prune",), 0),
        (("inbox", "bob"), 1),
    ):
        done = cli.run(*args, "--json")
        _no_traceback(done)
        assert done.returncode == code, (args, done.stdout, done.stderr)
        if args[0] == "inbox" and code == 0:
            assert json.loads(done.stdout)["id"] == sent["id"]
    kept = _quarantined(cli)
    assert sorted(kept.values()) == sorted(planted.values())  # each one kept, none lost
    assert all(len(os.fsencode(name)) <= NAME_MAX for name in kept)
    assert all(not path.exists() for path in planted)


@pytest.mark.directory_only("plants a file of mode 000")
@pytest.mark.skipif(dac_skip_reason() is not None, reason=str(dac_skip_reason()))
def test_a_message_file_its_owner_cannot_read_is_quarantined_and_the_next_is_shown(
    cli: MeshRunner,
) -> None:
    cli.json("register", "bob")
    first = cli.json("send", "bob", "first", "--as", "alice", "--priority", "urgent")
    second = cli.json("send", "bob", "second", "--as", "alice")
    unreadable = next((cli.mesh_dir / "inbox" / "bob" / "new").rglob(f"0-{first['id']}.json"))
    unreadable.chmod(0)
    fifo = cli.mesh_dir / "audit" / "events.jsonl"  # one it may not even open
    fifo.unlink()
    os.mkfifo(fifo, 0)
    done = subprocess.run(
        without_dac(cli.argv("inbox", "bob", "--json")),
        capture_output=True,
        text=True,
        env=cli.env,
        check=False,
        timeout=60,
    )
    _no_traceback(done)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["id"] == second["id"]
    assert "quarantined" in done.stderr and "permission" in done.stderr, done.stderr
    assert not unreadable.exists() and fifo.is_file()  # the log was begun anew
    kept = sorted(p.name for p in (cli.mesh_dir / "quarantine").iterdir())
    assert [name.partition("-audit__")[2] for name in kept if "audit__" in name] == [fifo.name]
    assert [name for name in kept if name.endswith(f"__{unreadable.name}")], kept


# ---- 10: attachments of a damaged message, a send racing a removal, `inbox --last` ----------


def _damage(cli: MeshRunner, msg_id: str) -> None:
    """Make every stored copy of `msg_id` unusable (not JSON / a record that is no message)."""
    if cli.kind == "directory":
        for path in cli.mesh_dir.rglob(f"*{msg_id}.json"):
            with open(path, "r+b") as handle:  # in place: the hard-linked copies are damaged too
                handle.write(b"}}}}")
        return
    import psycopg

    assert cli.url is not None
    with psycopg.connect(cli.url, autocommit=True) as conn:
        conn.execute("UPDATE mesh_messages SET body = '[1]'::jsonb WHERE id = %s", (msg_id,))
        conn.execute("UPDATE mesh_sent SET body = '[1]'::jsonb WHERE id = %s", (msg_id,))


def _age_attachments(cli: MeshRunner, msg_id: str) -> None:
    """Make the message's stored attachments look a day old (past the orphan sweep's age)."""
    if cli.kind == "directory":
        old = 978_307_200
        os.utime(cli.mesh_dir / "attachments" / msg_id, (old, old))
        return
    import psycopg

    assert cli.url is not None
    with psycopg.connect(cli.url, autocommit=True) as conn:
        conn.execute(
            "UPDATE mesh_attachments SET created = now() - interval '1 day' WHERE message_id = %s",
            (msg_id,),
        )


def _attachment_names(cli: MeshRunner, msg_id: str) -> list[str]:
    if cli.kind == "directory":
        folder = cli.mesh_dir / "attachments" / msg_id
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    import psycopg

    assert cli.url is not None
    with psycopg.connect(cli.url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT name FROM mesh_attachments WHERE message_id = %s ORDER BY name", (msg_id,)
        ).fetchall()
    return [str(row[0]) for row in rows]


def test_prune_keeps_the_attachments_of_a_quarantined_message(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.json("register", "bob")
    report = tmp_path / "report.txt"
    report.write_text("the figures")
    sent = cli.json("send", "bob", "see attached", "--as", "alice", "--attach", str(report))
    _damage(cli, sent["id"])
    done = cli.run("inbox", "bob", "--json")  # the damaged copy is quarantined, not shown
    assert done.returncode == 1, done.stdout
    assert "quarantined" in done.stderr
    cli.run("history", "alice", "--json")  # and so is the sender's copy
    _age_attachments(cli, sent["id"])
    pruned = cli.json("prune")
    assert sent["id"] not in json.dumps(pruned)
    assert _attachment_names(cli, sent["id"]) == ["report.txt"]


@pytest.mark.directory_only("the race is the directory mesh's (PostgreSQL locks the recipient)")
def test_a_send_that_lands_after_its_recipient_was_removed_is_archived(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = Mesh.open(tmp_path / "mesh", Config())
    pruner = Mesh.open(tmp_path / "mesh", Config())
    register(sender, "bob")
    publish = directory_of(sender).store.publish

    def removed_meanwhile(*args: Any, **kwargs: Any) -> None:
        lifecycle.retire_agent(pruner, "bob", event="agent-removed", actor=None)
        publish(*args, **kwargs)

    monkeypatch.setattr(directory_of(sender).store, "publish", removed_meanwhile)
    sent = messages.send(sender, "bob", "late mail", sender="alice")
    new = tmp_path / "mesh" / "inbox" / "bob" / "new"
    assert not list(new.rglob("*.json")) if new.exists() else True
    assert [m["id"] for m in messages.archived(pruner, "bob")] == [sent[0]["id"]]


@pytest.mark.directory_only("the race is the directory mesh's (PostgreSQL locks the recipient)")
def test_a_send_that_lands_while_a_prune_archives_is_archived_by_the_prune(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sender = Mesh.open(tmp_path / "mesh", Config())
    pruner = Mesh.open(tmp_path / "mesh", Config())
    register(sender, "bob")
    archive = pruner.backend.mailbox.archive
    sent: list[dict[str, Any]] = []

    def send_meanwhile(agent: str) -> list[str]:
        moved = archive(agent)
        if not sent:  # the removal's own pass: bob is still registered
            sent.extend(messages.send(sender, "bob", "late mail", sender="alice"))
        return moved

    monkeypatch.setattr(pruner.backend.mailbox, "archive", send_meanwhile)
    lifecycle.retire_agent(pruner, "bob", event="agent-removed", actor=None)
    new = tmp_path / "mesh" / "inbox" / "bob" / "new"
    assert not list(new.rglob("*.json")) if new.exists() else True
    assert [m["id"] for m in messages.archived(pruner, "bob")] == [sent[0]["id"]]


def _consume_unshown(cli: MeshRunner, name: str) -> str:
    """What a reader killed after taking a message and before printing it did: the id taken."""
    with cli.open() as mesh:
        taken = messages.consume(mesh, name)
    assert taken is not None
    return str(taken["id"])


def test_inbox_last_shows_the_last_consumed_message_again(cli: MeshRunner) -> None:
    cli.json("register", "bob")
    assert cli.run("inbox", "bob", "--last", "--json").stdout.strip() == "null"
    older = cli.json("send", "bob", "older, normal", "--as", "alice")
    newer = cli.json("send", "bob", "newer, urgent", "--as", "alice", "--priority", "urgent")
    assert _consume_unshown(cli, "bob") == newer["id"]
    assert cli.json("inbox", "bob", "--last")["id"] == newer["id"]
    assert _consume_unshown(cli, "bob") == older["id"]
    again = cli.json("inbox", "bob", "--last")  # the last consumed, not the newest sent
    assert again["id"] == older["id"] and again["body"] == "older, normal"
    assert cli.json("inbox", "bob", "--last")["id"] == older["id"]  # showing consumes nothing
    done = cli.run("inbox", "bob", "--last")
    assert done.returncode == 0 and "older, normal" in done.stdout
    empty = cli.run("inbox", "bob", "--json")
    assert empty.returncode == 1 and empty.stdout.strip() == "null"
    refused = cli.run("inbox", "bob", "--last", "--peek", "--json")
    assert refused.returncode == 2
    assert json.loads(refused.stdout)["error"]["code"] == "invalid-usage"


@pytest.mark.directory_only("plants a message record")
def test_a_message_without_its_optional_keys_is_shown_and_exported_with_them(
    cli: MeshRunner,
) -> None:
    """Found by the widened planting fuzzer: `export` crashed (KeyError) on a stored message
    without `attachments`, and `inbox` showed such a message without the contract's keys."""
    cli.json("register", "bob")
    sent = cli.json("send", "bob", "whole", "--as", "alice")
    path = next((cli.mesh_dir / "inbox" / "bob" / "new").rglob(f"1-{sent['id']}.json"))
    record = json.loads(path.read_bytes())
    for key in ("attachments", "reply_to", "thread", "wake"):
        del record[key]
    path.unlink()  # a new file: the sender's history keeps the whole record
    path.write_text(json.dumps(record))
    exported = cli.run("export")
    _no_traceback(exported)
    assert exported.returncode == 0, exported.stderr
    shown = cli.json("inbox", "bob")
    assert shown["attachments"] == [] and shown["reply_to"] is None
    assert shown["thread"] == sent["id"]


@pytest.mark.directory_only("appends a line to the audit log file")
def test_an_audit_line_whose_time_is_no_time_is_skipped(cli: MeshRunner) -> None:
    """Found by the widened planting fuzzer: `mesh status` crashed (ValueError) showing an
    event whose time was the string 'a\\nb'."""
    cli.json("register", "bob")
    with open(cli.mesh_dir / "audit" / "events.jsonl", "ab") as log:
        log.write(b'{"time": "a\\nb", "event": "register", "actor": "alice"}\n')
    for args in (("status",), ("status", "--json"), ("log",), ("log", "--json")):
        done = cli.run(*args)
        _no_traceback(done)
        assert done.returncode == 0, (args, done.stderr)
    events = [json.loads(line) for line in cli.run("log", "--json").stdout.splitlines()]
    assert [e["event"] for e in events] == ["register"]
    assert events[0]["actor"] == "bob"


@pytest.mark.directory_only("file events of a mesh folder")
def test_a_name_that_is_not_utf8_ends_a_wait_as_a_change_not_a_crash(tmp_path: Path) -> None:
    """Found by the widened planting fuzzer: `claim --next --wait` crashed in watchfiles
    (WatchfilesRustInternalError: unable to decode path) when such a name was planted."""
    from drasill_cli.backends.directory.events import FolderEvents

    with FolderEvents(tmp_path) as events:
        fd = os.open(os.fsencode(tmp_path) + b"/\xf8\x88\x80.json", os.O_CREAT | os.O_WRONLY)
        os.close(fd)
        seen = events.changes(5)
    assert not isinstance(seen, str), seen  # not TIMEOUT: it counts as a change
    assert {path for _change, path in seen} == {str(tmp_path)}
