"""A heimdall stand-in for the tests: the real `hm` cannot be installed here.

It speaks heimdall's socket protocol byte for byte on `<socket_dir>/<id>.sock`: one mode byte
0x00 on connect, then frames `[type u8][length u32 BE][payload]`; STATUS (0x03) is answered by
STATUS_RESP (0x82) with 15 bytes `>IIBBIB` (pid, idle_ms, alive, state, state_ms, reserved);
INPUT (0x01) is recorded with its arrival time and the state the session was in; RESIZE must
carry 4 bytes; KILL ends the session; a payload over 1 MiB closes the connection. It writes the
`.pid` file (line 1 supervisor pid, line 2 child pid) and removes both files when it ends, as
heimdall does. Its framing code is written independently of `drasill_cli.wake` on purpose.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

IDLE = 0x00
THINKING = 0x01
STREAMING = 0x02
DEAD = 0xFF
MAX_PAYLOAD = 1 << 20


@dataclass(frozen=True)
class Input:
    """One INPUT frame as received."""

    at: float
    data: bytes
    state: int


class HeimdallStandIn:
    """A heimdall session served from a thread; `state` is what STATUS reports."""

    def __init__(self, socket_dir: Path, session: str, *, state: int = IDLE) -> None:
        self.socket_dir = socket_dir
        self.session = session
        self.sock_path = socket_dir / f"{session}.sock"
        self.pid_path = socket_dir / f"{session}.pid"
        self.mode_byte = 0x00
        self.inputs: list[Input] = []
        self.status_queries = 0
        self._state = state
        self._state_since = time.monotonic()
        self._lock = threading.Lock()
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    # ---- control from the test ---------------------------------------------------------

    @property
    def state(self) -> int:
        """The state STATUS reports."""
        return self._state

    @state.setter
    def state(self, value: int) -> None:
        with self._lock:
            self._state = value
            self._state_since = time.monotonic()

    def start(self) -> HeimdallStandIn:
        """Bind the socket, write the pid file and serve in a daemon thread."""
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.sock_path))
        server.listen(16)
        server.settimeout(0.05)
        self.pid_path.write_text(f"{os.getpid()}\n{os.getpid()}\n")
        self._server = server
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the session: stop serving and remove `.sock` and `.pid`."""
        self._closing = True
        if self._thread is not None:
            self._thread.join(5)
        if self._server is not None:
            self._server.close()
        for path in (self.sock_path, self.pid_path):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def typed(self) -> list[bytes]:
        """Payloads of every INPUT frame so far."""
        with self._lock:
            return [i.data for i in self.inputs]

    def wait_for_inputs(self, count: int, timeout: float) -> list[Input]:
        """Wait until at least `count` INPUT frames arrived (or the time is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.inputs) >= count:
                    break
            time.sleep(0.01)
        with self._lock:
            return list(self.inputs)

    def wait_typed(self, count: int, timeout: float = 15) -> list[bytes]:
        """Payloads of the INPUT frames once at least `count` arrived (or the time is up).

        The server thread records frames as it reads them, possibly after the sender is done.
        """
        return [i.data for i in self.wait_for_inputs(count, timeout)]

    # ---- serving -----------------------------------------------------------------------

    def _serve(self) -> None:
        assert self._server is not None
        while not self._closing:
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                conn.sendall(bytes([self.mode_byte]))
                while not self._closing:
                    header = _read(conn, 5)
                    if header is None:
                        return
                    kind, length = struct.unpack(">BI", header)
                    if length > MAX_PAYLOAD:
                        return
                    payload = _read(conn, length) if length else b""
                    if payload is None or not self._frame(conn, kind, payload):
                        return
            except OSError:
                return

    def _frame(self, conn: socket.socket, kind: int, payload: bytes) -> bool:
        """Handle one frame; False closes the connection."""
        if kind == 0x01:  # INPUT
            with self._lock:
                self.inputs.append(Input(time.monotonic(), payload, self._state))
            return True
        if kind == 0x03:  # STATUS
            with self._lock:
                self.status_queries += 1
                state, since = self._state, self._state_since
            state_ms = int((time.monotonic() - since) * 1000)
            idle_ms = state_ms if state == IDLE else 0
            alive = 0 if state == DEAD else 1
            body = struct.pack(">IIBBIB", os.getpid(), idle_ms, alive, state, state_ms, 0)
            conn.sendall(struct.pack(">BI", 0x82, len(body)) + body)
            return True
        if kind == 0x02:  # SUBSCRIBE: this session has no scrollback to replay
            return True
        if kind == 0x04:  # RESIZE
            return len(payload) == 4
        if kind == 0x05:  # KILL
            self.state = DEAD
            conn.sendall(struct.pack(">BIi", 0x83, 4, -15))
            return False
        return False


def _read(conn: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
