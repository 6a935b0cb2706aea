"""The agents' working loop (issue 16): review that can say no, waiting for work, plain lines
for ordinary outcomes, short ids in unbroken tables, leases that follow the holder's life,
unregister --force with archived mail, and a prompt that names only what exists.

Every test drives the real CLI in subprocesses, on a directory mesh and on a PostgreSQL mesh.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import typer.main

from drasill_cli import clock, onboarding
from drasill_cli.cli.app import load_commands
from drasill_cli.cli.common import app
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner
from tests.harness import directory_of

load_commands()

pytestmark = pytest.mark.both_backends


def inbox(cli: MeshRunner, name: str) -> list[dict[str, Any]]:
    """Every unread message of `name`, consumed."""
    found: list[dict[str, Any]] = []
    while True:
        done = cli.run("inbox", "--as", name, "--json")
        if done.returncode == 1:
            return found
        assert done.returncode == 0, done.stderr
        found.append(json.loads(done.stdout))


def register(cli: MeshRunner, *names: str) -> None:
    for name in names:
        cli.json("register", name)


def spawn(cli: MeshRunner, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli.argv(*args),
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


# ---- review --------------------------------------------------------------------------------


def test_reject_sends_the_task_back_with_the_note_and_approve_keeps_the_result(
    cli: MeshRunner,
) -> None:
    register(cli, "lead", "dev", "rev")
    task = cli.json("task", "add", "parser", "--review", "--as", "lead")
    cli.json("claim", task["id"], "--as", "dev")
    in_review = cli.json(
        "task", "done", task["id"], "--result", "parser v1, 3 tests", "--as", "dev"
    )
    assert (in_review["state"], in_review["notified"]) == ("review", ["lead"])
    [request] = inbox(cli, "lead")
    assert request["from"] == "dev"
    assert f"mesh task reject {task['id']}" in request["body"] and "parser v1" in request["body"]
    assert inbox(cli, "rev") == []  # only the creator is asked when the creator did not do it

    # A rejection needs a note: exit 2, nothing written.
    before = cli.snapshot()
    for bad in ([], ["--note", "  "]):
        done = cli.run("task", "reject", task["id"], *bad, "--as", "rev")
        assert done.returncode == 2, done.stderr
    assert cli.snapshot() == before
    # The author cannot judge its own work.
    self_review = cli.run("task", "reject", task["id"], "--note", "meh", "--as", "dev", "--json")
    assert (self_review.returncode, json.loads(self_review.stdout)["error"]["code"]) == (
        1,
        "self-review",
    )

    rejected = cli.json("task", "reject", task["id"], "--note", "handle empty input", "--as", "rev")
    assert (rejected["state"], rejected["claimed_by"]) == ("working", "dev")
    assert (rejected["review_note"], rejected["result"]) == (
        "handle empty input",
        "parser v1, 3 tests",
    )
    assert rejected["notified"] == ["dev"]
    [sent_back] = inbox(cli, "dev")
    assert sent_back["from"] == "rev" and "handle empty input" in sent_back["body"]
    assert f"mesh task done {task['id']}" in sent_back["body"]

    # Only the claimant works on it again; approve is refused until it is back in review.
    assert cli.run("task", "approve", task["id"], "--as", "rev").returncode == 1
    cli.json(
        "task", "done", task["id"], "--result", "parser v2, empty input handled", "--as", "dev"
    )
    assert len(inbox(cli, "lead")) == 1  # asked again
    approved = cli.json("task", "approve", task["id"], "--note", "good now", "--as", "rev")
    assert (approved["state"], approved["approved_by"]) == ("completed", "rev")
    assert approved["result"] == "parser v2, empty input handled"  # the author's words stay
    assert approved["review_note"] == "good now"
    [verdict] = inbox(cli, "dev")
    assert "approved by rev" in verdict["body"] and "good now" in verdict["body"]
    human = cli.run("task", "show", task["id"])
    assert "review_note:  good now" in human.stdout

    trail = [
        (e["event"], e["actor"], e.get("state"), e.get("note"))
        for e in cli.events()
        if e.get("task") == task["id"]
    ]
    assert trail == [
        ("task-add", "lead", "queued", None),
        ("task-claim", "dev", "claimed", None),
        ("task-done", "dev", "review", None),
        ("task-reject", "rev", "working", "handle empty input"),
        ("task-done", "dev", "review", None),
        ("task-approve", "rev", "completed", "good now"),
    ]


# The review round trip runs on both in test_reject_sends_the_task_back_with_the_note_and_...
def test_review_by_the_creator_itself_asks_every_other_live_agent(cli: MeshRunner) -> None:
    register(cli, "solo", "b", "c")
    cli.json("register", "gone", "--pid", str(_dead_pid()))
    task = cli.json("task", "add", "self-made", "--review", "--as", "solo")
    cli.json("claim", task["id"], "--as", "solo")
    done = cli.run("task", "done", task["id"], "--as", "solo")
    assert done.returncode == 0
    assert "told b, c by message" in done.stderr
    assert "approved" not in done.stdout and "[review, done by solo]" in done.stdout
    assert [len(inbox(cli, n)) for n in ("b", "c", "gone", "solo")] == [1, 1, 0, 0]
    approved = cli.run("task", "approve", task["id"], "--as", "b")
    assert "[completed, done by solo, approved by b]" in approved.stdout


def test_approve_no_longer_takes_result(cli: MeshRunner) -> None:
    cli.register("a", "b")
    task = cli.json("task", "add", "x", "--review")
    cli.json("claim", task["id"], "--as", "a")
    cli.json("task", "done", task["id"], "--result", "mine", "--as", "a")
    assert cli.run("task", "approve", task["id"], "--result", "theirs", "--as", "b").returncode == 2
    assert cli.json("task", "show", task["id"])["result"] == "mine"


# ---- waiting for work ------------------------------------------------------------------------


def _claim_waiter(cli: MeshRunner, name: str, wait: str = "60") -> subprocess.Popen[str]:
    waiter = spawn(cli, "claim", "--next", "--wait", wait, "--as", name, "--json")
    time.sleep(1.5)  # let it start and find nothing (if it has not, it simply claims at once)
    assert waiter.poll() is None, waiter.communicate()
    return waiter


def _claimed_after(waiter: subprocess.Popen[str], since: float) -> tuple[dict[str, Any], float]:
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    return json.loads(out), time.monotonic() - since


@pytest.mark.parametrize("trigger", ["new-task", "dependency-completed", "release"])
def test_claim_next_wait_wakes_on_the_event_that_frees_work(cli: MeshRunner, trigger: str) -> None:
    register(cli, "w", "other")
    base: dict[str, Any] = {}
    expected: dict[str, Any] = {}
    if trigger == "dependency-completed":
        base = cli.json("task", "add", "base")
        expected = cli.json("task", "add", "top", "--depends", base["id"])
        cli.json("claim", base["id"], "--as", "other")
    elif trigger == "release":
        expected = cli.json("task", "add", "held")
        cli.json("claim", expected["id"], "--as", "other")
    waiter = _claim_waiter(cli, "w")
    since = time.monotonic()
    if trigger == "new-task":
        expected = cli.json("task", "add", "fresh")
    elif trigger == "dependency-completed":
        cli.json("task", "done", base["id"], "--as", "other")
    else:
        cli.json("task", "release", expected["id"], "--as", "other")
    got, took = _claimed_after(waiter, since)
    assert (got["id"], got["claimed_by"]) == (expected["id"], "w")
    # Woken by the file event, well before the 5 s safety re-check (a poller would lag).
    assert took < 4.5, took


@pytest.mark.directory_only("plants the directory mesh's queue marker and task record")
def test_a_task_being_added_is_not_taken_for_a_stale_queue_marker(
    cli: MeshRunner, mesh_dir: Path
) -> None:
    # `task add` writes the queue marker, then the record, holding the task's lock; a waiting
    # claimer woken by the marker must wait for the record instead of dropping the marker.
    register(cli, "w")
    mesh = Mesh.open(mesh_dir, Config())
    now = clock.iso()
    record = {
        "id": "t-0001",
        "title": "racy",
        "state": "queued",
        "created_at": now,
        "updated_at": now,
    }
    with directory_of(mesh).store.lock("task-t-0001"):
        directory_of(mesh).store.touch("tasks/queued/1000000_t-0001.ref")
        claimer = spawn(cli, "claim", "--next", "--as", "w", "--json")
        time.sleep(1.5)  # it meets the marker and waits for the task's lock
        assert claimer.poll() is None, claimer.communicate()
        directory_of(mesh).store.write("tasks/t-0001.json", record)
    got, _ = _claimed_after(claimer, time.monotonic())
    assert (got["id"], got["state"]) == ("t-0001", "claimed")


def test_claim_next_wait_times_out_with_a_plain_line(cli: MeshRunner) -> None:
    register(cli, "w")
    blocked = cli.json("task", "add", "blocked", "--depends", cli.json("task", "add", "a")["id"])
    cli.json("claim", "1", "--as", "w")  # the dependency is taken; `blocked` stays unclaimable
    started = time.monotonic()
    done = cli.run("claim", "--next", "--wait", "1.5", "--as", "w")
    assert done.returncode == 1 and time.monotonic() - started >= 1.5
    assert not done.stderr.startswith("error:")
    assert done.stderr.startswith("still nothing to claim") and "waited 1.5s" in done.stderr
    as_json = cli.run("claim", "--next", "--wait", "0.2", "--as", "w", "--json")
    assert json.loads(as_json.stdout)["error"]["code"] == "nothing-claimable"
    assert cli.json("task", "show", blocked["id"])["state"] == "queued"
    assert cli.run("claim", blocked["id"], "--wait", "1", "--as", "w").returncode == 2


def test_ordinary_outcomes_are_plain_lines_and_faults_say_error(
    cli: MeshRunner, tmp_path: Path
) -> None:
    register(cli, "a", "b")
    target = tmp_path / "f.txt"
    cli.json("lock", str(target), "--as", "a")
    ordinary = [
        ("inbox", "--as", "a"),
        ("inbox", "--wait", "0.3", "--as", "a"),
        ("claim", "--next", "--as", "a"),
        ("claim", "--next", "--wait", "0.3", "--as", "a"),
        ("lock", str(target), "--wait", "0.3", "--as", "b"),
    ]
    for args in ordinary:
        done = cli.run(*args)
        assert done.returncode == 1, args
        assert done.stderr.count("\n") == 1 and not done.stderr.startswith("error:"), done.stderr
    denied = cli.run("lock", str(target), "--as", "b")  # a denial is exit 1 and says so
    assert denied.returncode == 1 and denied.stderr.startswith("error: ")
    assert cli.run("task", "show", "t-9999").stderr.startswith("error: ")


# ---- ids and tables --------------------------------------------------------------------------


def test_ids_are_short_sorted_and_every_form_shown_is_accepted(cli: MeshRunner) -> None:
    made = [cli.json("task", "add", f"task number {i}")["id"] for i in range(1, 12)]
    assert made == [f"t-{i:04d}" for i in range(1, 12)]
    assert sorted(made) == made
    assert cli.json("task", "show", "7")["id"] == "t-0007"
    assert cli.json("task", "show", "t-7")["id"] == "t-0007"
    assert cli.json("task", "show", "T-0011")["id"] == "t-0011"
    assert cli.run("task", "show", "t-00", "--json").returncode == 2  # ambiguous prefix
    assert cli.run("task", "show", "99").returncode == 3


@pytest.mark.parametrize("columns", ["20", "40", "80", "200"])
def test_tables_never_break_ids_or_paths(cli: MeshRunner, tmp_path: Path, columns: str) -> None:
    register(cli, "a-rather-long-agent-name")
    deep = tmp_path / "some" / "deeply" / "nested" / "folder" / "with_a_long_file_name.py"
    ids = [
        cli.json("task", "add", f"fix {deep} then tidy up the surrounding module {i}")["id"]
        for i in range(3)
    ]
    cli.json("claim", ids[0], "--as", "a-rather-long-agent-name")
    cli.json("lock", str(deep), "--as", "a-rather-long-agent-name")
    env = {"COLUMNS": columns}
    listing = cli.run("task", "list", env=env)  # piped, as agents call it
    assert listing.returncode == 0
    lines = listing.stdout.splitlines()
    for task_id in ids:
        [row] = [line for line in lines if task_id in line]
        assert row.split()[0] == task_id
        assert cli.json("task", "show", row.split()[0])["id"] == task_id  # copyable as shown
    assert sum(str(deep) in line for line in lines) == 3  # the path in titles stays whole
    assert "a-rather-long-agent-name" in listing.stdout
    locked = cli.run("locks", env=env)
    assert any(str(deep) in line for line in locked.stdout.splitlines())
    agents_table = cli.run("agents", env=env)
    assert "a-rather-long-agent-name" in agents_table.stdout


def test_wording_of_unlock_approve_and_empty_lists(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("a")
    target = tmp_path / "f"
    locked = cli.run("lock", str(target), "--as", "a")
    assert "lease" in locked.stdout and "until" in locked.stdout
    unlocked = cli.run("unlock", str(target), "--as", "a")
    assert unlocked.stdout.startswith("unlocked ") and "until" not in unlocked.stdout
    empty = cli.run("task", "list", "--state", "review")
    assert empty.stdout.strip() == "no tasks in state review"
    assert "mesh task add" in cli.run("task", "list").stdout


# ---- leases --------------------------------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_a_live_holder_keeps_its_lock_past_the_lease_while_it_keeps_working(
    cli: MeshRunner, tmp_path: Path
) -> None:
    register(cli, "editor", "other")
    target = tmp_path / "big.py"
    lock = cli.json("lock", str(target), "--ttl", "3", "--as", "editor")[0]
    for _ in range(4):  # 4 s of work, past the 3 s lease, with a mesh command now and then
        time.sleep(1)
        cli.json("heartbeat", "--as", "editor")
    denied = cli.run("lock", str(target), "--as", "other", "--json")
    assert denied.returncode == 1, denied.stdout
    [conflict] = json.loads(denied.stdout)["error"]["conflicts"]
    assert conflict["expires_at"] > lock["expires_at"]  # shown as extended by its heartbeat
    # Each look comes right after a sign of work, so a slow machine (one mesh command can
    # take a second under load) cannot let the lease lapse between the two.
    cli.json("heartbeat", "--as", "editor")
    [listed] = cli.json("locks")
    assert (listed["stale"], listed["expires_at"] > lock["expires_at"]) == (False, True)


def test_a_silent_holder_loses_its_lock_after_one_lease_and_is_told(
    cli: MeshRunner, tmp_path: Path
) -> None:
    register(cli, "sleeper", "other")
    target = tmp_path / "f.py"
    cli.json("lock", str(target), "--ttl", "1", "--as", "sleeper")
    time.sleep(1.5)  # silent for longer than its lease
    taken = cli.json("lock", str(target), "--as", "other")
    assert taken[0]["holder"] == "other"
    [told] = inbox(cli, "sleeper")
    assert (told["from"], told["priority"]) == ("other", "urgent")
    assert str(target) in told["body"] and "lapsed" in told["body"]
    assert "mesh lock" in told["body"]


def test_a_dead_holders_lock_frees_at_once(cli: MeshRunner, tmp_path: Path) -> None:
    cli.json("register", "ghost", "--pid", str(_dead_pid()))
    register(cli, "other")
    target = tmp_path / "f.py"
    cli.json("lock", str(target), "--ttl", "3600", "--as", "ghost")
    with cli.open() as mesh:
        assert [lock["holder"] for lock in mesh.backend.locks.all()] == ["ghost"]
    assert cli.json("lock", str(target), "--as", "other")[0]["holder"] == "other"
    assert inbox(cli, "ghost") == []  # nobody to tell


@pytest.mark.directory_only("never opens a mesh")
def test_lock_help_states_the_lease_rule(cli: MeshRunner) -> None:
    text = " ".join(cli.run("lock", "--help", env={"COLUMNS": "100"}).stdout.split())
    for needed in (
        "Lease rule",
        "last mesh command",
        "mesh heartbeat",
        "Relative paths",
        "new files",
    ):
        assert needed in text, needed


# ---- unregister ----------------------------------------------------------------------------


def test_unregistering_another_live_agent_needs_force_and_its_mail_is_archived(
    cli: MeshRunner,
) -> None:
    register(cli, "busy", "boss")
    cli.json("send", "busy", "first", "--as", "boss")
    cli.json("send", "busy", "second", "--as", "boss")
    before = cli.snapshot()
    for who in (["--as", "boss"], []):
        refused = cli.run("unregister", "busy", *who, "--json")
        assert refused.returncode == 1
        error = json.loads(refused.stdout)["error"]
        assert error["code"] == "agent-alive" and "busy" in error["message"]
        assert "--force" in error["message"]
    assert cli.snapshot() == before
    forced = cli.run("unregister", "busy", "--force", "--as", "boss")
    assert forced.returncode == 0, forced.stderr
    assert "mesh history busy --archived" in forced.stdout
    assert cli.run("agents", "--json").stdout.count('"busy"') == 0
    archived = cli.json("history", "busy", "--archived")
    assert [m["body"] for m in archived] == ["second", "first"]
    assert cli.run("history", "nobody", "--archived").stdout.startswith("no archived mail")


def test_an_agent_unregisters_itself_without_force(cli: MeshRunner) -> None:
    register(cli, "leaver")
    gone = cli.json("unregister", "leaver", env={"DRASILL_AGENT": "leaver"})
    assert (gone["name"], gone["archived"]) == ("leaver", 0)
    cli.json("register", "corpse", "--pid", str(_dead_pid()))
    assert cli.json("unregister", "corpse", "--as", "someone")["state"] == "dead"


# ---- the prompt ----------------------------------------------------------------------------


def _command_tree() -> dict[str, Any]:
    return dict(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def _options(command: Any) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def test_prompt_is_under_250_words_and_teaches_the_loop() -> None:
    text = onboarding.prompt()
    assert len(text.split()) < 250
    for needed in (
        "approve", "reject", "--note", "--wait", "--depends", "--review", "mesh heartbeat",
        "--ttl", "relative paths", "Exit 1", "mesh unlock",
    ):  # fmt: skip
        assert needed in text, needed


def test_prompt_answers_what_agents_had_to_guess() -> None:
    """Issue 25: registration is done for them, `task start` is optional, where --json goes,
    `mesh next --wait 600` is the loop, hooks deliver mail and lock files, waiting keeps locks;
    still under 250 words, with or without a name."""
    for text in (onboarding.prompt(), onboarding.prompt("a-rather-long-agent-name")):
        assert len(text.split()) < 250, len(text.split())
        for needed in (
            "You are registered already",
            "`mesh task start ID` is optional",
            "--json goes after the command (`mesh next --json`)",
            "The loop: `mesh next --wait 600`",
            "Waiting keeps you alive and your locks held",
            "Hooks, when installed, put your mail into your context and lock each file you edit",
        ):
            assert needed in text, needed
        assert "claim --next --wait" not in text  # the old loop is gone


def test_every_command_and_flag_the_prompt_names_exists() -> None:
    text = onboarding.prompt("alpha")
    commands = _command_tree()
    snippets = re.findall(r"`(mesh [^`]*)`", text)
    assert len(snippets) >= 12
    named_flags: set[str] = set()
    for snippet in snippets:
        words = snippet.split()[1:]
        command: Any = commands[words[0]]
        for word in words[1:]:
            sub = getattr(command, "commands", {})
            if word in sub:
                command = sub[word]
            elif word.startswith("--"):
                assert word in _options(command), f"{snippet}: {word}"
                named_flags.add(word)
        assert not hasattr(command, "commands"), f"{snippet} names a group, not a command"
    every_option = set()

    def walk(command: Any) -> None:
        every_option.update(_options(command))
        for sub in getattr(command, "commands", {}).values():
            walk(sub)

    walk(typer.main.get_command(app))
    for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", text):
        assert flag in every_option, flag
    # Bare words in backticks that stand for commands (`fail`, `done`) are task subcommands.
    for word in re.findall(r"`([a-z]+)`", text):
        if word not in ("all", "mesh"):
            assert word in commands["task"].commands, word


@pytest.mark.directory_only("never opens a mesh")
def test_prompt_command_prints_it(cli: MeshRunner) -> None:
    shown = cli.run("prompt", "alpha")
    assert shown.returncode == 0 and shown.stdout == onboarding.prompt("alpha") + "\n"
