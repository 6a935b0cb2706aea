"""Terminal supervisors: how a notice is typed into an agent's terminal, and how idleness is judged.

Two supervisors sit behind one interface (`Supervisor`): heimdall, spoken to over its Unix socket
protocol (STATUS to see idle, INPUT to type), and tmux (`send-keys`, idle from pane activity).
Both type one short line and then a carriage return as a separate write after a pause: Claude
Code submits on `\\r`, and text plus Enter in one burst can be taken as a paste and not submitted.
What is typed is never a message body, only a notice that tells the agent to read its inbox, so
"delivered" keeps meaning that the agent read the mail itself.

tmux sockets: the supervisor runs plain `tmux`, so it talks to the server that tmux itself would
pick, i.e. the one under `$TMUX_TMPDIR` (default `/tmp`). Run `mesh watch` with the same
`TMUX_TMPDIR` as the agents' sessions; tests give each case a private `TMUX_TMPDIR`.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import subprocess
import time
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from drasill_cli import liveness

# heimdall wire protocol (see heimdall's protocol docs): mode byte, then framed messages.
MODE_BYTE = 0x00
FRAME_HEADER = struct.Struct(">BI")
MAX_PAYLOAD = 1 << 20
INPUT = 0x01
STATUS = 0x03
STATUS_RESP = 0x82
EXIT = 0x83
STATUS_BODY = struct.Struct(">IIBBIB")
STATE_IDLE = 0x00
STATE_DEAD = 0xFF

ENTER = "\r"
MAX_SENDERS_SHOWN = 3
MAX_SENDER_CHARS = 40
_STRIPPED_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_TMUX_GONE_HINTS = ("can't find", "no server running", "error connecting")


class SessionGone(Exception):
    """The session no longer exists (socket gone, pane closed): nothing can be typed."""


class WakeFailed(Exception):
    """The session may exist but could not be reached or typed into this time (retryable)."""


class Supervisor(Protocol):
    """What the watcher needs from a terminal supervisor."""

    def is_idle(self, session: str) -> bool | None:
        """True when the session is idle, False when busy, None when it is gone.

        Raises WakeFailed when the answer cannot be had this time.
        """
        ...

    def type_line(self, session: str, text: str) -> None:
        """Type `text` (one clean line), pause, then press Enter as a separate write.

        Raises SessionGone or WakeFailed.
        """
        ...


def clean(text: str) -> str:
    """`text` without control, format or line-separator characters: safe to type into a tty."""
    return "".join(c for c in text if unicodedata.category(c) not in _STRIPPED_CATEGORIES)


def notice(agent: str, batch: Iterable[dict[str, Any]]) -> str:
    """The one line typed into a woken agent, e.g. `[mesh] 2 new messages from a, b: run ...`.

    Senders are named (deduplicated, cleaned, at most three); urgent mail is counted.
    """
    messages = list(batch)
    senders: list[str] = []
    for message in messages:
        sender = clean(str(message.get("from") or "?")).strip()[:MAX_SENDER_CHARS] or "?"
        if sender not in senders:
            senders.append(sender)
    shown = ", ".join(senders[:MAX_SENDERS_SHOWN])
    if len(senders) > MAX_SENDERS_SHOWN:
        shown += f" and {len(senders) - MAX_SENDERS_SHOWN} more"
    count = len(messages)
    noun = "message" if count == 1 else "messages"
    urgent = sum(1 for m in messages if m.get("priority") == "urgent")
    flag = f" ({urgent} urgent)" if urgent else ""
    return clean(f"[mesh] {count} new {noun}{flag} from {shown}: run mesh inbox {agent}")


# ---- heimdall ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class HeimdallStatus:
    """A decoded STATUS_RESP."""

    pid: int
    idle_ms: int
    alive: bool
    state: int
    state_ms: int

    @property
    def idle(self) -> bool:
        """heimdall's own classifier says the session waits for input."""
        return self.alive and self.state == STATE_IDLE


class HeimdallBackend:
    """Speaks heimdall's socket protocol; one short connection per question or injection."""

    def __init__(self, socket_dir: Path, *, enter_delay: float, timeout: float = 2.0) -> None:
        self.socket_dir = socket_dir
        self.enter_delay = enter_delay
        self.timeout = timeout

    def _connect(self, session: str) -> socket.socket:
        path = liveness.heimdall_files(self.socket_dir, session).sock
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.settimeout(self.timeout)
        try:
            conn.connect(str(path))
            mode = _recv_exact(conn, 1)
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            conn.close()
            raise SessionGone(f"heimdall socket {path} is gone") from exc
        except OSError as exc:
            conn.close()
            raise WakeFailed(f"cannot talk to heimdall at {path}: {exc}") from exc
        if mode[0] != MODE_BYTE:
            conn.close()
            raise WakeFailed(f"heimdall at {path} sent mode byte {mode[0]:#04x}, expected 0x00")
        return conn

    def status(self, session: str) -> HeimdallStatus:
        """Ask the supervisor for its status (STATUS, answered by STATUS_RESP)."""
        with self._connect(session) as conn:
            try:
                _send_frame(conn, STATUS, b"")
                while True:
                    kind, payload = _recv_frame(conn)
                    if kind == EXIT:
                        raise SessionGone(f"heimdall session {session} has exited")
                    if kind == STATUS_RESP:
                        break
            except OSError as exc:
                raise WakeFailed(f"heimdall session {session}: {exc}") from exc
        if len(payload) != STATUS_BODY.size:
            raise WakeFailed(f"heimdall STATUS_RESP of {len(payload)} bytes, expected 15")
        pid, idle_ms, alive, state, state_ms, _reserved = STATUS_BODY.unpack(payload)
        return HeimdallStatus(pid, idle_ms, bool(alive), state, state_ms)

    def is_idle(self, session: str) -> bool | None:
        """Idle per heimdall's classifier; None when the socket is gone or the child is dead."""
        try:
            found = self.status(session)
        except SessionGone:
            return None
        if not found.alive or found.state == STATE_DEAD:
            return None
        return found.idle

    def type_line(self, session: str, text: str) -> None:
        """Two INPUT frames on one connection: the text, then `\\r` after a pause."""
        with self._connect(session) as conn:
            try:
                _send_frame(conn, INPUT, text.encode("utf-8"))
                time.sleep(self.enter_delay)
                _send_frame(conn, INPUT, ENTER.encode())
            except OSError as exc:
                raise WakeFailed(f"typing into heimdall session {session} failed: {exc}") from exc


def _send_frame(conn: socket.socket, kind: int, payload: bytes) -> None:
    conn.sendall(FRAME_HEADER.pack(kind, len(payload)) + payload)


def _recv_frame(conn: socket.socket) -> tuple[int, bytes]:
    kind, length = FRAME_HEADER.unpack(_recv_exact(conn, FRAME_HEADER.size))
    if length > MAX_PAYLOAD:
        raise WakeFailed(f"heimdall frame of {length} bytes exceeds the 1 MiB limit")
    return kind, _recv_exact(conn, length)


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionResetError("heimdall closed the connection")
        data += chunk
    return data


# ---- tmux --------------------------------------------------------------------------------

_TMUX_FORMAT = "#{pane_id} #{window_activity} #{pane_in_mode}"


class TmuxBackend:
    """tmux panes: idle once the window has shown no output for `idle_ms`.

    tmux records a window's last output in whole seconds (whatever `monitor-activity` says), so
    the last output may be up to a second after that mark: the quiet time counts from the mark
    plus one second. A pane in copy mode (someone is scrolling) counts as busy.
    """

    def __init__(self, idle_ms: int, *, enter_delay: float) -> None:
        self.idle_s = idle_ms / 1000
        self.enter_delay = enter_delay

    @staticmethod
    def target(session: str) -> str:
        """A tmux target for a stored session: a bare name matches that session exactly."""
        if session.startswith(("%", "@", "$", "=")) or ":" in session:
            return session
        return f"={session}:"

    def _tmux(self, *args: str) -> str:
        try:
            done = liveness.tmux_run(args, timeout=5)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise WakeFailed(f"tmux did not answer: {exc}") from exc
        if done is None:
            raise WakeFailed("tmux is not installed; install it (e.g. apt install tmux)")
        if done.returncode != 0:
            reason = done.stderr.strip() or f"exit {done.returncode}"
            if any(hint in reason.lower() for hint in _TMUX_GONE_HINTS):
                raise SessionGone(f"tmux: {reason}")
            raise WakeFailed(f"tmux: {reason}")
        return done.stdout

    def is_idle(self, session: str) -> bool | None:
        """Quiet for `idle_ms` and not in copy mode; None when the pane is gone."""
        try:
            out = self._tmux("display-message", "-p", "-t", self.target(session), _TMUX_FORMAT)
        except SessionGone:
            return None
        fields = out.split()
        if not fields or not fields[0].startswith("%"):
            return None  # display-message prints empty fields for a target that does not exist
        if len(fields) != 3 or not fields[1].isdigit():
            raise WakeFailed(f"tmux gave unexpected pane data {out.strip()!r}")
        _pane, activity, in_mode = fields
        quiet = time.time() - (int(activity) + 1)
        return in_mode == "0" and quiet >= self.idle_s

    def type_line(self, session: str, text: str) -> None:
        """`send-keys -l` for the literal text, a pause, then `send-keys Enter` (a `\\r`)."""
        target = self.target(session)
        self._tmux("send-keys", "-t", target, "-l", "--", text)
        time.sleep(self.enter_delay)
        self._tmux("send-keys", "-t", target, "Enter")
