"""`mesh demo`: three simulated agents on a throwaway mesh, to see the mesh work in seconds.

The demo never touches the user's mesh or config: it builds a fresh mesh in a temporary
directory with the default config, and drives it through the same core calls the commands use,
so what it shows is what `mesh` really does.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from drasill_cli.config import Config
from drasill_cli.errors import NegativeOutcome
from drasill_cli.mesh import Mesh


@contextlib.contextmanager
def throwaway(keep: bool = False) -> Iterator[tuple[Mesh, Path]]:
    """A new mesh and a sample project folder beside it in a temporary directory, removed
    afterwards unless `keep`."""
    base = Path(tempfile.mkdtemp(prefix="mesh-demo-"))
    try:
        yield Mesh.open(base / "mesh", Config()), base / "project"
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def populate(mesh: Mesh, work: Path) -> list[str]:
    """Play a short session: register, add tasks, claim, lock, message. Returns the steps."""
    from drasill_cli import agents, locks, messages, tasks

    steps: list[str] = []
    (work / "src").mkdir(parents=True, exist_ok=True)
    (work / "docs").mkdir(exist_ok=True)
    (work / "src" / "parser.py").write_text("# the parser\n")

    cast = (
        ("alpha", "lead", "claude", 0.25),
        ("beta", "coder", "codex", 0.5),
        ("gamma", "reviewer", "gemini", 0.25),
    )
    for name, role, tool, ram in cast:
        agents.register(mesh, name, role=role, tool=tool, ram_gb=ram, cwd=str(work))
        steps.append(f"{name} registers as {role} ({tool}), declaring {ram:g} GiB of RAM")

    parser = tasks.add_task(mesh, "Write the parser", actor="alpha", priority=5, cwd=str(work))
    tasks.add_task(
        mesh, "Test the parser", actor="alpha", priority=3, depends_on=[parser["id"]], cwd=str(work)
    )
    tasks.add_task(mesh, "Update the docs", actor="alpha", priority=1, cwd=str(work))
    tasks.add_task(mesh, "Tidy the changelog", actor="alpha", review=True, cwd=str(work))
    steps.append("alpha adds four tasks; 'Test the parser' depends on 'Write the parser'")

    first = tasks.claim_next(mesh, "beta")
    tasks.start(mesh, first["id"], "beta")
    steps.append(f"beta claims '{first['title']}' (highest priority) and starts it")
    locks.acquire(mesh, [str(work / "src" / "parser.py")], "beta", mode="write")
    steps.append("beta takes a write lock on src/parser.py")

    second = tasks.claim_next(mesh, "gamma")
    steps.append(f"gamma claims '{second['title']}' ('Test the parser' still waits)")
    try:
        locks.acquire(mesh, [str(work / "src")], "gamma", mode="read")
    except NegativeOutcome:
        steps.append("gamma asks for a read lock on src/ and is denied: beta is writing in it")
    locks.acquire(mesh, [str(work / "docs")], "gamma", mode="write")
    tasks.done(mesh, second["id"], "gamma", "docs/usage.md updated")
    steps.append("gamma locks docs/, finishes its task with a result")

    messages.send(mesh, "beta", "Parser first, please: the tests wait on it.", sender="alpha")
    messages.send(mesh, "alpha", "On it; holding src/parser.py.", sender="beta", priority="urgent")
    messages.send(mesh, "all", "Docs updated; review welcome.", sender="gamma")
    got = messages.consume(mesh, "alpha")
    steps.append("alpha, beta and gamma exchange messages (one urgent, one to all)")
    if got is not None:
        steps.append(f"alpha reads its next message (urgent first): {got['body']!r}")
    return steps


def run(keep: bool = False) -> dict[str, Any]:
    """The whole demo: the steps played and the status snapshot at the end."""
    from drasill_cli import status

    with throwaway(keep) as (mesh, work):
        steps = populate(mesh, work)
        snap = status.snapshot(mesh)
    return {"steps": steps, "kept": mesh.location if keep else None, "status": snap}
