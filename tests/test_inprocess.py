"""The in-process runner (tests/inprocess.py) gives what a real `mesh` process gives.

Most CLI tests run `mesh` inside the test process; these run a sample of commands both ways and
require the same exit code, stdout and stderr, so the two modes cannot drift apart.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from drasill_cli import clock
from tests.conftest import MeshRunner

pytestmark = pytest.mark.both_backends

# Ids and time stamps differ between any two runs; everything else must not.
_VARYING = re.compile(r"m-[0-9a-z]{13}-[0-9a-z]{4}|\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")


def _shown(done: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    return done.returncode, _VARYING.sub("X", done.stdout), _VARYING.sub("X", done.stderr)


def _both(cli: MeshRunner, *args: str, input: str | bytes | None = None) -> tuple[int, str, str]:
    """`mesh ARGS` in process, then as a process: the same code and output, which is returned."""
    inside = _shown(cli.run(*args, input=input))
    if isinstance(input, bytes):  # MeshRunner's subprocess path takes text: pass bytes as given
        done = subprocess.run(
            cli.argv(*args), input=input, capture_output=True, env=cli.env, check=False
        )
        shown = (_VARYING.sub("X", out.decode()) for out in (done.stdout, done.stderr))
        outside = (done.returncode, *shown)
    else:
        outside = _shown(cli.run(*args, input=input, process=True))
    assert inside == outside, args
    return inside


def test_commands_give_the_same_code_and_output_in_process_as_in_a_process(
    cli: MeshRunner, tmp_path: Path
) -> None:
    assert _both(cli, "locks", "--json") == (0, "[]\n", "")  # loads one module of commands
    assert _both(cli)[0] == 0  # `mesh` alone: help, listing the commands in the same order
    assert _both(cli, "--version")[0] == 0
    assert _both(cli, "send", "--help")[0] == 0
    assert _both(cli, "register", "bob", "--json")[0] == 0
    assert _both(cli, "locks", "--json") == (0, "[]\n", "")
    for json_flag in ((), ("--json",)):
        # Not found: exit 3.
        assert _both(cli, "send", "ghost", "hi", "--as", "alice", *json_flag)[0] == 3
        assert _both(cli, "task", "show", "99", *json_flag)[0] == 3
        # Bad input, refused by the command or by the parser: exit 2.
        assert _both(cli, "inbox", "bob", "--wait", "-1", *json_flag)[0] == 2
        assert _both(cli, "inbox", "bob", "--bogus", *json_flag)[0] == 2
        assert _both(cli, "lock", str(tmp_path / "f"), "--ttl", "1e12", *json_flag)[0] == 2
        assert _both(cli, "no-such-command", *json_flag)[0] == 2
        # Input on stdin: refused when empty or not UTF-8, sent otherwise.
        assert _both(cli, "send", "bob", "-", "--as", "alice", *json_flag, input="")[0] == 2
        bad = b"\xff\xfe not utf-8"
        assert _both(cli, "send", "bob", "-", "--as", "alice", *json_flag, input=bad)[0] == 2
        body = "h\u00e9llo\r\nw\u00f6rld \u2713\n"
        assert _both(cli, "send", "bob", "-", "--as", "alice", *json_flag, input=body)[0] == 0
        # A negative outcome: exit 1 (bob's mail was taken above, one message each time).
        assert _both(cli, "inbox", "bob", *json_flag)[0] == 0
        assert _both(cli, "inbox", "bob", *json_flag)[0] == 1
    assert _both(cli, "log", "--json")[0] == 0


def test_a_run_leaves_the_test_process_as_it_found_it(cli: MeshRunner, tmp_path: Path) -> None:
    """Environment, working directory, streams, argv and clock are the run's own, then put
    back; a run in another working directory and environment sees them."""
    import os
    import sys

    before = (dict(os.environ), os.getcwd(), sys.stdout, sys.stderr, sys.stdin, list(sys.argv))
    outer = clock._current  # the clock in use, which a run must not replace
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = cli.run("register", "bob", "--json", cwd=elsewhere, env={"DRASILL_AGENT": "x"})
    assert done.returncode == 0, done.stderr
    assert '"cwd": ' + repr(str(elsewhere)).replace("'", '"') in done.stdout
    assert cli.json("send", "bob", "hi")["from"] == "human"  # DRASILL_AGENT was that run's only
    after = (dict(os.environ), os.getcwd(), sys.stdout, sys.stderr, sys.stdin, list(sys.argv))
    assert after == before
    assert clock._current is outer
