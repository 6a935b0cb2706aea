"""The watcher's wake logic against the heimdall stand-in: once per batch, never while busy."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import agents, audit, clock, messages, watcher
from drasill_cli.config import Config, WakeConfig
from drasill_cli.mesh import Mesh
from tests.harness import directory_of
from tests.heimdall_standin import IDLE, THINKING, HeimdallStandIn
from tests.wake_support import wait_until

pytest_plugins = ["tests.wake_fixtures"]  # socket_dir, tmux_tmpdir

SESSION = "s-alpha"


@pytest.fixture
def hm_mesh(mesh_dir: Path, socket_dir: Path) -> Mesh:
    """A mesh whose wake config points at the stand-in's socket dir, with short timings."""
    wake = WakeConfig(
        idle_ms=300,
        heimdall_socket_dir=str(socket_dir),
        retry_max=3,
        retry_base_s=0.05,
        enter_delay_ms=20,
    )
    return Mesh.open(mesh_dir, Config(wake=wake))


@pytest.fixture
def alpha(hm_mesh: Mesh, socket_dir: Path) -> Iterator[HeimdallStandIn]:
    """Agent `alpha` registered on a running stand-in session."""
    server = HeimdallStandIn(socket_dir, SESSION).start()
    agents.register(hm_mesh, "alpha", session=SESSION, supervisor="heimdall")
    yield server
    server.stop()


class Log(list[dict[str, Any]]):
    """Collects what the watcher reports."""

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self if e["event"] == kind]


def watch(mesh: Mesh) -> tuple[watcher.Watcher, Log]:
    log = Log()
    return watcher.Watcher(mesh, log.append), log


def audit_wakes(mesh: Mesh) -> list[dict[str, Any]]:
    return [e for e in audit.read_events(mesh) if e["event"] == "wake"]


def test_idle_agent_is_woken_once_with_a_notice_then_enter(
    hm_mesh: Mesh, alpha: HeimdallStandIn
) -> None:
    messages.send(hm_mesh, "alpha", "one", sender="beta")
    messages.send(hm_mesh, "alpha", "two", sender="gamma", priority="urgent")
    watch_, log = watch(hm_mesh)
    watch_.full_pass()
    assert alpha.wait_typed(2) == [
        b"[mesh] 2 new messages (1 urgent) from gamma, beta: run mesh inbox alpha",
        b"\r",
    ]
    state = watcher.load_state(hm_mesh, "alpha")
    assert state is not None
    assert state["state"] == "woken"
    assert len(state["notified_ids"]) == 2
    [event] = audit_wakes(hm_mesh)
    assert (event["agent"], event["outcome"], event["messages"]) == ("alpha", "woken", 2)
    assert len(log.events("wake")) == 1
    # The same mail never wakes it again: not on a later pass, not after a restart. A wake is
    # typed before it is reported and recorded, so no report and no record means nothing typed.
    watch_.full_pass()
    restarted, restarted_log = watch(hm_mesh)
    restarted.full_pass()
    assert len(log.events("wake")) == 1
    assert restarted_log.events("wake") == []
    assert len(audit_wakes(hm_mesh)) == 1
    assert len(alpha.typed()) == 2


def test_ten_messages_while_busy_make_one_wake_once_idle(
    hm_mesh: Mesh, alpha: HeimdallStandIn
) -> None:
    alpha.state = THINKING
    watch_, log = watch(hm_mesh)
    for n in range(10):
        messages.send(hm_mesh, "alpha", f"m{n}", sender="beta")
        watch_.tick({"alpha"})
    assert log.events("wake") == []
    assert alpha.typed() == []
    state = watcher.load_state(hm_mesh, "alpha")
    assert state is not None
    assert (state["state"], state["busy"], len(state["queued_ids"])) == ("queued", True, 10)
    assert len(log.events("busy")) == 1
    assert watch_.due["alpha"] - time.time() <= watcher.BUSY_RECHECK_S
    alpha.state = IDLE
    due = watch_.due["alpha"]
    assert wait_until(lambda: clock.now() >= due, 15)
    watch_.tick(set())
    inputs = alpha.wait_for_inputs(2, 15)
    assert [i.data for i in inputs] == [
        b"[mesh] 10 new messages from beta: run mesh inbox alpha",
        b"\r",
    ]
    assert all(i.state == IDLE for i in inputs)
    assert len(audit_wakes(hm_mesh)) == 1


def test_no_wake_messages_trigger_nothing(hm_mesh: Mesh, alpha: HeimdallStandIn) -> None:
    messages.send(hm_mesh, "alpha", "fyi", sender="beta", wake=False)
    watch(hm_mesh)[0].full_pass()
    assert audit_wakes(hm_mesh) == []
    assert alpha.typed() == []
    assert watcher.load_state(hm_mesh, "alpha") is None
    # A later waking message announces only itself.
    messages.send(hm_mesh, "alpha", "now", sender="gamma")
    watch(hm_mesh)[0].full_pass()
    assert alpha.wait_typed(2) == [b"[mesh] 1 new message from gamma: run mesh inbox alpha", b"\r"]


def test_reading_the_mail_marks_the_wake_consumed(hm_mesh: Mesh, alpha: HeimdallStandIn) -> None:
    messages.send(hm_mesh, "alpha", "one", sender="beta")
    watch_, log = watch(hm_mesh)
    watch_.full_pass()
    assert messages.consume(hm_mesh, "alpha") is not None
    watch_.tick({"alpha"})
    state = watcher.load_state(hm_mesh, "alpha")
    assert state is not None
    assert state["state"] == "consumed"
    assert log.events("consumed") == [{"event": "consumed", "agent": "alpha"}]


def test_new_mail_right_after_a_wake_waits_for_the_agent_to_settle(
    hm_mesh: Mesh, alpha: HeimdallStandIn
) -> None:
    # A settle time long enough that the second look surely falls inside it on a slow machine.
    settle = dataclasses.replace(hm_mesh.config.wake, idle_ms=3000)
    mesh = Mesh.open(directory_of(hm_mesh).root, dataclasses.replace(hm_mesh.config, wake=settle))
    messages.send(mesh, "alpha", "one", sender="beta")
    watch_, log = watch(mesh)
    watch_.full_pass()
    assert len(alpha.wait_typed(2)) == 2
    messages.send(mesh, "alpha", "two", sender="gamma")
    watch_.tick({"alpha"})
    assert len(log.events("wake")) == 1  # not woken again within the settle time
    due = watch_.due["alpha"]
    state = watcher.load_state(mesh, "alpha")
    assert state is not None
    assert due == pytest.approx(clock.parse_iso(state["woken_at"]) + 3.0, abs=0.001)
    assert wait_until(lambda: clock.now() >= due, 15)
    watch_.tick(set())
    assert len(log.events("wake")) == 2
    assert alpha.wait_typed(4)[2:] == [
        b"[mesh] 1 new message from gamma: run mesh inbox alpha",
        b"\r",
    ]


def test_gone_session_gets_nothing_and_the_agent_is_reported_dead(
    hm_mesh: Mesh, alpha: HeimdallStandIn, socket_dir: Path
) -> None:
    other = HeimdallStandIn(socket_dir, "s-beta").start()
    try:
        agents.register(hm_mesh, "beta", session="s-beta", supervisor="heimdall")
        alpha.stop()
        messages.send(hm_mesh, "alpha", "hello?", sender="human")
        messages.send(hm_mesh, "beta", "hello", sender="human")
        watch_, log = watch(hm_mesh)
        watch_.full_pass()
        assert alpha.typed() == []
        assert other.wait_typed(2)[1:] == [b"\r"]  # the watch went on to the next agent
        [dead] = log.events("dead")
        assert dead["agent"] == "alpha"
        outcomes = {(e["agent"], e["outcome"]) for e in audit_wakes(hm_mesh)}
        assert outcomes == {("alpha", "dead"), ("beta", "woken")}
        # The lifecycle, run again at once, records the death.
        watch_.tick(set())
        record = agents.load(hm_mesh, "alpha")
        assert record is not None
        assert record.dead_at is not None
        state = watcher.load_state(hm_mesh, "alpha")
        assert state is not None
        assert state["state"] == "dead"
        assert state["queued_ids"]  # the mail stays queued, unannounced
    finally:
        other.stop()


def test_failed_wakes_back_off_then_give_up_until_new_mail(
    hm_mesh: Mesh, alpha: HeimdallStandIn
) -> None:
    alpha.mode_byte = 0x07  # not heimdall's: every attempt fails
    messages.send(hm_mesh, "alpha", "one", sender="beta")
    watch_, log = watch(hm_mesh)
    watch_.full_pass()
    while "alpha" in watch_.due:
        time.sleep(max(0.0, watch_.due["alpha"] - time.time()))
        watch_.tick(set())
    backoff = [e["in_s"] for e in log.events("retry")]
    assert len(backoff) == 2
    assert backoff[1] > backoff[0]  # exponential backoff
    state = watcher.load_state(hm_mesh, "alpha")
    assert state is not None
    assert (state["state"], state["attempts"]) == ("failed", 3)
    assert "mode byte" in state["last_error"]
    alpha.mode_byte = 0x00
    watch_.tick({"alpha"})
    assert log.events("wake") == []  # no new mail: still given up
    assert alpha.typed() == []
    messages.send(hm_mesh, "alpha", "two", sender="beta")
    watch_.tick({"alpha"})
    assert alpha.wait_typed(2)[0] == b"[mesh] 2 new messages from beta: run mesh inbox alpha"


def test_damaged_wake_file_is_quarantined_and_the_watch_goes_on(
    hm_mesh: Mesh, alpha: HeimdallStandIn
) -> None:

    directory_of(hm_mesh).store.write_bytes("wake/alpha.json", b"{not json")
    messages.send(hm_mesh, "alpha", "one", sender="beta")
    watch_, log = watch(hm_mesh)
    watch_.full_pass()
    assert len(alpha.wait_typed(2)) == 2
    assert any("wake/alpha.json" in e["message"] for e in log.events("warning"))
    assert any("wake__alpha.json" in n for n in directory_of(hm_mesh).store.names("quarantine", ""))


def test_agent_without_a_session_stays_queued(hm_mesh: Mesh) -> None:
    agents.register(hm_mesh, "solo")
    messages.send(hm_mesh, "solo", "hi", sender="beta")
    watch_, log = watch(hm_mesh)
    watch_.full_pass()
    state = watcher.load_state(hm_mesh, "solo")
    assert state is not None
    assert state["state"] == "queued"
    assert "no session" in state["blocked"]
    assert "solo" not in watch_.due
    assert log.events("blocked")[0]["agent"] == "solo"


def test_a_second_watcher_is_refused(hm_mesh: Mesh) -> None:
    from drasill_cli.errors import NegativeOutcome

    with (
        watcher.single_instance(hm_mesh),
        pytest.raises(NegativeOutcome, match="already running") as refused,
        watcher.single_instance(hm_mesh),
    ):
        pass
    assert refused.value.code == "watch-running"
