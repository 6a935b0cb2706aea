"""`mesh watch` as a process: single instance, signals, restarts, real tmux panes."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import agents, audit, clock, messages, watcher
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner
from tests.harness import directory_of
from tests.heimdall_standin import IDLE, THINKING, HeimdallStandIn
from tests.wake_support import (
    BUSY_THEN_READ,
    READER,
    needs_tmux,
    read_lines,
    start_pane,
    wait_quiet,
    wait_until,
)

pytest_plugins = ["tests.wake_fixtures"]  # socket_dir, tmux_tmpdir


class WatchProcess:
    """A running `mesh watch --json`, its JSON lines collected as they come."""

    def __init__(self, cli: MeshRunner, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            cli.argv("watch", "--json"),
            env={**cli.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self.wait(lambda e: e["event"] == "start", 15):
            self.proc.kill()
            _out, err = self.proc.communicate(timeout=10)
            raise AssertionError(f"mesh watch did not start: {err}")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.append(json.loads(line))

    def wait(self, match: Callable[[dict[str, Any]], bool], timeout: float) -> bool:
        return wait_until(lambda: any(match(e) for e in list(self.events)), timeout)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        code = self.proc.wait(15)
        self._reader.join(15)
        return code

    def count(self, match: Callable[[dict[str, Any]], bool]) -> int:
        return sum(1 for e in list(self.events) if match(e))


PROBE = "probe"


def wait_looping(watch: WatchProcess, mesh: Mesh) -> None:
    """Return once `watch` has finished its first pass and reacts to new mail from its loop.

    Mail for an agent without a session is queued (a `queued` event) and nothing is typed. The
    second probe is sent only after the first was reported, so it is seen by a later look than
    the first, i.e. by a tick after the first pass (which looks at every agent, in name order,
    before the lifecycle and hardware jobs) has ended.
    """
    if agents.load(mesh, PROBE) is None:
        agents.register(mesh, PROBE)

    def probed(e: dict[str, Any]) -> bool:
        return bool(e["event"] == "queued" and e["agent"] == PROBE)

    def probe() -> None:
        seen = watch.count(probed)
        messages.send(mesh, PROBE, "are you there?", sender="beta")
        assert wait_until(lambda: watch.count(probed) > seen, 15), watch.events

    probe()
    probe()


def audit_wakes(mesh: Mesh) -> list[dict[str, Any]]:
    return [e for e in audit.read_events(mesh) if e["event"] == "wake"]


@pytest.fixture
def watch_cli(cli: MeshRunner, socket_dir: Path) -> MeshRunner:
    """The CLI with short wake timings and the stand-in's socket dir."""
    cli.config(
        f'[wake]\nidle_ms = 300\nenter_delay_ms = 20\nheimdall_socket_dir = "{socket_dir}"\n'
    )
    return cli


@pytest.fixture
def started() -> Iterator[list[WatchProcess]]:
    """Watch processes a test starts; any still running are killed at the end."""
    running: list[WatchProcess] = []
    yield running
    for watch in running:
        watch.stop(signal.SIGKILL)


def test_second_watch_exits_1_and_sigterm_stops_cleanly(
    watch_cli: MeshRunner, started: list[WatchProcess]
) -> None:
    first = WatchProcess(watch_cli, {})
    started.append(first)
    second = watch_cli.run("watch", "--once", "--json")
    assert second.returncode == 1
    error = json.loads(second.stdout)["error"]
    assert error["code"] == "watch-running"
    assert str(first.proc.pid) in error["message"]
    human = watch_cli.run("watch")
    assert human.returncode == 1
    assert human.stderr.startswith("error: another mesh watch is already running")
    assert first.stop(signal.SIGTERM) == 0
    assert first.events[-1]["event"] == "stop"
    assert watch_cli.run("watch", "--once").returncode == 0  # the lock was released


def test_watch_once_wakes_and_survives_a_damaged_record(
    watch_cli: MeshRunner, mesh: Mesh, socket_dir: Path
) -> None:
    server = HeimdallStandIn(socket_dir, "s-alpha").start()
    try:
        agents.register(mesh, "alpha", session="s-alpha", supervisor="heimdall")
        directory_of(mesh).store.write_bytes("agents/zeta.json", b'{"name": 3}')
        messages.send(mesh, "alpha", "hello", sender="human")
        done = watch_cli.run("watch", "--once")
        assert done.returncode == 0, done.stderr
        assert server.wait_typed(2) == [
            b"[mesh] 1 new message from human: run mesh inbox alpha",
            b"\r",
        ]
        assert "woke alpha (heimdall s-alpha)" in done.stderr
        assert "quarantined agents/zeta.json" in done.stderr
    finally:
        server.stop()


def test_watch_once_json_prints_exactly_one_object(
    watch_cli: MeshRunner, mesh: Mesh, socket_dir: Path
) -> None:
    quiet = watch_cli.run("watch", "--once", "--json")
    assert quiet.returncode == 0, quiet.stderr
    [line] = quiet.stdout.splitlines()
    summary = json.loads(line)
    assert (summary["woken"], summary["errors"]) == ([], 0)
    assert isinstance(summary["events"], list)
    assert summary["mesh"] == str(watch_cli.mesh_dir)
    servers = [HeimdallStandIn(socket_dir, f"s-{n}").start() for n in ("alpha", "beta")]
    try:
        for name in ("alpha", "beta"):
            agents.register(mesh, name, session=f"s-{name}", supervisor="heimdall")
            messages.send(mesh, name, "hello", sender="human")
        directory_of(mesh).store.write_bytes("agents/zeta.json", b'{"name": 3}')
        done = watch_cli.run("watch", "--once", "--json")
        assert done.returncode == 0, done.stderr
        [line] = done.stdout.splitlines()
        summary = json.loads(line)
        assert summary["woken"] == ["alpha", "beta"]
        kinds = [event["event"] for event in summary["events"]]
        assert kinds.count("wake") == 2 and "warning" in kinds
        assert all("time" in event for event in summary["events"])
        assert summary["started_at"] <= summary["finished_at"]
    finally:
        for server in servers:
            server.stop()


def test_killed_watch_restarted_loses_no_pending_wake(
    watch_cli: MeshRunner, mesh: Mesh, socket_dir: Path, started: list[WatchProcess]
) -> None:
    server = HeimdallStandIn(socket_dir, "s-alpha", state=THINKING).start()
    try:
        agents.register(mesh, "alpha", session="s-alpha", supervisor="heimdall")
        first = WatchProcess(watch_cli, {})
        started.append(first)
        for n in range(3):
            messages.send(mesh, "alpha", f"m{n}", sender="beta")

        def queued() -> bool:
            state = watcher.load_state(mesh, "alpha")
            return state is not None and len(state.get("queued_ids", [])) == 3

        assert wait_until(queued, 15)
        first.stop(signal.SIGKILL)
        assert server.typed() == []  # busy: nothing was typed
        server.state = IDLE
        second = WatchProcess(watch_cli, {})
        started.append(second)
        inputs = server.wait_for_inputs(2, 15)
        assert [i.data for i in inputs] == [
            b"[mesh] 3 new messages from beta: run mesh inbox alpha",
            b"\r",
        ]
        assert second.stop() == 0
        assert len(audit_wakes(mesh)) == 1
        third = WatchProcess(watch_cli, {})  # a restart does not wake it again
        started.append(third)
        wait_looping(third, mesh)  # its first pass looked at alpha
        assert third.stop() == 0
        # A wake is typed before it is reported and recorded: neither happened.
        assert not any(e["event"] == "wake" for e in third.events), third.events
        assert len(audit_wakes(mesh)) == 1
        assert len(server.typed()) == 2
    finally:
        server.stop()


@needs_tmux
def test_tmux_pane_reads_the_notice_within_two_seconds(
    watch_cli: MeshRunner,
    mesh: Mesh,
    tmp_path: Path,
    tmux_tmpdir: Path,
    started: list[WatchProcess],
) -> None:
    out = start_pane("reader", READER, tmp=tmp_path)
    agents.register(mesh, "alpha", session="reader", supervisor="tmux")
    watch = WatchProcess(watch_cli, {"TMUX_TMPDIR": str(tmux_tmpdir)})
    started.append(watch)
    wait_looping(watch, mesh)  # started, first pass done: waiting for mail
    wait_quiet("reader", 0.3)
    sent_at = time.time()
    messages.send(mesh, "alpha", "hello", sender="beta")
    # Wait well past the bound, so a slow wake fails on its measured latency below.
    assert wait_until(lambda: read_lines(out) != [], 15), watch.events
    [line] = read_lines(out)
    read_at, text = line.split(" ", 1)
    assert text == repr("[mesh] 1 new message from beta: run mesh inbox alpha\n")
    latency = float(read_at) - sent_at
    assert latency <= 2.0, f"the notice was read {latency:.2f} s after the send"
    assert watch.stop() == 0


@needs_tmux
def test_tmux_busy_pane_is_not_typed_into_until_quiet(
    watch_cli: MeshRunner,
    mesh: Mesh,
    tmp_path: Path,
    tmux_tmpdir: Path,
    started: list[WatchProcess],
) -> None:

    watch = WatchProcess(watch_cli, {"TMUX_TMPDIR": str(tmux_tmpdir)})
    started.append(watch)
    release = tmp_path / "release"
    # Busy until released (at most 120 s), so it is surely still busy when the watcher looks.
    out = start_pane("busy", BUSY_THEN_READ, "120", str(release), tmp=tmp_path)
    agents.register(mesh, "alpha", session="busy", supervisor="tmux")
    messages.send(mesh, "alpha", "hello", sender="beta")
    assert watch.wait(lambda e: e["event"] == "busy" and e["agent"] == "alpha", 15), watch.events
    assert watch.count(lambda e: e["event"] == "wake") == 0
    release.touch()
    assert wait_until(lambda: read_lines(out) != [], 15), watch.events
    quiet_at = float(next(x for x in out.read_text().splitlines() if x.startswith("quiet"))[6:])
    # The wake is recorded only after the typing is done, possibly after the pane read it.
    assert wait_until(lambda: audit_wakes(mesh) != [], 15), watch.events
    [wake] = audit_wakes(mesh)
    assert clock.parse_iso(wake["time"]) >= quiet_at
    assert len(read_lines(out)) == 1
    assert watch.stop() == 0
