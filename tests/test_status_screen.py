"""The status screen fits the terminal: real tmux at 80x24, paths, ids, hidden counts, units."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import MeshRunner

pytest_plugins = ["tests.wake_fixtures"]  # tmux_tmpdir

SECTIONS = ("Agents (", "Tasks (", "Locks (", "Budgets (", "Recent")


def _busy(cli: MeshRunner, tmp_path: Path, tasks: int = 12, agents: int = 6) -> Path:
    work = tmp_path / "work"
    work.mkdir()
    for index in range(agents):
        cli.json("register", f"agent-{index}", "--role", "coder")
    ids = [cli.json("task", "add", f"task {index} " + "x" * 50)["id"] for index in range(tasks)]
    cli.json("claim", ids[0], "--as", "agent-0")
    cli.json("task", "done", ids[0], "--as", "agent-0")
    for index in range(4):
        (work / f"file-{index}.py").write_text("")
        cli.json("lock", str(work / f"file-{index}.py"), "--as", f"agent-{index}")
    for index in range(5):
        cli.json("send", "agent-1", f"note {index}", "--as", "agent-2")
    return work


def _tmux(*args: str) -> str:
    done = subprocess.run(["tmux", *args], capture_output=True, text=True, check=False)
    return done.stdout


def _capture_until(predicate: object, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = _tmux("capture-pane", "-p", "-t", "st")
        if predicate(screen):  # type: ignore[operator]
            return screen
        time.sleep(0.3)
    return screen


def _start_watch(cli: MeshRunner, cwd: Path) -> None:
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in cli.env.items() if k != "TMUX_TMPDIR")
    command = (
        f"cd {shlex.quote(str(cwd))} && env {env} {shlex.quote(sys.executable)} -m drasill_cli "
        "status --watch; echo EXIT=$?; sleep 60"
    )
    # bash runs it whatever the login shell: dash (a /bin/sh login) quits the whole line on a
    # Ctrl-C even when the program handled it, so `echo EXIT=$?` would never run.
    shell = f"exec bash -c {shlex.quote(command)}" if shutil.which("bash") else command
    _tmux("new-session", "-d", "-x", "80", "-y", "24", "-s", "st", shell)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.usefixtures("tmux_tmpdir")
def test_watch_at_80x24_shows_every_section_and_quits_on_q(cli: MeshRunner, tmp_path: Path) -> None:
    work = _busy(cli, tmp_path)
    _start_watch(cli, work)
    screen = _capture_until(lambda s: "quits" in s)
    lines = screen.rstrip("\n").splitlines()
    for title in SECTIONS:
        assert any(line.startswith(title) for line in lines), (title, screen)
    assert "q or Ctrl-C quits" in screen
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    assert "more open" in screen and "1 completed" in screen  # hidden things are counted
    assert "file-0.py" in screen  # paths relative to where the person stands
    assert str(work) not in screen
    _tmux("send-keys", "-t", "st", "q")
    assert "EXIT=0" in _capture_until(lambda s: "EXIT=" in s)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
@pytest.mark.usefixtures("tmux_tmpdir")
def test_watch_ctrl_c_exits_130(cli: MeshRunner, tmp_path: Path) -> None:
    cli.json("register", "alpha")
    _start_watch(cli, tmp_path)
    _capture_until(lambda s: "quits" in s)
    _tmux("send-keys", "-t", "st", "C-c")
    assert "EXIT=130" in _capture_until(lambda s: "EXIT=" in s)


def test_status_shows_whole_ids_relative_paths_and_hidden_counts(
    cli: MeshRunner, tmp_path: Path
) -> None:
    work = _busy(cli, tmp_path)
    ids = [t["id"] for t in cli.json("task", "list")]
    done = cli.run("status", env={"COLUMNS": "80"}, cwd=work)
    assert done.returncode == 0, done.stderr
    shown = [i for i in ids if i in done.stdout]
    assert len(shown) >= 5  # ids are whole, never cut
    assert "not shown: 1 more open, 1 completed (mesh task list)" in done.stdout
    assert "file-0.py " in done.stdout and str(work) not in done.stdout
    assert "ram GiB" in done.stdout and "GiB declared" in done.stdout and " GB" not in done.stdout
    assert max(len(line) for line in done.stdout.splitlines()) <= 80


def test_long_paths_are_cut_from_the_middle_only_when_the_width_demands(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.register("alpha")
    deep = tmp_path / ("d" * 30) / ("e" * 30) / "the-file-that-matters.py"
    deep.parent.mkdir(parents=True)
    deep.write_text("")
    cli.json("lock", str(deep), "--as", "alpha")
    narrow = cli.run("status", env={"COLUMNS": "80"}, cwd="/").stdout
    wide = cli.run("status", env={"COLUMNS": "200"}, cwd="/").stdout
    assert str(deep) in wide
    assert str(deep) not in narrow
    row = next(line for line in narrow.splitlines() if "the-file-that-matters.py" in line)
    assert row.startswith(str(tmp_path)[:10]) and "…" in row
    assert max(len(line) for line in narrow.splitlines()) <= 80


def test_fit_rows_keeps_every_section_within_the_height() -> None:
    from drasill_cli.cli.statusview import fit_rows

    snap = {
        "agents": [{}] * 40,
        "tasks": [{"state": "queued"}] * 30 + [{"state": "completed"}] * 9,
        "locks": [{}] * 12,
        "recent": [{}] * 20,
    }
    for height in (24, 30, 40):
        rows = fit_rows(snap, height)
        used = 2 + 3 + 4 * 2 + 3 + rows.agents + rows.tasks + rows.locks + rows.recent
        assert used <= height
        assert min(rows.agents, rows.tasks, rows.locks, rows.recent) >= 1
    tall = fit_rows({**snap, "agents": [{}] * 2}, 200)
    assert tall.agents == 2 and tall.tasks == 30 and tall.recent == 20
