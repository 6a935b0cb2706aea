"""`mesh prompt` and `mesh launch`: the onboarding block, detached sessions, registration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from drasill_cli import onboarding
from tests.conftest import MeshRunner
from tests.wake_support import (
    needs_tmux,
    wait_quiet,
    wait_until,
)

pytest_plugins = ["tests.wake_fixtures"]  # socket_dir, tmux_tmpdir

# A stand-in for `claude`: records its argv and mesh environment, then reads lines like a REPL.
FAKE_CLAUDE = """\
#!{python}
import json, os, sys
out = os.environ["FAKE_OUT"]
with open(out, "w") as f:
    json.dump({{"argv": sys.argv[1:], "agent": os.environ.get("DRASILL_AGENT"),
               "mesh": os.environ.get("DRASILL_MESH_DIR"), "cwd": os.getcwd()}}, f)
for line in sys.stdin:
    with open(out + ".lines", "a") as f:
        f.write(line)
"""


def test_prompt_is_short_and_names_the_essentials() -> None:
    text = onboarding.prompt("alpha")
    assert len(text) < 1800  # about 400 tokens at 4 characters a token
    assert len(text.split()) < 250
    for needed in (
        "alpha",
        "mesh send",
        "mesh inbox",
        "mesh next --wait 600",
        "mesh lock",
        "--json",
    ):
        assert needed in text
    assert "$DRASILL_AGENT" in onboarding.prompt()


def test_prompt_command_uses_the_identity(cli: MeshRunner) -> None:
    shown = cli.json("prompt", env={"DRASILL_AGENT": "bravo"})
    assert shown["name"] == "bravo"
    assert "You are agent bravo" in shown["prompt"]
    plain = cli.run("prompt", "charlie")
    assert plain.returncode == 0
    assert plain.stdout == onboarding.prompt("charlie") + "\n"
    assert cli.run("prompt", "Bad Name").returncode == 2


def _parses(path: Path) -> bool:
    """Whether `path` exists and holds one complete JSON value."""
    try:
        json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return True


@pytest.fixture
def fake_tools(tmp_path: Path) -> Path:
    """A bin folder holding a fake `claude`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    claude = bin_dir / "claude"
    claude.write_text(FAKE_CLAUDE.format(python=sys.executable))
    claude.chmod(0o755)
    return bin_dir


def test_launch_heimdall_without_hm_is_refused_with_how_to_install(
    cli: MeshRunner, fake_tools: Path
) -> None:
    env = {"PATH": f"{fake_tools}:/usr/bin:/bin"}
    if any((Path(p) / "hm").exists() for p in env["PATH"].split(":")):
        pytest.skip("hm is installed here")
    done = cli.run("launch", "alpha", "--backend", "heimdall", env=env)
    assert done.returncode == 2
    assert "heimdall (hm) is not on PATH" in done.stderr
    assert "cargo install" in done.stderr
    assert cli.run("launch", "alpha", "--tool", "no-such-tool", env=env).returncode == 2


@needs_tmux
def test_launch_tmux_starts_a_detached_registered_agent_that_can_be_woken(
    cli: MeshRunner,
    fake_tools: Path,
    tmp_path: Path,
    tmux_tmpdir: Path,
) -> None:

    out = tmp_path / "claude.json"
    env = {
        "PATH": f"{fake_tools}:{os.environ['PATH']}",
        "FAKE_OUT": str(out),
        "TMUX_TMPDIR": str(tmux_tmpdir),
    }
    done = cli.run(
        "launch", "alpha", "--backend", "tmux", "--role", "reviewer", "--ram-gb", "0.5",
        "--vram-gb", "0", "--json", "--", "--model", "x", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    agent = json.loads(done.stdout)
    assert (agent["name"], agent["backend"], agent["session"]) == ("alpha", "tmux", "mesh-alpha")
    assert (agent["role"], agent["ram_gb"]) == ("reviewer", 0.5)  # as `register` takes them
    assert agent["state"] == "active"
    assert agent["pid"] > 0
    # The file exists as soon as the fake tool opens it: wait until its JSON is complete.
    assert wait_until(lambda: _parses(out), 15), out.read_text() if out.exists() else "no file"
    seen = json.loads(out.read_text())
    assert seen["argv"] == ["--append-system-prompt", onboarding.prompt("alpha"), "--model", "x"]
    assert (seen["agent"], seen["mesh"]) == ("alpha", str(cli.mesh_dir))
    # The launching process has exited; the session lives on and is woken through tmux.
    listed = {a["name"]: a for a in cli.json("agents", env=env)}
    assert listed["alpha"]["state"] == "active"
    again = cli.run("launch", "alpha", "--backend", "tmux", env=env)
    assert again.returncode == 1
    assert "mesh-alpha" in again.stderr
    cli.config("[wake]\nidle_ms = 200\nenter_delay_ms = 20\n")
    assert cli.run("send", "alpha", "hi", "--as", "beta", env=env).returncode == 0
    wait_quiet("mesh-alpha", 0.2)
    assert cli.run("watch", "--once", env=env).returncode == 0
    lines = Path(f"{out}.lines")
    assert wait_until(lambda: lines.exists() and lines.read_text().endswith("\n"), 15), (
        lines.read_text() if lines.exists() else "nothing typed"
    )
    assert lines.read_text() == "[mesh] 1 new message from beta: run mesh inbox alpha\n"
    subprocess.run(["tmux", "kill-session", "-t", "=mesh-alpha"], check=False)


# A stand-in for `tmux` in front of the real one: records every command line it is given.
TMUX_SPY = """\
#!{python}
import json, os, sys
with open(os.environ["TMUX_ARGV_LOG"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
os.execv({tmux!r}, ["tmux", *sys.argv[1:]])
"""

# A stand-in for `claude` that records the mesh URL it was given.
URL_CLAUDE = """\
#!{python}
import json, os, sys, time
with open(os.environ["FAKE_OUT"] + ".tmp", "w") as f:
    json.dump({{"url": os.environ.get("DRASILL_MESH_URL"), "argv": sys.argv[1:]}}, f)
os.rename(os.environ["FAKE_OUT"] + ".tmp", os.environ["FAKE_OUT"])
time.sleep(60)
"""


@needs_tmux
def test_launch_tmux_keeps_the_mesh_url_off_every_command_line(
    cli: MeshRunner, tmp_path: Path, tmux_tmpdir: Path, pg_mesh_url: str
) -> None:
    """The URL (password included) reaches the agent by its environment, through a 0600 file
    the pane reads and removes; tmux's command line (visible to `ps`) never holds it."""
    import shutil

    real_tmux = shutil.which("tmux")
    assert real_tmux is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("tmux", TMUX_SPY), ("claude", URL_CLAUDE)):
        (bin_dir / name).write_text(text.format(python=sys.executable, tmux=real_tmux))
        (bin_dir / name).chmod(0o755)
    url = pg_mesh_url.replace("mesh@", "mesh:hunter2-secret@", 1)
    assert "hunter2-secret" in url
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    out, log = tmp_path / "claude.json", tmp_path / "tmux-argv.log"
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_OUT": str(out),
        "TMUX_ARGV_LOG": str(log),
        "TMUX_TMPDIR": str(tmux_tmpdir),
        "TMPDIR": str(private_tmp),
        "DRASILL_MESH_DIR": "",
        "DRASILL_MESH_URL": url,
    }
    try:
        done = cli.run("launch", "alpha", "--backend", "tmux", "--json", "--", "-x", env=env)
        assert done.returncode == 0, done.stderr
        assert "hunter2" not in done.stdout + done.stderr
        assert wait_until(out.exists, 15), "the tool did not start"
        seen = json.loads(out.read_text())
        assert seen["url"] == url  # the agent logs in as the launcher did
        assert seen["argv"] == ["--append-system-prompt", onboarding.prompt("alpha"), "-x"]
        calls = log.read_text()
        assert "new-session" in calls
        assert "hunter2" not in calls
        assert list(private_tmp.iterdir()) == [], "the environment file is left behind"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", "=mesh-alpha"], check=False)
