"""Take the dashboard's screenshots in docs/: an empty and a busy mesh, each at 1400 and 800
pixels wide (the first screen a person sees), in headless Chromium.

Run: `.venv/bin/python -m tests.dashboard_screenshot [FOLDER]` (default docs/). Writes
dashboard-empty-1400.png, dashboard-empty-800.png, dashboard-busy-1400.png and
dashboard-busy-800.png.

The busy mesh is built with the real commands: five agents (one dead), tasks in every state
(one waiting on another, one blocked for good by a failed one, one in review), locks on files
of a git repository and a plain path, messages read and unread, one with an attachment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.browser import Browser

ROOT = Path(__file__).resolve().parent.parent
MESH = [sys.executable, "-m", "drasill_cli"]
SIZES = ((1400, 900), (800, 1000))


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRASILL_", "TMUX", "GIT_"))}
    return {**env, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}


def mesh(mesh_dir: Path, env: dict[str, str], *args: str, cwd: Path | None = None) -> str:
    """Run `mesh --mesh-dir MESH_DIR ARGS...`; its stdout (it must succeed)."""
    done = subprocess.run(
        [*MESH, "--mesh-dir", str(mesh_dir), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"mesh {' '.join(args)}: exit {done.returncode}: {done.stderr}")
    return done.stdout.strip()


def busy_mesh(base: Path, env: dict[str, str], pid: str) -> Path:
    """A mesh in the middle of a project (see the module's docstring); the live agents' life
    is the process `pid`."""
    mesh_dir = base / "mesh"
    repo = base / "parser"
    (repo / "src").mkdir(parents=True)
    for name in ("parser.py", "lexer.py", "ast.py"):
        (repo / "src" / name).write_text(f"# {name}\n")
    git = ["git", "-c", "user.name=demo", "-c", "user.email=demo@example.com"]
    for step in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "start"]):
        subprocess.run([*git, *step], cwd=repo, env=env, check=True)
    for name, role, ram in (
        ("lead", "planner", "2"),
        ("alice", "parser", "6"),
        ("bob", "lexer", "4"),
        ("carol", "reviewer", "2"),
    ):
        mesh(
            mesh_dir,
            env,
            "register",
            name,
            "--role",
            role,
            "--tool",
            "claude",
            "--ram-gb",
            ram,
            "--pid",
            pid,
        )
    mesh(mesh_dir, env, "register", "dave", "--role", "tests", "--tool", "codex")

    def add(title: str, *flags: str) -> str:
        added = mesh(mesh_dir, env, "task", "add", title, "--as", "lead", *flags, "--json")
        return str(json.loads(added)["id"])

    grammar = add("Write the grammar for match statements", "--priority", "5")
    lexer = add("Tokenize f-strings in the lexer", "--priority", "4", "--review")
    fuzz = add("Fuzz the parser for 10 minutes", "--priority", "1")
    add("Parse match statements", "--depends", grammar, "--priority", "3")
    bench = add("Benchmark the lexer on the stdlib", "--priority", "2")
    add("Publish the benchmark table", "--depends", bench)
    docs = add("Document the AST nodes")
    flaky = add("Port the old error-recovery tests")
    add("Rewrite error recovery on the new tests", "--depends", flaky)
    add("Remove the Python 3.8 code paths")

    mesh(mesh_dir, env, "claim", grammar, "--as", "alice")
    mesh(mesh_dir, env, "task", "start", grammar, "--as", "alice")
    mesh(mesh_dir, env, "claim", lexer, "--as", "bob")
    mesh(
        mesh_dir,
        env,
        "task",
        "done",
        lexer,
        "--as",
        "bob",
        "--result",
        "f-strings tokenized; 212 new cases pass",
    )
    mesh(mesh_dir, env, "claim", docs, "--as", "carol")
    mesh(
        mesh_dir,
        env,
        "task",
        "done",
        docs,
        "--as",
        "carol",
        "--result",
        "docs/ast.md covers every node",
    )
    mesh(mesh_dir, env, "claim", flaky, "--as", "dave")
    mesh(
        mesh_dir,
        env,
        "task",
        "fail",
        flaky,
        "--as",
        "dave",
        "--result",
        "the old tests need the removed tokenizer",
    )
    mesh(mesh_dir, env, "claim", fuzz, "--as", "bob")

    mesh(mesh_dir, env, "lock", "src/parser.py", "src/ast.py", "--as", "alice", cwd=repo)
    mesh(mesh_dir, env, "lock", "src/lexer.py", "--as", "bob", cwd=repo)
    mesh(mesh_dir, env, "lock", str(base / "bench-results"), "--as", "bob")

    notes = base / "grammar-notes.md"
    notes.write_text("# match statements\n\nPEG rules, one per case pattern.\n" * 20)
    mesh(
        mesh_dir,
        env,
        "send",
        "alice",
        "The grammar draft is attached; check case guards.",
        "--as",
        "lead",
        "--attach",
        str(notes),
    )
    mesh(mesh_dir, env, "send", "carol", "Please review t-0002 when you can.", "--as", "bob")
    mesh(
        mesh_dir,
        env,
        "send",
        "all",
        "Freeze on src/ast.py until the grammar lands.",
        "--as",
        "lead",
        "--priority",
        "urgent",
    )
    mesh(mesh_dir, env, "inbox", "--as", "alice")
    mesh(mesh_dir, env, "inbox", "--as", "carol")
    return mesh_dir


def shoot(mesh_dir: Path, env: dict[str, str], folder: Path, name: str, chrome: Browser) -> None:
    """Serve `mesh_dir`'s dashboard and take its screenshot at each width."""
    served = subprocess.Popen(
        [*MESH, "--mesh-dir", str(mesh_dir), "dashboard", "--no-open", "--port", "0"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = served.stdout.readline().strip() if served.stdout else ""
        for width, height in SIZES:
            chrome.get(url)
            chrome.viewport(width, height)
            chrome.wait("return document.getElementById('live').textContent === 'live'", 20)
            time.sleep(0.5)
            target = folder / f"dashboard-{name}-{width}.png"
            target.write_bytes(chrome.screenshot())
            print(f"wrote {target}")
    finally:
        served.terminate()
        served.wait(10)
        if served.stdout is not None:
            served.stdout.close()


def main(argv: list[str]) -> int:
    folder = Path(argv[0]) if argv else ROOT / "docs"
    base = Path(tempfile.mkdtemp(prefix="mesh-shots-"))
    try:
        env = _env(base / "home")
        (base / "home").mkdir()
        empty = base / "empty" / "mesh"
        mesh(empty, env, "status")
        keeper = subprocess.Popen(["sleep", "600"])  # the live agents' life
        try:
            busy = busy_mesh(base / "busy", env, str(keeper.pid))
            with Browser() as chrome:
                shoot(empty, env, folder, "empty", chrome)
                shoot(busy, env, folder, "busy", chrome)
        finally:
            keeper.terminate()
            keeper.wait()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
