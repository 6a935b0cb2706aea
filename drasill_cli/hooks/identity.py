"""Who a hook acts as: `$DRASILL_AGENT`, else the agent registered on this host whose process
is an ancestor of the hook's process (some CLIs, Gemini's among them, give hooks a cleaned
environment).

The process tree is read from /proc (Linux) without psutil: the hook path stays light. Every
value read is checked before it names a process: a pid is a number in range, and an agent's
recorded pid counts only when that process's start time is the one recorded (`pid_started`),
so a recycled pid never lends anyone an identity.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from drasill_cli.errors import InvalidInput
from drasill_cli.names import check_agent_name

MAX_PID = 2**31 - 1
MAX_DEPTH = 64  # a process tree deeper than this is not one a CLI made
SHELLS = frozenset({"sh", "bash", "dash", "zsh", "ksh", "fish", "mksh", "ash", "busybox"})
START_TOLERANCE_S = 1.0  # /proc start times are in clock ticks; a recycled pid differs by more


class Process(NamedTuple):
    pid: int
    ppid: int
    started: float  # seconds since the epoch
    name: str


def this_host() -> str:
    """This machine's name as agent records hold it: `liveness.hostname`'s value, without
    importing liveness (it loads subprocess and shutil, which a hook with nothing to do skips)."""
    return os.uname().nodename


def agent_from_env(environ: Mapping[str, str]) -> str | None:
    """`$DRASILL_AGENT` when it is a valid agent name (InvalidInput when set but invalid)."""
    name = environ.get("DRASILL_AGENT", "").strip()
    if not name:
        return None
    check_agent_name(name)
    return name


def _boot_time() -> float | None:
    try:
        with open("/proc/stat", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("btime "):
                    value = line.split()[1]
                    return float(value) if value.isdigit() else None
    except OSError:
        return None
    return None


def process(pid: int, boot: float | None = None) -> Process | None:
    """One process as /proc says (None: gone, unreadable, or not Linux)."""
    if not 0 < pid <= MAX_PID:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            text = handle.read(4096)
    except OSError:
        return None
    open_paren, close_paren = text.find("("), text.rfind(")")
    if open_paren < 0 or close_paren < open_paren:
        return None
    fields = text[close_paren + 2 :].split()
    # fields[0] is the state (field 3 of proc(5)); ppid is field 4, starttime field 22.
    if len(fields) < 20 or not fields[1].isdigit() or not fields[19].isdigit():
        return None
    boot = _boot_time() if boot is None else boot
    if boot is None:
        return None
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    started = boot + int(fields[19]) / ticks
    return Process(pid, int(fields[1]), started, text[open_paren + 1 : close_paren])


def ancestors(pid: int | None = None) -> list[Process]:
    """The hook's ancestors, nearest first (its parent, the parent's parent, ... up to init)."""
    boot = _boot_time()
    if boot is None:
        return []
    chain: list[Process] = []
    current = os.getppid() if pid is None else pid
    while current > 1 and len(chain) < MAX_DEPTH:
        found = process(current, boot)
        if found is None or any(p.pid == found.pid for p in chain):
            break
        chain.append(found)
        current = found.ppid
    return chain


def cli_process(chain: Iterable[Process], stated: int | None = None) -> Process | None:
    """The CLI that ran the hook: the pid it states (`CLAUDE_PID`) when that is an ancestor,
    else the nearest ancestor that is not a shell (hooks run through `sh -c` or `$SHELL -lc`)."""
    chain = list(chain)
    if stated is not None:
        for proc in chain:
            if proc.pid == stated:
                return proc
    for proc in chain:
        if proc.name not in SHELLS and proc.name != "mesh":
            return proc
    return None


class Registered(NamedTuple):
    """What identity needs of an agent record."""

    name: str
    pid: int | None
    pid_started: float | None
    host: str


def agent_among(chain: Iterable[Process], agents: Iterable[Registered], host: str) -> str | None:
    """The agent registered on `host` whose process is in `chain` (the nearest one wins), its
    recorded start time matching the running process's."""
    by_pid: dict[int, list[Registered]] = {}
    for agent in agents:
        if agent.host == host and agent.pid is not None and agent.pid_started is not None:
            by_pid.setdefault(agent.pid, []).append(agent)
    for proc in chain:
        for agent in by_pid.get(proc.pid, []):
            if abs(proc.started - float(agent.pid_started or 0)) <= START_TOLERANCE_S:
                return agent.name
    return None


def valid_name(name: str) -> bool:
    try:
        check_agent_name(name)
    except InvalidInput:
        return False
    return True
