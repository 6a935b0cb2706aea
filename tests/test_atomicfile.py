"""`atomicfile`: the one no-follow atomic writer of the directory store and the attachment
cache (new files only, exact mode, whole or nothing, never through a link)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import drasill_cli
from drasill_cli import atomicfile

PACKAGE = Path(drasill_cli.__file__).parent


@pytest.fixture
def folder(tmp_path: Path) -> Iterator[int]:
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield fd
    finally:
        os.close(fd)


def test_a_new_file_gets_its_mode_whatever_the_umask(tmp_path: Path, folder: int) -> None:
    old = os.umask(0o077)
    try:
        atomicfile.write_new(folder, "a", b"x" * 100_000, 0o664)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o664
    assert (tmp_path / "a").read_bytes() == b"x" * 100_000


def test_a_new_file_never_replaces_a_file_or_follows_a_link(tmp_path: Path, folder: int) -> None:
    (tmp_path / "target").write_bytes(b"keep")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    for name in ("target", "link"):
        with pytest.raises(FileExistsError):
            atomicfile.write_new(folder, name, b"new", 0o600)
    assert (tmp_path / "target").read_bytes() == b"keep"
    assert (tmp_path / "link").is_symlink()


def test_replace_swaps_the_whole_content(tmp_path: Path, folder: int) -> None:
    (tmp_path / "rec").write_bytes(b"old")
    atomicfile.replace(folder, "rec", b"new", 0o640, temp=".rec.tmp", fsync=False)
    assert (tmp_path / "rec").read_bytes() == b"new"
    assert stat.S_IMODE((tmp_path / "rec").stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]


def test_replace_through_a_staging_folder(tmp_path: Path, folder: int) -> None:
    (tmp_path / "staging").mkdir()
    staging = os.open(tmp_path / "staging", os.O_RDONLY | os.O_DIRECTORY)
    try:
        atomicfile.replace(folder, "rec", b"new", 0o600, temp="t", temp_folder=staging)
    finally:
        os.close(staging)
    assert (tmp_path / "rec").read_bytes() == b"new"
    assert list((tmp_path / "staging").iterdir()) == []


def test_a_failed_replace_leaves_no_temp_file(tmp_path: Path, folder: int) -> None:
    (tmp_path / "rec").mkdir()  # a folder where the file belongs: the rename fails
    (tmp_path / "rec" / "inside").write_bytes(b"")
    with pytest.raises(OSError):
        atomicfile.replace(folder, "rec", b"new", 0o600, temp=".rec.tmp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]


@pytest.mark.parametrize(
    "module", ["backends/directory/store.py", "backends/postgres/attachments.py"]
)
def test_the_store_and_the_attachment_cache_share_the_writer(module: str) -> None:
    source = (PACKAGE / module).read_text(encoding="utf-8")
    assert "atomicfile." in source
    assert "O_EXCL" not in source, f"{module} carries its own copy of atomicfile.write_new"
