"""`mesh export` and `mesh import` through the real CLI, on directory meshes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import MeshRunner


def _populated(cli: MeshRunner, tmp_path: Path) -> str:
    """A mesh with agents, read and unread mail with an attachment, tasks and a lock; its
    export."""
    cli.json("register", "alice")
    cli.json("register", "bob")
    attached = tmp_path / "notes.txt"
    attached.write_bytes(b"notes \x00 bytes")
    cli.json("send", "bob", "first", "--as", "alice")
    cli.json("send", "bob", "second", "--as", "alice", "--attach", str(attached))
    cli.json("inbox", "--as", "bob")  # `first` is read, `second` stays unread
    cli.json("task", "add", "one", "--as", "alice")
    cli.json("task", "add", "two", "--as", "alice")
    cli.json("lock", str(tmp_path / "notes.txt"), "--as", "alice")
    done = cli.run("export")
    assert done.returncode == 0, done.stderr
    return done.stdout


def _other(cli: MeshRunner, tmp_path: Path) -> dict[str, str]:
    return {"DRASILL_MESH_DIR": str(tmp_path / "other")}


def test_export_then_import_moves_the_mesh(cli: MeshRunner, tmp_path: Path) -> None:
    dump = _populated(cli, tmp_path)
    lines = [json.loads(line) for line in dump.splitlines()]
    assert lines[0]["kind"] == "meta"
    other = _other(cli, tmp_path)

    done = cli.run("import", "--json", input=dump, env=other)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["kinds"]["message"] == {"restored": 2, "present": 0}
    assert summary["kinds"]["task"] == {"restored": 2, "present": 0}
    assert summary["present"] == 0

    taken = cli.json("inbox", "--as", "bob", env=other)
    assert taken["body"] == "second"
    assert Path(taken["attachments"][0]["path"]).read_bytes() == b"notes \x00 bytes"
    assert cli.run("inbox", "--as", "bob", env=other).returncode == 1  # nothing else unread
    assert cli.json("task", "add", "three", "--as", "alice", env=other)["id"] == "t-0003"
    assert [lock["holder"] for lock in cli.json("locks", env=other)] == ["alice"]


def test_a_second_import_restores_nothing(cli: MeshRunner, tmp_path: Path) -> None:
    dump = _populated(cli, tmp_path)
    other = _other(cli, tmp_path)
    assert cli.run("import", input=dump, env=other).returncode == 0
    again = cli.run("import", input=dump, env=other)
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines()[-1].endswith(
        f"0 restored, {len(dump.splitlines()) - 1} already present; nothing was missing"
    )
    before = [json.loads(line) for line in cli.run("export", env=other).stdout.splitlines()][1:]
    cli.run("import", input=dump, env=other)
    after = [json.loads(line) for line in cli.run("export", env=other).stdout.splitlines()][1:]
    assert after == before


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("{not json", "line 3: is not JSON"),
        ('{"kind": "gizmo"}', "line 3: the item has an unknown kind 'gizmo'"),
        ('{"kind": "task", "record": {"id": "t-0009"}}', "line 3: the task item"),
    ],
)
def test_a_damaged_line_exits_2_and_writes_nothing(
    cli: MeshRunner, tmp_path: Path, bad: str, says: str
) -> None:
    lines = _populated(cli, tmp_path).splitlines()
    damaged = "\n".join([*lines[:2], bad, *lines[2:]]) + "\n"
    other = _other(cli, tmp_path)
    done = cli.run("import", input=damaged, env=other)
    assert done.returncode == 2
    assert says in done.stderr
    assert "nothing was imported" in done.stderr
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other" / "agents").glob("*"))
    as_json = cli.run("import", "--json", input=damaged, env=other)
    assert json.loads(as_json.stdout)["error"]["code"] == "invalid-import"


def test_import_without_input_says_what_to_pipe(cli: MeshRunner) -> None:
    done = cli.run("import", input="")
    assert done.returncode == 2
    assert "mesh export > mesh.jsonl" in done.stderr
