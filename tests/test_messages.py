"""Messages (issue 3): send, inbox, broadcast, wait, attachments, history, archive.

The CLI tests run on a directory mesh and on a PostgreSQL mesh."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from drasill_cli import agents, messages
from drasill_cli.backends.directory import DirectoryBackend
from drasill_cli.config import Config, MessagesConfig
from drasill_cli.errors import InvalidInput, NotFound
from drasill_cli.mesh import Mesh
from drasill_cli.storage.changes import inbox
from tests.conftest import MeshRunner, tree
from tests.harness import directory_of
from tests.wake_support import wait_until

pytestmark = pytest.mark.both_backends

MESSAGE_KEYS = {
    "id",
    "from",
    "to",
    "body",
    "priority",
    "created_at",
    "reply_to",
    "thread",
    "attachments",
    "wake",
}


def register(mesh: Mesh, *names: str) -> None:
    """Agent records are all `send` checks (a stat), so tests write them directly (a database
    mesh registers them)."""
    for name in names:
        if isinstance(mesh.backend, DirectoryBackend):
            directory_of(mesh).store.write(f"agents/{name}.json", {"name": name})
        else:
            agents.register(mesh, name)


def stored_body(cli: MeshRunner, sender: str, message_id: str) -> str:
    """The body of a sent message as the mesh keeps it: its file in the sender's history, or
    the message read back from a database mesh."""
    if cli.kind == "directory":
        path = cli.mesh_dir / "sent" / sender / f"{message_id}.json"
        body: str = json.loads(path.read_bytes())["body"]
        return body
    with cli.open() as mesh:
        found = messages.find(mesh, message_id)
    assert found is not None
    return str(found["body"])


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


# ---- the CLI, end to end -------------------------------------------------------------------


def test_send_and_consume_round_trip_with_contract_keys(cli: MeshRunner) -> None:
    cli.json("register", "alice")
    cli.json("register", "bob")
    sent = cli.json("send", "bob", "hello bob", "--as", "alice")
    assert sent.keys() >= MESSAGE_KEYS
    assert sent["from"] == "alice"
    assert sent["to"] == "bob"
    assert sent["priority"] == "normal"
    assert sent["reply_to"] is None
    assert sent["thread"] == sent["id"]
    assert sent["attachments"] == []
    assert sent["wake"] is True
    assert cli.json("agents")[1]["unread"] == 1
    got = cli.json("inbox", "bob")
    assert got == sent
    done = cli.run("inbox", "bob", "--json")
    assert done.returncode == 1
    assert done.stdout == "null\n"


def test_sender_defaults_to_human_and_identity_comes_from_env(cli: MeshRunner) -> None:
    cli.json("register", "bob")
    assert cli.json("send", "bob", "from a person")["from"] == "human"
    got = cli.json("inbox", env={"DRASILL_AGENT": "bob"})
    assert got["body"] == "from a person"


def test_urgent_first_then_oldest_first(cli: MeshRunner, mesh: Mesh) -> None:
    register(mesh, "bob")
    ids = []
    for body, priority in [("n1", "normal"), ("u1", "urgent"), ("n2", "normal"), ("u2", "urgent")]:
        ids.append(messages.send(mesh, "bob", body, sender="x", priority=priority)[0]["id"])
    assert ids == sorted(ids)  # ids sort in creation order, even within one clock tick
    listed = cli.json("inbox", "bob", "--list")
    assert [m["body"] for m in listed] == ["u1", "u2", "n1", "n2"]
    assert cli.json("inbox", "bob", "--peek")["body"] == "u1"
    order = [cli.json("inbox", "bob")["body"] for _ in range(4)]
    assert order == ["u1", "u2", "n1", "n2"]


def test_peek_and_list_consume_nothing(cli: MeshRunner, mesh: Mesh) -> None:
    register(mesh, "bob")
    messages.send(mesh, "bob", "keep me", sender="x")
    audit = "audit/events.jsonl" if cli.kind == "directory" else "mesh_audit"
    before = cli.snapshot()
    assert cli.json("inbox", "bob", "--peek")["body"] == "keep me"
    assert len(cli.json("inbox", "bob", "--list")) == 1
    after = cli.snapshot()
    before.pop(audit)
    after.pop(audit)
    assert after == before
    assert messages.unread_count(mesh, "bob") == 1


@pytest.mark.parametrize("flags", [[], ["--peek"], ["--list"]])
def test_empty_inbox_exits_1_with_null(cli: MeshRunner, flags: list[str]) -> None:
    cli.json("register", "bob")
    done = cli.run("inbox", "bob", *flags, "--json")
    assert (done.returncode, done.stdout) == (1, "null\n")
    human = cli.run("inbox", "bob", *flags)
    assert human.returncode == 1
    assert human.stdout == ""
    assert human.stderr.startswith("no unread messages for bob")  # an ordinary state: no `error:`


def test_human_inbox_shows_header_then_body(cli: MeshRunner) -> None:
    cli.json("register", "bob")
    sent = cli.json("send", "bob", "line one\nline two", "--as", "alice", "--priority", "urgent")
    done = cli.run("inbox", "bob")
    assert done.returncode == 0, done.stderr
    header, *body = done.stdout.splitlines()
    assert header.split(" | ") == ["from alice", sent["created_at"], "urgent", sent["id"]]
    assert body == ["line one", "line two"]
    out = cli.run("send", "bob", "again")
    assert out.stdout.startswith("sent m-") and out.stdout.rstrip().endswith("to bob (normal)")


def test_body_from_stdin_dash_and_absent(cli: MeshRunner) -> None:
    cli.json("register", "bob")
    assert cli.json("send", "bob", "-", input="piped\n")["body"] == "piped\n"
    assert cli.json("send", "bob", input="no arg")["body"] == "no arg"


def test_unicode_multiline_and_60kb_bodies_round_trip_byte_for_byte(cli: MeshRunner) -> None:
    cli.json("register", "bob")
    bodies = [
        "héllo wörld ✓ — 日本語 🚀\n",
        "line 1\r\nline 2\n\n\tindented\n",
        ("0123456789abcdef" * 3840)[:61440],
        "ünï" * 20000,
    ]
    for body in bodies:
        raw = body.encode("utf-8")
        done = subprocess.run(
            cli.argv("send", "bob", "--json"),
            input=raw,
            env=cli.env,
            capture_output=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        got = subprocess.run(
            cli.argv("inbox", "bob", "--json"), env=cli.env, capture_output=True, check=True
        )
        assert json.loads(got.stdout)["body"].encode("utf-8") == raw
        human = subprocess.run(
            cli.argv("inbox", "bob"), env=cli.env, capture_output=True, check=False
        )
        assert human.returncode == 1  # consumed exactly once
    as_arg = cli.json("send", "bob", bodies[0])
    assert stored_body(cli, "human", as_arg["id"]) == bodies[0]


def test_control_characters_are_stored_as_given(cli: MeshRunner, mesh: Mesh) -> None:
    cli.json("register", "bob")
    body = "\x1b[31mred\x1b[0m \x07bell \x00nul \r\x08 \x9b end"
    sent = cli.json("send", "bob", "-", input=body)
    assert sent["body"] == body
    assert stored_body(cli, "human", sent["id"]) == body
    assert messages.consume(mesh, "bob")["body"] == body  # type: ignore[index]
    messages.send(mesh, "bob", body, sender="x")
    piped = subprocess.run(cli.argv("inbox", "bob"), env=cli.env, capture_output=True, check=False)
    # Human output spells control characters out, piped too (a pager or `cat` shows it on a
    # terminal all the same); --json is the exact form.
    assert b"\\x1b[31mred\\x1b[0m \\x07bell \\x00nul \\r\\x08 \\x9b end" in piped.stdout


def test_broadcast_reaches_every_agent_but_the_sender_once(cli: MeshRunner) -> None:
    names = ["alice", "bob", "carol", "dave"]
    for name in names:
        cli.json("register", name)
    sent = cli.json("send", "all", "standup in 5", "--as", "alice")
    assert sorted(m["to"] for m in sent) == ["bob", "carol", "dave"]
    assert len({m["id"] for m in sent}) == 3
    for name in ["bob", "carol", "dave"]:
        got = cli.json("inbox", name)
        assert got["body"] == "standup in 5"
        assert cli.run("inbox", name, "--json").stdout == "null\n"
    assert cli.run("inbox", "alice", "--json").stdout == "null\n"


def test_broadcast_with_no_one_else_sends_nothing_and_exits_1(cli: MeshRunner) -> None:
    cli.json("register", "alice")
    done = cli.run("send", "all", "hello?", "--as", "alice", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "no-recipients"
    human = cli.run("send", "all", "hello?", "--as", "alice")
    assert human.returncode == 1
    assert "nothing was sent: no agent other than alice is registered" in human.stderr


def test_reply_carries_the_thread(cli: MeshRunner) -> None:
    cli.json("register", "alice")
    cli.json("register", "bob")
    first = cli.json("send", "bob", "question", "--as", "alice")
    got = cli.json("inbox", "bob")
    reply = cli.json("send", "alice", "answer", "--as", "bob", "--reply-to", got["id"])
    assert reply["reply_to"] == first["id"]
    assert reply["thread"] == first["id"]
    again = cli.json("send", "bob", "thanks", "--as", "alice", "--reply-to", reply["id"])
    assert again["thread"] == first["id"]
    unread_reply = cli.json("send", "bob", "and also", "--as", "alice", "--reply-to", again["id"])
    assert unread_reply["thread"] == first["id"]  # found while still unread too


def test_no_wake_is_recorded_on_the_message(cli: MeshRunner, mesh: Mesh) -> None:
    cli.json("register", "bob")
    assert cli.json("send", "bob", "quiet", "--no-wake")["wake"] is False
    assert messages.peek(mesh, "bob")["wake"] is False  # type: ignore[index]


def test_history_newest_first_sent_and_consumed(cli: MeshRunner) -> None:
    cli.json("register", "alice")
    cli.json("register", "bob")
    a1 = cli.json("send", "bob", "one", "--as", "alice")
    b1 = cli.json("send", "alice", "two", "--as", "bob")
    a2 = cli.json("send", "bob", "three", "--as", "alice")
    cli.json("inbox", "alice")
    hist = cli.json("history", "alice")
    assert [m["id"] for m in hist] == [a2["id"], b1["id"], a1["id"]]
    assert [m["id"] for m in cli.json("history", "alice", "--limit", "2")] == [a2["id"], b1["id"]]
    assert [m["id"] for m in cli.json("history", "bob")] == [b1["id"]]  # bob read nothing yet
    human = cli.run("history", "alice")
    assert human.returncode == 0
    assert "alice -> bob" in human.stdout.splitlines()[0]
    assert cli.json("history", "nobody-yet") == []
    bad = cli.run("history", "alice", "--limit", "0", "--json")
    assert bad.returncode == 2


def test_history_lists_a_message_to_self_once(mesh: Mesh) -> None:
    register(mesh, "solo")
    sent = messages.send(mesh, "solo", "note to self", sender="solo")[0]
    messages.consume(mesh, "solo")
    assert [m["id"] for m in messages.history(mesh, "solo", 10)] == [sent["id"]]


# ---- attachments ---------------------------------------------------------------------------


def test_attachment_is_copied_with_size_and_sha256(cli: MeshRunner, tmp_path: Path) -> None:
    cli.json("register", "bob")
    source = tmp_path / "report.bin"
    data = os.urandom(5000)
    source.write_bytes(data)
    sent = cli.json("send", "bob", "see attached", "--attach", str(source))
    (attachment,) = sent["attachments"]
    assert attachment["name"] == "report.bin"
    assert attachment["size"] == 5000
    assert attachment["sha256"] == hashlib.sha256(data).hexdigest()
    copy = Path(attachment["path"])
    assert copy.read_bytes() == data
    # In the mesh, or in the reader's private cache when the mesh is a database.
    keeper = cli.mesh_dir if cli.kind == "directory" else Path(cli.env["XDG_CACHE_HOME"])
    assert copy.is_relative_to(keeper)
    source.write_bytes(b"changed later")
    assert copy.read_bytes() == data
    assert cli.json("inbox", "bob")["attachments"] == sent["attachments"]


def test_broadcast_attachments_are_per_message_and_archive_removes_them(
    mesh: Mesh, tmp_path: Path
) -> None:
    register(mesh, "alice", "bob", "carol")
    source = tmp_path / "notes.txt"
    source.write_text("shared notes")
    sent = messages.send(mesh, "all", "notes", sender="alice", attachments=[str(source)])
    paths = [Path(m["attachments"][0]["path"]) for m in sent]
    assert len(set(paths)) == 2
    assert all(p.read_text() == "shared notes" for p in paths)
    messages.send(mesh, "bob", "second", sender="alice")
    bob_path = next(p for p, m in zip(paths, sent, strict=True) if m["to"] == "bob")
    carol_path = next(p for p, m in zip(paths, sent, strict=True) if m["to"] == "carol")

    assert messages.archive_inbox(mesh, "bob") == 2
    assert not bob_path.exists()
    assert not bob_path.parent.exists()
    assert carol_path.read_text() == "shared notes"  # the other recipient keeps its copy
    archived = sorted((directory_of(mesh).root / "archive" / "bob").iterdir())
    assert [json.loads(p.read_text())["body"] for p in archived] == ["notes", "second"]
    assert messages.unread_count(mesh, "bob") == 0
    assert files_under(directory_of(mesh).root / "inbox" / "bob" / "new") == []
    assert messages.find(mesh, sent[0]["id"]) is not None  # still in sent/ history
    assert messages.archive_inbox(mesh, "bob") == 0


def test_archive_keeps_consumed_mail_in_place(mesh: Mesh) -> None:
    register(mesh, "bob")
    messages.send(mesh, "bob", "read", sender="x")
    messages.consume(mesh, "bob")
    messages.send(mesh, "bob", "unread", sender="x")
    assert messages.archive_inbox(mesh, "bob") == 1
    assert [m["body"] for m in messages.history(mesh, "bob", 5)] == ["read"]


# ---- refused input: clear error, contract exit code, nothing written ----------------------


def _refused(cli: MeshRunner, code: int, *args: str, input: str | None = None) -> dict[str, str]:
    before = cli.snapshot()
    done = cli.run(*args, "--json", input=input)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert cli.snapshot() == before
    error: dict[str, str] = json.loads(done.stdout)["error"]
    human = cli.run(*args, input=input)
    assert human.returncode == code
    assert human.stdout == ""
    assert human.stderr.startswith("error: ")
    assert len(human.stderr.strip().splitlines()) == 1
    assert cli.snapshot() == before
    return error


def test_refused_sends_write_nothing(cli: MeshRunner, tmp_path: Path) -> None:
    cli.config("[messages]\nmax_body_bytes = 100\nmax_attachment_bytes = 10\n")
    cli.json("register", "bob")
    small = tmp_path / "small.txt"
    small.write_text("tiny")
    big = tmp_path / "big.txt"
    big.write_text("x" * 11)
    unreadable = tmp_path / "secret.txt"
    unreadable.write_text("no")
    unreadable.chmod(0)
    cases: list[tuple[int, str, list[str], str | None]] = [
        (3, "unknown-agent", ["send", "nobody", "hi"], None),
        (2, "invalid-name", ["send", "Bad Name", "hi"], None),
        (2, "invalid-name", ["send", "bob", "hi", "--as", "not valid"], None),
        (2, "reserved-name", ["send", "bob", "hi", "--as", "all"], None),
        (2, "empty-body", ["send", "bob", ""], None),
        (2, "empty-body", ["send", "bob", "  \n"], None),
        (2, "empty-body", ["send", "bob"], ""),
        (2, "body-too-large", ["send", "bob", "y" * 101], None),
        (2, "body-too-large", ["send", "bob", "-"], "é" * 51),
        (2, "invalid-priority", ["send", "bob", "hi", "--priority", "high"], None),
        (2, "unreadable-attachment", ["send", "bob", "hi", "--attach", "/no/such/file"], None),
        (2, "unreadable-attachment", ["send", "bob", "hi", "--attach", str(tmp_path)], None),
        (2, "attachment-too-large", ["send", "bob", "hi", "--attach", str(big)], None),
        (2, "invalid-message-id", ["send", "bob", "hi", "--reply-to", "nope"], None),
        (3, "unknown-message", ["send", "bob", "hi", "--reply-to", "m-0000000000000-0000"], None),
        (
            2,
            "invalid-attachment",
            ["send", "bob", "hi", "--attach", str(small), "--attach", str(small)],
            None,
        ),
    ]
    if os.geteuid() != 0:  # root reads any file
        cases.append(
            (2, "unreadable-attachment", ["send", "bob", "hi", "--attach", str(unreadable)], None)
        )
    for code, error_code, args, stdin in cases:
        error = _refused(cli, code, *args, input=stdin)
        assert error["code"] == error_code, (args, error)
        assert error["message"]
    assert _refused(cli, 3, "inbox", "ghost")["code"] == "unknown-agent"
    assert _refused(cli, 2, "inbox", "bob", "--peek", "--list")["code"] == "invalid-usage"
    assert _refused(cli, 2, "inbox", "bob", "--wait", "-1")["code"] == "invalid-wait"
    assert _refused(cli, 2, "inbox", "Ghost!")["code"] == "invalid-name"
    assert _refused(cli, 2, "inbox")["code"] == "missing-identity"


def test_too_many_attachments_refused(mesh: Mesh, tmp_path: Path) -> None:
    limited = Mesh.open(directory_of(mesh).root, Config(messages=MessagesConfig(max_attachments=2)))
    register(limited, "bob")
    paths = []
    for index in range(3):
        path = tmp_path / f"f{index}"
        path.write_text("x")
        paths.append(str(path))
    before = tree(directory_of(mesh).root)
    with pytest.raises(InvalidInput, match="max_attachments"):
        messages.send(limited, "bob", "hi", sender="x", attachments=paths)
    assert tree(directory_of(mesh).root) == before


def test_refused_send_to_a_fresh_mesh_creates_nothing(cli: MeshRunner) -> None:
    done = cli.run("send", "bob", "hi", "--json")
    assert done.returncode == 3
    assert cli.is_empty()
    assert cli.run("inbox", "bob", "--json").returncode == 3
    assert cli.is_empty()


def test_invalid_utf8_on_stdin_is_refused(cli: MeshRunner) -> None:
    cli.json("register", "bob")
    before = cli.snapshot()
    done = subprocess.run(
        cli.argv("send", "bob", "--json"),
        input=b"\xff\xfe bad",
        env=cli.env,
        capture_output=True,
        check=False,
    )
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["code"] == "invalid-body"
    assert cli.snapshot() == before


# ---- robustness ----------------------------------------------------------------------------


def test_damaged_and_temp_files_are_skipped(mesh: Mesh) -> None:
    register(mesh, "bob")
    good = messages.send(mesh, "bob", "good", sender="x")[0]
    new = directory_of(mesh).root / "inbox" / "bob" / "new"
    leaf = next(p.parent for p in new.rglob("*.json"))
    (leaf / "0-m-0000000000000-0000.json").write_text('{"id": "m-00')  # half a message
    (directory_of(mesh).root / "staging" / ".tmp-1-000000ab-1-m-x.json").write_text('{"id"')
    (leaf / ".tmp-2-cd-zz.json").write_text("{")
    assert messages.unread_count(mesh, "bob") == 2
    assert [m["id"] for m in messages.list_unread(mesh, "bob")] == [good["id"]]
    assert mesh.warnings and "quarantined" in mesh.warnings[0]
    assert messages.consume(mesh, "bob")["id"] == good["id"]  # type: ignore[index]
    assert messages.consume(mesh, "bob") is None
    assert list((directory_of(mesh).root / "quarantine").iterdir())


def test_a_planted_symlink_is_never_followed(mesh: Mesh, tmp_path: Path) -> None:
    register(mesh, "bob")
    messages.send(mesh, "bob", "real", sender="x")
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps({"id": "m-evil", "body": "evil"}))
    leaf = next(
        p.parent for p in (directory_of(mesh).root / "inbox" / "bob" / "new").rglob("*.json")
    )
    (leaf / "0-m-0000000000000-0001.json").symlink_to(outside)
    assert [m["body"] for m in messages.list_unread(mesh, "bob")] == ["real"]
    assert outside.exists()


def test_consumers_remove_empty_shards(mesh: Mesh) -> None:
    register(mesh, "bob")
    for index in range(5):
        messages.send(mesh, "bob", f"m{index}", sender="x")
    while messages.consume(mesh, "bob") is not None:
        pass
    assert list((directory_of(mesh).root / "inbox" / "bob" / "new").iterdir()) == []
    messages.send(mesh, "bob", "after", sender="x")  # shard folders are recreated
    assert messages.consume(mesh, "bob")["body"] == "after"  # type: ignore[index]


def test_send_survives_a_consumer_removing_a_fresh_shard(
    mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(mesh, "bob")
    messages.send(mesh, "bob", "warm up", sender="x")
    messages.consume(mesh, "bob")
    assert messages.consume(mesh, "bob") is None  # walks the empty shards and removes them
    new = str(directory_of(mesh).root / "inbox" / "bob" / "new")
    real_mkdir = os.mkdir
    raced: list[str] = []

    def racing_mkdir(path: str, mode: int = 0o777, *, dir_fd: int | None = None) -> None:
        # The store makes each folder in its parent's descriptor: name the parent by it.
        parent = os.readlink(f"/proc/self/fd/{dir_fd}") if dir_fd is not None else ""
        full = os.path.join(parent, path)
        rel = os.path.relpath(full, new)
        if not raced and not rel.startswith("..") and rel.count(os.sep) == 1:
            os.rmdir(os.path.dirname(full))  # a consumer tidies the still-empty parent away
            raced.append(rel)
        real_mkdir(path, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "mkdir", racing_mkdir)
    sent = messages.send(mesh, "bob", "after the race", sender="x")[0]
    assert raced
    assert messages.consume(mesh, "bob")["id"] == sent["id"]  # type: ignore[index]


def test_api_errors(mesh: Mesh) -> None:
    register(mesh, "bob")
    with pytest.raises(NotFound):
        messages.send(mesh, "carol", "hi", sender="bob")
    with pytest.raises(NotFound):
        messages.consume(mesh, "carol")
    with pytest.raises(InvalidInput):
        messages.wait_for(mesh, "bob", -1)
    assert messages.wait_for(mesh, "bob", 0) is False
    assert messages.unread_count(mesh, "carol") == 0


def test_audit_records_send_and_consume(mesh: Mesh) -> None:
    register(mesh, "bob")
    sent = messages.send(mesh, "bob", "audited", sender="alice")[0]
    messages.consume(mesh, "bob")
    lines = (directory_of(mesh).root / "audit" / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines]
    assert [(e["event"], e["actor"], e["id"]) for e in events] == [
        ("send", "alice", sent["id"]),
        ("consume", "bob", sent["id"]),
    ]
    assert "audited" not in lines[0]  # bodies stay out of the log


# ---- waiting -------------------------------------------------------------------------------


def _watching(cli: MeshRunner, pid: int, agent: str) -> bool:
    """Whether `inbox AGENT --wait` in process `pid` is waiting: it has an inotify watch in place
    (Linux), or, on a database mesh, a session LISTENs on the inbox's channel."""
    if cli.kind == "postgres":
        return cli.listening(inbox(agent))
    fdinfo = Path(f"/proc/{pid}/fdinfo")
    try:
        names = os.listdir(fdinfo)
    except OSError:
        return False
    for name in names:
        with contextlib.suppress(OSError):
            if "inotify wd:" in (fdinfo / name).read_text():
                return True
    return False


def test_inbox_wait_returns_soon_after_a_send_from_another_process(
    cli: MeshRunner, mesh: Mesh
) -> None:
    cli.json("register", "bob")
    waiter = subprocess.Popen(
        cli.argv("inbox", "bob", "--wait", "30", "--json"),
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        if Path("/proc/self/fdinfo").is_dir():
            # Its file watch is in place before its first look at the inbox: from here on a
            # send cannot be missed, and only the wake-up is timed, not the start-up.
            assert wait_until(
                lambda: _watching(cli, waiter.pid, "bob") or waiter.poll() is not None, 30
            )
        else:
            time.sleep(1.5)  # no /proc to look into: give it time to start and block
        assert waiter.poll() is None, waiter.communicate()
        # Sent from this process through the API: no `mesh send` start-up is in the timing.
        started = time.monotonic()
        [sent] = messages.send(mesh, "bob", "wake up", sender="alice")
        assert waiter.stdout is not None
        line = waiter.stdout.readline()  # it prints (and flushes, at exit) once it has the mail
        latency = time.monotonic() - started
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == 0, err
    assert json.loads(line + out)["id"] == sent["id"]
    # Issue 3 asks for 0.5 s; the bound is generous for a loaded machine, yet below the 5 s
    # re-check of `wait_for`, so only the file-system event can meet it.
    assert latency < 3.0, f"inbox --wait returned {latency:.2f}s after the send began"


def test_inbox_wait_times_out_with_exit_1(cli: MeshRunner) -> None:
    cli.json("register", "bob")
    started = time.monotonic()
    done = cli.run("inbox", "bob", "--wait", "0.5", "--json")
    elapsed = time.monotonic() - started
    assert (done.returncode, done.stdout) == (1, "null\n")
    assert 0.5 <= elapsed < 5


def test_wait_for_sees_mail_already_there_and_new_mail(mesh: Mesh) -> None:
    register(mesh, "bob")
    messages.send(mesh, "bob", "waiting already", sender="x")
    started = time.monotonic()
    assert messages.wait_for(mesh, "bob", 5) is True
    assert time.monotonic() - started < 1
    messages.consume(mesh, "bob")
    started = time.monotonic()
    assert messages.wait_for(mesh, "bob", 0.3) is False
    assert time.monotonic() - started >= 0.3


def _all_paths(root: Path) -> list[str]:
    """Every file and folder under `root` (tree() sees files only; an empty folder counts)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def test_long_attachment_name_is_refused_before_anything_is_written(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.json("register", "bob")
    small = tmp_path / "small.txt"
    small.write_text("fine")
    for name in ("z" * 250, "é" * 101):  # 250 bytes; 101 characters but 202 bytes in UTF-8
        source = tmp_path / name
        source.write_text("x")
        directory = cli.kind == "directory"
        before = _all_paths(cli.mesh_dir) if directory else []
        error = _refused(
            cli, 2, "send", "bob", "hi", "--attach", str(small), "--attach", str(source)
        )
        assert error["code"] == "invalid-attachment"
        assert "200 bytes" in error["message"] and "rename the file" in error["message"]
        if directory:  # not even an empty folder (_refused compared the files and rows)
            assert _all_paths(cli.mesh_dir) == before
            assert not (cli.mesh_dir / "attachments").exists()
    longest = tmp_path / ("y" * 200)
    longest.write_text("ok")
    sent = cli.json("send", "bob", "hi", "--attach", str(longest))
    assert sent["attachments"][0]["name"] == "y" * 200
    assert Path(sent["attachments"][0]["path"]).read_text() == "ok"


def test_failed_attachment_storage_leaves_no_folder(
    mesh: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(mesh, "bob")
    one, two = tmp_path / "one", tmp_path / "two"
    one.write_text("1")
    two.write_text("2")
    real = directory_of(mesh).store.write_bytes

    def second_fails(rel: str, data: bytes) -> None:
        if rel.endswith("/two"):
            raise OSError(28, "No space left on device")
        real(rel, data)

    monkeypatch.setattr(directory_of(mesh).store, "write_bytes", second_fails)
    with pytest.raises(OSError):
        messages.send(mesh, "bob", "hi", sender="x", attachments=[str(one), str(two)])
    assert list((directory_of(mesh).root / "attachments").iterdir()) == []
    assert messages.list_unread(mesh, "bob") == []
