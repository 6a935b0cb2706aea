"""The original Drasill 1.0.0 as a baseline: from PyPI, served on loopback, driven by curl.

`DrasillServer.start()` creates a throwaway virtual environment under a temporary directory with
Python 3.13 (Drasill needs >= 3.13), runs `pip install drasill==1.0.0` there, and starts its
server (`uvicorn drasill.app:create_app --factory`) on 127.0.0.1 at a free port, with its SQLite
database in the same temporary directory. No code of Drasill is copied into this repository.
`stop()` always terminates the server and deletes the directory; use it as a context manager.

The endpoints (from Drasill's README, JSON fields from its installed `drasill.mesh.models`):
- register: `POST /mesh/agents` `{"name": ...}` -> 201 (409 when taken)
- send: `POST /mesh/agents/{name}/inbox` `{"from_agent": ..., "body": ..., "priority": ...}` -> 201
- consume: `GET /mesh/agents/{name}/inbox` -> the oldest unread message, or `{}`

When Python 3.13, pip's index or the server is not available, `DrasillUnavailable` carries the
reason and the benchmark shows the Drasill column as skipped with it.
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

VERSION = "1.0.0"
INSTALL_TIMEOUT_S = 240
START_TIMEOUT_S = 30


class DrasillUnavailable(Exception):
    """Drasill could not be installed or started; the message says why."""


def find_python313() -> str:
    """An interpreter >= 3.13: $DRASILL_BASELINE_PYTHON, pyenv's, or python3.13 on PATH.

    Each candidate is run once to prove it works (a pyenv shim for a version that is installed
    but not selected fails, and is passed over).
    """
    candidates = [os.environ.get("DRASILL_BASELINE_PYTHON", "")]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.1[3-9]*/bin/python3.1[3-9]"))
    candidates += [shutil.which(n) or "" for n in ("python3.14", "python3.13")]
    probe = "import sys; sys.exit(0 if sys.version_info >= (3, 13) else 1)"
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            if (
                subprocess.run(
                    [candidate, "-c", probe], capture_output=True, timeout=30, check=False
                ).returncode
                == 0
            ):
                return candidate
    raise DrasillUnavailable("no working Python >= 3.13 found (Drasill 1.0.0 requires it)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DrasillServer:
    """A private Drasill 1.0.0 server for one benchmark run."""

    def __init__(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="drasill-baseline-"))
        self.venv = self.work / "venv"
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.install_s = 0.0
        self.python = ""

    # ---- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> DrasillServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> DrasillServer:
        """Install into a throwaway venv and start the server; DrasillUnavailable on failure."""
        self._install()
        self._serve()
        return self

    def _install(self) -> None:
        self.python = find_python313()
        began = time.perf_counter()
        steps = [
            [self.python, "-m", "venv", str(self.venv)],
            [
                str(self.venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                f"drasill=={VERSION}",
            ],
        ]
        for argv in steps:
            try:
                done = subprocess.run(
                    argv, capture_output=True, timeout=INSTALL_TIMEOUT_S, check=False
                )
            except subprocess.TimeoutExpired:
                raise DrasillUnavailable(f"`{' '.join(argv[:4])}` took too long") from None
            if done.returncode != 0:
                tail = done.stderr.decode(errors="replace").strip().splitlines()[-3:]
                raise DrasillUnavailable(
                    f"`{' '.join(argv[-2:])}` failed: {' / '.join(tail) or done.returncode}"
                )
        self.install_s = time.perf_counter() - began

    def _serve(self) -> None:
        config = self.work / "config.toml"
        config.write_text(f'[db]\npath = "{self.work / "dash.db"}"\n')
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("DRASILL_")}
        env["DRASILL_CONFIG"] = str(config)
        self.proc = subprocess.Popen(
            [
                str(self.venv / "bin" / "python"),
                "-m",
                "uvicorn",
                "drasill.app:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
            cwd=self.work,
            stdout=subprocess.DEVNULL,
            stderr=(self.work / "server.log").open("wb"),
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = (self.work / "server.log").read_text(errors="replace")[-400:]
                raise DrasillUnavailable(f"the Drasill server exited at start-up: {log}")
            with contextlib.suppress(OSError):
                if self.request("GET", "/health")[0] == 200:
                    return
            time.sleep(0.1)
        raise DrasillUnavailable(f"the Drasill server did not answer within {START_TIMEOUT_S}s")

    def stop(self) -> None:
        """Stop the server (TERM, then KILL) and delete the throwaway directory."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.work, ignore_errors=True)

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise DrasillUnavailable("the server is not running")
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- one-off requests (setup and checks) ---------------------------------------------

    def request(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            body = None if payload is None else json.dumps(payload)
            headers = {"Content-Type": "application/json"} if body else {}
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def register(self, name: str) -> None:
        status, body = self.request("POST", "/mesh/agents", {"name": name})
        if status not in (201, 409):
            raise DrasillUnavailable(f"register {name} answered {status}: {body}")

    # ---- curl command lines (one process per call, as agents use it) ---------------------

    def curl_send(self, to: str, body: str, sender: str = "human") -> list[str]:
        payload = json.dumps({"from_agent": sender, "body": body})
        return [
            "curl",
            "-sSf",
            "-o",
            "/dev/null",
            "-X",
            "POST",
            f"{self.url}/mesh/agents/{to}/inbox",
            "-H",
            "Content-Type: application/json",
            "-d",
            payload,
        ]

    def curl_consume(self, name: str) -> list[str]:
        return ["curl", "-sSf", "-o", "/dev/null", f"{self.url}/mesh/agents/{name}/inbox"]

    def curl_health(self) -> list[str]:
        return ["curl", "-sSf", "-o", "/dev/null", f"{self.url}/health"]


class KeepAliveClient:
    """One persistent HTTP/1.1 connection (what a long-lived agent process would hold)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def send(self, to: str, body: str, sender: str) -> None:
        payload = json.dumps({"from_agent": sender, "body": body})
        self.conn.request(
            "POST",
            f"/mesh/agents/{to}/inbox",
            body=payload,
            headers={"Content-Type": "application/json"},
        )
        response = self.conn.getresponse()
        response.read()
        if response.status != 201:
            raise RuntimeError(f"Drasill send answered {response.status}")

    def close(self) -> None:
        self.conn.close()
