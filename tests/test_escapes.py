"""What others wrote (mail, titles, roles, paths) reaches a person's terminal spelled out, never
as escape sequences it would act on; JSON stays exact (issue 24, point 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from drasill_cli.cli.render import printable
from tests.conftest import MeshRunner

pytestmark = pytest.mark.both_backends

# Colour, a bell, a CSI in one byte (C1), a carriage return, a right-to-left override, and
# rich markup: each would change what a person sees if printed raw.
EVIL = "red\x1b[31mX\x1b[0m bell\x07 csi\x9b2J ret\r rtl\u202e [bold]markup[/bold]"
RAW = ("\x1b", "\x07", "\x9b", "\r", "\u202e")


def assert_spelled_out(text: str, what: str) -> None:
    found = [repr(char) for char in RAW if char in text]
    assert not found, f"{what} printed {', '.join(found)} raw: {text!r}"
    assert "red\\x1b[31mX" in text, f"{what} does not show the text: {text!r}"


def test_printable_spells_out_what_a_terminal_would_act_on() -> None:
    assert printable(EVIL) == (
        "red\\x1b[31mX\\x1b[0m bell\\x07 csi\\x9b2J ret\\r rtl\\u202e [bold]markup[/bold]"
    )
    assert printable("one\n\ttwo") == "one\n\ttwo"  # lines and tabs of a body stay
    assert printable("one\n\ttwo", lines=False) == "one\\n\\ttwo"
    assert printable("bad\udcffname") == "bad\\udcffname"  # a file name that is not UTF-8
    assert printable("ünïcødé 漢字 ok") == "ünïcødé 漢字 ok"


def test_mail_is_shown_spelled_out_and_json_stays_exact(cli: MeshRunner) -> None:
    cli.json("register", "bob")
    body = f"{EVIL}\nsecond line"
    cli.json("send", "bob", "-", "--as", "alice", input=body)
    inbox = cli.run("inbox", "bob", "--peek")
    assert inbox.returncode == 0, inbox.stderr
    assert_spelled_out(inbox.stdout, "mesh inbox")
    assert "\nsecond line\n" in inbox.stdout
    assert_spelled_out(cli.run("history", "--as", "alice").stdout, "mesh history")
    assert cli.json("inbox", "bob")["body"] == body  # JSON: exactly as sent


def test_titles_roles_and_paths_are_shown_spelled_out(cli: MeshRunner, tmp_path: Path) -> None:
    """Titles and roles with control characters are refused by the commands, so they are
    planted as a writer of the mesh could; a file name may hold them anyway."""
    cli.json("register", "alice", "--role", "dev")
    task = cli.json("task", "add", "plain title", "--body", EVIL, "--as", "alice")
    with cli.open() as mesh:
        mesh.backend.board.change(task["id"], lambda t: t.replace(title=EVIL))
        mesh.backend.presence.change("alice", lambda a: a.replace(role=EVIL) if a else None)
    cli.json("lock", str(tmp_path / f"file {EVIL}"), "--as", "alice")
    for args in (
        ("task", "list"),
        ("task", "show", task["id"]),
        ("agents",),
        ("locks",),
        ("status",),
        ("log",),
    ):
        done = cli.run(*args)
        assert done.returncode == 0, (args, done.stderr)
        assert_spelled_out(done.stdout, f"mesh {' '.join(args)}")
    status = cli.run("status", env={"COLUMNS": "300"}).stdout  # wide: no cell is cut
    assert "[bold]markup[/bold]" in status  # rich shows markup in data as text
    assert cli.json("task", "show", task["id"])["title"] == EVIL
