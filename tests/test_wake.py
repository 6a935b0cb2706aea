"""Wake backends: the notice text, heimdall's socket protocol, and real tmux panes."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from drasill_cli import wake
from drasill_cli.wake import HeimdallBackend, SessionGone, TmuxBackend, WakeFailed, clean, notice
from tests.heimdall_standin import DEAD, IDLE, STREAMING, HeimdallStandIn
from tests.wake_support import (
    READER,
    needs_tmux,
    read_lines,
    start_pane,
    wait_quiet,
    wait_until,
)

pytest_plugins = ["tests.wake_fixtures"]  # socket_dir, tmux_tmpdir


def window_activity(session: str) -> int:
    """tmux's mark of the session's last output, in whole seconds."""
    done = subprocess.run(
        ["tmux", "display-message", "-p", "-t", f"={session}:", "#{window_activity}"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


@pytest.fixture
def standin(socket_dir: Path) -> Iterator[HeimdallStandIn]:
    """A running heimdall stand-in session `s1`."""
    server = HeimdallStandIn(socket_dir, "s1").start()
    yield server
    server.stop()


def test_notice_is_one_clean_line_naming_senders_and_mesh_inbox() -> None:
    batch = [
        {"id": "1", "from": "alpha", "priority": "normal"},
        {"id": "2", "from": "be\x1b[31mta\n", "priority": "urgent"},
        {"id": "3", "from": "alpha", "priority": "normal"},
    ]
    line = notice("gamma", batch)
    assert line == "[mesh] 3 new messages (1 urgent) from alpha, be[31mta: run mesh inbox gamma"
    assert all(ord(c) >= 32 and ord(c) != 127 for c in line)
    assert notice("gamma", [{"id": "1", "from": "alpha"}]).startswith("[mesh] 1 new message ")


def test_notice_caps_the_sender_list() -> None:
    batch = [{"id": str(i), "from": f"agent{i}"} for i in range(6)]
    assert "from agent0, agent1, agent2 and 3 more:" in notice("x", batch)


def test_clean_strips_control_format_and_separator_characters() -> None:
    assert clean("a\x00b\x07c\rd\x7fe\u202ef\u2028g\x9bh") == "abcdefgh"


def test_heimdall_status_idle_and_busy(standin: HeimdallStandIn, socket_dir: Path) -> None:
    backend = HeimdallBackend(socket_dir, enter_delay=0.01)
    assert backend.is_idle("s1") is True
    standin.state = STREAMING
    assert backend.is_idle("s1") is False
    status = backend.status("s1")
    assert (status.state, status.alive) == (STREAMING, True)
    standin.state = DEAD
    assert backend.is_idle("s1") is None


def test_heimdall_types_text_then_carriage_return_as_separate_frames(
    standin: HeimdallStandIn, socket_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The pause is timed where the frames are written: the stand-in's server thread may read
    # both frames late, which would shrink the gap it sees without the product being at fault.
    sent_at: list[float] = []
    send_frame = wake._send_frame

    def timed_send(conn: socket.socket, kind: int, payload: bytes) -> None:
        sent_at.append(time.monotonic())
        send_frame(conn, kind, payload)

    monkeypatch.setattr(wake, "_send_frame", timed_send)
    backend = HeimdallBackend(socket_dir, enter_delay=0.1)
    backend.type_line("s1", "[mesh] hello: run mesh inbox x")
    inputs = standin.wait_for_inputs(2, 10)
    assert [i.data for i in inputs] == [b"[mesh] hello: run mesh inbox x", b"\r"]
    assert len(sent_at) == 2
    assert sent_at[1] - sent_at[0] >= 0.1, sent_at
    assert all(i.state == IDLE for i in inputs)


def test_heimdall_gone_socket_is_reported_not_typed_into(socket_dir: Path) -> None:
    backend = HeimdallBackend(socket_dir, enter_delay=0.01)
    assert backend.is_idle("nobody") is None
    with pytest.raises(SessionGone):
        backend.type_line("nobody", "x")


def test_heimdall_stale_socket_file_counts_as_gone(socket_dir: Path) -> None:
    server = HeimdallStandIn(socket_dir, "s2").start()
    server.stop()
    stale = socket_dir / "s2.sock"
    with socket.socket(socket.AF_UNIX) as sock:  # bound but never listening: refused
        sock.bind(str(stale))
        assert HeimdallBackend(socket_dir, enter_delay=0.01).is_idle("s2") is None


def test_heimdall_wrong_mode_byte_is_a_retryable_failure(
    standin: HeimdallStandIn, socket_dir: Path
) -> None:

    standin.mode_byte = 0x01
    with pytest.raises(WakeFailed, match="mode byte"):
        HeimdallBackend(socket_dir, enter_delay=0.01).is_idle("s1")


@needs_tmux
@pytest.mark.usefixtures("tmux_tmpdir")
def test_tmux_quiet_pane_is_idle_and_typing_submits_one_line(tmp_path: Path) -> None:
    out = start_pane("reader", READER, tmp=tmp_path)
    wait_quiet("reader", 0.2)
    backend = TmuxBackend(200, enter_delay=0.05)
    assert wait_until(lambda: backend.is_idle("reader") is True, 3)
    # Idle by a 200 ms standard means the last output was in an earlier whole second than now.
    quiet_mark = window_activity("reader")
    backend.type_line("reader", "[mesh] 1 new message from a: run mesh inbox b")
    assert wait_until(lambda: read_lines(out) != [], 10)
    [line] = read_lines(out)
    assert line.endswith("'[mesh] 1 new message from a: run mesh inbox b\\n'")
    # The echo of what was typed is fresh activity: tmux's activity mark moved on, and the pane
    # is not idle right after. tmux's clock has 1 s steps, so a 200 ms idle time would turn
    # idle again 0.2-1.2 s after the typing; 5 s leaves room for a slow machine.
    assert window_activity("reader") > quiet_mark
    assert TmuxBackend(5000, enter_delay=0.05).is_idle("reader") is False


@needs_tmux
@pytest.mark.usefixtures("tmux_tmpdir")
def test_tmux_busy_pane_is_never_idle_and_gone_pane_is_none(tmp_path: Path) -> None:
    loop = "while :; do date +%N; sleep 0.05; done"
    subprocess.run(["tmux", "new-session", "-d", "-s", "busy", "--", "sh", "-c", loop], check=True)
    backend = TmuxBackend(200, enter_delay=0.05)
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        assert backend.is_idle("busy") is False
        time.sleep(0.1)
    assert backend.is_idle("no-such-session") is None
    subprocess.run(["tmux", "kill-session", "-t", "=busy"], check=True)
    assert backend.is_idle("busy") is None
    with pytest.raises(SessionGone):
        backend.type_line("busy", "x")


def test_tmux_target_matches_a_bare_session_name_exactly() -> None:
    assert TmuxBackend.target("mesh-alpha") == "=mesh-alpha:"
    assert TmuxBackend.target("%3") == "%3"
    assert TmuxBackend.target("work:1.2") == "work:1.2"
