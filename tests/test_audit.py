"""The audit log: concurrent appends, rotation, `mesh log` and `--follow` (issue 6).

The CLI tests run on a directory mesh and on a PostgreSQL mesh."""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from drasill_cli import audit, messages
from drasill_cli.config import AuditConfig, Config
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner

pytestmark = pytest.mark.both_backends

APPENDER = """
import sys
from drasill_cli.mesh import Mesh
from drasill_cli.config import Config
mesh = Mesh.open(sys.argv[1], Config())
worker = int(sys.argv[2])
for i in range(int(sys.argv[3])):
    mesh.append_audit_event("test-event", f"w{worker}", seq=i, padding="x" * (i % 300))
"""


def test_16_concurrent_appenders_lose_and_interleave_nothing(mesh_dir: Path) -> None:
    Mesh.open(mesh_dir, Config()).append_audit_event("start", None)
    procs = [
        subprocess.Popen([sys.executable, "-c", APPENDER, str(mesh_dir), str(w), "400"])
        for w in range(16)
    ]
    for proc in procs:
        assert proc.wait(timeout=120) == 0
    lines = (mesh_dir / "audit" / "events.jsonl").read_bytes().splitlines()
    events = [json.loads(line) for line in lines]
    seen = {(e["actor"], e["seq"]) for e in events if e["event"] == "test-event"}
    assert len(seen) == 16 * 400
    assert len(events) == 16 * 400 + 1


def test_rotation_keeps_every_event_readable(mesh_dir: Path) -> None:
    mesh = Mesh.open(mesh_dir, Config(audit=AuditConfig(max_bytes=2000, keep=100)))
    for i in range(200):
        mesh.append_audit_event("tick", "me", seq=i)
    rotated = [p for p in (mesh_dir / "audit").iterdir() if p.name != "events.jsonl"]
    assert rotated
    assert [e["seq"] for e in audit.read_events(mesh)] == list(range(200))


def test_rotation_drops_only_beyond_keep(mesh_dir: Path) -> None:
    mesh = Mesh.open(mesh_dir, Config(audit=AuditConfig(max_bytes=500, keep=2)))
    for i in range(100):
        mesh.append_audit_event("tick", "me", seq=i)
    assert len(list((mesh_dir / "audit").iterdir())) <= 3


def test_log_lists_events_and_filters_since(cli: MeshRunner) -> None:
    cli.json("register", "alpha")
    cli.json("register", "beta")
    done = cli.run("log", "--json")
    assert done.returncode == 0
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["event"] for e in events] == ["register", "register"]
    assert {"time", "event", "actor"} <= events[0].keys()
    human = cli.run("log")
    assert "alpha register" in human.stdout
    assert cli.run("log", "--since", "1d", "--json").stdout.count("\n") == 2
    future = cli.run("log", "--since", "2999-01-01T00:00:00Z", "--json")
    assert future.stdout == ""
    bad = cli.run("log", "--since", "yesterday-ish", "--json")
    assert bad.returncode == 2
    assert json.loads(bad.stdout)["error"]["code"] == "invalid-since"


def test_log_follow_shows_a_change_from_another_process_within_1s(cli: MeshRunner) -> None:
    cli.json("register", "alpha")
    cli.json("register", "beta")
    follower = subprocess.Popen(
        cli.argv("log", "--follow", "--json"),
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[tuple[float, str]] = queue.Queue()

    def read() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.put((time.monotonic(), line))

    threading.Thread(target=read, daemon=True).start()
    try:
        # The follower reads the existing log only inside its file watch, so once it has
        # printed the history it is watching: nothing sent from here on can be missed.
        history = [json.loads(lines.get(timeout=30)[1]) for _ in range(2)]
        assert [(e["event"], e["actor"]) for e in history] == [
            ("register", "alpha"),
            ("register", "beta"),
        ]
        # The send is made here, in this test process, so no interpreter start-up is timed.
        with cli.open() as mesh:
            started = time.monotonic()
            [sent] = messages.send(mesh, "beta", "hello", sender="alpha")
        seen, line = lines.get(timeout=15)
        event = json.loads(line)
        assert (event["event"], event["actor"], event["id"]) == ("send", "alpha", sent["id"])
        assert seen - started < 1.0, f"follow showed the send {seen - started:.2f}s after it began"
    finally:
        follower.terminate()
        follower.wait(timeout=10)
