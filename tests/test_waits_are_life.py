"""Waits are life: a command blocked in `--wait` keeps its agent alive and its locks held
(issue 25, point 5)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from drasill_cli.keepalive import MAX_INTERVAL_S, MIN_INTERVAL_S, interval
from tests.conftest import MeshRunner

pytestmark = pytest.mark.both_backends


def _popen(cli: MeshRunner, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli.env
    )


def _agent(cli: MeshRunner, name: str) -> dict[str, object]:
    found = [a for a in cli.json("agents", "--all") if a["name"] == name]
    assert len(found) == 1, found
    return dict(found[0])


def test_a_9s_wait_with_dead_after_4_ends_alive_and_a_prune_meanwhile_keeps_its_locks(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.config("[lifecycle]\nidle_after = 1\ndead_after = 4\n")
    cli.json("register", "beta")  # no pid: only its heartbeat says it lives
    held = tmp_path / "held.py"
    held.write_text("x = 1\n")
    cli.json("lock", str(held), "--ttl", "4", "--as", "beta")
    waiter = _popen(cli, "claim", "--next", "--wait", "9", "--as", "beta")
    time.sleep(6.5)  # longer than dead_after and the lease since beta's last own command
    assert waiter.poll() is None, waiter.communicate()
    cli.json("prune")
    agent = _agent(cli, "beta")
    assert agent["state"] != "dead" and agent.get("dead_at") is None, agent
    locks = cli.json("locks")
    assert [(lock["holder"], lock["stale"]) for lock in locks] == [("beta", False)], locks
    # Another agent is refused the file beta holds.
    cli.register("gamma")
    other = cli.run("lock", str(held), "--as", "gamma")
    assert other.returncode == 1, (other.stdout, other.stderr)
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 1, (out, err)  # nothing to claim: an ordinary end
    assert "dead" not in err and "still nothing to claim" in err, err
    assert _agent(cli, "beta")["state"] != "dead"


@pytest.mark.parametrize(
    "command",
    [
        ("inbox", "--wait", "3", "--as", "beta"),
        ("lock", "{held}", "--wait", "3", "--as", "beta"),
        ("next", "--wait", "3", "--as", "beta"),
    ],
    ids=["inbox", "lock", "next"],
)
def test_every_wait_keeps_its_agent_alive_while_it_waits(
    cli: MeshRunner, tmp_path: Path, command: tuple[str, ...]
) -> None:
    cli.config("[lifecycle]\nidle_after = 0.5\ndead_after = 1\n")
    held = tmp_path / "held.py"
    held.write_text("x = 1\n")
    cli.json("register", "holder", "--pid", str(os.getpid()))  # alive as long as the test
    cli.json("lock", str(held), "--as", "holder", "--ttl", "600")  # so that `lock --wait` waits
    cli.json("register", "beta")
    waiter = _popen(cli, *(part.format(held=held) for part in command))
    time.sleep(2)  # twice dead_after since beta registered
    assert waiter.poll() is None, waiter.communicate()
    agent = _agent(cli, "beta")
    assert agent["state"] != "dead" and agent.get("dead_at") is None, agent
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 1, (out, err)
    assert "dead" not in err, err


def test_the_interval_is_a_third_of_the_shortest_of_dead_after_and_the_leases() -> None:
    assert interval(600.0, [600.0]) == MAX_INTERVAL_S
    assert interval(4.0, [600.0]) == pytest.approx(4 / 3)
    assert interval(600.0, [600.0, 6.0]) == pytest.approx(2.0)
    assert interval(0.1, []) == MIN_INTERVAL_S
