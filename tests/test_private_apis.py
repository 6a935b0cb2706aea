"""The private APIs of Typer and watchfiles that mesh relies on, pinned in pyproject.toml.

- `cli/lightparams.py` replaces `typer.core.build_runtime_param` with a builder whose
  `typer._coercion.RuntimeParam` subclass coerces str/int/float/bool/list[str] without pydantic.
- `cli/helpstyle.py` replaces `TyperArgument._usage_display_name` and `display_type_rich`.
- `cli/shells.py` uses Typer's completion classes and scripts (`typer._completion_*`).
- `cli/app.py` catches `typer._click.exceptions.NoArgsIsHelpError` (no public name).
- `cli/locks.py` subclasses `typer.core.TyperCommand`, overriding `parse_args` and
  `collect_usage_pieces` of Typer's copy of Click's `Command`; `cli/lightparams.py` annotates
  with `typer._click.Context` and `typer.core._TyperParameter` (type checking only).

Typer 0.29 does not re-export click: `typer._click` is its own adapted copy of Click (Typer no
longer depends on click), so click's public classes are not the ones Typer raises or calls
(`test_typer_click_is_a_copy_not_click`). Where Typer publishes a name (`typer.Context`,
`typer.Exit`, `typer.core.TyperCommand`, `typer.main.get_command`), mesh uses that.
- `backends/directory/events.py` drives `watchfiles._rust_notify.RustNotify` directly: the
  public `watchfiles.watch` only starts watching on its first iteration, losing a wake-up made
  between a look and the wait that follows.

The signature tests fail when a new release renames or reshapes one of these; the behaviour
tests prove the Typer fast path is active in a real `mesh` run and coerces exactly like Typer.

Lower bounds, tested once in a throwaway venv (typer==0.29.0, watchfiles==0.24.0) with
tests/test_help.py, test_completion.py, test_import_guard.py, test_first_contact.py and this
file: all pass. typer 0.28.0 fails test_help.py (argument placeholders), 0.26.0 fails two help
tests; before 0.26 Typer had no `typer._click`. CI runs only the pinned range.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MeshRunner

# The pristine (unpatched) names, read in a fresh interpreter: mesh patches some on import.
SIGNATURES = r"""
import dataclasses, inspect, json
import typer, typer._click, typer.core, typer._coercion as co, typer._completion_shared as cs
import typer._completion_classes as cc, typer._click.shell_completion as sc
import typer._click.exceptions as ex
from watchfiles._rust_notify import RustNotify

def names(f):
    return [p.name for p in inspect.signature(f).parameters.values()]

print(json.dumps({
    "core.build_runtime_param is co.build_runtime_param":
        typer.core.build_runtime_param is co.build_runtime_param,
    "get_runtime_param calls build_runtime_param":
        "build_runtime_param(self.type_descriptor)"
        in inspect.getsource(typer.core._TyperParameter.get_runtime_param),
    "build_runtime_param": names(co.build_runtime_param),
    "RuntimeParam fields": [f.name for f in dataclasses.fields(co.RuntimeParam)],
    "RuntimeParam frozen": co.RuntimeParam.__dataclass_params__.frozen,
    "RuntimeParam.coerce": names(co.RuntimeParam.coerce),
    "RuntimeParam._coerce_value": names(co.RuntimeParam._coerce_value),
    "TypeDescriptor fields": [f.name for f in dataclasses.fields(co.TypeDescriptor)],
    "ParameterInfo has min/max/parser": all(
        hasattr(typer.models.OptionInfo(), a) for a in ("min", "max", "parser")),
    "TyperArgument._usage_display_name": names(typer.core.TyperArgument._usage_display_name),
    "TyperArgument.display_type_rich": names(typer.core.TyperArgument.display_type_rich),
    "get_completion_script": names(cs.get_completion_script),
    "completion install": names(cs.install),
    "add_completion_class": names(sc.add_completion_class),
    "format_completion": [names(k.format_completion) for k in (
        cc.BashComplete, cc.ZshComplete, cc.FishComplete)],
    "NoArgsIsHelpError is a UsageError": issubclass(ex.NoArgsIsHelpError, ex.UsageError),
    "NoArgsIsHelpError(ctx)": names(ex.NoArgsIsHelpError),
    "TyperCommand.parse_args": names(typer.core.TyperCommand.parse_args),
    "TyperCommand.collect_usage_pieces": names(typer.core.TyperCommand.collect_usage_pieces),
    "typer.Context is a typer._click.Context": issubclass(typer.Context, typer._click.Context),
    "_TyperParameter.get_runtime_param": names(typer.core._TyperParameter.get_runtime_param),
    "RustNotify": names(RustNotify),
    "RustNotify.watch": names(RustNotify.watch),
}))
"""

EXPECTED: dict[str, Any] = {
    "core.build_runtime_param is co.build_runtime_param": True,
    "get_runtime_param calls build_runtime_param": True,
    "build_runtime_param": ["descriptor"],
    "RuntimeParam fields": ["parameter_info", "annotation"],
    "RuntimeParam frozen": True,
    "RuntimeParam.coerce": ["self", "value", "param", "ctx"],
    "RuntimeParam._coerce_value": ["self", "value", "param", "ctx"],
    "TypeDescriptor fields": ["annotation", "parameter_info", "file_annotation"],
    "ParameterInfo has min/max/parser": True,
    "TyperArgument._usage_display_name": ["self"],
    "TyperArgument.display_type_rich": ["self", "ctx"],
    "get_completion_script": ["prog_name", "complete_var", "shell"],
    "completion install": ["shell", "prog_name", "complete_var"],
    "add_completion_class": ["cls", "name"],
    "format_completion": [["self", "item"]] * 3,
    "NoArgsIsHelpError is a UsageError": True,
    "NoArgsIsHelpError(ctx)": ["ctx"],
    "TyperCommand.parse_args": ["self", "ctx", "args"],
    "TyperCommand.collect_usage_pieces": ["self", "ctx"],
    "typer.Context is a typer._click.Context": True,
    "_TyperParameter.get_runtime_param": ["self"],
    "RustNotify": [
        "watch_paths",
        "debug",
        "force_polling",
        "poll_delay_ms",
        "recursive",
        "ignore_permission_denied",
    ],
    "RustNotify.watch": ["self", "debounce_ms", "step_ms", "timeout_ms", "stop_event"],
}


def test_private_names_and_signatures_are_the_ones_mesh_was_written_for() -> None:
    """A Typer or watchfiles release that moves or reshapes a name mesh uses fails here."""
    done = subprocess.run(
        [sys.executable, "-c", SIGNATURES], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found == EXPECTED


def test_typer_click_is_a_copy_not_click() -> None:
    """Typer raises and calls its own copy of Click's classes, never click's: so mesh cannot
    use click's public names for them (if a Typer release re-exported click, this fails and
    the private imports can become click's public ones)."""
    code = (
        "import importlib.util, json, typer._click.exceptions as ex, typer._click.core as co\n"
        "click = importlib.util.find_spec('click')\n"
        "same = None\n"
        "if click is not None:\n"
        "    import click.core, click.exceptions\n"
        "    same = [ex.NoArgsIsHelpError is click.exceptions.NoArgsIsHelpError,\n"
        "            issubclass(co.Command, click.core.Command)]\n"
        "print(json.dumps({'module': co.Command.__module__, 'same': same}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["module"] == "typer._click.core"
    assert found["same"] in (None, [False, False])


# --- the Typer fast path (cli/lightparams.py) ---------------------------------------------

# Runs `mesh ARGS` in-process (so the fast path can be switched off) and reports on stderr
# whether pydantic was imported.
_MAIN = (
    "import atexit, sys\n"
    "atexit.register(lambda: sys.stderr.write("
    "'\\nPYDANTIC=%s\\n' % ('pydantic' in sys.modules)))\n"
    "{disable}"
    "from drasill_cli.cli.app import main\n"
    "sys.argv = ['mesh', *sys.argv[1:]]\n"
    "main()\n"
)
_OFF = "import drasill_cli.cli.lightparams as lp\nlp.install = lambda: None\n"


def _mesh(cli: MeshRunner, *args: str, fast: bool) -> tuple[int, str, str, bool]:
    """(exit code, stdout, stderr without the report, pydantic loaded) of `mesh ARGS`."""
    code = _MAIN.format(disable="" if fast else _OFF)
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=cli.env,
        timeout=60,
        check=False,
    )
    stderr, _, report = done.stderr.rpartition("\nPYDANTIC=")
    return done.returncode, done.stdout, stderr, report.strip() == "True"


@pytest.fixture
def two(cli: MeshRunner) -> MeshRunner:
    cli.json("register", "alice")
    cli.json("register", "bob")
    for body in ("first", "second", "third"):
        cli.json("send", "bob", body, "--as", "alice")
    return cli


def test_fast_path_is_active_in_a_real_mesh_run(two: MeshRunner) -> None:
    """str, bool and int parameters are coerced without pydantic; without the fast path,
    Typer loads it (so this test can tell the two apart)."""
    sent = _mesh(two, "send", "bob", "fourth", "--as", "alice", "--json", fast=True)
    assert sent[0] == 0 and json.loads(sent[1])["to"] == "bob", sent
    assert sent[3] is False
    shown = _mesh(two, "history", "--as", "bob", "--limit", "2", "--json", fast=True)
    assert shown[0] == 0, shown
    assert len(json.loads(shown[1])) <= 2
    assert shown[3] is False
    slow = _mesh(two, "history", "--as", "bob", "--limit", "2", "--json", fast=False)
    assert slow[:3] == shown[:3]
    assert slow[3] is True


@pytest.mark.parametrize(
    "args",
    [
        ("history", "--as", "bob", "--limit", "1"),
        ("history", "--as", "bob", "--limit", "abc"),
        ("history", "--as", "bob", "--limit", "١٢"),
        ("history", "--as", "bob", "--limit", "1.5", "--json"),
        ("inbox", "--as", "bob", "--peek", "--wait", "0", "--json"),
        ("inbox", "--as", "bob", "--wait", "soon"),
        ("inbox", "--as", "bob", "--wait", "-inf"),
        ("send", "bob", "", "--as", "alice", "--json"),
        ("send", "bob", "x", "--as", "alice", "--urgent", "yes"),
    ],
)
def test_mesh_parses_exactly_as_typer_does(two: MeshRunner, args: tuple[str, ...]) -> None:
    """Good and bad values: same output, message and exit code with and without the fast path
    (ids and times differ between two sends, so a send compares its exit code and keys)."""
    fast = _mesh(two, *args, fast=True)
    slow = _mesh(two, *args, fast=False)
    if args[0] == "send" and fast[0] == 0:
        assert slow[0] == 0 and json.loads(fast[1]).keys() == json.loads(slow[1]).keys()
    else:
        assert fast[:3] == slow[:3]


SAMPLES: list[Any] = [
    "5", "-3", "+4", "007", " 7", "7 ", "1_000", "1.5", "1.0", ".5", "5.", "1e3", "1e400",
    "0x10", "abc", "", "  ", "\t3\n", "١٢", "²", "nan", "inf", "-inf", "infinity", "True",
    "9" * 40, 5, 2.0, 2.5, True, False, b"x", ["a", "b"], ("a",), ["a", 1], [],
]  # fmt: skip


def _outcome(build: Any, param: Any, ctx: Any, value: Any) -> tuple[str, str]:
    try:
        result = build(param.type_descriptor).coerce(value, param=param, ctx=ctx)
    except Exception as exc:  # the outcome compared is whatever Typer raises
        return type(exc).__name__, str(getattr(exc, "message", exc))
    return type(result).__name__, repr(result)


def test_every_parameter_of_mesh_coerces_exactly_as_typer_does() -> None:
    """Each parameter of every command, fed good and bad values: the fast path gives the
    same value, or the same error, as Typer's own coercion."""
    import typer.main
    from typer._click import Context
    from typer._coercion import build_runtime_param as typer_build

    from drasill_cli.cli.app import load_commands
    from drasill_cli.cli.common import app
    from drasill_cli.cli.lightparams import SIMPLE, plain_builder

    load_commands()
    light = plain_builder(typer_build)
    kinds: set[str] = set()

    def walk(group: Any) -> None:
        for command in getattr(group, "commands", {}).values():
            ctx = Context(command)
            for param in command.params:
                descriptor = getattr(param, "type_descriptor", None)
                if descriptor is None:
                    continue
                kinds.add(repr(descriptor.annotation))
                for value in SAMPLES:
                    ours = _outcome(light, param, ctx, value)
                    theirs = _outcome(typer_build, param, ctx, value)
                    assert ours == theirs, (command.name, param.name, value)
            walk(command)

    walk(typer.main.get_command(app))
    # A new kind of parameter (enum, Path, ...) goes to Typer's coercion; name it here.
    assert kinds == {repr(kind) for kind in SIMPLE}


def test_fast_path_is_installed_by_the_cli() -> None:
    import typer.core

    import drasill_cli.cli.common  # noqa: F401 (installs the fast path)

    assert getattr(getattr(typer.core, "build_runtime_param"), "_drasill_light", False) is True  # noqa: B009


def test_no_arguments_asks_for_help(cli: MeshRunner) -> None:
    """`mesh task` alone is Typer's NoArgsIsHelpError, matched by class in app.py: help, exit 0."""
    done = cli.run("task")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: mesh task")


# --- watchfiles (backends/directory/events.py) --------------------------------------------


def test_a_change_before_the_first_wait_is_seen(tmp_path: Path) -> None:
    """Events are collected from entering the watch, not from the first wait."""
    from drasill_cli.backends.directory.events import TIMEOUT, FolderEvents

    with FolderEvents(tmp_path) as events:
        (tmp_path / "made-before-the-wait").write_text("x")
        time.sleep(0.3)  # long past the 50 ms batch: a watch started by the wait would miss it
        seen = events.changes(2)
        assert not isinstance(seen, str), seen  # TIMEOUT: the change was lost
        assert any(path.endswith("made-before-the-wait") for _change, path in seen)
        assert events.changes(0.1) == TIMEOUT  # and it was reported once


def test_a_wait_ends_on_its_stop_event(tmp_path: Path) -> None:
    from drasill_cli.backends.directory.events import STOPPED, FolderEvents

    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    with FolderEvents(tmp_path) as events:
        assert events.changes(10, stop) == STOPPED
    assert time.monotonic() - started < 5
