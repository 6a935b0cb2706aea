"""End to end (issue 16): three scripted agents work a small project through the CLI alone.

alpha (the lead) adds three tasks that need review, two of them depending on the first, then
reviews: it sends the first back once, and approves everything else. beta and gamma are
workers: they wait for work with `claim --next --wait`, lock the file a task names, write it,
unlock, mark the task done, and wait for the verdict with `inbox --wait`, fixing and finishing
again when a task comes back. Nobody sleeps or polls: every wait is a mesh wait. When all three
are approved the lead adds one `stop` task per worker.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MeshRunner

AGENT = r'''
import json, re, subprocess, sys
from pathlib import Path

name, project, log = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
steps = []


def mesh(*args, ok=(0,)):
    who = [] if args[0] == "register" else ["--as", name]
    done = subprocess.run([sys.executable, "-m", "drasill_cli", *args, *who, "--json"],
                          capture_output=True, text=True, cwd=project, timeout=120)
    steps.append([list(args), done.returncode])
    log.write_text(json.dumps(steps))
    if done.returncode not in ok:
        sys.exit(f"{name}: mesh {args} exited {done.returncode}: {done.stdout} {done.stderr}")
    return json.loads(done.stdout) if done.stdout.strip() else None


def next_mail():
    message = mesh("inbox", "--wait", "90")
    return message["body"]


def lead():
    mesh("register", name, "--role", "lead")
    lib = mesh("task", "add", "write lib.py", "--review", "--body", "a greet() function")
    for title, priority in (("write test_lib.py", "1"), ("write README.md", "0")):
        mesh("task", "add", title, "--review", "--depends", lib["id"], "--priority", priority)
    approved, rejected = 0, False
    while approved < 3:
        body = next_mail()
        task_id = re.search(r"review requested: task (t-\d+)", body).group(1)
        if task_id == lib["id"] and not rejected:
            mesh("task", "reject", task_id, "--note", "lib.py needs a docstring")
            rejected = True
        else:
            mesh("task", "approve", task_id, "--note", "looks good")
            approved += 1
    for _ in range(2):
        mesh("task", "add", "stop")


def write(path, text):
    mesh("lock", path)  # relative: resolved against the project folder
    with open(project / path, "a") as f:
        f.write(text)
    mesh("unlock", path)


def worker():
    mesh("register", name, "--role", "worker")
    while True:
        task = mesh("claim", "--next", "--wait", "90")
        if task["title"] == "stop":
            mesh("task", "done", task["id"], "--result", "stopped")
            return
        path = task["title"].split()[-1]
        mesh("task", "start", task["id"])
        write(path, f"# {path}, written by {name}\n")
        mesh("task", "done", task["id"], "--result", f"wrote {path}")
        while True:
            body = next_mail()
            if f"task {task['id']} " not in body:
                continue
            if "sent back" in body:
                write(path, '"""Greetings."""\n')
                mesh("task", "done", task["id"], "--result", f"wrote {path}, added a docstring")
            elif "approved" in body:
                break


lead() if name == "alpha" else worker()
'''


def _events(mesh_dir: Path) -> list[dict[str, Any]]:
    lines = (mesh_dir / "audit" / "events.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.timeout(400)
def test_three_agents_work_a_project_with_dependencies_and_review(
    cli: MeshRunner, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    script = tmp_path / "agent.py"
    script.write_text(AGENT)

    def start(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(script), name, str(project), str(tmp_path / f"{name}.log")],
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    # The workers start first and wait for work that does not exist yet.
    agents = {name: start(name) for name in ("beta", "gamma")}
    agents["alpha"] = start("alpha")
    for name, proc in agents.items():
        try:
            _, err = proc.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            for other in agents.values():
                other.kill()
            pytest.fail(f"{name} did not finish: {(tmp_path / f'{name}.log').read_text()}")
        assert proc.returncode == 0, (name, err)

    tasks = {t["title"]: t for t in cli.json("task", "list")}
    assert sorted(tasks) == ["stop", "write README.md", "write lib.py", "write test_lib.py"]
    stops = [t for t in cli.json("task", "list") if t["title"] == "stop"]
    assert len(stops) == 2 and {t["claimed_by"] for t in stops} == {"beta", "gamma"}
    lib, tests_task, readme = (
        tasks[t] for t in ("write lib.py", "write test_lib.py", "write README.md")
    )
    assert (lib["id"], tests_task["depends_on"], readme["depends_on"]) == (
        "t-0001",
        [lib["id"]],
        [lib["id"]],
    )
    for task in (lib, tests_task, readme):
        assert (task["state"], task["approved_by"], task["review_note"]) == (
            "completed",
            "alpha",
            "looks good",
        )
        assert task["claimed_by"] in ("beta", "gamma")
    assert lib["result"] == "wrote lib.py, added a docstring"  # the author's, after the fix
    assert tests_task["result"] == "wrote test_lib.py"
    assert all(t["state"] == "completed" for t in stops)

    author = lib["claimed_by"]
    assert (project / "lib.py").read_text() == (
        f'# lib.py, written by {author}\n"""Greetings."""\n'
    )
    for task in (tests_task, readme):
        path = task["title"].split()[-1]
        assert (project / path).read_text() == f"# {path}, written by {task['claimed_by']}\n"

    # Messages: alpha was asked four times (lib twice); lib's author was sent back, then approved.
    asked = [m for m in cli.json("history", "alpha", "--limit", "100") if m["to"] == "alpha"]
    assert len(asked) == 4 and all(m["body"].startswith("review requested") for m in asked)
    verdicts = [
        m["body"]
        for m in reversed(cli.json("history", author, "--limit", "100"))
        if m["to"] == author and f"task {lib['id']} " in m["body"]
    ]
    assert len(verdicts) == 2
    assert "sent back" in verdicts[0] and "lib.py needs a docstring" in verdicts[0]
    assert "approved by alpha" in verdicts[1]
    assert cli.run("inbox", "--list", "--as", "alpha", "--json").stdout.strip() == "null"

    # The audit trail tells the whole story of the reviewed task, in order.
    trail = _events(cli.mesh_dir)
    lib_story = [
        (e["event"], e["actor"], e["state"], e.get("note"))
        for e in trail
        if e.get("task") == lib["id"]
    ]
    assert lib_story == [
        ("task-add", "alpha", "queued", None),
        ("task-claim", author, "claimed", None),
        ("task-start", author, "working", None),
        ("task-done", author, "review", None),
        ("task-reject", "alpha", "working", "lib.py needs a docstring"),
        ("task-done", author, "review", None),
        ("task-approve", "alpha", "completed", "looks good"),
    ]
    # Dependents were claimed only after lib was completed (the record times tell: the audit
    # line of an approval may land just after a claim it made possible).
    for task in (tests_task, readme):
        assert task["claimed_at"] > lib["updated_at"]
    # Every edit was made under a lock on the file's absolute path, released afterwards.
    locked = [e for e in trail if e["event"] == "lock"]
    unlocked = [e for e in trail if e["event"] == "unlock"]
    assert len(locked) == len(unlocked) == 4
    assert {p for e in locked for p in e["paths"]} == {
        str((project / f).resolve()) for f in ("lib.py", "test_lib.py", "README.md")
    }
    assert cli.json("locks") == []
