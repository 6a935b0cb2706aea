"""Receipts and bounces: `mesh history --sent` shows what became of each message sent; an agent
marked dead with unread mail bounces one notice to each sender (issue 25, point 6)."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from drasill_cli import clock
from tests.conftest import MeshRunner

pytestmark = pytest.mark.both_backends


def test_history_sent_shows_each_message_unread_read_with_its_time_or_archived(
    cli: MeshRunner,
) -> None:
    for name in ("alice", "bob", "carol"):
        cli.json("register", name)
    to_bob = cli.json("send", "bob", "read me", "--as", "alice")
    kept = cli.json("send", "bob", "still waiting", "--as", "alice")
    to_carol = cli.json("send", "carol", "you will leave", "--as", "alice")
    before = time.time()
    cli.json("inbox", "--as", "bob")  # takes the first one (oldest first)
    after = time.time()
    cli.json("unregister", "carol", "--as", "carol")  # its unread mail is archived

    receipts = cli.json("history", "--sent", "--as", "alice")
    states = {r["id"]: (r["state"], r["read_at"]) for r in receipts}
    assert [r["id"] for r in receipts] == [to_carol["id"], kept["id"], to_bob["id"]]  # newest first
    assert states[kept["id"]] == ("unread", None)
    assert states[to_carol["id"]] == ("archived", None)
    state, read_at = states[to_bob["id"]]
    assert state == "read" and read_at is not None
    assert before - 1 <= clock.parse_iso(read_at) <= after + 1
    assert all(r["from"] == "alice" for r in receipts)

    plain = cli.run("history", "--sent", "--as", "alice")
    assert plain.returncode == 0
    lines = {line.split()[2]: line.split()[3:] for line in plain.stdout.splitlines()}
    assert lines[to_bob["id"]][:2] == ["read", read_at]  # one message a line: grep finds it
    assert "unread" in {words[0] for words in lines.values()}
    assert "archived" in {words[0] for words in lines.values()}
    assert cli.json("history", "--sent", "--as", "alice", "--limit", "1")[0]["id"] == to_carol["id"]
    assert cli.json("history", "--sent", "--as", "bob") == []
    refused = cli.run("history", "--sent", "--archived", "--as", "alice")
    assert refused.returncode == 2, refused.stderr


def _bounces(cli: MeshRunner, name: str) -> list[dict[str, object]]:
    done = cli.run("inbox", name, "--list", "--json")
    found = json.loads(done.stdout) or []
    return [m for m in found if m["from"] == "mesh"]


def test_an_agent_marked_dead_with_unread_mail_bounces_once_to_each_sender_despite_racing_prunes(
    cli: MeshRunner,
) -> None:
    cli.config("[lifecycle]\nidle_after = 0.5\ndead_after = 1\n")
    for name in ("alice", "bob", "carol"):
        cli.json("register", name, "--pid", str(os.getpid()))
    cli.json("register", "dora")  # no pid: dead once silent for dead_after
    first = cli.json("send", "dora", "please review the parser", "--as", "alice")
    second = cli.json("send", "dora", "and the lexer", "--as", "alice")
    from_bob = cli.json("send", "dora", "lunch?", "--as", "bob")
    cli.json("send", "dora", "from a person", "--as", "human")  # no mailbox to bounce to
    time.sleep(1.5)
    prunes = [
        subprocess.Popen(
            cli.argv("prune", "--json"),
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    for prune in prunes:
        out, err = prune.communicate(timeout=60)
        assert prune.returncode == 0, (out, err)
    cli.json("prune")  # and once more, after

    [to_alice] = _bounces(cli, "alice")
    assert to_alice["priority"] == "urgent"
    body = str(to_alice["body"])
    assert "dora was marked dead with 2 message(s) from you unread" in body
    assert first["id"] in body and second["id"] in body and "please review the parser" in body
    [to_bob] = _bounces(cli, "bob")
    assert from_bob["id"] in str(to_bob["body"]) and first["id"] not in str(to_bob["body"])
    assert _bounces(cli, "carol") == []
    # The mail itself stays where it was: unread in dora's inbox.
    assert len(json.loads(cli.run("inbox", "dora", "--list", "--json").stdout)) == 4


def test_an_agent_that_dies_with_nothing_unread_bounces_nothing(cli: MeshRunner) -> None:
    cli.config("[lifecycle]\nidle_after = 0.5\ndead_after = 1\n")
    cli.json("register", "alice", "--pid", str(os.getpid()))
    cli.json("register", "dora")
    cli.json("send", "dora", "read in time", "--as", "alice")
    cli.json("inbox", "--as", "dora")
    time.sleep(1.5)
    cli.json("prune")
    assert [a["name"] for a in cli.json("agents", "--all") if a["state"] == "dead"] == ["dora"]
    assert _bounces(cli, "alice") == []
