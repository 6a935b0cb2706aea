"""The `Attachments` contract: put, read through a local path, drop, orphans.

Interface only (see conftest.py): runs unchanged against every backend.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from drasill_cli import clock
from drasill_cli.storage import Backend
from tests.storage.mail import attached, deliver, message


def _message(msg_id: str, attachments: list[dict[str, Any]]) -> dict[str, Any]:
    return message("bob", "attached", attachments=attachments, msg_id=msg_id)


def test_put_describes_each_file_and_its_local_path_holds_the_bytes(backend: Backend) -> None:
    msg_id = clock.new_id("m")
    files = [attached("a.txt", b"alpha"), attached("b.bin", bytes(range(256)))]
    described = backend.attachments.put(msg_id, files)
    assert [(d["name"], d["size"], d["sha256"]) for d in described] == [
        (name, len(data), digest) for name, data, digest in files
    ]
    for item, (name, data, _digest) in zip(described, files, strict=True):
        assert item["path"] == backend.attachments.local_path(msg_id, name)
        assert Path(backend.attachments.local_path(msg_id, name)).read_bytes() == data


def test_broadcast_copies_share_content_but_each_message_owns_its_own(backend: Backend) -> None:
    first, second = clock.new_id("m"), clock.new_id("m")
    files = [attached("shared.txt", b"for everyone")]
    backend.attachments.put(first, files)
    backend.attachments.put(second, files, same_as=first)
    assert backend.attachments.drop(first)
    assert not backend.attachments.drop(first), "already gone"
    path = backend.attachments.local_path(second, "shared.txt")
    assert Path(path).read_bytes() == b"for everyone", "dropping one keeps the other's"


def test_drop_removes_the_files(backend: Backend) -> None:
    msg_id = clock.new_id("m")
    backend.attachments.put(msg_id, [attached("gone.txt", b"bye")])
    assert backend.attachments.drop(msg_id)
    assert not Path(backend.attachments.local_path(msg_id, "gone.txt")).exists()
    assert not backend.attachments.drop(clock.new_id("m")), "never stored"


def test_orphans_are_old_attachments_of_no_stored_message(backend: Backend) -> None:
    delivered, orphan = clock.new_id("m"), clock.new_id("m")
    described = backend.attachments.put(delivered, [attached("kept.txt", b"kept")])
    deliver(backend, _message(delivered, described))
    backend.attachments.put(orphan, [attached("half.txt", b"half")])
    assert backend.attachments.orphans(time.time() - 3600) == [], "too young: maybe in flight"
    assert backend.attachments.orphans(time.time() + 60) == [orphan]
    assert backend.mailbox.take_next("bob") is not None
    assert backend.attachments.orphans(time.time() + 60) == [orphan], "read mail still exists"
    assert backend.attachments.drop(orphan)
    assert backend.attachments.orphans(time.time() + 60) == []


def test_a_read_attachment_is_a_private_file_kept_across_reads(backend: Backend) -> None:
    msg_id = clock.new_id("m")
    described = backend.attachments.put(msg_id, [attached("report.txt", b"private report")])
    deliver(backend, _message(msg_id, described))
    got = backend.mailbox.take_next("bob")
    assert got is not None
    path = Path(got["attachments"][0]["path"])
    first = path.stat()
    assert path.read_bytes() == b"private report"
    assert first.st_mode & 0o077 == 0, "readable by its owner only"
    again = backend.mailbox.find(msg_id)
    assert again is not None
    assert again["attachments"][0]["path"] == str(path)
    second = path.stat()
    assert (second.st_ino, second.st_mtime_ns) == (first.st_ino, first.st_mtime_ns), "not rewritten"
