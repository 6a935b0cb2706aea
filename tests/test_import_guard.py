"""The hot commands stay light: `mesh send` and `mesh inbox` never import heavy modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from drasill_cli import messages
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner

# psycopg: only a URL mesh loads the database driver.
HEAVY = {
    "pydantic", "pydantic_core", "rich", "psutil", "filelock", "watchfiles", "pynvml", "psycopg",
}  # fmt: skip
# OpenSSL (a few ms): needed only when a message carries files or a path is locked, so plain
# sends and reads never load it.
NOT_FOR_PLAIN_MAIL = {"_hashlib"}

# Runs the real CLI entry point and reports, at exit, which heavy top-level packages it loaded.
PROBE = """
import atexit, json, sys
heavy = set(json.loads(sys.argv[1]))
def report():
    loaded = sorted({m.split(".")[0] for m in sys.modules} & heavy)
    sys.__stderr__.write("LOADED " + json.dumps(loaded) + "\\n")
atexit.register(report)
sys.argv = ["mesh", *sys.argv[2:]]
from drasill_cli.cli.app import main
main()
"""


def loaded_by(
    cli: MeshRunner, *args: str, stdin: str = "", heavy: set[str] = HEAVY
) -> tuple[int, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(sorted(heavy)), *args],
        input=stdin,
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("LOADED "))
    loaded: list[str] = json.loads(line.removeprefix("LOADED "))
    return done.returncode, loaded


@pytest.fixture
def ready(cli: MeshRunner) -> MeshRunner:
    cli.json("register", "alice")
    cli.json("register", "bob")
    mesh = Mesh.open(cli.mesh_dir, Config())
    for body in ("first", "second"):
        messages.send(mesh, "bob", body, sender="alice")
    return cli


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("send", "bob", "hello", "--as", "alice"), 0),
        (("send", "bob", "hello", "--as", "alice", "--priority", "urgent", "--json"), 0),
        (("send", "all", "hello", "--as", "alice", "--json"), 0),
        (("send", "nobody", "hello", "--json"), 3),
        (("inbox", "bob", "--peek", "--json"), 0),
        (("inbox", "bob", "--list"), 0),
        (("inbox", "bob", "--json"), 0),
        (("inbox", "--as", "bob"), 0),
        (("inbox", "alice", "--json"), 1),
        (("history", "bob", "--limit", "3", "--json"), 0),
    ],
)
def test_send_and_inbox_import_nothing_heavy(
    ready: MeshRunner, args: tuple[str, ...], code: int
) -> None:
    returncode, loaded = loaded_by(ready, *args, heavy=HEAVY | NOT_FOR_PLAIN_MAIL)
    assert returncode == code
    assert loaded == []


def test_send_with_stdin_body_and_attachment_imports_nothing_heavy(
    ready: MeshRunner, tmp_path: Path
) -> None:
    attachment = tmp_path / "notes.txt"
    attachment.write_text("notes")
    returncode, loaded = loaded_by(
        ready, "send", "bob", "-", "--attach", str(attachment), stdin="body on stdin\n"
    )
    assert (returncode, loaded) == (0, [])


def test_send_with_a_config_file_imports_nothing_heavy_after_the_first_run(
    ready: MeshRunner,
) -> None:
    """The first run after the config changed validates it with pydantic; later runs read the
    memo of it and stay as light as without a config."""
    ready.config("group_shared = false\n[lifecycle]\nidle_after = 60\n[store]\nfsync = true\n")
    send = ("send", "bob", "hello", "--as", "alice")
    assert loaded_by(ready, *send) == (0, ["pydantic", "pydantic_core"])
    assert loaded_by(ready, *send, heavy=HEAVY | NOT_FOR_PLAIN_MAIL) == (0, [])
    assert loaded_by(ready, "inbox", "bob", "--json", heavy=HEAVY | NOT_FOR_PLAIN_MAIL) == (0, [])


def test_inbox_wait_loads_only_watchfiles(ready: MeshRunner) -> None:
    returncode, loaded = loaded_by(ready, "inbox", "alice", "--wait", "0.2", "--json")
    assert returncode == 1
    assert set(loaded) <= {"watchfiles"}


def test_core_package_never_imports_the_cli_stack() -> None:
    code = (
        "import sys, drasill_cli.messages, drasill_cli.agents, drasill_cli.mesh; "
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'typer', 'click', 'rich'}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_command_module_map_matches_what_the_modules_register() -> None:
    """`main` loads one module per command: the map must name every command's module."""
    import importlib

    import typer.main

    from drasill_cli.cli.app import COMMAND_MODULES, load_commands
    from drasill_cli.cli.common import app

    load_commands()
    registered = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert registered == set(COMMAND_MODULES)
    for name, module in COMMAND_MODULES.items():
        source = importlib.import_module(f"drasill_cli.cli.{module}")
        assert f'"{name}"' in open(source.__file__ or "").read(), (name, module)


@pytest.fixture
def loop_mesh(cli: MeshRunner) -> tuple[MeshRunner, dict[str, str]]:
    """A mesh where every loop command has something to act on: tasks in each state."""
    from drasill_cli import tasks

    cli.json("register", "lead")
    cli.json("register", "worker")
    mesh = Mesh.open(cli.mesh_dir, Config())
    messages.send(mesh, "worker", "hello", sender="lead")
    ids: dict[str, str] = {}
    for name in ("queued", "start", "done", "fail", "release", "review", "reject"):
        task = tasks.add_task(mesh, name, actor="lead", review=name in ("review", "reject"))
        ids[name] = task["id"]
        if name != "queued":
            tasks.claim(mesh, "worker", task["id"])
    tasks.done(mesh, ids["review"], "worker", result="ok")
    tasks.done(mesh, ids["reject"], "worker", result="ok")
    return cli, ids


LOOP_COMMANDS: list[tuple[tuple[str, ...], set[str]]] = [
    (("claim", "--next", "--as", "worker"), set()),
    (("task", "start", "{start}", "--as", "worker"), set()),
    (("task", "done", "{done}", "--result", "ok", "--as", "worker"), set()),
    (("task", "fail", "{fail}", "--result", "no", "--as", "worker"), set()),
    (("task", "release", "{release}", "--as", "worker"), set()),
    (("task", "approve", "{review}", "--as", "lead"), set()),
    (("task", "reject", "{reject}", "--note", "redo", "--as", "lead"), set()),
    (("claim", "--next", "--wait", "0", "--as", "lead"), {"watchfiles"}),
    (("task", "show", "{queued}", "--json"), set()),
    (("task", "list", "--json"), set()),
    (("task", "list"), {"rich"}),  # the human table is drawn with rich
    (("lock", "{path}", "--as", "worker"), set()),
    (("unlock", "{path}", "--as", "worker"), set()),
    (("locks", "--json"), set()),
    (("heartbeat", "--as", "worker"), set()),
    (("agents", "--json"), set()),
    (("agents",), {"rich"}),
    (("history", "worker", "--json"), set()),
]


@pytest.mark.parametrize(
    ("args", "allowed"), LOOP_COMMANDS, ids=lambda v: " ".join(v) if isinstance(v, tuple) else ""
)
def test_every_loop_command_imports_nothing_heavy(
    loop_mesh: tuple[MeshRunner, dict[str, str]],
    tmp_path: Path,
    args: tuple[str, ...],
    allowed: set[str],
) -> None:
    cli, ids = loop_mesh
    target = tmp_path / "file.py"
    target.write_text("x")
    if args[0] == "unlock":
        cli.json("lock", str(target), "--as", "worker")
    filled = [arg.format(path=target, **ids) for arg in args]
    returncode, loaded = loaded_by(cli, *filled)
    assert returncode == 0
    assert set(loaded) <= allowed, loaded
