"""GiB everywhere, with one precision (issue 27): the terminal's `mesh hw` and `mesh status`,
budget messages and the dashboard page show an amount the same way (`units.gib`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drasill_cli.units import gib
from tests.conftest import MeshRunner

pytestmark = pytest.mark.both_backends

STATIC = Path(__file__).resolve().parent.parent / "drasill_cli" / "web" / "static"


def test_one_precision() -> None:
    assert [gib(1.5), gib(0.733), gib(80.0), gib(0.0), gib(None)] == ["1.5", "0.73", "80", "0", "-"]
    assert gib(-0.001) == "0"


def test_terminal_shows_gib_with_one_precision(cli: MeshRunner) -> None:
    cli.json("register", "ann", "--ram-gb", "1.5")
    cli.json("register", "bob", "--ram-gb", "0.25")
    hw = cli.run("hw").stdout
    [ann] = [line for line in hw.splitlines() if line.startswith("ann")]
    assert ann.split()[2] == "1.5"  # declared, as status and the page show it
    status = cli.run("status", env={"COLUMNS": "120"}).stdout
    [bar] = [line for line in status.splitlines() if line.strip().startswith("RAM")]
    assert " 1.75/" in bar and "GiB declared" in bar


def test_the_page_says_gib() -> None:
    for path in sorted(STATIC.iterdir()):
        if path.suffix in (".js", ".html"):
            assert not re.search(r"\bGB\b", path.read_text()), path.name
