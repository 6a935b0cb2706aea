"""Stored messages do not depend on where the mesh is: attachment paths are given at read time.

Directory-mesh specific (it looks at the files); the interface contract is in tests/storage.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from drasill_cli import agents, messages
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests.harness import directory_of


def _send_attached(mesh: Mesh, tmp_path: Path) -> dict[str, Any]:
    source = tmp_path / "notes.txt"
    source.write_text("the notes")
    agents.register(mesh, "bob")
    return messages.send(mesh, "bob", "see notes", sender="alice", attachments=[str(source)])[0]


def _stored(mesh: Mesh, msg_id: str) -> list[Path]:
    return sorted(
        p for p in directory_of(mesh).root.rglob(f"*{msg_id}.json") if "quarantine" not in p.parts
    )


def test_the_stored_record_holds_no_path(mesh_dir: Path, tmp_path: Path) -> None:
    mesh = Mesh.open(mesh_dir, Config())
    sent = _send_attached(mesh, tmp_path)
    files = _stored(mesh, sent["id"])
    assert len(files) == 2, "the unread copy and the sent copy"
    for file in files:
        [attachment] = json.loads(file.read_bytes())["attachments"]
        assert set(attachment) == {"name", "size", "sha256"}
    [given] = sent["attachments"]
    assert Path(given["path"]).read_text() == "the notes"


def test_a_moved_mesh_gives_paths_inside_its_new_place(mesh_dir: Path, tmp_path: Path) -> None:
    sent = _send_attached(Mesh.open(mesh_dir, Config()), tmp_path)
    moved = tmp_path / "elsewhere"
    shutil.copytree(mesh_dir, moved, symlinks=True)
    shutil.rmtree(mesh_dir)
    got = messages.consume(Mesh.open(moved, Config()), "bob")
    assert got is not None and got["id"] == sent["id"]
    [attachment] = got["attachments"]
    assert Path(attachment["path"]) == moved.resolve() / "attachments" / sent["id"] / "notes.txt"
    assert Path(attachment["path"]).read_text() == "the notes"


def test_an_old_record_with_a_path_still_reads(mesh_dir: Path, tmp_path: Path) -> None:
    """Records written before paths were given at read time carry one: it is replaced."""
    mesh = Mesh.open(mesh_dir, Config())
    sent = _send_attached(mesh, tmp_path)
    for file in _stored(mesh, sent["id"]):
        record = json.loads(file.read_bytes())
        record["attachments"] = [
            {"name": "notes.txt", "path": "/old/place/notes.txt", "size": 9, "sha256": "0" * 64}
        ]
        file.write_text(json.dumps(record))
    [peeked] = messages.list_unread(mesh, "bob")
    assert peeked["attachments"] == [
        {
            "name": "notes.txt",
            "path": str(directory_of(mesh).root / "attachments" / sent["id"] / "notes.txt"),
            "size": 9,
            "sha256": "0" * 64,
        }
    ]
    assert messages.history(mesh, "alice") == [peeked]
    assert Path(peeked["attachments"][0]["path"]).read_text() == "the notes"


def test_an_attachment_name_that_leaves_its_folder_is_refused(
    mesh_dir: Path, tmp_path: Path
) -> None:
    mesh = Mesh.open(mesh_dir, Config())
    sent = _send_attached(mesh, tmp_path)
    for file in _stored(mesh, sent["id"]):
        record = json.loads(file.read_bytes())
        record["attachments"][0]["name"] = "../../secret.txt"
        file.write_text(json.dumps(record))
    assert messages.list_unread(mesh, "bob") == []
    assert messages.history(mesh, "alice") == []
    assert any("unusable name" in warning for warning in mesh.warnings)
    assert _stored(mesh, sent["id"]) == [], "both copies quarantined"


def test_doctor_finds_nothing_wrong_with_records_that_hold_no_path(
    mesh_dir: Path, tmp_path: Path
) -> None:
    from drasill_cli.backends.directory.diagnose import walk_mesh

    mesh = Mesh.open(mesh_dir, Config())
    _send_attached(mesh, tmp_path)
    assert walk_mesh(directory_of(mesh).root, 1 << 20) == []
