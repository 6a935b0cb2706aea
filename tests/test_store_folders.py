"""Every folder on a store path is opened from its parent's descriptor, never through a link,
and checked (owner, mode) on that descriptor, every time (issue 24, points 1, 2 and 4).

A planted symlink at any depth of a path the store writes or reads is quarantined or refused
(exit 4), with nothing outside the mesh read, written, moved or removed; a long-running process
(`mesh watch`) keeps no folder check past the descriptor it was made on; a world-writable or
foreign folder anywhere in the mesh is refused and `mesh doctor` names it; and `mesh` run under
umask 000 makes no world-writable folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import agents, clock, lifecycle, locks, messages, tasks, watcher
from drasill_cli.backends.directory.mailbox import _shard
from drasill_cli.backends.directory.store import FileStore
from drasill_cli.config import Config
from drasill_cli.errors import MeshError, MeshUnusable
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner

NEW = "inbox/bob/new"
SHARD = f"{NEW}/1-abcde/fg/h"


def listing(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under `root` (links not followed): its kind, mode, mtime, bytes or target."""
    found: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = Path(folder) / name
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                content: object = path.read_bytes()
            elif stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            else:
                content = None
            found[str(path.relative_to(root))] = (info.st_mode, info.st_mtime_ns, content)
    return found


def swap_for_link(root: Path, rel: str, outside: Path) -> Path:
    """Move the mesh folder `rel` (and all it holds) out to `outside`, and plant a link to it
    in its place: the attacker's folder then already holds every folder below it."""
    folder = root / rel
    target = outside / rel.replace("/", "__")
    folder.rename(target)
    folder.symlink_to(target)
    return folder


# ---- 1 and 2: a link at every depth of every path the store writes --------------------------

Op = Callable[[FileStore, int], object]


def _publish(store: FileStore, n: int) -> None:
    store.publish(b'{"n": 1}', links=[f"{SHARD}/1-m-{n}.json"], keep_as=f"sent/alice/m-{n}.json")


def _publish_two(store: FileStore) -> None:
    for n in (0, 1):
        _publish(store, n + 10)
        os.rename(store.path(f"{SHARD}/1-m-{n + 10}.json"), store.path(f"{SHARD}/1-m-{n}.json"))


def _lock(store: FileStore, n: int) -> None:
    with store.lock(f"x-{n}"):
        pass


def _write(store: FileStore, n: int) -> None:
    store.write(f"tasks/t-{n}.json", {"n": n})


def _write_bytes(store: FileStore, n: int) -> None:
    store.write_bytes(f"attachments/m-1/f{n}.txt", b"x")


def _touch(store: FileStore, n: int) -> None:
    store.touch(f"heartbeats/bob-{n}")


def _two_wake_records(store: FileStore) -> None:
    for n in (0, 1):
        store.write(f"wake/bob-{n}.json", {})


def _two_bad_agents(store: FileStore) -> None:
    for n in (0, 1):
        store.write_bytes(f"agents/bad-{n}.json", b"[[")


def _touch_both(store: FileStore) -> None:
    for n in (0, 1):
        _touch(store, n)


# name: (what is made before the first run, the operation, the folders of its paths)
WRITES: dict[str, tuple[Callable[[FileStore], object] | None, Op, tuple[str, ...]]] = {
    "write": (None, _write, ("tasks",)),
    "create": (None, lambda s, n: s.create(f"locks/l-{n}.json", {"n": n}), ("locks",)),
    "write_bytes": (
        None,
        _write_bytes,
        ("attachments", "attachments/m-1", "staging"),
    ),
    "publish": (
        None,
        _publish,
        (
            "inbox",
            "inbox/bob",
            NEW,
            f"{NEW}/1-abcde",
            f"{NEW}/1-abcde/fg",
            SHARD,
            "sent",
            "sent/alice",
            "staging",
        ),
    ),
    "move": (
        _publish_two,
        lambda s, n: s.move(f"{SHARD}/1-m-{n}.json", f"inbox/bob/cur/1-m-{n}.json"),
        (NEW, f"{NEW}/1-abcde", SHARD, "inbox/bob/cur"),
    ),
    "remove": (
        _two_wake_records,
        lambda s, n: s.remove(f"wake/bob-{n}.json"),
        ("wake",),
    ),
    "touch": (None, _touch, ("heartbeats",)),
    "touch_again": (_touch_both, _touch, ("heartbeats",)),
    "lock": (None, _lock, (".locks",)),
    "append": (None, lambda s, n: s.append("audit/events.jsonl", b"line\n"), ("audit",)),
    "link": (
        lambda s: s.write_bytes("attachments/m-1/f.txt", b"data"),
        lambda s, n: s.link("attachments/m-1/f.txt", f"attachments/m-2/f{n}.txt"),
        ("attachments", "attachments/m-1"),
    ),
    "quarantine": (
        _two_bad_agents,
        lambda s, n: s.quarantine(f"agents/bad-{n}.json", "a test"),
        ("agents", "quarantine"),
    ),
}
WRITE_CASES = [(op, rel) for op, (_, _, folders) in WRITES.items() for rel in folders]


@pytest.mark.parametrize("reopen", [False, True], ids=["same-store", "new-process"])
@pytest.mark.parametrize(("op", "rel"), WRITE_CASES, ids=[f"{o}:{r}" for o, r in WRITE_CASES])
def test_a_link_at_any_depth_of_a_write_path_is_never_written_through(
    tmp_path: Path, op: str, rel: str, reopen: bool
) -> None:
    """The operation ran once (so a store that caches its checks has them), then a folder of
    its path became a link to a folder that holds everything below it: the second run writes,
    moves and removes nothing there; it sets the link aside, or refuses (exit 4)."""
    prepare, operation, _ = WRITES[op]
    root, outside = tmp_path / "mesh", tmp_path / "outside"
    outside.mkdir()
    store = FileStore.open(root)
    if prepare is not None:
        prepare(store)
    operation(store, 0)
    link = swap_for_link(root, rel, outside)
    before = listing(outside)
    if reopen:
        store = FileStore.open(root)
    try:
        operation(store, 1)
    except MeshUnusable:
        pass  # refused: exit 4
    else:
        assert not link.is_symlink(), "the link was used instead of being set aside"
        assert any("symlink" in w for w in store.warnings), store.warnings
    assert listing(outside) == before


READS: dict[str, tuple[Callable[[FileStore], object], Callable[[FileStore], object], str]] = {
    "read": (
        lambda s: s.write("agents/a.json", {"a": 1}),
        lambda s: s.read("agents/a.json"),
        "agents",
    ),
    "names": (lambda s: s.write("agents/a.json", {"a": 1}), lambda s: s.names("agents"), "agents"),
    "mtime": (lambda s: s.touch("heartbeats/a"), lambda s: s.mtime("heartbeats/a"), "heartbeats"),
    "scan": (_publish_two, lambda s: list(s.scan(NEW, depth=3)), f"{NEW}/1-abcde/fg"),
    "subdirs": (_publish_two, lambda s: s.subdirs(f"{NEW}/1-abcde"), f"{NEW}/1-abcde"),
    "open_regular": (
        lambda s: s.append("audit/events.jsonl", b"{}\n"),
        lambda s: s.open_regular("audit/events.jsonl"),
        "audit",
    ),
}


@pytest.mark.parametrize("op", list(READS))
def test_a_folder_swapped_for_a_link_is_never_read_through(tmp_path: Path, op: str) -> None:
    prepare, operation, rel = READS[op]
    root, outside = tmp_path / "mesh", tmp_path / "outside"
    outside.mkdir()
    store = FileStore.open(root)
    prepare(store)
    assert operation(store)  # found while the folder was real (and checked)
    swap_for_link(root, rel, outside)
    before = listing(outside)
    assert not operation(store)
    assert listing(outside) == before


def test_a_scan_lends_its_checked_folders_to_its_own_thread_only_while_it_runs(
    tmp_path: Path,
) -> None:
    """Taking a message reads and moves it through the descriptor its scan opened and checked
    (no second walk); that descriptor is never used by another thread, nor after the scan."""
    root, outside = tmp_path / "mesh", tmp_path / "outside"
    outside.mkdir()
    store = FileStore.open(root)
    _publish_two(store)
    scan = store.scan(NEW, depth=3)
    first = next(scan)
    assert store.read(first) == {"n": 1}
    swap_for_link(root, SHARD, outside)
    before = listing(outside)
    seen: list[object] = []
    other = threading.Thread(target=lambda: seen.append(store.read(first)))
    other.start()
    other.join()
    assert seen == [None]  # walked anew: the link was set aside, not read through
    assert not (root / SHARD).is_symlink()
    scan.close()
    assert store._held == {}
    assert store.read(first) is None
    assert listing(outside) == before


def test_send_never_delivers_through_a_symlinked_new_folder(
    cli: MeshRunner, tmp_path: Path
) -> None:
    """The shard folders of the next 30 seconds' messages are predictable from the clock; the
    attacker's folder holds them all, so a link into it needs no folder to be created."""
    cli.json("register", "alice")
    cli.json("register", "bob")
    outside = tmp_path / "outside"
    now = clock.now()
    for step in range(0, 30_000, 30):
        stamp = clock._encode(int((now + step / 1000) * 1e9), 13)
        (outside / _shard(f"m-{stamp}-0000", "1")).mkdir(parents=True, exist_ok=True)
    (cli.mesh_dir / "inbox" / "bob").mkdir(parents=True, exist_ok=True)
    (cli.mesh_dir / "inbox" / "bob" / "new").symlink_to(outside)
    before = listing(outside)
    done = cli.run("send", "bob", "hello", "--as", "alice", "--json")
    assert done.returncode in (0, 4), done.stderr
    assert listing(outside) == before
    if done.returncode == 0:
        assert "is a symlink" in done.stderr
        [message] = cli.json("inbox", "bob", "--list")
        assert message["body"] == "hello"


def _ordinary_work(mesh: Mesh, tmp_path: Path, step: int) -> None:
    """A round of ordinary work through the API, touching every kind of folder the mesh writes;
    a refusal (a `MeshError`) of one step does not stop the others."""
    attachment, target = tmp_path / "notes.txt", tmp_path / "target.txt"
    for path in (attachment, target):
        path.write_text("x")
    steps: list[Callable[[], object]] = [
        lambda: agents.heartbeat(mesh, "alice"),
        lambda: messages.send(
            mesh, "bob", f"n{step}", sender="alice", attachments=[str(attachment)]
        ),
        lambda: messages.send(mesh, "bob", f"u{step}", sender="alice", priority="urgent"),
        lambda: messages.consume(mesh, "bob"),
        lambda: tasks.add_task(mesh, f"task {step}", actor="alice"),
        lambda: tasks.claim_next(mesh, "bob"),
        lambda: locks.acquire(mesh, [str(target)], "alice", ttl=60),
        lambda: watcher.Watcher(mesh, lambda event: None).full_pass(),
        lambda: lifecycle.prune(mesh),
    ]
    for run in steps:
        with contextlib.suppress(MeshError):
            run()


def test_every_folder_of_a_live_mesh_swapped_for_a_link_is_never_used(tmp_path: Path) -> None:
    """Each folder of a mesh that has seen every kind of work, in turn, becomes a link to a
    folder holding all it held, between two rounds of work by one long-lived process."""
    base = tmp_path / "base"
    mesh = Mesh.open(base, Config())
    for name in ("alice", "bob"):
        agents.register(mesh, name)
    _ordinary_work(mesh, tmp_path, 0)
    folders = sorted(
        str(path.relative_to(base))
        for path in base.rglob("*")
        if path.is_dir() and path.relative_to(base).parts[0] != "quarantine"
    )
    assert len(folders) > 20, folders
    for index, rel in enumerate(folders):
        work = tmp_path / f"run-{index}"
        root, outside = work / "mesh", work / "outside"
        shutil.copytree(base, root, symlinks=True)
        outside.mkdir()
        mesh = Mesh.open(root, Config())
        _ordinary_work(mesh, work, 1)
        if not (root / rel).is_dir():
            continue  # the first round removed it (an emptied shard)
        swap_for_link(root, rel, outside)
        before = listing(outside)
        _ordinary_work(mesh, work, 2)
        assert listing(outside) == before, rel


# ---- 2: mesh watch keeps no check of a folder past its descriptor ---------------------------


def test_the_watcher_never_follows_a_folder_swapped_for_a_link_between_passes(
    mesh_dir: Path, tmp_path: Path
) -> None:
    """The attack on a group mesh: a member swaps folders the owner's watcher already looked
    at for links into the owner's private folders. The watcher's later passes must not move a
    private file into the quarantine, nor rewrite or delete a private `config.json`."""
    mesh = Mesh.open(mesh_dir, Config())
    agents.register(mesh, "config")  # no session: its wake stays queued, written each look
    messages.send(mesh, "config", "first", sender="human")
    watch = watcher.Watcher(mesh, lambda event: None)
    watch.full_pass()
    assert watcher.load_state(mesh, "config") is not None

    private = tmp_path / "private"
    private.mkdir()
    (private / "config.json").write_text('{"owner": "secret settings"}')
    wake = mesh_dir / "wake"
    wake.rename(tmp_path / "old-wake")
    wake.symlink_to(private)
    trap = tmp_path / "trap"
    [unread] = (mesh_dir / "inbox" / "config" / "new").rglob("*.json")
    shard = unread.parent.relative_to(mesh_dir / "inbox" / "config" / "new")
    (trap / shard).mkdir(parents=True)
    (trap / shard / unread.name).write_text("private, not JSON")
    new = mesh_dir / "inbox" / "config" / "new"
    new.rename(tmp_path / "old-new")
    new.symlink_to(trap)
    before = listing(tmp_path / "private"), listing(trap)

    messages.send(mesh, "config", "second", sender="human")  # the watcher looks again
    watch.tick({"config"})
    agents.unregister(mesh, "config")  # its unread mail is archived
    watch.tick({"config"})  # nothing unread, not registered: its wake state is forgotten
    watch.full_pass()
    assert (listing(tmp_path / "private"), listing(trap)) == before


# ---- 4: every folder's owner and mode --------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "mode"),
    [
        ("inbox/bob/new", 0o777),
        ("inbox/bob", 0o777),
        ("agents", 0o777),
        ("shard", 0o777),
        ("inbox/bob/new", 0o770),  # group-writable, in a mesh that is not group-shared
        ("shard", 0o770),
    ],
)
def test_an_inner_folder_others_may_write_is_refused_and_doctor_names_it(
    cli: MeshRunner, rel: str, mode: int
) -> None:
    cli.json("register", "bob")
    cli.json("send", "bob", "one", "--as", "human")
    if rel == "shard":
        [unread] = (cli.mesh_dir / "inbox" / "bob" / "new").rglob("*.json")
        folder = unread.parent
    else:
        folder = cli.mesh_dir / rel
    folder.chmod(mode)
    commands: list[tuple[str, ...]] = [
        ("inbox", "--as", "bob")
    ]  # the next message is read from every folder named
    if rel != "shard":  # a new message goes into a shard of its own time
        commands.append(("send", "bob", "forged", "--as", "human"))
    for args in commands:
        done = cli.run(*args, "--json")
        assert done.returncode == 4, (args, done.stdout, done.stderr)
        error = json.loads(done.stdout)["error"]
        assert error["code"] == "unsafe-permissions", error
        assert str(folder) in error["message"], error
    doctor = cli.run("doctor", "--json")
    assert doctor.returncode == 1, doctor.stdout
    failed = [c for c in json.loads(doctor.stdout)["checks"] if c["status"] == "fail"]
    assert any(str(folder) in json.dumps(c) and "writable" in c["detail"] for c in failed), failed


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another uid")
def test_an_inner_folder_of_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "mesh"
    store = FileStore.open(root)
    store.write("agents/a.json", {})
    os.chown(root / "agents", 12345, 12345)
    with pytest.raises(MeshUnusable, match="owned by uid 12345"):
        store.write("agents/b.json", {})
    with pytest.raises(MeshUnusable, match="owned by uid 12345"):
        FileStore.open(root).read("agents/a.json")
    assert not (root / "agents" / "b.json").exists()


def test_umask_000_makes_no_folder_others_may_write(cli: MeshRunner, tmp_path: Path) -> None:
    mesh_dir = tmp_path / "deep" / "er" / "mesh"
    script = (
        "import os, sys; os.umask(0); sys.argv = ['mesh', *sys.argv[1:]];"
        "from drasill_cli.cli.app import main; main()"
    )
    env = {**cli.env, "DRASILL_MESH_DIR": str(mesh_dir)}
    for args in (["register", "a"], ["send", "a", "hi", "--as", "b"], ["task", "add", "t"]):
        done = subprocess.run(
            [sys.executable, "-c", script, *args], env=env, capture_output=True, check=False
        )
        assert done.returncode == 0, done.stderr
    for folder in (tmp_path / "deep", tmp_path / "deep" / "er", mesh_dir):
        assert not folder.stat().st_mode & 0o022, (folder, oct(folder.stat().st_mode))
    for path in mesh_dir.rglob("*"):
        assert not path.lstat().st_mode & 0o077, (path, oct(path.lstat().st_mode))
