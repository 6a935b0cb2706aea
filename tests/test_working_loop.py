"""The working loop, continued (issue 27): names you can trust, quiet pipes, task cwd, log
filters, unlock by every printed form. The CLI tests run on both backends."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MeshRunner

pytestmark = pytest.mark.both_backends


def failure(cli: MeshRunner, *args: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    done = cli.run(*args, "--json", **kwargs)
    assert done.returncode != 0, done.stdout
    return done.returncode, json.loads(done.stdout)["error"]


def test_task_add_records_the_top_of_the_git_work_tree(cli: MeshRunner, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    deep = repo / "src" / "pkg"
    deep.mkdir(parents=True)
    (repo / ".git").mkdir()  # found by looking, as lock paths are: no git process needed
    assert cli.json("task", "add", "parse", cwd=deep)["cwd"] == str(repo)
    outside = tmp_path / "loose"
    outside.mkdir()
    assert cli.json("task", "add", "docs", cwd=outside)["cwd"] == str(outside)


def closed_pipe(cli: MeshRunner, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `mesh ARGS` writing into a pipe whose reader is already gone (`| head` that quit)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            cli.argv(*args), stdout=write, stderr=subprocess.PIPE, env=cli.env, text=True,
            timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write)


def test_a_closed_pipe_ends_quietly_with_the_commands_status(cli: MeshRunner) -> None:
    cli.json("register", "alice")
    task = cli.json("task", "add", "parse", "--body", "x" * 5000)["id"]
    cli.json("send", "alice", "hello", "--as", "bob")
    for args in (("task", "show", task), ("export",), ("history", "alice"), ("task", "list")):
        done = closed_pipe(cli, *args)
        assert (done.returncode, done.stderr) == (0, ""), args
    missing = closed_pipe(cli, "task", "show", "t-9999")
    assert missing.returncode == 3 and "Broken pipe" not in missing.stderr


def git_repo(path: Path) -> Path:
    (path / "src").mkdir(parents=True)
    (path / "src" / "parser.py").write_text("")
    who = {"NAME": "a", "EMAIL": "a@b"}
    env = {
        **os.environ,
        **{f"GIT_{role}_{k}": v for role in ("AUTHOR", "COMMITTER") for k, v in who.items()},
    }
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "first"]):
        subprocess.run(["git", "-C", str(path), *args], check=True, env=env)
    return path


def test_unlock_takes_every_form_that_locks_prints(cli: MeshRunner, tmp_path: Path) -> None:
    repo = git_repo(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli.json("register", "alice")

    def lock() -> tuple[str, str]:
        cli.json("lock", "src/parser.py", "--as", "alice", cwd=repo)
        rows = cli.run("locks", cwd=elsewhere).stdout.splitlines()[1:]
        [shown] = [re.split(r"\s{2,}", row)[0] for row in rows]
        [listed] = cli.json("locks")
        return shown, listed["path"]

    shown, key = lock()
    assert shown.startswith("src/parser.py in repository ") and "(at " in shown
    forms = [shown, shown.split(" (at ")[0], key]
    for form in forms:
        [released] = cli.json("unlock", form, "--as", "alice", cwd=elsewhere)
        assert released["path"] == key, form
        lock()
    assert cli.json("unlock", "src/parser.py", "--as", "alice", cwd=repo)[0]["path"] == key
    code, error = failure(cli, "unlock", shown, "--as", "alice", cwd=elsewhere)
    assert (code, error["code"]) == (3, "lock-not-found")


def test_log_filters_by_agent_kind_and_task(cli: MeshRunner) -> None:
    cli.json("register", "alice")
    cli.json("register", "bob")
    first = cli.json("task", "add", "parse", "--as", "human")["id"]
    second = cli.json("task", "add", "docs", "--as", "human")["id"]
    cli.json("claim", first, "--as", "alice")
    cli.json("claim", second, "--as", "bob")

    def log(*args: str) -> list[tuple[str, str | None, str | None]]:
        lines = cli.run("log", *args, "--json").stdout.splitlines()
        return [(e["event"], e.get("actor"), e.get("task")) for e in map(json.loads, lines)]

    assert log("--agent", "bob") == [("register", "bob", None), ("task-claim", "bob", second)]
    assert log("--kind", "task-claim") == [
        ("task-claim", "alice", first),
        ("task-claim", "bob", second),
    ]
    assert log("--task", first) == [("task-add", "human", first), ("task-claim", "alice", first)]
    assert log("--task", first, "--agent", "bob") == []
    followed = subprocess.Popen(
        cli.argv("log", "--follow", "--json", "--kind", "task-done"),
        stdout=subprocess.PIPE, env=cli.env, text=True,
    )  # fmt: skip
    try:
        cli.json("task", "done", first, "--as", "alice")
        assert followed.stdout is not None
        event = json.loads(followed.stdout.readline())
        assert (event["event"], event["task"]) == ("task-done", first)
    finally:
        followed.kill()
        followed.wait()
    assert failure(cli, "log", "--agent", "no/such")[0] == 2


def test_an_outsider_of_a_group_shared_mesh_is_told_to_join_its_group(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from drasill_cli.backends.directory import store

    monkeypatch.setattr(os, "geteuid", lambda: 4242)
    monkeypatch.setattr(os, "getegid", lambda: 4242)
    monkeypatch.setattr(os, "getgroups", lambda: [4242])
    shared = os.stat_result((stat.S_IFDIR | stat.S_ISGID | 0o770, 0, 0, 2, 1001, 4343, 0, 0, 0, 0))
    for group_shared in (True, False):
        code, what, fix = store.folder_problem(shared, group_shared=group_shared) or ("", "", "")
        assert code == "unsafe-owner"
        assert "chown" not in fix and "usermod -aG" in fix, fix
        assert "4343" in what
    private = os.stat_result((stat.S_IFDIR | 0o700, 0, 0, 2, 1001, 1001, 0, 0, 0, 0))
    assert "chown" in (store.folder_problem(private, group_shared=False) or ("", "", ""))[2]


def test_unregistered_names_cannot_claim_lock_or_move_tasks(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.json("register", "alice")
    task = cli.json("task", "add", "parse", "--as", "human")["id"]  # adding stays open
    cli.json("send", "alice", "hello", "--as", "human")  # sending stays open
    for args in (("claim", task), ("claim", "--next"), ("lock", str(tmp_path / "f.py"))):
        code, error = failure(cli, *args, "--as", "alcie")
        assert code == 3, error
        assert error["code"] == "not-registered"
        assert "mesh register alcie" in error["message"]
    human = cli.run("claim", task, "--as", "alcie")
    assert human.returncode == 3 and "mesh register alcie" in human.stderr
    assert cli.json("claim", task, "--as", "alice")["claimed_by"] == "alice"
    for verb in ("start", "done", "fail", "release"):
        code, error = failure(cli, "task", verb, task, "--as", "alcie")
        assert (code, error["code"]) == (3, "not-registered"), verb
    assert cli.json("task", "show", task)["claimed_by"] == "alice"


def test_reviewing_stays_open_to_unregistered_names(cli: MeshRunner) -> None:
    cli.json("register", "alice")
    task = cli.json("task", "add", "parse", "--review", "--as", "human")["id"]
    cli.json("claim", task, "--as", "alice")
    cli.json("task", "done", task, "--as", "alice")
    assert cli.json("task", "approve", task, "--as", "human")["state"] == "completed"
