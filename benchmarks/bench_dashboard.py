"""`mesh dashboard`: change-to-page latency and idle RSS with 50 agents.

Run alone with `.venv/bin/python -m benchmarks.bench_dashboard [--rounds N] [--drasill]`, or as
the `dashboard` section of `python -m benchmarks`.

- Change-to-feed: a message is sent through the Python API and the clock stops when the
  dashboard's server-sent event carrying it arrives at a plain HTTP client (no browser).
- Change-to-page: the same with headless Chromium showing the page: a MutationObserver in the
  page notes `Date.now()` when the message's text appears; the send's wall-clock time is
  subtracted (one machine, one clock). Skipped, with the reason, without chromium.
- Idle RSS: the dashboard process over a mesh of 50 registered agents, after a quiet spell, with
  one page connected; beside it Drasill's server with 50 agents when that baseline runs.
- Memory bound (`--memory`, and in `measure(memory=True)`): 5,000 tasks with 2.8 KB bodies
  (14 MB of task text), 100 open pages (half reading, half never reading a byte), 20 changes;
  the dashboard's RSS and peak, the bytes a reading page got for its first view and per change.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Any

from benchmarks.drasill_baseline import DrasillServer, DrasillUnavailable
from benchmarks.harness import Scratch, mesh_argv, proc_status_kib, scratch
from drasill_cli import agents, messages, tasks
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh

AGENTS = 50
QUIET_S = 3.0
BIG_TASKS = 5000
BIG_BODY = 2800
PAGES = 100
BIG_CHANGES = 20

OBSERVE = """
window.__seen = {};
new MutationObserver(() => {
  for (const node of document.querySelectorAll('#messages li .body')) {
    if (!(node.textContent in window.__seen)) window.__seen[node.textContent] = Date.now();
  }
}).observe(document.getElementById('messages'), {childList: true, subtree: true});
"""


class Served:
    """A `mesh dashboard --no-open --port 0` over a scratch mesh."""

    def __init__(self, work: Scratch) -> None:
        self.proc = subprocess.Popen(
            [*mesh_argv(), "dashboard", "--no-open", "--port", "0"],
            env=work.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.url = self.proc.stdout.readline().strip() if self.proc.stdout else ""
        if not self.url:
            raise RuntimeError("mesh dashboard printed no URL")
        rest = self.url.removeprefix("http://")
        host_port, _, query = rest.partition("/?")
        self.host, _, port = host_port.partition(":")
        self.port = int(port)
        self.token = query.removeprefix("token=")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class EventStream:
    """A plain HTTP client on the dashboard's event stream."""

    def __init__(self, served: Served) -> None:
        self.conn = http.client.HTTPConnection(served.host, served.port, timeout=30)
        self.conn.request("GET", f"/events?token={served.token}")
        self.response = self.conn.getresponse()
        if self.response.status != 200:
            raise RuntimeError(f"event stream answered HTTP {self.response.status}")

    def until(self, text: str) -> float:
        """Read events until one contains `text`; the perf_counter time it arrived."""
        data: list[bytes] = []
        while True:
            line = self.response.readline()
            if not line:
                raise RuntimeError("event stream closed")
            if line.startswith(b"data:"):
                data.append(line)
            elif line in (b"\n", b"\r\n") and data:
                if text.encode() in b"".join(data):
                    return time.perf_counter()
                data = []

    def close(self) -> None:
        self.conn.close()


def _summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values_ms), 1),
        "min_ms": round(min(values_ms), 1),
        "max_ms": round(max(values_ms), 1),
    }


def _feed_latency(mesh: Mesh, served: Served, rounds: int) -> list[float]:
    stream = EventStream(served)
    try:
        stream.until('"mesh_dir"')  # the first view
        took = []
        for index in range(rounds):
            body = f"feed probe {index} {time.time_ns()}"
            started = time.perf_counter()
            messages.send(mesh, "agent-00", body, sender="human", wake=False)
            took.append((stream.until(body) - started) * 1000)
            time.sleep(0.3)
        return took
    finally:
        stream.close()


def _page_latency(mesh: Mesh, served: Served, rounds: int) -> list[float]:
    from tests.browser import Browser

    with Browser() as chrome:
        chrome.get(served.url)
        chrome.wait("return document.getElementById('live').textContent === 'live'", 20)
        chrome.run(OBSERVE)
        took = []
        for index in range(rounds):
            body = f"page probe {index} {time.time_ns()}"
            sent_ms = time.time() * 1000
            messages.send(mesh, "agent-00", body, sender="human", wake=False)
            seen = chrome.wait("return window.__seen[arguments[0]]", 10, body)
            took.append(float(seen) - sent_ms)
            time.sleep(0.3)
        return took


class Reader(threading.Thread):
    """A page that reads its event stream: the bytes of its first view and of what follows."""

    def __init__(self, served: Served) -> None:
        super().__init__(daemon=True)
        self.stream = EventStream(served)
        self.first = 0
        self.after = 0
        self.events = 0

    def run(self) -> None:
        data, payload = 0, False
        try:
            while True:
                line = self.stream.response.readline()
                if not line:
                    return
                data += len(line)
                if line.startswith(b"data:"):
                    payload = True
                elif line in (b"\n", b"\r\n"):
                    if payload and self.events == 0:
                        self.first = data
                    elif payload:
                        self.after += data
                    self.events += payload
                    data, payload = 0, False
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return  # the stream ended (the dashboard stops)


def _stalled(served: Served) -> socket.socket:
    """A page that asks for the stream and never reads a byte of it."""
    sock = socket.create_connection((served.host, served.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    request = (
        f"GET /events?token={served.token} HTTP/1.1\r\nHost: {served.host}:{served.port}\r\n\r\n"
    )
    sock.sendall(request.encode())
    return sock


def memory_bound(
    task_count: int = BIG_TASKS, pages: int = PAGES, changes: int = BIG_CHANGES
) -> dict[str, Any]:
    """The dashboard's memory over a big mesh with many pages open, half of them stalled."""
    work = scratch("dashboard-big")
    served: Served | None = None
    readers: list[Reader] = []
    stalled: list[socket.socket] = []
    try:
        mesh = Mesh.open(work.mesh_dir, Config())
        agents.register(mesh, "worker", pid=os.getpid())
        started = time.monotonic()
        ids = [
            tasks.add_task(mesh, f"task {i}", actor="human", body="b" * BIG_BODY)["id"]
            for i in range(task_count)
        ]
        setup_s = time.monotonic() - started
        served = Served(work)
        base = proc_status_kib(served.proc.pid)
        for index in range(pages):
            if index % 2:
                stalled.append(_stalled(served))
            else:
                reader = Reader(served)
                reader.start()
                readers.append(reader)
        time.sleep(2.0)
        for index in range(changes):
            if index % 2:
                tasks.claim(mesh, "worker", ids[index])
            else:
                messages.send(mesh, "worker", f"change {index}", sender="human", wake=False)
            time.sleep(0.3)
        time.sleep(1.0)
        status = proc_status_kib(served.proc.pid)
        got = [r for r in readers if r.events > 1]
        return {
            "tasks": task_count,
            "task_text_mb": round(task_count * BIG_BODY / 1e6, 1),
            "pages": pages,
            "stalled": len(stalled),
            "changes": changes,
            "setup_s": round(setup_s, 1),
            "start_kib": {"rss": base["VmRSS"], "peak": base["VmHWM"]},
            "kib": {"rss": status["VmRSS"], "peak": status["VmHWM"]},
            "first_view_bytes": max((r.first for r in readers), default=0),
            "bytes_per_change": round(
                statistics.median(r.after / max(1, r.events - 1) for r in got) if got else 0
            ),
        }
    finally:
        for sock in stalled:
            sock.close()
        for reader in readers:
            reader.stream.close()
        if served is not None:
            served.stop()
        work.cleanup()


def measure(
    rounds: int = 10, drasill: DrasillServer | None = None, *, memory: bool = True
) -> dict[str, Any]:
    """The dashboard's figures (and Drasill's server RSS with 50 agents, when given)."""
    from tests.browser import BrowserUnavailable, find_chromium

    work = scratch("dashboard")
    result: dict[str, Any] = {"agents": AGENTS, "rounds": rounds}
    served: Served | None = None
    try:
        mesh = Mesh.open(work.mesh_dir, Config())
        for index in range(AGENTS):
            agents.register(mesh, f"agent-{index:02d}", pid=os.getpid())
        served = Served(work)
        stream = EventStream(served)  # one page connected while idle
        try:
            stream.until('"mesh_dir"')
            time.sleep(QUIET_S)
            status = proc_status_kib(served.proc.pid)
        finally:
            stream.close()
        result["idle_50_agents_kib"] = {"rss": status["VmRSS"], "peak": status["VmHWM"]}
        result["change_to_feed"] = _summary(_feed_latency(mesh, served, rounds))
        try:
            find_chromium()
            result["change_to_page"] = _summary(_page_latency(mesh, served, rounds))
        except BrowserUnavailable as exc:
            result["change_to_page"] = {"skipped": str(exc)}
    finally:
        if served is not None:
            served.stop()
        work.cleanup()
    if memory:
        result["memory_bound"] = memory_bound()
    if drasill is not None:
        for index in range(AGENTS):
            drasill.register(f"dash-agent-{index:02d}")
        time.sleep(2.0)
        status = proc_status_kib(drasill.pid)
        result["drasill_server_kib"] = {"rss": status["VmRSS"], "peak": status["VmHWM"]}
    return result


def report(result: dict[str, Any]) -> list[str]:
    """The figures as table lines."""
    lines = [f"mesh dashboard, {result['agents']} agents, {result['rounds']} changes"]
    for key, label in (
        ("change_to_feed", "change to event stream (HTTP client)"),
        ("change_to_page", "change to page (headless Chromium)"),
    ):
        fig = result.get(key, {})
        if "skipped" in fig:
            lines.append(f"  {label:<46} skipped: {fig['skipped']}")
        elif fig:
            lines.append(
                f"  {label:<46} {fig['median_ms']:8.0f} ms  "
                f"min {fig['min_ms']:.0f}, max {fig['max_ms']:.0f}"
            )
    idle = result.get("idle_50_agents_kib")
    if idle:
        lines.append(
            f"  {'dashboard idle, 50 agents (RSS / peak)':<46} "
            f"{idle['rss'] / 1024:5.1f}/{idle['peak'] / 1024:.1f} MiB"
        )
    big = result.get("memory_bound")
    if big:
        lines.append(
            f"  {big['tasks']} tasks ({big['task_text_mb']} MB of bodies), {big['pages']} pages "
            f"({big['stalled']} stalled), {big['changes']} changes:"
        )
        lines.append(
            f"  {'dashboard RSS / peak':<46} {big['kib']['rss'] / 1024:5.1f}/"
            f"{big['kib']['peak'] / 1024:.1f} MiB (at start {big['start_kib']['rss'] / 1024:.1f})"
        )
        lines.append(
            f"  {'first view / each change, per page':<46} "
            f"{big['first_view_bytes'] / 1024:5.1f} KiB / {big['bytes_per_change'] / 1024:.1f} KiB"
        )
    server = result.get("drasill_server_kib")
    if server:
        lines.append(
            f"  {'Drasill server, 50 agents (RSS / peak)':<46} "
            f"{server['rss'] / 1024:5.1f}/{server['peak'] / 1024:.1f} MiB"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_dashboard")
    parser.add_argument("--rounds", type=int, default=10, help="changes to time (default 10)")
    parser.add_argument(
        "--drasill", action="store_true", help="also start Drasill 1.0.0 for its server RSS"
    )
    parser.add_argument(
        "--memory-only",
        action="store_true",
        help=f"only the memory bound ({BIG_TASKS} tasks, {PAGES} pages)",
    )
    args = parser.parse_args(argv)
    if args.memory_only:
        big = memory_bound()
        print("\n".join(report({"agents": 0, "rounds": 0, "memory_bound": big})))
        print(json.dumps(big))
        return 0
    drasill: DrasillServer | None = None
    if args.drasill:
        drasill = DrasillServer()
        try:
            drasill.start()
        except DrasillUnavailable as exc:
            print(f"Drasill baseline skipped: {exc}", file=sys.stderr)
            drasill.stop()
            drasill = None
    try:
        result = measure(args.rounds, drasill)
    finally:
        if drasill is not None:
            drasill.stop()
    print("\n".join(report(result)))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
