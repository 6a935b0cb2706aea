"""The README and every how-to work as typed: their shell blocks run, in order, on a throwaway
mesh (tests/doc_commands.py says what is run, and how a page marks a block that cannot run here
and why). A how-to added later is covered as soon as it lands: the pages are found by name."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import MeshRunner
from tests.doc_commands import Page, Terminals, in_process_args, parse

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("howto-*.md"))]


def _page_id(path: Path) -> str:
    return path.name


def test_the_pages_are_found() -> None:
    names = {path.name for path in PAGES}
    assert {"README.md", "howto-cron-prune.md", "howto-group-shared.md"} <= names


@pytest.mark.parametrize("path", PAGES, ids=_page_id)
def test_every_skipped_block_says_why(path: Path) -> None:
    page = parse(path)
    for block in page.blocks:
        if block.skip is not None:
            assert len(block.skip.split()) >= 3, (
                f"{path.name}:{block.line}: a skipped block needs a reason in its marker "
                "(<!-- doc-test: skip WHY IT CANNOT RUN HERE -->)"
            )


def test_the_readme_walkthrough_is_run() -> None:
    """The walkthrough is not skipped: both of its terminals run."""
    page = parse(ROOT / "README.md")
    assert {command.terminal for command in page.commands} == {1, 2}
    assert any(command.line.startswith("mesh claim --next") for command in page.commands)


def _run_page(
    page: Page, cli: MeshRunner, tmp_path: Path, url: str | None, mesh_url: str | None = None
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    env = {**cli.env, "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    # The reader's defaults, under the throwaway HOME: ~/.config, ~/.local/share/drasill/mesh.
    for key in ("DRASILL_MESH_DIR", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        env.pop(key, None)
    if url is not None:
        env["DOC_TEST_PG_URL"] = url
    if mesh_url is not None:
        env["DRASILL_MESH_URL"] = mesh_url  # as a host of a PostgreSQL mesh has it
    replace = {}
    for number, path in enumerate(page.paths):
        replace[path] = str(tmp_path / f"page-path-{number}")
    terminals = Terminals(env, work, replace, url)
    where = page.path.name
    try:
        for line in page.setup:
            code, output = terminals.run(1, line)
            assert code == 0, f"{where}: setup {line}\nexit {code}\n{output}"
        for command in page.commands:
            code, output = terminals.run(command.terminal, command.line)
            assert code == command.expected, (
                f"{where}, terminal {command.terminal or 1}: {command.line}\n"
                f"typed: {terminals.typed(command.line)}\n"
                f"exit {code}, the page implies {command.expected}\n{output}"
            )
    finally:
        terminals.close()


RUNNABLE = [path for path in PAGES if parse(path).commands]


def test_most_pages_have_commands_to_run() -> None:
    """A page whose every block is skipped is the exception (each says why)."""
    assert len(RUNNABLE) > len(PAGES) // 2
    assert ROOT / "README.md" in RUNNABLE


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", RUNNABLE, ids=_page_id)
def test_the_page_runs_as_typed(
    path: Path, cli: MeshRunner, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    page = parse(path)
    url = None
    if "postgresql://" in path.read_text():
        url = request.getfixturevalue("pg_mesh_url")
    _run_page(page, cli, tmp_path, url)


@pytest.mark.timeout(300)
def test_the_readme_walkthrough_runs_on_a_postgresql_mesh_too(
    cli: MeshRunner, tmp_path: Path, pg_mesh_url: str
) -> None:
    """The same commands on a PostgreSQL mesh (README: "the same commands, exit codes and
    JSON"), with DRASILL_MESH_URL set in both terminals."""
    _run_page(parse(ROOT / "README.md"), cli, tmp_path, None, mesh_url=pg_mesh_url)
    on_postgres = MeshRunner(tmp_path / "unused", Path(cli.env["HOME"]), url=pg_mesh_url)
    tasks = on_postgres.json("task", "list")
    assert {task["title"] for task in tasks} == {"Write the parser", "Review the parser"}
    assert not (Path(cli.env["HOME"]) / ".local" / "share" / "drasill").exists()


SAMPLE = """# A page

<!-- doc-test: setup touch Makefile -->
<!-- doc-test: path /srv/shared -->
```sh
# terminal 1
mesh send bob hi \\
  --priority urgent
mesh inbox      # exit 1: empty
```

<!-- doc-test: skip needs root on the machine -->
```bash
groupadd meshers
```

<!-- doc-test: skip -->
```sh
sudo reboot
```

```console
$ mesh inbox --as bob
[urgent] from alice: hi
# terminal 2
$ ls /srv/shared
```

```toml
[store]
```
"""


def test_the_parser_reads_the_conventions(tmp_path: Path) -> None:
    page_path = tmp_path / "howto-sample.md"
    page_path.write_text(SAMPLE)
    page = parse(page_path)
    assert page.setup == ["touch Makefile"]
    assert page.paths == ["/srv/shared"]
    assert [block.skip for block in page.blocks] == [None, "needs root on the machine", "", None]
    assert [(c.terminal, c.line, c.expected) for c in page.commands] == [
        (1, "mesh send bob hi    --priority urgent", 0),
        (1, "mesh inbox      # exit 1: empty", 1),
        (1, "mesh inbox --as bob", 0),
        (2, "ls /srv/shared", 0),
    ]
    with pytest.raises(AssertionError, match="unknown doc-test marker"):
        page_path.write_text("<!-- doc-test: skipp typo -->\n")
        parse(page_path)


def test_lines_are_typed_with_the_tests_paths_and_url(tmp_path: Path) -> None:
    url = "postgresql://mesh@/postgres?host=/tmp/s&options=-csearch_path%3Dt_1"
    terminals = Terminals({}, tmp_path, {"/srv/mesh": "/tmp/x/mesh"}, url)
    assert terminals.typed('ls /srv/mesh/agents && mesh --mesh-url "postgresql://a@b/c" x') == (
        f'ls /tmp/x/mesh/agents && mesh --mesh-url "{url}" x'
    )


def test_plain_mesh_lines_run_in_process_and_the_rest_in_the_shell() -> None:
    assert in_process_args('mesh task add "Write the parser" --priority 5   # a comment') == [
        "task",
        "add",
        "Write the parser",
        "--priority",
        "5",
    ]
    for line in (
        'mesh task done "$TASK"',
        "mesh doctor | tail -1",
        "mesh lock src/parser.py -- make test",
        "mesh watch --once",
        "mesh --mesh-dir ~/.local/share/drasill/mesh export > backup.jsonl",
        "command -v mesh",
        "DRASILL_AGENT=alice mesh inbox",
    ):
        assert in_process_args(line) is None, line
