"""The agents' working loop through the real CLI, on both kinds of mesh: a directory and a
PostgreSQL URL. Every command, exit code and JSON key must be the same on both (contract)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import MeshRunner

pytestmark = pytest.mark.both_backends


def _ok(runner: MeshRunner, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = runner.run(*args, **kwargs)  # type: ignore[arg-type]
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    return done


def test_the_working_loop(cli: MeshRunner, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "parser.py").write_text("# parser\n")
    _ok(cli, "register", "alpha", "--role", "lead")
    _ok(cli, "register", "beta", "--role", "coder")
    agents = cli.json("agents")
    assert [a["name"] for a in agents] == ["alpha", "beta"]
    assert {a["state"] for a in agents} == {"active"}

    first = cli.json("task", "add", "Write the parser", "--priority", "5", "--as", "alpha")
    cli.json("task", "add", "Document the parser", "--review", "--as", "alpha")
    assert first["id"] == "t-0001"
    claimed = cli.json("claim", "--next", "--as", "beta")
    assert claimed["id"] == "t-0001" and claimed["claimed_by"] == "beta"
    again = cli.run("claim", first["id"], "--as", "alpha")
    assert again.returncode == 1, again.stderr

    _ok(cli, "lock", "src/parser.py", "--as", "beta", cwd=project)
    taken = cli.run("lock", "src/parser.py", "--as", "alpha", cwd=project)
    assert taken.returncode == 1 and "beta" in taken.stderr
    covered = cli.run("lock", "src", "--mode", "read", "--as", "alpha", cwd=project)
    assert covered.returncode == 1

    sent = cli.json("send", "alpha", "parser skeleton is in", "--as", "beta")
    assert sent[0]["to"] == "alpha" if isinstance(sent, list) else sent["to"] == "alpha"
    _ok(cli, "task", "done", first["id"], "--result", "tokenizer and AST", "--as", "beta")
    _ok(cli, "unlock", "src/parser.py", "--as", "beta", cwd=project)

    message = cli.json("inbox", "--as", "alpha")
    assert message["body"] == "parser skeleton is in" and message["from"] == "beta"
    empty = cli.run("inbox", "--as", "alpha")
    assert empty.returncode == 1 and not empty.stderr.startswith("error:")

    status = cli.json("status")
    assert {a["name"] for a in status["agents"]} == {"alpha", "beta"}
    events = [json.loads(line) for line in _ok(cli, "log", "--json").stdout.splitlines()]
    kinds = [e["event"] for e in events]
    for kind in ("register", "task-add", "task-claim", "send", "consume"):
        assert kind in kinds, kinds
    _ok(cli, "prune")
    _ok(cli, "unregister", "alpha", "--as", "alpha")
    _ok(cli, "unregister", "beta", "--as", "beta")
    assert cli.json("agents") == []


def test_inbox_wait_is_woken_by_a_send(cli: MeshRunner) -> None:
    _ok(cli, "register", "alpha")
    waiter = subprocess.Popen(
        cli.argv("inbox", "--wait", "20", "--as", "alpha", "--json"),
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # the waiter is watching by now
        started = time.monotonic()
        _ok(cli, "send", "alpha", "wake up", "--as", "human")
        out, err = waiter.communicate(timeout=20)
        woke_after = time.monotonic() - started
    finally:
        waiter.kill()
    assert waiter.returncode == 0, err
    assert json.loads(out)["body"] == "wake up"
    assert woke_after < 5, woke_after


def test_racing_claimers_each_task_once(cli: MeshRunner) -> None:
    for index in range(8):
        cli.json("task", "add", f"job {index}", "--as", "lead")
    script = (
        "import subprocess, sys, json\n"
        "won = []\n"
        "while True:\n"
        "    done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "    if done.returncode != 0:\n"
        "        break\n"
        "    won.append(json.loads(done.stdout)['id'])\n"
        "print(json.dumps(won))\n"
    )
    claimers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                script,
                *cli.argv("claim", "--next", "--json", "--as", f"w{i}"),
            ],
            env=cli.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    won = [tid for proc in claimers for tid in json.loads(proc.communicate(timeout=120)[0])]
    assert sorted(won) == [f"t-{n:04d}" for n in range(1, 9)]
