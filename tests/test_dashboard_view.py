"""The dashboard's view, in-process: what the page is sent (`dashboard.page_view`, a task's
detail, the latest messages) and the first HTML the server renders from it (`web.render`).

The real server and a real browser are in tests/test_dashboard.py; these need neither.
"""

from __future__ import annotations

import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import dashboard, lockpaths, locks, messages, tasks
from drasill_cli.describe import describe_event
from drasill_cli.errors import InvalidInput
from drasill_cli.mesh import Mesh
from drasill_cli.web import render
from tests.conftest import MeshRunner
from tests.test_lock_repos import make_repo

pytestmark = pytest.mark.both_backends

TOKEN = "tok-" + "x" * 40


def template() -> str:
    return resources.files("drasill_cli.web").joinpath("static", "index.html").read_text("utf-8")


def page_view(mesh: Mesh) -> dict[str, Any]:
    return dashboard.page_view(dashboard.view(mesh), [])


def busy(cli: MeshRunner, mesh: Mesh, where: Path) -> dict[str, Any]:
    """alice works on a task and holds a lock; a task waits on one in review; a hostile title."""
    cli.json("register", "alice", "--role", "<b>writer</b>")
    cli.json("register", "bob")
    working = tasks.add_task(mesh, "Index the corpus", actor="lead", priority=3)
    tasks.claim(mesh, "alice", working["id"])
    tasks.start(mesh, working["id"], "alice")
    review = tasks.add_task(mesh, "Write the notes", actor="lead", review=True)
    tasks.claim(mesh, "bob", review["id"])
    tasks.done(mesh, review["id"], "bob", "drafted")
    after = tasks.add_task(mesh, "Publish", actor="lead", depends_on=[review["id"]])
    hostile = tasks.add_task(mesh, "<script>alert(1)</script> {{TOKEN}} & co", actor="lead")
    path = str(where / "src" / "app.py")
    locks.acquire(mesh, [path], "alice")
    return {"working": working, "review": review, "after": after, "hostile": hostile}


def test_the_first_html_already_holds_the_mesh_escaped_and_script_free(
    cli: MeshRunner, tmp_path: Path
) -> None:
    with cli.open() as mesh:
        made = busy(cli, mesh, tmp_path)
        html = render.page(template(), page_view(mesh), TOKEN, "hu<man")
    # the live state is there before any event: agents, cards by state, the lock, the counts
    assert '<tr data-name="alice"' in html and '<tr data-name="bob"' in html
    for task, state in ((made["working"], "working"), (made["review"], "review")):
        assert re.search(rf'data-id="{task["id"]}" data-state="{state}"', html), task["id"]
    assert f"waits on {made['review']['id']} (review)" in html
    assert "held by alice" in html and "held by bob" in html
    assert 'id="locks-count" class="dim">(1)</span>' in html
    assert "(2: 2 active)" in html
    # every value from the mesh is text: no markup, no slot read twice, the actor escaped
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;b&gt;writer&lt;/b&gt;" in html and "<b>writer</b>" not in html
    assert "{{TOKEN}} &amp; co" in html
    assert 'data-actor="hu&lt;man"' in html
    # CSP-safe: one script, from the package; no inline style or handler
    assert re.findall(r"<script[^>]*>", html) == [f'<script src="/app.js?token={TOKEN}" defer>']
    assert not re.search(r"\sstyle=|\son[a-z]+=", html)
    assert not re.search(r"\{\{[A-Z_]+\}\}", html.replace("{{TOKEN}} &amp; co", ""))


def test_agents_show_their_current_task_locks_unread_and_host(
    cli: MeshRunner, tmp_path: Path
) -> None:
    with cli.open() as mesh:
        made = busy(cli, mesh, tmp_path)
        messages.send(mesh, "alice", "hello", sender="bob")
        view = page_view(mesh)
    alice = next(a for a in view["agents"] if a["name"] == "alice")
    assert alice["task"] == {
        "id": made["working"]["id"],
        "title": "Index the corpus",
        "state": "working",
        "others": 0,
    }
    assert (alice["locks_held"], alice["unread"]) == (1, 2)  # bob's review request, "hello"
    assert alice["host"]
    bob = next(a for a in view["agents"] if a["name"] == "bob")
    assert bob["task"]["state"] == "review"
    assert bob["locks_held"] == 0


@pytest.mark.skipif(shutil.which("git") is None, reason="needs the git binary")
def test_a_lock_in_a_git_repository_reads_as_the_terminal_writes_it(
    cli: MeshRunner, tmp_path: Path
) -> None:
    top, root = make_repo(tmp_path / "parser")
    cli.json("register", "alice")
    cli.json("lock", "src/a.py", "--as", "alice", cwd=top)
    with cli.open() as mesh:
        view = page_view(mesh)
        [lock] = locks.list_locks(mesh)
    [shown] = view["locks"]
    assert shown["shown"].startswith(f"src/a.py in repository {root[:8]}")
    assert shown["shown"] == lockpaths.shown(lock)  # one function for the terminal and the page
    terminal = " ".join(cli.run("locks", cwd=top).stdout.split())
    assert shown["shown"] in terminal
    page = render.page(template(), view, TOKEN, "human")
    assert f"src/a.py in repository {root[:8]}" in page
    assert lock["path"] not in re.sub(r'(data-path|title)="[^"]*"', "", page)
    lock_event = next(e for e in view["recent"] if e.get("event") == "lock")
    assert lock_event["what"] == f"alice lock src/a.py in repository {root[:8]}"
    assert describe_event({"event": "lock", "actor": "a", "paths": [lock["path"]]}).endswith(
        f"src/a.py in repository {root[:8]}"
    )


def test_a_tasks_detail_has_its_history_and_notes(cli: MeshRunner) -> None:
    cli.json("register", "alice")
    cli.json("register", "bob")
    with cli.open() as mesh:
        task = tasks.add_task(mesh, "Fix the lexer", actor="lead", body="all of it", review=True)
        tasks.claim(mesh, "bob", task["id"])
        tasks.done(mesh, task["id"], "bob", "first try")
        tasks.reject(mesh, task["id"], "alice", "the tests do not cover X")
        tasks.done(mesh, task["id"], "bob", "covered X")
        tasks.approve(mesh, task["id"], "human", note="thanks")
        other = tasks.add_task(mesh, "Unrelated", actor="lead")
        tasks.claim(mesh, "alice", other["id"])
        detail = dashboard.task_detail(mesh, task["id"])
    steps = [(h["event"], h["actor"]) for h in detail["history"]]
    assert steps == [
        ("task-add", "lead"),
        ("task-claim", "bob"),
        ("task-done", "bob"),
        ("task-reject", "alice"),
        ("task-done", "bob"),
        ("task-approve", "human"),
    ]
    reject = detail["history"][3]
    assert reject["note"] == "the tests do not cover X"
    assert reject["what"] == describe_event(
        {"event": "task-reject", "actor": "alice", "task": task["id"]}
    )
    assert all(h["time"] for h in detail["history"])
    assert (detail["body"], detail["result"], detail["review_note"]) == (
        "all of it",
        "covered X",
        "thanks",
    )
    assert (detail["state"], detail["approved_by"]) == ("completed", "human")


def test_latest_messages_say_who_read_them_and_what_is_attached(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.json("register", "alice")
    cli.json("register", "bob")
    notes = tmp_path / "notes.md"
    notes.write_text("x" * 2048)
    with cli.open() as mesh:
        files = [str(notes)]
        [first] = messages.send(mesh, "bob", "see the notes", sender="alice", attachments=files)
        [second] = messages.send(mesh, "alice", "thanks", sender="bob")
        messages.consume(mesh, "bob")
        latest = dashboard.latest_messages(mesh)
    by_id = {m["id"]: m for m in latest}
    assert by_id[first["id"]]["read"]["by"] == "bob"
    assert by_id[first["id"]]["read"]["at"]
    assert by_id[first["id"]]["attachments"] == [{"name": "notes.md", "size": 2048}]
    assert by_id[second["id"]]["read"] is None
    assert by_id[second["id"]]["attachments"] == []
    html = render.message_items({"messages": latest}, 0.0)
    assert "read by bob" in html and "unread" in html and "📎 notes.md 2.0 KiB" in html


def test_the_reject_form_and_the_server_agree_that_a_note_is_required(cli: MeshRunner) -> None:
    cli.json("register", "bob")
    with cli.open() as mesh:
        task = tasks.add_task(mesh, "Review me", actor="lead", review=True)
        tasks.claim(mesh, "bob", task["id"])
        tasks.done(mesh, task["id"], "bob", "done")
        with pytest.raises(InvalidInput) as refused:
            dashboard.reject(mesh, "human", {"id": task["id"], "note": "  "})
        assert refused.value.code == "missing-note"
        assert tasks.get_task(mesh, task["id"])["state"] == "review"
        approved = dashboard.approve(mesh, "human", {"id": task["id"], "note": ""})
        assert approved["state"] == "completed"
    page = template()
    assert "optional to approve, required to reject" in page
    assert "note (optional)" not in page


def test_what_a_task_waits_on_comes_from_the_core_when_it_says() -> None:
    by_id = {"t-1": {"id": "t-1", "state": "failed"}, "t-2": {"id": "t-2", "state": "working"}}
    queued = {"id": "t-3", "state": "queued", "depends_on": ["t-1", "t-2", "t-9"]}
    # without the core's `waits_on`: the dependencies not completed, their state from the board
    assert render.waits(queued, by_id) == [("t-1", "failed"), ("t-2", "working"), ("t-9", "?")]
    card = render.card(queued, by_id)
    assert "blocked for good: t-1 failed" in card
    # with it (ids and states, or ids alone): as the core says
    given = {**queued, "waits_on": [{"id": "t-2", "state": "working"}]}
    assert render.waits(given, by_id) == [("t-2", "working")]
    assert "waits on t-2 (working)" in render.card(given, by_id)
    assert render.waits({**queued, "waits_on": ["t-2"]}, by_id) == [("t-2", "working")]
    assert render.waits({**queued, "waits_on": []}, by_id) == []


def test_every_state_has_its_column_cancelled_included() -> None:
    view = {
        "tasks": [
            {"id": "t-1", "title": "gone", "state": "cancelled", "priority": 0},
            {"id": "t-2", "title": "new", "state": "queued", "priority": 0},
        ],
        "counts": {"tasks": {"cancelled": 1, "queued": 1}},
    }
    board = render.board(view)
    columns = re.findall(r'<div class="column" data-state="([a-z]+)"', board)
    assert columns == list(render.TASK_STATES)
    cancelled = board[board.index('data-state="cancelled"') :]
    assert 'data-id="t-1"' in cancelled and "cancelled (1)" in cancelled


def test_sizes_are_gib_at_the_terminals_precision() -> None:
    assert render.gib(3) == "3" and render.gib(0.256) == "0.26" and render.gib(None) == "-"
    assert render.gib(True) == "-"  # a flag is no size
    gauge = render.gauge(
        "RAM",
        {
            "limit_gb": 8,
            "declared_gb": 6,
            "agents_gb": 1.25,
            "free_gb": 2,
            "used_gb": 3,
            "total_gb": 16,
        },
    )
    assert "6 of 8 GiB declared" in gauge and "GB " not in gauge
    assert 'class="warn w8"' in gauge
    assert "GB" not in template().replace("GiB", "")
