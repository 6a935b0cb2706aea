"""Rendering in one place: commands return `Shown`, the `command` decorator prints JSON or the
human view, and every human view lives in cli/views.py."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Annotated, Any

import pytest
import typer

import drasill_cli.cli
from drasill_cli.cli.common import CliState, JsonOpt, Shown, command, say
from drasill_cli.errors import NegativeOutcome

CLI = Path(drasill_cli.cli.__file__).parent
# Modules that may print: the views, the status screen, the printing helpers themselves, and
# what is printed before or beside any command (version, usage errors, completion scripts).
PRINTERS = {"views.py", "statusview.py", "render.py", "common.py", "app.py", "shells.py"}


def _mentions_json_out(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Name) and n.id == "json_out" for n in ast.walk(node))


def test_json_or_human_is_decided_in_at_most_three_places() -> None:
    """Every `if json_out` (statement or expression) in the CLI, counted on the source."""
    found = [
        f"{path.name}:{node.lineno}"
        for path in sorted(CLI.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.If | ast.IfExp) and _mentions_json_out(node.test)
    ]
    assert len(found) <= 3, found


def test_commands_print_only_through_views() -> None:
    """No command module prints a result itself (say, table, print_json): views.py does."""
    printing = {"say", "table", "print_json"}
    found = []
    for path in sorted(CLI.glob("*.py")):
        if path.name in PRINTERS:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = node.func.id if isinstance(node.func, ast.Name) else None
                if name in printing:
                    found.append(f"{path.name}:{node.lineno} {name}")
    assert not found, found


def _app() -> typer.Typer:
    app = typer.Typer(rich_markup_mode=None)

    @app.callback()
    def main(ctx: typer.Context) -> None:
        ctx.obj = CliState()

    def view(value: dict[str, Any], verb: str) -> None:
        say(f"{verb} {value['name']}")

    @command(app, "show")
    def show(
        ctx: typer.Context,
        missing: Annotated[bool, typer.Option("--missing")] = False,
        json_out: JsonOpt = False,
    ) -> Shown:
        del ctx
        if missing:
            return Shown(None, lambda _value: say("nothing"), exit_code=1)
        return Shown({"name": "alice", "n": 1}, view, "found")

    @command(app, "refuse")
    def refuse(ctx: typer.Context, json_out: JsonOpt = False) -> Shown:
        del ctx
        raise NegativeOutcome("no such luck", code="no-luck")

    return app


@pytest.mark.parametrize(
    ("args", "code", "out"),
    [
        (["show"], 0, "found alice\n"),
        (["show", "--json"], 0, '{"name": "alice", "n": 1}\n'),
        (["show", "--missing"], 1, "nothing\n"),
        (["show", "--missing", "--json"], 1, "null\n"),
        (["refuse", "--json"], 1, None),
    ],
)
def test_the_decorator_renders_json_or_the_view(
    capsys: pytest.CaptureFixture[str], args: list[str], code: int, out: str | None
) -> None:
    # Not standalone, Typer hands back what the command returned, or the code it exited with.
    returned = _app()(args=args, standalone_mode=False)
    assert returned == (code or None)  # a Shown is rendered, never handed on
    printed = capsys.readouterr().out
    if out is None:
        assert json.loads(printed)["error"]["code"] == "no-luck"
    else:
        assert printed == out
