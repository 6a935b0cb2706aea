"""The PostgreSQL mailbox and attachments beyond the storage contract: the private attachment
cache on the reading host (modes, links, damaged copies), damaged rows quarantined, the size
limit, and what expiry reports.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import clock
from drasill_cli.backends import open_backend
from drasill_cli.backends.postgres import PostgresBackend
from drasill_cli.backends.postgres.attachments import cache_root
from drasill_cli.config import Config
from drasill_cli.errors import InvalidInput
from drasill_cli.location import Location
from tests.storage.mail import attached, deliver, message


@pytest.fixture
def backend(
    pg_mesh_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[PostgresBackend]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    made = open_backend(Location.of_url(pg_mesh_url), Config())
    assert isinstance(made, PostgresBackend)
    yield made
    made.close()


def _message(
    to: str, attachments: list[dict[str, Any]], msg_id: str | None = None
) -> dict[str, Any]:
    return message(to, attachments=attachments, msg_id=msg_id)


def _clear_cache() -> None:
    """As on another host: nothing cached yet."""
    for folder, dirs, files in os.walk(cache_root(), topdown=False):
        for name in files:
            os.unlink(os.path.join(folder, name))
        for name in dirs:
            os.rmdir(os.path.join(folder, name))


def test_a_reader_on_another_host_gets_a_private_cached_copy(backend: PostgresBackend) -> None:
    msg_id = clock.new_id("m")
    data = b"secret plans"
    deliver(
        backend, _message("bob", backend.attachments.put(msg_id, [attached("p.txt", data)]), msg_id)
    )
    _clear_cache()
    old_umask = os.umask(0)  # a careless umask must not open the cache up
    try:
        got = backend.mailbox.take_next("bob")
    finally:
        os.umask(old_umask)
    assert got is not None
    path = Path(got["attachments"][0]["path"])
    assert path == cache_root() / hashlib.sha256(data).hexdigest() / "p.txt"
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for folder in (path.parent, cache_root(), cache_root().parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    assert not [n for n in os.listdir(path.parent) if n != "p.txt"], "no temp file left"


def test_a_planted_link_or_a_damaged_copy_is_replaced_not_followed(
    backend: PostgresBackend, tmp_path: Path
) -> None:
    msg_id = clock.new_id("m")
    backend.attachments.put(msg_id, [attached("p.txt", b"the real content")])
    path = Path(backend.attachments.local_path(msg_id, "p.txt"))
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    path.unlink()
    path.symlink_to(victim)
    assert backend.attachments.local_path(msg_id, "p.txt") == str(path)
    assert not path.is_symlink() and path.read_bytes() == b"the real content"
    assert victim.read_bytes() == b"untouched", "never written through the link"
    path.write_bytes(b"tampered content")
    assert Path(backend.attachments.local_path(msg_id, "p.txt")).read_bytes() == b"the real content"


def test_broadcast_copies_share_one_cached_file_and_are_copied_in_the_database(
    backend: PostgresBackend,
) -> None:
    first, second = clock.new_id("m"), clock.new_id("m")
    files = [attached("s.txt", b"for all")]
    backend.attachments.put(first, files)
    backend.attachments.put(second, files, same_as=first)
    with backend.db.transaction() as cur:
        rows = cur.execute("SELECT message_id FROM mesh_attachments ORDER BY message_id").fetchall()
    assert [r[0] for r in rows] == [first, second]
    assert backend.attachments.local_path(first, "s.txt") == backend.attachments.local_path(
        second, "s.txt"
    )


def test_an_attachment_over_the_limit_is_refused_and_nothing_stored(pg_mesh_url: str) -> None:
    config = Config()
    config.messages.max_attachment_bytes = 10
    backend = open_backend(Location.of_url(pg_mesh_url), config)
    try:
        msg_id = clock.new_id("m")
        with pytest.raises(InvalidInput, match="over the limit of 10"):
            backend.attachments.put(
                msg_id, [attached("ok.txt", b"small"), attached("big", b"x" * 11)]
            )
        assert backend.attachments.orphans(clock.now() + 60) == []
    finally:
        backend.close()


def test_a_damaged_row_is_quarantined_and_the_next_message_taken(backend: PostgresBackend) -> None:
    good = _message("bob", [])
    deliver(backend, good)
    bad_id = clock.new_id("m")
    with backend.db.transaction() as cur:
        cur.execute(
            "INSERT INTO mesh_messages (id, recipient, rank, body) VALUES (%s, 'bob', 0, %s)",
            (bad_id, json.dumps({"id": bad_id, "body": 5})),
        )
    assert backend.mailbox.unread_count("bob") == 2, "counted unparsed"
    assert backend.mailbox.take_next("bob") == good
    assert any(f"inbox/bob/unread/{bad_id}" in w for w in backend.warnings)
    with backend.db.transaction() as cur:
        kept = cur.execute("SELECT key, raw FROM mesh_quarantine").fetchall()
    assert [k for k, _ in kept] == [f"inbox/bob/unread/{bad_id}"]
    assert kept[0][1]["body"] == 5, "kept as it was"
    assert backend.mailbox.unread_count("bob") == 0


def test_expiry_names_each_copy_it_removes(backend: PostgresBackend) -> None:
    message = _message("bob", [])
    deliver(backend, message)
    assert backend.mailbox.take_next("bob") == message
    removed = backend.mailbox.expire_history(clock.now() + 1)
    msg_id = message["id"]
    assert sorted(c.entry for c in removed) == [f"inbox/bob/read/{msg_id}", f"sent/alice/{msg_id}"]


def test_peek_reads_one_row_however_many_wait(backend: PostgresBackend) -> None:
    for _ in range(300):
        deliver(backend, _message("bob", []))
    calls: list[int] = []
    real = backend.mailbox._checked

    def counting(cur: Any, row: Any) -> Any:
        calls.append(1)
        return real(cur, row)

    backend.mailbox._checked = counting  # type: ignore[method-assign]
    assert next(backend.mailbox.unread("bob"))["to"] == "bob"
    assert len(calls) == 1
