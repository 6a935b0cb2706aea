"""`mesh bridge`: an AI CLI as a task worker.

The bridge registers an agent, then loops: claim the next task, mark it working, run the tool
non-interactively on a prompt holding the task's title and body (in the task's working
directory), and record the exit status with the tail of stdout and stderr as the result: done
on exit 0, failed otherwise. While the tool runs the bridge heartbeats, so the agent stays
active; past `bridge.timeout` the tool's whole process group is killed and the task failed.

Output goes to temporary files, not pipes, so a chatty tool can never block on a full pipe,
and only the tail is kept.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import IO, Any

from drasill_cli import agents, tasks, tools
from drasill_cli.errors import InvalidInput, NegativeOutcome
from drasill_cli.mesh import Mesh
from drasill_cli.storage.changes import TASKS

KILL_GRACE_S = 5.0
IDLE_POLL_S = 30.0
MAX_HEARTBEAT_EVERY_S = 30.0

Report = Callable[[str, dict[str, Any]], None]


def _quiet(_event: str, _details: dict[str, Any]) -> None:
    """The default progress sink: report nothing."""


def prompt_for(task: dict[str, Any]) -> str:
    """The text the tool receives: the task's title and body, and how it will be judged."""
    parts = [f"Task {task['id']}: {task['title']}"]
    if task.get("body"):
        parts.append(str(task["body"]))
    parts.append(
        "Do this task in the current directory, then exit. Exit status 0 marks the task done; "
        "any other status marks it failed. Your last output lines are kept as the result."
    )
    return "\n\n".join(parts)


def start(mesh: Mesh, name: str, tool: str) -> tools.Profile:
    """Check the tool is known and installed, then register `name` as a bridge for it."""
    profile = tools.get(mesh.config, tool)
    if shutil.which(profile.executable) is None:
        raise InvalidInput(
            f"tool {tool!r} runs {profile.executable!r}, which is not on PATH; install it, or "
            "see `mesh tools` for what is installed",
            code="tool-not-installed",
        )
    agents.register(mesh, name, tool=tool, role="bridge", pid=os.getpid())
    return profile


def _tail(handle: IO[bytes], limit: int) -> str:
    size = handle.seek(0, os.SEEK_END)
    handle.seek(max(0, size - limit))
    text = handle.read().decode("utf-8", "replace")
    return ("..." + text) if size > limit else text


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the tool's whole process group; kill it if it ignores that."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _heartbeat_every(mesh: Mesh) -> float:
    return max(0.05, min(MAX_HEARTBEAT_EVERY_S, mesh.config.lifecycle.idle_after / 4))


def run_tool(mesh: Mesh, name: str, argv: list[str], cwd: str | None) -> dict[str, Any]:
    """Run `argv` to its end or the timeout, heartbeating; exit status and output tails."""
    limit = mesh.config.bridge.output_tail_bytes
    timeout = mesh.config.bridge.timeout
    beat = _heartbeat_every(mesh)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.monotonic()
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        timed_out = False
        try:
            while True:
                left = timeout - (time.monotonic() - began)
                if left <= 0:
                    timed_out = True
                    _stop(proc)
                    break
                try:
                    proc.wait(min(beat, left))
                    break
                except subprocess.TimeoutExpired:
                    mesh.touch_heartbeat(name)
        except BaseException:
            _stop(proc)  # interrupted: never leave the tool running unsupervised
            raise
        return {
            "exit_status": proc.returncode,
            "timed_out": timed_out,
            "seconds": round(time.monotonic() - began, 3),
            "stdout_tail": _tail(out, limit),
            "stderr_tail": _tail(err, limit),
        }


def result_text(outcome: dict[str, Any], limit: int) -> str:
    """The task's result: exit status first, then the tails, cut to fit the result limit."""
    if outcome["timed_out"]:
        head = (
            f"timed out after {outcome['seconds']:g}s (killed); "
            f"exit status {outcome['exit_status']}"
        )
    else:
        head = f"exit status {outcome['exit_status']}"
    text = (
        f"{head}\n--- stdout (tail) ---\n{outcome['stdout_tail']}"
        f"\n--- stderr (tail) ---\n{outcome['stderr_tail']}"
    )
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: max(0, limit - 3)].decode("utf-8", "ignore") + "..."


def _workdir(task: dict[str, Any]) -> tuple[str | None, str | None]:
    """The task's recorded directory (None: the bridge's own) and why it cannot be used."""
    cwd = task.get("cwd")
    if not cwd:
        return None, None
    if not os.path.isdir(cwd):
        return None, f"the task's working directory {cwd} does not exist"
    return str(cwd), None


def _not_run(stderr_tail: str) -> dict[str, Any]:
    """The outcome of a tool that never ran: no exit status, nothing printed but the reason."""
    return {
        "exit_status": None,
        "timed_out": False,
        "seconds": 0.0,
        "stdout_tail": "",
        "stderr_tail": stderr_tail,
    }


def work_once(
    mesh: Mesh, name: str, profile: tools.Profile, report: Report = _quiet
) -> dict[str, Any]:
    """Claim the next task and run the tool on it; NegativeOutcome (exit 1) if none is claimable.

    Returns the finished task with the run's outcome.
    """
    task = tasks.claim_next(mesh, name)
    report("claimed", {"task": task})
    task = tasks.start(mesh, task["id"], name)
    cwd, problem = _workdir(task)
    limit = mesh.config.messages.max_body_bytes
    if problem is not None:
        outcome = _not_run(problem)
        finished = tasks.fail(mesh, task["id"], name, f"not run: {problem}")
    else:
        argv = profile.argv(prompt_for(task))
        report("running", {"task": task, "argv": argv, "cwd": cwd or os.getcwd()})
        try:
            outcome = run_tool(mesh, name, argv, cwd)
        except (KeyboardInterrupt, SystemExit):
            tasks.release(mesh, task["id"], name, "bridge interrupted; back in the queue")
            raise
        except OSError as exc:
            outcome = _not_run(f"could not start {argv[0]}: {exc.strerror}")
        text = result_text(outcome, limit)
        succeeded = outcome["exit_status"] == 0 and not outcome["timed_out"]
        finish = tasks.done if succeeded else tasks.fail
        finished = finish(mesh, task["id"], name, text)
    mesh.append_audit_event(
        "bridge-run",
        name,
        task=task["id"],
        tool=profile.name,
        exit_status=outcome["exit_status"],
        timed_out=outcome["timed_out"],
        state=finished["state"],
    )
    result = {"task": finished, **outcome}
    report("finished", result)
    return result


def serve(
    mesh: Mesh,
    name: str,
    profile: tools.Profile,
    report: Report = _quiet,
    idle_poll: float = IDLE_POLL_S,
) -> Iterator[dict[str, Any]]:
    """Work task after task forever; between tasks, wait for new work and keep heartbeating.

    A task taken back from under the bridge (released by force) is reported and skipped.
    """
    waiting = False
    # Watched from before the first claim attempt: a task added after a failed claim wakes it.
    with mesh.backend.changes.watch(TASKS) as task_events:
        while True:
            try:
                yield work_once(mesh, name, profile, report)
                waiting = False
            except NegativeOutcome as exc:
                if exc.code != "nothing-claimable":
                    report("skipped", {"code": exc.code, "reason": exc.message})
                    continue
                if not waiting:
                    report("waiting", {"reason": exc.message})
                waiting = True
                mesh.touch_heartbeat(name)
                task_events.wait(min(idle_poll, _heartbeat_every(mesh)))
