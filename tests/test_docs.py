"""The docs stay true: the CLI reference, completions and config reference match the code."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main

from drasill_cli import config as config_module
from drasill_cli.cli import reference
from drasill_cli.cli.app import load_commands
from drasill_cli.cli.common import app
from tests.conftest import MeshRunner

load_commands()

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
REGENERATE = "regenerate with: .venv/bin/python -m drasill_cli.cli.reference"
MESH = Path(sys.executable).parent / "mesh"  # the installed entry point: completion keys on it


def _mesh(cli: MeshRunner, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the installed `mesh` script (not `python -m`), as a shell's completion would."""
    if not MESH.exists():
        pytest.skip("the `mesh` entry point is not installed next to this interpreter")
    return subprocess.run(
        [str(MESH), *args],
        env={**cli.env, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_reference_matches_help() -> None:
    committed = (ROOT / reference.REFERENCE).read_text()
    assert reference.cli_reference() == committed, REGENERATE


def test_cli_reference_covers_every_command() -> None:
    text = (ROOT / reference.REFERENCE).read_text()
    for path in reference.command_paths():
        assert f"## `{' '.join(['mesh', *path])}`" in text


def test_every_command_and_option_has_help() -> None:
    def walk(command: object, path: list[str]) -> None:
        name = " ".join(["mesh", *path])
        assert getattr(command, "help", None), f"{name} has no help text"
        for param in getattr(command, "params", []):
            if getattr(param, "param_type_name", "") == "option":
                assert param.help, f"{name} {param.opts[0]} has no help text"
            elif path:
                assert getattr(param, "help", None), f"{name} {param.name} has no help text"
        for sub_name, sub in getattr(command, "commands", {}).items():
            walk(sub, [*path, sub_name])

    walk(typer.main.get_command(app), [])


@pytest.mark.parametrize("shell", sorted(reference.SHELLS))
def test_completion_files_match_what_the_cli_generates(cli: MeshRunner, shell: str) -> None:
    done = _mesh(cli, "--show-completion", shell, env={})
    assert done.returncode == 0, done.stderr
    committed = (ROOT / reference.COMPLETIONS / reference.SHELLS[shell]).read_text()
    assert done.stdout == committed, REGENERATE


def test_completion_completes_commands(cli: MeshRunner) -> None:
    done = _mesh(
        cli, env={"_MESH_COMPLETE": "complete_bash", "COMP_WORDS": "mesh sta", "COMP_CWORD": "1"}
    )
    assert done.stdout.split() == ["status"]


def test_install_completion_works(cli: MeshRunner) -> None:
    home = Path(cli.env["HOME"])
    done = _mesh(cli, "--install-completion", env={"SHELL": "/bin/bash"})
    assert done.returncode == 0, done.stderr
    script = home / ".bash_completions" / "mesh.sh"
    assert "_MESH_COMPLETE=complete_bash" in script.read_text()
    assert str(script) in (home / ".bashrc").read_text()


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n### ", start + len(heading))
    return text[start : end if end != -1 else None]


def test_config_reference_lists_every_key() -> None:
    text = (DOCS / "reference" / "config.md").read_text()
    top = _section(text, "### Top level")
    for field in dataclasses.fields(config_module.Config):
        annotation = str(field.type)
        if field.name in ("source", "tools"):
            continue
        if annotation.endswith("Config"):
            section = _section(text, f"### `[{field.name}]`")
            for key in dataclasses.fields(config_module._SECTIONS[field.name]):
                assert f"| `{key.name}` |" in section, f"[{field.name}] {key.name} undocumented"
        else:
            assert f"| `{field.name}` |" in top, f"{field.name} undocumented"
    assert "### `[tools.NAME]`" in text


def test_config_reference_lists_every_environment_variable() -> None:
    text = (DOCS / "reference" / "config.md").read_text()
    source = "\n".join(p.read_text() for p in (ROOT / "drasill_cli").rglob("*.py"))
    used = set(re.findall(r"environ(?:\.get)?\(?\[?\"([A-Z_][A-Z0-9_]*)\"", source))
    used |= set(re.findall(r"getenv\(\"([A-Z_][A-Z0-9_]*)\"", source))
    assert used, "no environment variables found: the pattern is stale"
    for variable in used:
        assert f"`{variable}`" in text, f"environment variable {variable} undocumented"


def test_exit_codes_reference_lists_every_code() -> None:
    text = (DOCS / "reference" / "exit-codes.md").read_text()
    for code in range(5):
        assert f"\n| {code} |" in text


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_relative_links_in_the_docs_resolve() -> None:
    pages = sorted(DOCS.rglob("*.md"))
    assert len(pages) >= 9
    for page in pages:
        for target in LINK.findall(page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.relative_to(ROOT)} links to {target}"


def test_tutorial_shows_the_status_capture_after_the_demo() -> None:
    tutorial = (DOCS / "tutorial.md").read_text()
    assert "status-demo.svg" in tutorial and "status-demo.txt" in tutorial
    capture = (DOCS / "status-demo.txt").read_text()
    for title in ("Agents (3: 3 active)", "Tasks", "Locks (2)", "Budgets", "Recent"):
        assert title in capture
    assert max(len(line) for line in capture.splitlines()) <= reference.CAPTURE_WIDTH
    assert (DOCS / "status-demo.svg").read_text().startswith("<svg")


def _schema_tables() -> dict[str, list[str]]:
    """Every table the migrations create, with its columns (from the SQL itself)."""
    from drasill_cli.backends.postgres import schema

    found: dict[str, list[str]] = {}
    sql = "\n".join(schema.MIGRATIONS)
    for name, body in re.findall(r"CREATE TABLE (\w+) \((.*?)\);\n", sql, re.DOTALL):
        columns = []
        for line in body.splitlines():
            words = line.split("--", 1)[0].split()
            if words and words[0] not in {"PRIMARY", "UNIQUE", "CHECK", "FOREIGN"}:
                columns.append(words[0])
        found[name] = columns
    return found


def test_postgres_schema_doc_lists_every_table_and_column() -> None:
    """docs/postgres-schema.md names each table in a heading and each of its columns in a table
    row of that section; and every index, sequence and function of the migrations."""
    from drasill_cli.backends.postgres import schema

    text = (DOCS / "postgres-schema.md").read_text()
    assert text.startswith(f"# PostgreSQL schema (version {schema.LATEST})\n")
    sections = re.split(r"\n(?=### )", text)
    tables = _schema_tables()
    assert set(tables) == set(schema.TABLES)  # the parse found them all
    for table, columns in tables.items():
        own = [s for s in sections if s.startswith("### ") and f"`{table}`" in s.splitlines()[0]]
        assert own, f"postgres-schema.md has no section for {table}"
        for column in columns:
            row = re.compile(rf"^\|( `{table}` \|)? `{column}` \|", re.MULTILINE)
            assert any(row.search(s) for s in own), f"postgres-schema.md lacks {table}.{column}"
    sql = "\n".join(schema.MIGRATIONS)
    named = re.findall(r"CREATE (?:INDEX|SEQUENCE|(?:OR REPLACE )?FUNCTION) (\w+)", sql)
    assert named
    for name in named:
        assert f"`{name}" in text, f"postgres-schema.md does not name {name}"
    for number in range(1, schema.LATEST + 1):
        assert f"`MIGRATION_{number}`" in text, f"postgres-schema.md lacks MIGRATION_{number}"
