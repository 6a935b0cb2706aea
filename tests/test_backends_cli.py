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


@pytest.fixture(params=["directory", "postgres"])
def either(request: pytest.FixtureRequest, cli: MeshRunner) -> MeshRunner:
    """The test's CLI runner, pointed at a fresh directory mesh or a fresh PostgreSQL schema."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("pg_mesh_url")
        del cli.env["DRASILL_MESH_DIR"]
        cli.env["DRASILL_MESH_URL"] = url
    return cli


def _ok(runner: MeshRunner, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = runner.run(*args, **kwargs)  # type: ignore[arg-type]
    assert done.returncode == 0, (args, done.returncode, done.stdout, done.stderr)
    return done


def test_the_working_loop(either: MeshRunner, tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "parser.py").write_text("# parser\n")
    _ok(either, "register", "alpha", "--role", "lead")
    _ok(either, "register", "beta", "--role", "coder")
    agents = either.json("agents")
    assert [a["name"] for a in agents] == ["alpha", "beta"]
    assert {a["state"] for a in agents} == {"active"}

    first = either.json("task", "add", "Write the parser", "--priority", "5", "--as", "alpha")
    either.json("task", "add", "Document the parser", "--review", "--as", "alpha")
    assert first["id"] == "t-0001"
    claimed = either.json("claim", "--next", "--as", "beta")
    assert claimed["id"] == "t-0001" and claimed["claimed_by"] == "beta"
    again = either.run("claim", first["id"], "--as", "alpha")
    assert again.returncode == 1, again.stderr

    _ok(either, "lock", "src/parser.py", "--as", "beta", cwd=project)
    taken = either.run("lock", "src/parser.py", "--as", "alpha", cwd=project)
    assert taken.returncode == 1 and "beta" in taken.stderr
    covered = either.run("lock", "src", "--mode", "read", "--as", "alpha", cwd=project)
    assert covered.returncode == 1

    sent = either.json("send", "alpha", "parser skeleton is in", "--as", "beta")
    assert sent[0]["to"] == "alpha" if isinstance(sent, list) else sent["to"] == "alpha"
    _ok(either, "task", "done", first["id"], "--result", "tokenizer and AST", "--as", "beta")
    _ok(either, "unlock", "src/parser.py", "--as", "beta", cwd=project)

    message = either.json("inbox", "--as", "alpha")
    assert message["body"] == "parser skeleton is in" and message["from"] == "beta"
    empty = either.run("inbox", "--as", "alpha")
    assert empty.returncode == 1 and not empty.stderr.startswith("error:")

    status = either.json("status")
    assert {a["name"] for a in status["agents"]} == {"alpha", "beta"}
    events = [json.loads(line) for line in _ok(either, "log", "--json").stdout.splitlines()]
    kinds = [e["event"] for e in events]
    for kind in ("register", "task-add", "task-claim", "send", "consume"):
        assert kind in kinds, kinds
    _ok(either, "prune")
    _ok(either, "unregister", "alpha", "--as", "alpha")
    _ok(either, "unregister", "beta", "--as", "beta")
    assert either.json("agents") == []


def test_inbox_wait_is_woken_by_a_send(either: MeshRunner) -> None:
    _ok(either, "register", "alpha")
    waiter = subprocess.Popen(
        either.argv("inbox", "--wait", "20", "--as", "alpha", "--json"),
        env=either.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(1.5)  # the waiter is watching by now
        started = time.monotonic()
        _ok(either, "send", "alpha", "wake up", "--as", "human")
        out, err = waiter.communicate(timeout=20)
        woke_after = time.monotonic() - started
    finally:
        waiter.kill()
    assert waiter.returncode == 0, err
    assert json.loads(out)["body"] == "wake up"
    assert woke_after < 5, woke_after


def test_racing_claimers_each_task_once(either: MeshRunner) -> None:
    for index in range(8):
        either.json("task", "add", f"job {index}", "--as", "lead")
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
                *either.argv("claim", "--next", "--json", "--as", f"w{i}"),
            ],
            env=either.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    won = [tid for proc in claimers for tid in json.loads(proc.communicate(timeout=120)[0])]
    assert sorted(won) == [f"t-{n:04d}" for n in range(1, 9)]
