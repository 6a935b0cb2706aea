"""`mesh bridge`: an AI CLI as a task worker, tested with fake CLIs on PATH."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from drasill_cli import bridge
from tests.conftest import MeshRunner

ECHO = """#!/bin/sh
echo "args: $*"
echo "cwd: $(pwd)"
echo "note on stderr" >&2
exit "${FAKE_EXIT:-0}"
"""


def _bin(tmp_path: Path, script: str = ECHO, name: str = "claude") -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / name
    tool.write_text(script)
    tool.chmod(0o755)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin"}


def test_bridge_once_completes_a_task_with_the_tools_output(
    cli: MeshRunner, tmp_path: Path
) -> None:
    env = _bin(tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    task = cli.json("task", "add", "Fix the parser", "--body", "see issue 4", cwd=work)
    done = cli.run("bridge", "--tool", "claude", "--as", "worker", "--once", "--json", env=env)
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    assert outcome["exit_status"] == 0 and outcome["timed_out"] is False
    after = cli.json("task", "show", task["id"])
    assert after["state"] == "completed"
    assert after["claimed_by"] == "worker"
    assert after["result"].startswith("exit status 0")
    assert "args: -p Task " in after["result"]
    assert "Fix the parser" in after["result"] and "see issue 4" in after["result"]
    assert f"cwd: {work.resolve()}" in after["result"]  # ran in the task's directory
    assert "note on stderr" in after["result"]
    agent = next(a for a in cli.json("agents", "--all") if a["name"] == "worker")
    assert agent["tool"] == "claude"


def test_a_failing_tool_fails_the_task_with_its_exit_status(
    cli: MeshRunner, tmp_path: Path
) -> None:
    env = {**_bin(tmp_path), "FAKE_EXIT": "3"}
    task = cli.json("task", "add", "Doomed")
    done = cli.run("bridge", "--tool", "claude", "--as", "worker", "--once", env=env)
    assert done.returncode == 0, done.stderr
    assert "failed" in done.stdout
    after = cli.json("task", "show", task["id"])
    assert after["state"] == "failed"
    assert after["result"].startswith("exit status 3")
    assert "note on stderr" in after["result"]


def test_a_tool_past_the_timeout_is_killed_and_the_task_failed(
    cli: MeshRunner, tmp_path: Path
) -> None:
    env = _bin(tmp_path, "#!/bin/sh\necho started\nsleep 60 &\nwait\n")
    cli.config("[bridge]\ntimeout = 1\n")
    task = cli.json("task", "add", "Too slow")
    began = time.monotonic()
    done = cli.run("bridge", "--tool", "claude", "--as", "worker", "--once", "--json", env=env)
    assert time.monotonic() - began < 30
    assert json.loads(done.stdout)["timed_out"] is True
    after = cli.json("task", "show", task["id"])
    assert after["state"] == "failed"
    assert after["result"].startswith("timed out after")
    assert "started" in after["result"]


def test_bridge_once_with_nothing_to_claim_exits_1(cli: MeshRunner, tmp_path: Path) -> None:
    env = _bin(tmp_path)
    done = cli.run("bridge", "--tool", "claude", "--as", "worker", "--once", "--json", env=env)
    assert done.returncode == 1
    assert json.loads(done.stdout)["error"]["code"] == "nothing-claimable"


def test_bridge_refuses_an_unknown_or_missing_tool(cli: MeshRunner, tmp_path: Path) -> None:
    env = _bin(tmp_path)
    unknown = cli.run("bridge", "--tool", "nonesuch", "--as", "w", "--once", "--json", env=env)
    assert unknown.returncode == 2
    assert json.loads(unknown.stdout)["error"]["code"] == "unknown-tool"
    missing = cli.run("bridge", "--tool", "codex", "--as", "w", "--once", "--json", env=env)
    assert missing.returncode == 2
    assert json.loads(missing.stdout)["error"]["code"] == "tool-not-installed"


def test_bridge_runs_a_configured_tool(cli: MeshRunner, tmp_path: Path) -> None:
    env = _bin(tmp_path, '#!/bin/sh\necho "got [$2]"\n', name="mycli")
    cli.config('[tools.mine]\ncommand = ["mycli", "--ask", "{prompt}"]\n')
    task = cli.json("task", "add", "Hello")
    done = cli.run("bridge", "--tool", "mine", "--as", "worker", "--once", env=env)
    assert done.returncode == 0, done.stderr
    result = cli.json("task", "show", task["id"])["result"]
    assert f"got [Task {task['id']}: Hello" in result


def test_bridge_loops_and_wakes_for_new_tasks(cli: MeshRunner, tmp_path: Path) -> None:
    env = {**cli.env, **_bin(tmp_path)}
    proc = subprocess.Popen(
        cli.argv("bridge", "--tool", "claude", "--as", "worker", "--json"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = cli.json("task", "add", "One")
        line = json.loads(proc.stdout.readline())
        assert line["task"]["id"] == first["id"] and line["task"]["state"] == "completed"
        added = time.monotonic()
        second = cli.json("task", "add", "Two")  # added while the bridge waits
        line = json.loads(proc.stdout.readline())
        assert line["task"]["id"] == second["id"] and line["task"]["state"] == "completed"
        # Woken by the file event, not by the 30 s poll that backs it up.
        assert time.monotonic() - added < bridge.IDLE_POLL_S / 2
    finally:
        proc.terminate()
        proc.wait(10)


def test_result_text_fits_the_limit_and_keeps_the_exit_status() -> None:
    outcome = {
        "exit_status": 1,
        "timed_out": False,
        "seconds": 1.0,
        "stdout_tail": "x" * 5000,
        "stderr_tail": "é" * 100,
    }
    text = bridge.result_text(outcome, 1000)
    assert len(text.encode()) <= 1000
    assert text.startswith("exit status 1")
