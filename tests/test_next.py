"""`mesh next`: mail first, then a review waiting on the agent, then a task claimed; `--wait`
wakes on any of them (issue 25, point 4)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import messages, tasks
from drasill_cli.mesh import Mesh
from drasill_cli.storage.changes import TASKS, inbox
from tests.conftest import MeshRunner
from tests.wake_support import wait_until

pytestmark = pytest.mark.both_backends


def _next(cli: MeshRunner, name: str) -> Any:
    return cli.json("next", "--as", name)


def test_mail_comes_first_urgent_first_then_a_review_then_a_task_claimed(cli: MeshRunner) -> None:
    for name in ("alice", "bob"):
        cli.json("register", name)
    cli.json("task", "add", "write the parser", "--as", "human")
    normal = cli.json("send", "alice", "when you can", "--as", "bob")
    urgent = cli.json("send", "alice", "now", "--as", "bob", "--priority", "urgent")
    # bob did a task that alice created and must review.
    cli.json("task", "add", "fix the lexer", "--review", "--priority", "5", "--as", "alice")
    cli.json("claim", "--next", "--as", "bob")
    cli.json("task", "done", "t-0002", "--result", "lexer fixed", "--as", "bob")

    first = _next(cli, "alice")
    assert (first["kind"], first["message"]["id"], first["unread"]) == ("message", urgent["id"], 2)
    second = _next(cli, "alice")
    assert (second["kind"], second["message"]["id"]) == ("message", normal["id"])
    third = _next(cli, "alice")  # the review request bob's `done` sent
    assert third["kind"] == "message" and "review requested" in third["message"]["body"]
    assert third["unread"] == 0
    review = _next(cli, "alice")
    assert (review["kind"], review["review"]["id"]) == ("review", "t-0002")
    assert _next(cli, "alice")["kind"] == "review"  # it stays next until it is decided
    cli.json("task", "approve", "t-0002", "--as", "alice")
    task = _next(cli, "alice")
    assert (task["kind"], task["task"]["id"], task["task"]["claimed_by"]) == (
        "task",
        "t-0001",
        "alice",
    )


def test_a_review_waits_on_its_reviewers_only_never_on_its_author(cli: MeshRunner) -> None:
    for name in ("alice", "bob", "carol"):
        cli.json("register", name)
    # Created and done by bob: every other live agent may review it.
    cli.json("task", "add", "own work", "--review", "--as", "bob")
    cli.json("claim", "--next", "--as", "bob")
    cli.json("task", "done", "t-0001", "--as", "bob")
    for name in ("alice", "carol"):
        while (found := _next(cli, name))["kind"] == "message":
            pass
        assert (found["kind"], found["review"]["id"]) == ("review", "t-0001")
    done = cli.run("next", "--as", "bob", "--json")
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert json.loads(done.stdout)["error"]["code"] == "nothing-next"


def test_nothing_to_do_is_an_ordinary_exit_1_saying_what_to_do_next(cli: MeshRunner) -> None:
    cli.json("register", "alice")
    cli.json("task", "add", "first", "--as", "human")
    cli.json("task", "add", "second", "--depends", "t-0001", "--as", "human")
    cli.json("claim", "t-0001", "--as", "alice")
    done = cli.run("next", "--as", "alice")
    assert done.returncode == 1 and done.stdout == ""
    assert not done.stderr.startswith("error"), done.stderr
    assert "nothing to do for alice" in done.stderr
    assert "1 queued task(s) wait for dependencies" in done.stderr
    assert "mesh next --wait 600" in done.stderr
    as_json = cli.run("next", "--as", "alice", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["error"]["code"] == "nothing-next"
    waited = cli.run("next", "--as", "alice", "--wait", "0.3")
    assert waited.returncode == 1 and "still nothing to do for alice after 0.3s" in waited.stderr
    refused = cli.run("next", "--wait", "-1", "--as", "alice")
    assert refused.returncode == 2, refused.stderr


def _watching(cli: MeshRunner, pid: int, topic: str) -> bool:
    """Whether the waiter `pid` has its watch in place: an inotify watch (directory mesh), or a
    session LISTENing on `topic` (database mesh)."""
    if cli.kind == "postgres":
        return cli.listening(topic)
    fdinfo = Path(f"/proc/{pid}/fdinfo")
    with contextlib.suppress(OSError):
        for name in os.listdir(fdinfo):
            with contextlib.suppress(OSError):
                if "inotify wd:" in (fdinfo / name).read_text():
                    return True
    return False


@pytest.mark.parametrize("by", ["mail", "task"])
def test_next_wait_wakes_within_a_second_on_mail_or_on_a_new_task(
    cli: MeshRunner, mesh: Mesh, by: str
) -> None:
    cli.json("register", "alice")
    waiter = subprocess.Popen(
        cli.argv("next", "--wait", "30", "--as", "alice", "--json"),
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        topic = inbox("alice") if by == "mail" else TASKS
        assert wait_until(
            lambda: _watching(cli, waiter.pid, topic) or waiter.poll() is not None, 30
        )
        time.sleep(0.2)  # past its first look
        assert waiter.poll() is None, waiter.communicate()
        started = time.monotonic()
        if by == "mail":
            messages.send(mesh, "alice", "wake up", sender="bob")
        else:
            tasks.add_task(mesh, "new work", actor="bob")
        assert waiter.stdout is not None
        line = waiter.stdout.readline()
        latency = time.monotonic() - started
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.communicate()
    assert waiter.returncode == 0, (line, out, err)
    found = json.loads(line)
    assert found["kind"] == ("message" if by == "mail" else "task")
    assert latency < 1.0, f"woken {latency:.2f} s after the {by}"
