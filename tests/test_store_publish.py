"""The store's multi-name and tree operations (publish, link, scan, remove_dir, durable move)
and the `[store] fsync` switch: what is flushed, and that records stay whole without flushes."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from drasill_cli import messages
from drasill_cli.backends.directory.store import TMP_PREFIX, FileStore
from drasill_cli.config import Config, StoreConfig, load_config
from drasill_cli.errors import InvalidInput, MeshError
from drasill_cli.mesh import Mesh
from tests.harness import directory_of


class Flushes:
    """Records the real path of every descriptor passed to os.fsync."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    def __call__(self, fd: int) -> None:
        self.paths.append(os.readlink(f"/proc/self/fd/{fd}"))


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Flushes]:
    if not os.path.isdir("/proc/self/fd"):
        pytest.skip("needs /proc to name the flushed descriptors")
    counter = Flushes()
    monkeypatch.setattr(os, "fsync", counter)
    yield counter


def _under(paths: list[str], folder: Path) -> list[str]:
    return [p for p in paths if p == str(folder) or p.startswith(f"{folder}/")]


# ---- publish ---------------------------------------------------------------------------------


def test_publish_links_and_keeps_one_file(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path / "m")
    store.publish(b'{"n":1}', links=["a/x/1.json", "b/1.json"], keep_as="kept/1.json")
    inodes = {os.stat(store.path(rel)).st_ino for rel in ("a/x/1.json", "b/1.json", "kept/1.json")}
    assert len(inodes) == 1
    assert os.stat(store.path("kept/1.json")).st_nlink == 3
    assert store.read("b/1.json") == {"n": 1}
    assert os.listdir(store.path("staging")) == []  # the temp became kept/1.json
    assert stat.S_IMODE(os.stat(store.path("kept/1.json")).st_mode) == 0o600


def test_publish_refuses_an_existing_link_and_leaves_no_temp(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path / "m")
    store.write("a/1.json", {"old": True})
    with pytest.raises(MeshError, match="could not write"):
        store.publish(b"{}", links=["a/1.json"], keep_as="kept/1.json")
    assert store.read("a/1.json") == {"old": True}
    assert os.listdir(store.path("staging")) == []
    assert store.mtime("kept/1.json") is None


def test_publish_recreates_a_link_folder_removed_meanwhile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore.open(tmp_path / "m")
    store.ensure_dir("new/s1/s2")
    real_link = os.link
    removed: list[bool] = []

    def racing_link(src: str, dst: str, **kwargs: object) -> None:
        if not removed:  # a consumer removes the empty shard just before the first link
            removed.append(True)
            os.rmdir(store.path("new/s1/s2"))
            os.rmdir(store.path("new/s1"))
        real_link(src, dst, **kwargs)  # type: ignore[arg-type]  # os.link's own keywords

    monkeypatch.setattr(os, "link", racing_link)
    store.publish(b'{"n":2}', links=["new/s1/s2/m.json"], keep_as="sent/m.json")
    assert store.read("new/s1/s2/m.json") == {"n": 2}
    assert store.read("sent/m.json") == {"n": 2}


def test_publish_flushes_the_file_and_link_folders_not_the_kept_copy(
    tmp_path: Path, flushes: Flushes
) -> None:
    store = FileStore.open(tmp_path / "m")
    store.ensure_dir("new/s")
    store.ensure_dir("sent")
    flushes.paths.clear()
    store.publish(b"{}", links=["new/s/m.json"], keep_as="sent/m.json")
    root = store.root
    assert flushes.paths[-1] == str(root / "new/s")
    assert len(flushes.paths) == 2  # the temp file's data, then the link's folder
    assert _under(flushes.paths, root / "sent") == []


# ---- link, scan, remove_dir, move --------------------------------------------------------------


def test_link_makes_a_second_name(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path / "m")
    store.write_bytes("att/1/f.txt", b"data")
    store.link("att/1/f.txt", "att/2/f.txt")
    assert store.path("att/2/f.txt").read_bytes() == b"data"
    assert os.stat(store.path("att/1/f.txt")).st_nlink == 2


def test_scan_lists_in_path_order_to_the_given_depth(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path / "m")
    for rel in ("t/b/2.json", "t/a/x/1.json", "t/0.json", "t/a/deep/er/9.json", "t/c.txt"):
        store.write_bytes(rel, b"{}")
    (store.path("t/a") / f"{TMP_PREFIX}junk.json").write_bytes(b"")
    assert list(store.scan("t", depth=2)) == ["t/0.json", "t/a/x/1.json", "t/b/2.json"]
    assert list(store.scan("t")) == ["t/0.json"]
    assert list(store.scan("t", ".txt")) == ["t/c.txt"]
    assert list(store.scan("missing", depth=3)) == []


def test_scan_removes_the_empty_folders_it_passed(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path / "m")
    store.ensure_dir("t/empty/inner")
    store.write_bytes("t/full/1.json", b"{}")
    assert list(store.scan("t", depth=2, remove_empty=True)) == ["t/full/1.json"]
    assert sorted(os.listdir(store.path("t"))) == ["full"]
    store.remove("t/full/1.json")
    assert list(store.scan("t", depth=2, remove_empty=True)) == []
    assert os.listdir(store.path("t")) == []  # the top folder itself stays


def test_remove_dir_only_removes_an_empty_folder(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path / "m")
    store.write_bytes("d/f", b"x")
    assert store.remove_dir("d") is False
    assert store.remove_dir("nowhere") is False
    store.remove("d/f")
    assert store.remove_dir("d") is True
    store.write_bytes("d/g", b"y")  # the folder is created again, not assumed to exist
    assert store.path("d/g").read_bytes() == b"y"


def test_move_flushes_both_folders(tmp_path: Path, flushes: Flushes) -> None:
    store = FileStore.open(tmp_path / "m")
    store.write("a/1.json", {})
    store.ensure_dir("b")
    flushes.paths.clear()
    assert store.move("a/1.json", "b/1.json") is True
    assert flushes.paths == [str(store.root / "b"), str(store.root / "a")]
    assert store.move("a/1.json", "b/1.json") is False


# ---- sending: what is flushed ------------------------------------------------------------------


def _mesh(tmp_path: Path, *, fsync: bool) -> Mesh:
    mesh = Mesh.open(tmp_path / "m", Config(store=StoreConfig(fsync=fsync)))
    for name in ("alice", "bob"):
        directory_of(mesh).store.write(f"agents/{name}.json", {"name": name})
    return mesh


def test_send_flushes_delivery_not_history(tmp_path: Path, flushes: Flushes) -> None:
    mesh = _mesh(tmp_path, fsync=True)
    messages.send(mesh, "bob", "warm up: folders exist", sender="alice")
    flushes.paths.clear()
    sent = messages.send(mesh, "bob", "hello", sender="alice")[0]
    root = directory_of(mesh).root
    assert _under(flushes.paths, root / "sent") == []
    assert flushes.paths, "a default send must flush"
    leaf = flushes.paths[-1]
    assert leaf.startswith(f"{root}/inbox/bob/new/")
    assert os.path.exists(os.path.join(leaf, f"1-{sent['id']}.json"))


def test_fsync_false_sends_and_consumes_without_any_flush(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    mesh = _mesh(tmp_path, fsync=False)
    sent = [messages.send(mesh, "bob", f"body {i}", sender="alice")[0] for i in range(20)]
    assert calls == []
    # Whole records everywhere: the unread copy, the sender's history, in order, no temp left.
    assert [m["body"] for m in messages.list_unread(mesh, "bob")] == [m["body"] for m in sent]
    assert [m["id"] for m in messages.history(mesh, "alice", limit=50)] == [
        m["id"] for m in reversed(sent)
    ]
    assert not list(directory_of(mesh).store.path("staging").iterdir())
    got = messages.consume(mesh, "bob")
    assert got is not None and got["id"] == sent[0]["id"]
    assert calls == []
    assert mesh.warnings == []


def test_fsync_default_flushes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(os, "fsync", calls.append)
    mesh = _mesh(tmp_path, fsync=True)
    messages.send(mesh, "bob", "durable", sender="alice")
    assert calls


# ---- the config key ----------------------------------------------------------------------------


def test_store_fsync_config_key(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    assert load_config(path).store.fsync is True
    path.write_text("[store]\nfsync = false\n")
    assert load_config(path).store.fsync is False
    mesh = Mesh.open(tmp_path / "m", load_config(path))
    store = directory_of(mesh).store
    assert isinstance(store, FileStore) and store.fsync is False
    assert directory_of(mesh.read_only()).store.fsync is False
    path.write_text('[store]\nfsync = "no"\n')
    with pytest.raises(InvalidInput, match=r"store\.fsync must be true or false"):
        load_config(path)
    path.write_text("[store]\nsync = false\n")
    with pytest.raises(InvalidInput, match=r"unknown config key .store\.sync."):
        load_config(path)
