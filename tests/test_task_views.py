"""Tasks you can read (issue 27): what a queued task waits on, `--ready`, `--mine`, a claim that
names the waiting tasks, `task cancel` and `task edit`, tables that never wrap a record, and
hosts on a mesh that spans hosts. Each runs on a directory mesh and on a PostgreSQL mesh."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from drasill_cli.cli import views
from tests.conftest import MeshRunner

pytestmark = pytest.mark.both_backends


@pytest.fixture(autouse=True)
def _team(cli: MeshRunner) -> None:
    """The names these tests claim and move tasks as, registered (claiming takes one)."""
    cli.register("ann", "bob", "lead")


LONG = "refactor the parser so that every error names its line and column " * 3


def error_of(cli: MeshRunner, *args: str) -> tuple[int, dict[str, Any]]:
    done = cli.run(*args, "--json")
    assert done.returncode != 0, done.stdout
    return done.returncode, json.loads(done.stdout)["error"]


def line_of(text: str, task_id: str) -> str:
    [line] = [line for line in text.splitlines() if line.startswith(task_id)]
    return line


def test_list_shows_what_each_task_waits_on(cli: MeshRunner) -> None:
    first = cli.json("task", "add", "first", "--as", "lead")["id"]
    second = cli.json("task", "add", "second", "--depends", first, "--as", "lead")["id"]
    third = cli.json("task", "add", "third", "--depends", second, "--as", "lead")["id"]
    free = cli.json("task", "add", "free", "--as", "lead")["id"]
    cli.json("claim", first, "--as", "ann")
    listed = {task["id"]: task for task in cli.json("task", "list")}
    assert listed[second]["waits_on"] == [{"id": first, "state": "claimed"}]
    assert listed[third]["waits_on"] == [{"id": second, "state": "queued"}]
    assert listed[free]["waits_on"] == [] and listed[first]["waits_on"] == []
    assert not any(task["blocked"] for task in listed.values())
    human = cli.run("task", "list").stdout
    assert f"{first} (claimed)" in line_of(human, second)
    assert "blocked" not in human
    assert [task["id"] for task in cli.json("task", "list", "--ready")] == [free]

    cli.json("task", "fail", first, "--as", "ann")  # a dependency failed: blocked for good
    listed = {task["id"]: task for task in cli.json("task", "list")}
    assert listed[second]["blocked"] and listed[second]["waits_on"][0]["state"] == "failed"
    assert not listed[third]["blocked"]  # its own dependency is queued, not failed
    assert "blocked for good" in line_of(cli.run("task", "list").stdout, second)
    assert "blocked for good" in cli.run("task", "show", second).stdout


def test_ready_and_mine(cli: MeshRunner) -> None:
    mine = cli.json("task", "add", "lead's", "--as", "lead")["id"]
    other = cli.json("task", "add", "bob's", "--as", "bob")["id"]
    held = cli.json("task", "add", "held", "--as", "bob")["id"]
    cli.json("claim", held, "--as", "lead")
    assert [t["id"] for t in cli.json("task", "list", "--mine", "--as", "lead")] == [mine, held]
    assert [t["id"] for t in cli.json("task", "list", "--mine", "--as", "bob")] == [other, held]
    ready = cli.json("task", "list", "--ready", "--mine", "--as", "bob")
    assert [t["id"] for t in ready] == [other]
    code, error = error_of(cli, "task", "list", "--ready", "--state", "working")
    assert (code, error["code"]) == (2, "invalid-usage")
    assert error_of(cli, "task", "list", "--mine")[0] == 2  # no identity to be "mine"
    assert cli.run("task", "list", "--ready", "--state", "claimed").returncode == 2
    cli.json("claim", mine, "--as", "bob")
    cli.json("claim", other, "--as", "bob")
    empty = cli.run("task", "list", "--ready")
    assert empty.returncode == 0 and "no task is ready" in empty.stdout


def test_claim_next_names_the_waiting_tasks(cli: MeshRunner) -> None:
    first = cli.json("task", "add", "first")["id"]
    second = cli.json("task", "add", "second", "--depends", first)["id"]
    cli.json("claim", first, "--as", "ann")
    code, error = error_of(cli, "claim", "--next", "--as", "bob")
    assert (code, error["code"], error["waiting"]) == (1, "nothing-claimable", 1)
    [waits] = error["waits"]
    assert waits["id"] == second and waits["waits_on"] == [{"id": first, "state": "claimed"}]
    human = cli.run("claim", "--next", "--as", "bob")
    assert human.returncode == 1 and not human.stderr.startswith("error:")
    assert f"{second} waits on {first} (claimed)" in human.stderr
    cli.json("task", "fail", first, "--as", "ann")
    blocked = cli.run("claim", "--next", "--as", "bob").stderr
    assert f"{second} is blocked for good by {first} (failed)" in blocked


def test_cancel_by_its_creator_or_with_force(cli: MeshRunner) -> None:
    task = cli.json("task", "add", "one", "--as", "lead")["id"]
    after = cli.json("task", "add", "two", "--depends", task, "--as", "lead")["id"]
    before = cli.snapshot()
    code, error = error_of(cli, "task", "cancel", task, "--as", "ann")
    assert (code, error["code"]) == (1, "not-creator") and "--force" in error["message"]
    assert cli.snapshot() == before
    cancelled = cli.json("task", "cancel", task, "--note", "not needed", "--as", "lead")
    assert cancelled["state"] == "cancelled"
    assert cli.json("task", "show", task)["state"] == "cancelled"
    dependent = cli.json("task", "show", after)
    assert dependent["blocked"] and dependent["waits_on"] == [{"id": task, "state": "cancelled"}]
    assert cli.json("task", "list", "--state", "cancelled")[0]["id"] == task
    code, error = error_of(cli, "task", "cancel", task, "--as", "lead")  # final already
    assert (code, error["code"]) == (1, "wrong-state") and "cancelled" in error["message"]
    [event] = [e for e in cli.events() if e.get("event") == "task-cancel"]
    assert (event["actor"], event["task"], event["note"]) == ("lead", task, "not needed")
    forced = cli.json("task", "cancel", after, "--force", "--as", "ann")
    assert forced["state"] == "cancelled"


def test_cancel_tells_a_claimant_and_spares_completed_tasks(cli: MeshRunner) -> None:
    cli.json("register", "ann")
    held = cli.json("task", "add", "held", "--as", "lead")["id"]
    done = cli.json("task", "add", "done", "--as", "lead")["id"]
    cli.json("claim", held, "--as", "ann")
    cli.json("claim", done, "--as", "ann")
    cli.json("task", "done", done, "--as", "ann")
    cancelled = cli.json("task", "cancel", held, "--note", "plans changed", "--as", "lead")
    assert cancelled["notified"] == ["ann"]
    told = cli.json("inbox", "ann")
    assert "cancelled by lead: plans changed" in told["body"]
    code, error = error_of(cli, "task", "cancel", done, "--force", "--as", "lead")
    assert (code, error["code"]) == (1, "wrong-state")
    code, error = error_of(cli, "task", "done", held, "--as", "ann")  # no longer hers
    assert code == 1


def test_edit_a_queued_task(cli: MeshRunner) -> None:
    base = cli.json("task", "add", "base")["id"]
    task = cli.json("task", "add", "draft", "--review")["id"]
    edited = cli.json(
        "task",
        "edit",
        task,
        "--title",
        "final",
        "--body",
        "details",
        "--priority",
        "7",
        "--depends",
        base,
        "--no-review",
        "--as",
        "lead",
    )
    assert (edited["title"], edited["body"], edited["priority"]) == ("final", "details", 7)
    assert (edited["depends_on"], edited["review"]) == ([base], False)
    assert cli.json("task", "show", task)["title"] == "final"
    [event] = [e for e in cli.events() if e.get("event") == "task-edit"]
    assert (event["actor"], event["task"]) == ("lead", task)
    assert event["changed"] == ["body", "depends_on", "priority", "review", "title"]

    freed = cli.json("task", "edit", task, "--no-depends")
    assert (freed["depends_on"], freed["waits_on"]) == ([], [])
    waits = cli.json("task", "edit", task, "--depends", base)["waits_on"]
    assert waits == [{"id": base, "state": "queued"}]

    before = cli.snapshot()
    for bad in (
        ["--depends", base, "--no-depends"],
        ["--title", ""],
        ["--priority", "99999999"],
        ["--depends", task],  # itself
        ["--depends", "t-0999"],
        [],  # nothing to change
    ):
        assert cli.run("task", "edit", task, *bad, "--json").returncode == 2, bad
    code, error = error_of(cli, "task", "edit", base, "--depends", task)  # a cycle
    assert (code, error["code"]) == (2, "dependency-cycle")
    assert cli.snapshot() == before

    cli.json("claim", base, "--as", "ann")
    code, error = error_of(cli, "task", "edit", base, "--title", "late")
    assert (code, error["code"]) == (1, "wrong-state") and "claimed" in error["message"]


def test_an_edited_priority_moves_the_task_in_the_queue(cli: MeshRunner) -> None:
    first = cli.json("task", "add", "first")["id"]
    second = cli.json("task", "add", "second")["id"]
    cli.json("task", "edit", second, "--priority", "5")
    assert cli.json("claim", "--next", "--as", "ann")["id"] == second
    cli.json("task", "edit", first, "--priority", "-3")
    assert cli.json("claim", "--next", "--as", "ann")["id"] == first
    assert error_of(cli, "claim", "--next", "--as", "ann")[1]["code"] == "nothing-claimable"


def test_piped_tables_keep_each_record_on_one_line(cli: MeshRunner) -> None:
    cli.json("register", "ann", "--role", "a role with many words " * 6)
    task = cli.json("task", "add", LONG.strip(), "--as", "ann")["id"]
    cli.json("send", "ann", LONG, "--as", "bob")
    cli.json("inbox", "ann")
    env = {"COLUMNS": "60"}
    listing = cli.run("task", "list", env=env).stdout
    assert len(listing.splitlines()) == 2  # a header and the one task
    assert LONG.strip() in line_of(listing, task)  # whole: nothing cut when piped
    agents = cli.run("agents", env=env).stdout.splitlines()
    ann = [line for line in agents if line.startswith("ann ")]  # ann, bob and lead: one line each
    assert len(agents) == 4 and len(ann) == 1 and "a role with many words " * 5 in ann[0]
    history = cli.run("history", "ann", env=env).stdout.splitlines()
    assert len(history) == 1 and LONG.strip() in history[0] and "bob -> ann" in history[0]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_terminal_tables_cut_titles_unless_wide(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    task = {
        "id": "t-0001",
        "state": "queued",
        "priority": 0,
        "claimed_by": None,
        "attempts": 0,
        "updated_at": None,
        "waits_on": [{"id": "t-0002", "state": "working"}],
        "blocked": False,
        "title": LONG,
    }
    for wide in (False, True):
        out = Terminal()
        monkeypatch.setattr("sys.stdout", out)
        views.tasks([task], None, False, wide)
        header, row = out.getvalue().splitlines()
        assert header.split()[-1] == "title"
        assert row.startswith("t-0001") and "t-0002 (working)" in row
        if wide:
            assert row.endswith(LONG.strip())
        else:
            assert len(row) == 100 and row.endswith("…")


def test_agents_and_status_show_hosts_when_the_mesh_spans_hosts(cli: MeshRunner) -> None:
    cli.json("register", "ann")
    with cli.open() as mesh:
        spans = mesh.spans_hosts
    host = cli.json("agents")[0]["host"]
    header = cli.run("agents").stdout.splitlines()[0]
    assert ("host" in header.split()) is spans
    assert (host in cli.run("agents").stdout.splitlines()[1]) is spans
    status = cli.run("status", env={"COLUMNS": "160"}).stdout
    assert (host in status) is spans
    assert cli.json("status")["spans_hosts"] is spans
