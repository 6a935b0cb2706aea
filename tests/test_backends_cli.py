"""The agents' working loop through the real CLI, on both kinds of mesh: a directory and a
PostgreSQL URL. Every command, exit code and JSON key must be the same on both (contract)."""

from __future__ import annotations

import json
import subprocess
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
