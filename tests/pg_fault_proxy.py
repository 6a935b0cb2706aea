"""A fault-injecting proxy in front of the tests' PostgreSQL server (issue 23 point 6).

It listens on a unix socket of its own and passes every connection through to the server,
byte for byte, until it is armed with `cut_after(marker)`: the next client message holding
`marker` still reaches the server, which runs it (and commits it), but the server's answer up to
its ReadyForQuery is swallowed and both sides are closed. The client sees the connection lost
after the change was committed: the one case where "it rolled back, run it again" is false.

Only what the client sends after the marker's message counts; one cut per arming.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

_HEADER = 5  # a backend message: one type byte and a four-byte length (itself included)


class FaultProxy:
    """A proxy for one test: `url(server_url)` names it; `cut_after` arms one cut."""

    def __init__(self, folder: Path, server_url: str) -> None:
        query = dict(parse_qsl(urlsplit(server_url).query))
        self.port = query.get("port", "5432")
        self.server_path = str(Path(query["host"]) / f".s.PGSQL.{self.port}")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(folder / f".s.PGSQL.{self.port}"))
        self._listener.listen(16)
        self._armed: list[bytes] = []  # the markers still to see, in order
        self._refuse = False
        self._partition = False
        self._guard = threading.Lock()
        self.cuts = 0
        self._open: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self, server_url: str) -> str:
        """`server_url` with its host (socket folder) replaced by the proxy's."""
        host = dict(parse_qsl(urlsplit(server_url).query))["host"]
        return server_url.replace(f"host={host}", f"host={self.folder}", 1)

    def cut_after(self, *markers: bytes, refuse: bool = False, partition: bool = False) -> None:
        """Cut the connection that sends each of `markers` in turn (a statement, then the
        COMMIT that follows it), once the server has answered the last. With `refuse`, every
        connection after the cut is refused (the server looks gone). With `partition`, only
        the client's side is closed: the server's stays open, as across a network cut, so
        its session (and any transaction it has open) lives on until `close`."""
        with self._guard:
            self._armed = list(markers)
            self._refuse = refuse
            self._partition = partition

    def close(self) -> None:
        self._listener.close()
        for sock in list(self._open):
            with contextlib.suppress(OSError):
                sock.close()

    # ---- the pumps --------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._refuse and self.cuts:
                client.close()
                continue
            server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            server.connect(self.server_path)
            self._open += [client, server]
            cutting = threading.Event()
            threading.Thread(
                target=self._upstream, args=(client, server, cutting), daemon=True
            ).start()
            threading.Thread(
                target=self._downstream, args=(server, client, cutting), daemon=True
            ).start()

    def _upstream(
        self, client: socket.socket, server: socket.socket, cutting: threading.Event
    ) -> None:
        seen = b""
        while True:
            try:
                data = client.recv(65536)
            except OSError:
                data = b""
            if not data:
                if not (cutting.is_set() and self._partition):  # a cut server never hears
                    with contextlib.suppress(OSError):
                        server.shutdown(socket.SHUT_WR)
                return
            seen = (seen + data)[-65536:]
            with self._guard:
                if self._armed and self._armed[0] in seen:
                    self._armed.pop(0)
                    seen = b""
                    if not self._armed:
                        cutting.set()  # before the server can answer
            try:
                server.sendall(data)
            except OSError:
                return

    def _downstream(
        self, server: socket.socket, client: socket.socket, cutting: threading.Event
    ) -> None:
        buffer = b""
        while True:
            try:
                data = server.recv(65536)
            except OSError:
                data = b""
            if not data:
                with contextlib.suppress(OSError):
                    client.close()
                return
            buffer += data
            out = b""
            while len(buffer) >= _HEADER:
                kind = buffer[:1]
                (length,) = struct.unpack("!I", buffer[1:_HEADER])
                if len(buffer) < 1 + length:
                    break
                message, buffer = buffer[: 1 + length], buffer[1 + length :]
                if not cutting.is_set():
                    out += message
                elif kind == b"Z":  # the server is done with it (committed): cut here
                    self.cuts += 1  # before the client can see the cut (and connect again)
                    with contextlib.suppress(OSError):
                        client.sendall(out)
                    for sock in (client,) if self._partition else (client, server):
                        with contextlib.suppress(OSError):
                            sock.shutdown(socket.SHUT_RDWR)
                        sock.close()
                    return
            if out:
                try:
                    client.sendall(out)
                except OSError:
                    return
