"""Prune keeps the mail store bounded: history retention and orphaned attachments."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from drasill_cli import agents, clock, lifecycle, messages
from drasill_cli.config import Config, MessagesConfig
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner, tree
from tests.harness import directory_of

DAY = 86400.0


def _mesh(mesh_dir: Path, history_days: float) -> Mesh:
    return Mesh.open(mesh_dir, Config(messages=MessagesConfig(history_days=history_days)))


def _later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Move the clock prune reads forward (ids keep their real creation time)."""
    real_now = time.time
    monkeypatch.setattr(clock, "now", lambda: real_now() + seconds)


def _attachment(tmp_path: Path, name: str) -> str:
    source = tmp_path / name
    source.write_bytes(b"payload " + name.encode())
    return str(source)


def _populate(mesh: Mesh, tmp_path: Path) -> tuple[dict[str, object], dict[str, object]]:
    """bob consumed one attached message from alice; a second one is still unread."""
    agents.register(mesh, "bob")
    read = messages.send(
        mesh, "bob", "read me", sender="alice", attachments=[_attachment(tmp_path, "read.txt")]
    )[0]
    assert messages.consume(mesh, "bob") == read
    unread = messages.send(
        mesh,
        "bob",
        "still unread",
        sender="alice",
        attachments=[_attachment(tmp_path, "unread.txt")],
    )[0]
    return read, unread


def test_history_past_retention_goes_with_its_attachments_unread_mail_stays(
    mesh_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh = _mesh(mesh_dir, history_days=30)
    read, unread = _populate(mesh, tmp_path)
    assert lifecycle.prune(mesh)["history_expired"] == [], "29 days young: kept"

    _later(monkeypatch, 31 * DAY)
    before = tree(directory_of(mesh).root)
    planned = lifecycle.prune(mesh, dry_run=True)
    assert tree(directory_of(mesh).root) == before, "a dry run deletes nothing"
    report = lifecycle.prune(mesh)
    assert sorted(report["history_expired"]) == sorted(planned["history_expired"])
    assert sorted(report["history_expired"]) == [
        f"inbox/bob/cur/1-{read['id']}.json",
        f"sent/alice/{read['id']}.json",
        f"sent/alice/{unread['id']}.json",
    ]
    assert messages.history(mesh, "alice") == []
    assert messages.history(mesh, "bob") == []
    assert not Path(read["attachments"][0]["path"]).exists()  # type: ignore[index]
    assert not (directory_of(mesh).root / "attachments" / str(read["id"])).exists()
    assert lifecycle.report_is_empty(lifecycle.prune(mesh)), "the second prune is quiet"
    kept = messages.consume(mesh, "bob")
    assert kept is not None and kept["body"] == "still unread", "unread mail is never expired"
    assert Path(kept["attachments"][0]["path"]).read_bytes() == b"payload unread.txt"


def test_history_days_zero_keeps_history_forever(
    mesh_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mesh = _mesh(mesh_dir, history_days=0)
    read, _unread = _populate(mesh, tmp_path)
    _later(monkeypatch, 3650 * DAY)
    assert lifecycle.prune(mesh)["history_expired"] == []
    assert [m["id"] for m in messages.history(mesh, "bob")] == [read["id"]]


def test_orphaned_attachment_folders_are_removed_once_stale(
    cli: MeshRunner, tmp_path: Path
) -> None:
    """A sender killed between storing attachments and delivering leaves a folder no message
    refers to; prune removes it once older than `stale_tmp_after`, and nothing else."""
    cli.config("[lifecycle]\nstale_tmp_after = 60\n")
    cli.json("register", "bob")
    delivered = cli.json("send", "bob", "here", "--attach", _attachment(tmp_path, "kept.txt"))
    attachments = cli.mesh_dir / "attachments"
    old_orphan = attachments / clock.new_id("m")
    fresh_orphan = attachments / clock.new_id("m")
    for folder in (old_orphan, fresh_orphan):
        folder.mkdir()
        (folder / "half.bin").write_bytes(b"x" * 100)
    hour_ago = time.time() - 3600
    for path in (old_orphan / "half.bin", old_orphan, attachments / delivered["id"]):
        os.utime(path, (hour_ago, hour_ago))

    planned = cli.json("prune", "--dry-run")
    assert planned["attachments_removed"] == [old_orphan.name]
    assert old_orphan.exists()
    report = cli.json("prune")
    assert report["attachments_removed"] == [old_orphan.name]
    assert not old_orphan.exists()
    assert fresh_orphan.exists(), "a sender may still be delivering it"
    assert Path(delivered["attachments"][0]["path"]).exists(), "its message is unread"
    human = cli.run("prune", "--dry-run").stdout
    assert human.startswith("nothing to prune"), "nothing left to do"


def test_prune_reports_retention_in_words(cli: MeshRunner, tmp_path: Path) -> None:
    cli.config("[messages]\nhistory_days = 0.00001\n")  # under a second
    cli.json("register", "bob")
    cli.json("send", "bob", "hello", "--as", "alice")
    time.sleep(1.2)
    assert cli.run("prune", "--dry-run").stdout == (
        "would delete 1 sent or read message(s) past messages.history_days\n"
    )
    sent_copy = f"sent/alice/{_only_sent(cli)}"
    assert cli.json("prune")["history_expired"] == [sent_copy]
    assert cli.json("inbox", "bob")["body"] == "hello"


def _only_sent(cli: MeshRunner) -> str:
    (path,) = (cli.mesh_dir / "sent" / "alice").iterdir()
    return path.name


def test_negative_history_days_is_refused(cli: MeshRunner) -> None:
    cli.config("[messages]\nhistory_days = -1\n")
    done = cli.run("prune")
    assert done.returncode == 2
    assert "messages.history_days" in done.stderr
