"""The planting fuzzer: damage planted at random places in a live mesh while real commands run.

A run builds a live mesh through the real CLI (agents, messages with attachments, tasks, a
claim, locks), keeps a copy of it, and then goes round after round: plant one to three things at
random places inside the mesh directory (any depth, the root itself included), then run one or
two random `mesh` commands as one of several agents, each as a real subprocess with a timeout.
Every few rounds (and after any round that failed) the mesh is put back from the copy, so the
damage of one episode does not hide the next.

What is planted (see `PLANTS`): symlinks to a sentinel folder outside the mesh, to files in it
and to names that do not exist there yet; FIFOs; folders (empty or not) where files are
expected; unix sockets; garbage bytes; deeply nested JSON; 50 MB sparse files; JSON records with
bad timestamps, wrong types, missing keys, Infinity/NaN, future times, path-like ids; extreme
mtimes (a heartbeat from the future or from year 9999); names that are not UTF-8. A planting
either replaces an existing entry (file, folder or the mesh root) or adds a new one next to
existing ones under a name the mesh itself would use. Some rounds also point `DRASILL_CONFIG` at
a damaged config file, or point the mesh directory at the sentinel itself (a folder that is not a
mesh). Commands also get arguments that are not UTF-8 (bytes argv).

After every command: no traceback, no command past its timeout, an exit code within the
contract, and with `--json` exactly one JSON value on stdout (JSON lines for `log`), an error
envelope for exits 1-4; and the sentinel folder (every entry's type, mode, mtime, size, bytes and
link target, and no new entries) identical to before.

The plan (what is planted where, which commands run) is drawn from one seeded `random.Random`;
ids the mesh makes are time-based, so two runs of one seed make the same choices over names
that may differ. Every failure names the seed; rerun with `DRASILL_FUZZ_SEED=N`.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.other_user import OtherUser

Arg = str | bytes

AGENTS = ("alice", "bob", "carol", "tmp")  # `tmp` on purpose: a name the temp sweep may mistake
EXIT_CODES = frozenset({0, 1, 2, 3, 4})
TRACEBACK = b"Traceback (most recent call last)"
HUGE_BYTES = 50 * 1024 * 1024
DEEP = 100_000
OLD_MTIME = 978_307_200  # 2001-01-01: old enough for any stale-file sweep
NON_UTF8 = (
    b"\xff\xfe",
    b"caf\xe9",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"ok\x80",
    b"\xf8\x88\x80\x80\x80",
)
# A message id in a file or folder name (bytes: names need not be UTF-8).
MESSAGE_ID = re.compile(rb"m-[0-9a-z]{13}-[0-9a-z]{4}")
BIG_ATTACHMENT_BYTES = 9 * 1024 * 1024  # over the 8 MiB record bound, under the attachment limit
FUZZ_CONFIG = """\
# short lifecycle times, so prune marks, removes, archives and sweeps during a run
[lifecycle]
idle_after = 5
dead_after = 30
remove_after = 60
stale_tmp_after = 2
"""


# ---- the sentinel: a folder outside the mesh that must never change ---------------------------

SENTINEL_FILES: dict[str, bytes] = {
    "secret.txt": b"top secret, must never move\n",
    "m-1hv6z4h617rad-bait.json": json.dumps(
        {
            "id": "m-1hv6z4h617rad-bait",
            "from": "alice",
            "to": "bob",
            "body": "bait message",
            "priority": "urgent",
            "created_at": "2026-01-01T00:00:00Z",
            "reply_to": None,
            "thread": "m-1hv6z4h617rad-bait",
            "attachments": [],
        }
    ).encode(),
    "1-m-1hv6z4h617rad-bai2.json": b'{"id": "m-1hv6z4h617rad-bai2", "from": "bob", "to": "alice",'
    b' "body": "bait", "priority": "normal", "created_at": "2026-01-01T00:00:00Z",'
    b' "reply_to": null, "thread": "m-1hv6z4h617rad-bai2", "attachments": []}',
    "bob.json": b'{"schema_version": 1, "name": "bob", "pid": null, "host": "vm",'
    b' "registered_at": "2026-01-01T00:00:00Z", "dead_at": null}',
    "t-1hv6z4jcckpyy-bait.json": b'{"schema_version": 1, "id": "t-1hv6z4jcckpyy-bait",'
    b' "title": "bait", "state": "queued"}',
    "1000000_t-1hv6z4jcckpyy-bait.ref": b"",
    "bait.lock": b"",
    "events.jsonl": b'{"time": "2026-01-01T00:00:00Z", "event": "register", "actor": "x"}\n',
    ".tmp-old": b"an old temporary-looking file that is not the mesh's\n",
    "tmp/old.txt": b"a user's file in a folder named tmp\n",
    "tmp/.tmp-older": b"another\n",
    "new/1-m-1hv6z4h617rad-bai3.json": b'{"id": "m-1hv6z4h617rad-bai3", "from": "carol",'
    b' "to": "bob", "body": "bait", "priority": "normal",'
    b' "created_at": "2026-01-01T00:00:00Z", "attachments": []}',
    "sub/deep/file.json": b'{"a": 1}',
    "sub/notes.md": b"# notes\n",
}
SENTINEL_DIRS = ("tmp", "new", "sub", "sub/deep")


def build_sentinel(root: Path) -> None:
    """(Re)create the sentinel folder with fixed content, modes and old mtimes."""
    remove_tree(root)
    root.mkdir(mode=0o755)
    for rel in SENTINEL_DIRS:
        (root / rel).mkdir(mode=0o755, parents=True, exist_ok=True)
    for rel, content in SENTINEL_FILES.items():
        path = root / rel
        path.write_bytes(content)
        path.chmod(0o644)
        os.utime(path, (OLD_MTIME, OLD_MTIME))
    for rel in (*sorted(SENTINEL_DIRS, key=len, reverse=True), "."):
        os.utime(root / rel, (OLD_MTIME, OLD_MTIME))
    root.chmod(0o755)


Entry = tuple[str, int, int, int, bytes]  # kind, mode, mtime_ns, size, content or link target


def snapshot(root: Path) -> dict[bytes, Entry]:
    """Every entry under `root` (never following a link): type, mode, mtime, size, bytes."""
    result: dict[bytes, Entry] = {}

    def visit(path: bytes, rel: bytes) -> None:
        st = os.lstat(path)
        mode = st.st_mode
        content = b""
        if stat.S_ISREG(mode):
            kind = "file"
            with open(path, "rb") as handle:
                content = handle.read()
        elif stat.S_ISLNK(mode):
            kind = "link"
            content = os.readlink(path)
        elif stat.S_ISDIR(mode):
            kind = "dir"
        else:
            kind = f"special-{stat.S_IFMT(mode):o}"
        result[rel] = (kind, stat.S_IMODE(mode), st.st_mtime_ns, st.st_size, content)
        if kind == "dir":
            for name in sorted(os.listdir(path)):
                visit(os.path.join(path, name), os.path.join(rel, name))

    if os.path.lexists(root):
        visit(os.fsencode(root), b".")
    return result


def sentinel_diff(before: dict[bytes, Entry], after: dict[bytes, Entry]) -> list[str]:
    """What changed in the sentinel, one short line per entry."""
    lines: list[str] = []
    for rel in sorted(before.keys() | after.keys()):
        old, new = before.get(rel), after.get(rel)
        if old == new:
            continue
        if old is None:
            lines.append(f"new entry {rel!r}")
        elif new is None:
            lines.append(f"entry gone {rel!r}")
        else:
            what = [
                name
                for name, a, b in zip(
                    ("type", "mode", "mtime", "size", "content"), old, new, strict=True
                )
                if a != b
            ]
            lines.append(f"{rel!r} changed: {', '.join(what)}")
    return lines


# ---- file helpers that never follow a link ---------------------------------------------------


def remove_tree(path: Path | str) -> None:
    """Remove whatever is at `path` (a link is unlinked, never followed)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return

    def retry(func: Callable[..., Any], failed: str, _exc: Any) -> None:
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(failed), 0o700)
        func(failed)

    os.chmod(path, 0o700)
    shutil.rmtree(path, onerror=retry)


def is_real_dir(path: str) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def make_dirs(root: str, rel: str) -> bool:
    """Create `root/rel` folder by folder, refusing to pass through anything but a real folder."""
    current = root
    if not is_real_dir(root):
        return False
    for part in [p for p in rel.split(os.sep) if p and p != "."]:
        current = os.path.join(current, part)
        if not os.path.lexists(current):
            os.mkdir(current, 0o700)
        elif not is_real_dir(current):
            return False
    return True


def write_new(path: str, data: bytes, mode: int = 0o600) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def read_record(path: str) -> Any:
    """The JSON in the regular file at `path` (small, never through a link or a FIFO), or None."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode) or st.st_size > 65536:
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        try:
            data = os.read(fd, 65536)
        finally:
            os.close(fd)
        return json.loads(data)
    except (OSError, ValueError, RecursionError):
        return None


def walk(root: str) -> tuple[list[str], list[str]]:
    """Relative paths of the real folders and of every other entry under `root` (sorted)."""
    folders: list[str] = ["."]
    others: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        rel = os.path.relpath(dirpath, root)
        for name in sorted(dirnames):
            full = os.path.join(dirpath, name)
            (folders if is_real_dir(full) else others).append(
                os.path.normpath(os.path.join(rel, name))
            )
        others.extend(os.path.normpath(os.path.join(rel, name)) for name in sorted(filenames))
        dirnames[:] = sorted(d for d in dirnames if is_real_dir(os.path.join(dirpath, d)))
    return sorted(folders), sorted(others)


def message_ids_under(path: str) -> set[str]:
    """Ids of the messages named by the entry at `path` and, for a real folder, everything in it
    (never following a link)."""
    found: set[str] = set()
    if not os.path.lexists(path):
        return found
    found.update(m.decode() for m in MESSAGE_ID.findall(os.fsencode(os.path.basename(path))))
    if is_real_dir(path):
        for _dirpath, dirnames, filenames in os.walk(os.fsencode(path), followlinks=False):
            for name in [*dirnames, *filenames]:
                found.update(m.decode() for m in MESSAGE_ID.findall(name))
    return found


def kept_message_ids(mesh: Path) -> set[str]:
    """Ids of the messages the mesh keeps for their readers: unread or consumed (`inbox/`),
    archived (`archive/`) or quarantined (`quarantine/`, at any depth). The senders' history
    (`sent/`) does not count: it is not delivery."""
    found: set[str] = set()
    for folder in ("inbox", "archive", "quarantine"):
        found |= (
            message_ids_under(os.path.join(mesh, folder))
            if is_real_dir(os.path.join(mesh, folder))
            else set()
        )
    return found


def entries_by_inode(root: str) -> dict[bytes, int]:
    """Every entry under `root` (not following links) and its inode: what a planting changed."""
    found: dict[bytes, int] = {}
    if not is_real_dir(root):
        return found
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root), followlinks=False):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            with contextlib.suppress(OSError):
                found[path] = os.lstat(path).st_ino
    return found


def share_new_entries(root: str, before: dict[bytes, int], gid: int) -> None:
    """Give the group `gid` what appeared under `root` since `before` (new names or new inodes):
    its group, and read/write (and search, for folders) for the group, as a member would."""
    for path, inode in entries_by_inode(root).items():
        if before.get(path) == inode:
            continue
        with contextlib.suppress(OSError):
            info = os.lstat(path)
            os.lchown(path, -1, gid)
            if stat.S_ISDIR(info.st_mode):
                # the group's setgid folder, as the mesh makes them (never for others)
                os.chmod(path, stat.S_IMODE(info.st_mode) | 0o2070)  # noqa: S103 -- group only
            elif not stat.S_ISLNK(info.st_mode):
                os.chmod(path, stat.S_IMODE(info.st_mode) | 0o060)


def regroup_tree(root: Path, gid: int) -> None:
    """A copied group-shared mesh made the group's again (a copy belongs to its copier's
    group): every entry's group, not following links."""
    os.lchown(root, -1, gid)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in [*dirnames, *filenames]:
            with contextlib.suppress(OSError):
                os.lchown(os.path.join(dirpath, name), -1, gid)


# ---- what is planted ---------------------------------------------------------------------------

TEMPLATES: dict[str, dict[str, Any]] = {
    "agent": {
        "schema_version": 1,
        "name": "zed",
        "pid": None,
        "pid_started": None,
        "host": "vm",
        "session": None,
        "backend": None,
        "role": None,
        "tool": None,
        "cwd": "/",
        "ram_gb": None,
        "vram_gb": None,
        "registered_at": "2026-01-01T00:00:00Z",
        "dead_at": None,
    },
    "message": {
        "id": "m-1hv6z4h617rad-zzzz",
        "from": "alice",
        "to": "bob",
        "body": "planted",
        "priority": "normal",
        "created_at": "2026-01-01T00:00:00Z",
        "reply_to": None,
        "thread": "m-1hv6z4h617rad-zzzz",
        "attachments": [],
        "wake": True,
    },
    "task": {
        "schema_version": 1,
        "id": "t-1hv6z4jcckpyy-zzzz",
        "title": "planted",
        "body": None,
        "state": "queued",
        "priority": 0,
        "created_by": "alice",
        "claimed_by": None,
        "claimed_at": None,
        "created_at": "2026-01-01T00:00:00Z",
        "updated_at": "2026-01-01T00:00:00Z",
        "attempts": 0,
        "result": None,
        "depends_on": [],
        "review": False,
        "approved_by": None,
        "cwd": "/",
    },
    "lock": {
        "schema_version": 1,
        "path": "/tmp/x",
        "mode": "write",
        "holder": "carol",
        "acquired_at": "2026-01-01T00:00:00Z",
        "expires_at": "2999-01-01T00:00:00Z",
        "ttl": 300.0,
    },
    "meta": {"schema_version": 1, "created_at": "2026-01-01T00:00:00Z"},
    "event": {"time": "2026-01-01T00:00:00Z", "event": "register", "actor": "alice"},
}


def template_kind(rel_dir: str) -> str:
    top = rel_dir.split(os.sep, maxsplit=1)[0]
    return {
        "agents": "agent",
        "inbox": "message",
        "sent": "message",
        "archive": "message",
        "tasks": "task",
        "locks": "lock",
        "audit": "event",
        ".": "meta",
    }.get(top, "message")


@dataclass
class Planter:
    """Plants damage inside `mesh` (never writing through a link) and says what it did."""

    rng: random.Random
    mesh: Path
    sentinel: Path
    displaced: Path  # where the real mesh root waits while something else stands in its place
    root_replaced: bool = False
    allow_root: bool = True  # off while a command runs: its mesh must be the one put back
    group_gid: int | None = None  # a group-shared mesh: what is planted is the group's
    removed: set[str] = field(default_factory=set)  # ids of messages the planter deleted

    # -- names --

    def sibling_name(self, rel_dir: str) -> str:
        """A new name like one the mesh uses in this folder (a sibling's, with a new id tail)."""
        full = os.path.join(self.mesh, rel_dir)
        try:
            siblings = sorted(n for n in os.listdir(full) if not n.startswith(".tmp-"))
        except OSError:
            siblings = []
        rng = self.rng
        tail = "".join(rng.choice("0123456789abcdefghjkmnpqrstvwxyz") for _ in range(4))
        if siblings and rng.random() < 0.8:
            base = rng.choice(siblings)
            stem, dot, suffix = base.partition(".")
            stem = stem[:-4] + tail if len(stem) > 4 else stem + tail
            return f"{stem}{dot}{suffix}"
        kind = template_kind(rel_dir)
        return rng.choice(
            {
                "agent": [f"z{tail}.json", "bob.json"],
                "message": [f"1-m-1hv6z4h617rad-{tail}.json", f"m-1hv6z4h617rad-{tail}.json"],
                "task": [f"t-1hv6z4jcckpyy-{tail}.json", f"1000000_t-1hv6z4jcckpyy-{tail}.ref"],
                "lock": [f"{'ab' * 32}-carol.json", f"agent-{tail}.lock"],
                "event": ["events.jsonl", f"{tail}.jsonl"],
                "meta": ["meta.json", "quarantine", "archive", "tmp", f".tmp-{tail}"],
            }[kind]
        )

    def weird_name(self) -> str:
        raw = self.rng.choice(NON_UTF8) + self.rng.choice([b".json", b"", b".lock", b".ref"])
        return os.fsdecode(raw)

    # -- places --

    def place(self) -> str:
        """A relative path to plant at: an existing entry (replaced) or a new name."""
        folders, others = walk(str(self.mesh))
        rng = self.rng
        roll = rng.random()
        if roll < 0.03 and self.allow_root:
            return "."  # the mesh root itself
        if roll < 0.45 and others:
            return rng.choice(others)
        if roll < 0.55 and len(folders) > 1:
            return rng.choice(folders[1:])
        extra = [
            "archive",
            "quarantine",
            "inbox/bob/new",
            "inbox/tmp/new",
            "tasks/held/tmp",
            "sent/tmp",
        ]
        parent = rng.choice(folders + extra)
        name = self.weird_name() if rng.random() < 0.12 else self.sibling_name(parent)
        return os.path.normpath(os.path.join(parent, name))

    def clear(self, rel: str) -> bool:
        """Make room at `rel` (removing what is there); False when it cannot be planted safely."""
        if rel == ".":
            if self.root_replaced:
                return False
            os.rename(self.mesh, self.displaced)
            self.root_replaced = True
            return True
        parent = os.path.dirname(rel)
        if not make_dirs(str(self.mesh), parent):
            return False
        target = os.path.join(self.mesh, rel)
        self.removed |= message_ids_under(target)  # not the mesh's loss: the planter's
        remove_tree(target)
        return True

    def restore_root(self) -> None:
        if self.root_replaced:
            remove_tree(self.mesh)
            os.rename(self.displaced, self.mesh)
            self.root_replaced = False

    # -- things --

    def plant(self) -> str:
        """Plant one random thing; returns a line saying what and where. On a group-shared
        mesh what was planted is made the group's (setgid folders give it the group; the
        modes are opened to it), as if another member had made it."""
        if self.group_gid is None:
            return self.plant_one()
        before = entries_by_inode(str(self.mesh))
        try:
            return self.plant_one()
        finally:
            share_new_entries(str(self.mesh), before, self.group_gid)

    def plant_one(self) -> str:
        """`plant` on a mesh of one user."""
        kind = self.rng.choices([p[0] for p in PLANTS], weights=[p[1] for p in PLANTS])[0]
        if self.root_replaced:  # the root is not a folder now: walking it could reach the sentinel
            return f"(skipped {kind}: the mesh root is replaced this round)"
        if kind == "mtime":
            return self.plant_mtime()
        if kind == "bad-record":
            return self.plant_bad_record()
        rel = self.place()
        if not self.clear(rel):
            return f"(skipped {kind} at {rel!r}: a planted link is on the way)"
        path = str(self.mesh) if rel == "." else os.path.join(self.mesh, rel)
        what = getattr(self, "make_" + kind.replace("-", "_"))(path)
        return f"{what} at {rel!r}"

    def make_symlink_dir(self, path: str) -> str:
        target = self.rng.choice(
            [self.sentinel, self.sentinel / "tmp", self.sentinel / "new", self.sentinel / "sub"]
        )
        os.symlink(target, path)
        return f"symlink to sentinel folder {target.name}"

    def make_symlink_file(self, path: str) -> str:
        name = self.rng.choice(sorted(n for n in SENTINEL_FILES if "/" not in n))
        os.symlink(self.sentinel / name, path)
        return f"symlink to sentinel file {name}"

    def make_symlink_dangling(self, path: str) -> str:
        name = self.rng.choice(
            ["missing.json", "new/missing.json", "tmp/made-by-mesh", "missing-dir"]
        )
        os.symlink(self.sentinel / name, path)
        return f"dangling symlink into the sentinel ({name})"

    def make_fifo(self, path: str) -> str:
        os.mkfifo(path, 0o600)
        return "FIFO"

    def make_folder(self, path: str) -> str:
        os.mkdir(path, 0o700)
        if self.rng.random() < 0.5:
            write_new(os.path.join(path, "x.json"), b"{}")
            return "non-empty folder"
        return "empty folder"

    def make_socket(self, path: str) -> str:
        parent, name = os.path.split(path)
        here = os.getcwd()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.chdir(parent)  # unix socket paths are limited to ~107 bytes: bind a relative name
            try:
                sock.bind(os.fsencode(name))
            except OSError:  # a name too long even so (a long quarantined name's sibling)
                os.mkfifo(name, 0o600)
                return "FIFO (the name is too long for a socket)"
        finally:
            os.chdir(here)
            sock.close()
        return "unix socket"

    def make_garbage(self, path: str) -> str:
        size = self.rng.choice([0, 1, 7, 300, 4096, 70_000])
        data = self.rng.randbytes(size)
        write_new(path, data)
        return f"{size} garbage bytes"

    def make_deep_json(self, path: str) -> str:
        shape = self.rng.choice(["open", "list", "dict"])
        if shape == "open":
            data = b"[" * DEEP
        elif shape == "list":
            data = b"[" * DEEP + b"]" * DEEP
        else:
            data = b'{"a":' * (DEEP // 2) + b"1" + b"}" * (DEEP // 2)
        write_new(path, data)
        return f"deeply nested JSON ({shape}, {len(data)} bytes)"

    def make_huge(self, path: str) -> str:
        prefix = self.rng.choice([b"", b'{"name": "', b"[", b'{"id": "m-1", "body": "'])
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, prefix)
            os.ftruncate(fd, HUGE_BYTES)
        finally:
            os.close(fd)
        return f"50 MB sparse file starting {prefix!r}"

    def plant_mtime(self) -> str:
        folders, others = walk(str(self.mesh))
        beats = [o for o in others if o.startswith("heartbeats" + os.sep)]
        pool = beats if beats and self.rng.random() < 0.6 else others + folders[1:]
        if not pool:
            return "(skipped mtime: empty mesh)"
        rel = self.rng.choice(pool)
        now = time.time()
        when = self.rng.choice(
            [now + 3600, now + 86400 * 365, 2**33, 253_402_300_000, now - 86400 * 30, 0, -1e9]
        )
        try:
            os.utime(os.path.join(self.mesh, rel), (when, when), follow_symlinks=False)
        except (OSError, OverflowError, ValueError) as exc:
            return f"(mtime {when} refused at {rel!r}: {exc})"
        return f"mtime {when:.0f} on {rel!r}"

    def plant_bad_record(self) -> str:
        """A JSON record that parses but cannot be used: bad times, types, keys, numbers, ids."""
        folders, others = walk(str(self.mesh))
        records = [o for o in others if o.endswith((".json", ".jsonl"))]
        rng = self.rng
        if records and rng.random() < 0.6:
            rel = rng.choice(records)
            replace = rng.random() < 0.7
            parent = os.path.dirname(rel)
        else:
            parent = rng.choice(folders)
            rel, replace = os.path.normpath(os.path.join(parent, self.sibling_name(parent))), False
        record = read_record(os.path.join(self.mesh, rel)) if replace else None
        if not isinstance(record, dict):
            sibling = [o for o in records if os.path.dirname(o) == parent]
            record = read_record(os.path.join(self.mesh, rng.choice(sibling))) if sibling else None
        if not isinstance(record, dict):
            record = dict(TEMPLATES[template_kind(parent)])
        record, how = self.mutate(record)
        text = json.dumps(record, allow_nan=True).encode()
        path = os.path.join(self.mesh, rel)
        if replace and rel.endswith(".jsonl") and rng.random() < 0.7:
            if not stat.S_ISREG(os.lstat(path).st_mode):
                return f"(skipped appending to non-file {rel!r})"
            with open(path, "ab") as handle:
                handle.write(text + b"\n")
            return f"appended event line ({how}) to {rel!r}"
        if not self.clear(rel):
            return f"(skipped bad record at {rel!r})"
        write_new(os.path.join(self.mesh, rel), text)
        return f"bad record ({how}) {'replacing' if replace else 'new'} {rel!r}"

    def mutate(self, record: dict[str, Any]) -> tuple[Any, str]:
        rng = self.rng
        keys = sorted(record) or ["id"]
        key = rng.choice(keys)
        times = [k for k in keys if k.endswith(("_at", "time", "_seen"))]
        roll = rng.random()
        if roll < 0.15:
            record.pop(key, None)
            return record, f"missing {key}"
        if roll < 0.4 and times:
            key = rng.choice(times)
            value: Any = rng.choice(
                [
                    "not a time",
                    "",
                    "2026-13-45T99:00:00Z",
                    "2999-12-31T23:59:59Z",
                    "9999-12-31T23:59:59.999999Z",
                    "0001-01-01T00:00:00Z",
                    "2026-11-30T16:21:37",
                    "2026-11-30T16:21:37+14:00",
                    1e300,
                    -1,
                    None,
                    [],
                ]
            )
            record[key] = value
            return record, f"{key}={value!r}"
        if roll < 0.55:
            value = rng.choice(
                [float("inf"), float("-inf"), float("nan"), 10**400 // 10**200, -(2**63)]
            )
            record[rng.choice([*keys, "priority", "ttl", "pid", "attempts", "ram_gb"])] = value
            return record, f"a number {value!r}"
        if roll < 0.7:
            target = rng.choice(
                [
                    str(self.sentinel / "secret.txt"),
                    str(self.sentinel),
                    "../../../sentinel/secret.txt",
                    "../" * 8 + "sentinel/tmp",
                    "..",
                    "a/../../b",
                ]
            )
            record[
                rng.choice(
                    [
                        k
                        for k in ("path", "id", "name", "from", "to", "holder", "claimed_by")
                        if k in record
                    ]
                    or ["path"]
                )
            ] = target
            if "attachments" in record and rng.random() < 0.5:
                record["attachments"] = [
                    {"name": "../secret.txt", "path": target, "size": 1, "sha256": "0" * 64}
                ]
            return record, f"path-like value {target!r}"
        if roll < 0.8:
            return rng.choice([[], "text", 1, None, [record], True]), "not an object"
        value = rng.choice(
            [None, 1, "x", [], {}, True, 1.5, -1, "\x00", "a\nb", {"nested": [1, 2]}]
        )
        record[key] = value
        return record, f"{key}={value!r}"


PLANTS: list[tuple[str, int]] = [
    ("symlink-dir", 10),
    ("symlink-file", 8),
    ("symlink-dangling", 5),
    ("fifo", 8),
    ("folder", 8),
    ("socket", 4),
    ("garbage", 8),
    ("deep-json", 6),
    ("huge", 3),
    ("bad-record", 18),
    ("mtime", 5),
]


# ---- running commands --------------------------------------------------------------------------


@dataclass
class Outcome:
    argv: list[Arg]
    json_mode: bool
    rc: int | None  # None: killed at the timeout
    stdout: bytes
    stderr: bytes
    seconds: float


def run_mesh(
    argv: Sequence[Arg],
    env: dict[str, str],
    cwd: Path,
    timeout: float,
    *,
    stdin: bytes | None = None,
    user: OtherUser | None = None,
) -> Outcome:
    """Run `mesh ARGV` in its own process group; kill the group at the timeout. `stdin`: bytes
    fed to it (else nothing); `user`: run as that other user."""
    return start_mesh(argv, env, cwd, stdin=stdin, user=user).finish(timeout)


@dataclass
class Running:
    """A `mesh` command started by `start_mesh`, not waited for yet."""

    argv: list[Arg]
    proc: subprocess.Popen[bytes]
    stdin: bytes | None
    start: float

    def finish(self, timeout: float) -> Outcome:
        """Wait for it (feeding its stdin); kill its process group at the timeout."""
        proc = self.proc
        rc: int | None
        try:
            out, err = proc.communicate(self.stdin, timeout=timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            rc = None
        return Outcome(
            self.argv, "--json" in self.argv, rc, out, err, time.monotonic() - self.start
        )


def start_mesh(
    argv: Sequence[Arg],
    env: dict[str, str],
    cwd: Path,
    *,
    stdin: bytes | None = None,
    user: OtherUser | None = None,
) -> Running:
    """Start `mesh ARGV` in its own process group (as `user` when given); `finish` waits."""
    command: list[Arg] = [sys.executable, "-m", "drasill_cli", *argv]
    extra: dict[str, Any] = {}
    if user is not None:
        command, env, extra = user.argv(argv), user.env(env), user.popen_kwargs()
    proc = subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        start_new_session=True,
        **extra,
    )
    return Running(list(argv), proc, stdin, time.monotonic())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-JSON constant {name}")


def problems(outcome: Outcome, timeout: float) -> list[str]:
    """What is wrong with one command's outcome (empty when it kept the contract)."""
    found: list[str] = []
    if outcome.rc is None:
        return [f"hang: still running after {timeout:.0f} s (killed)"]
    for stream_name, data in (("stderr", outcome.stderr), ("stdout", outcome.stdout)):
        if TRACEBACK in data:
            lines = [ln for ln in data.decode(errors="replace").splitlines() if ln.strip()]
            found.append(f"traceback on {stream_name}: {lines[-1] if lines else ''}")
    if outcome.rc not in EXIT_CODES:
        found.append(f"exit code {outcome.rc} outside the contract")
    # After a traceback broken JSON is no news. `lock -- CMD` exits with CMD's code, and CMD
    # writes to the same stdout: its JSON is not checked (the runner's business, issue 24).
    lock_run = "--" in outcome.argv
    if outcome.json_mode and not found and not lock_run:
        found.extend(json_problems(outcome))
    return found


def json_problems(outcome: Outcome) -> list[str]:
    try:
        text = outcome.stdout.decode()
    except UnicodeDecodeError as exc:
        return [f"--json stdout is not UTF-8 ({exc})"]
    is_log = any(a in ("log", "export") for a in outcome.argv[:1] + outcome.argv[1:2])
    values: list[Any] = []
    try:
        if is_log and outcome.rc == 0:
            values = [
                json.loads(ln, parse_constant=_reject_constant) for ln in text.splitlines() if ln
            ]
            return []
        values = [json.loads(text, parse_constant=_reject_constant)]
    except (ValueError, RecursionError) as exc:
        return [
            f"--json stdout is not one JSON value ({type(exc).__name__}: {exc});"
            f" stdout starts {text[:120]!r}"
        ]
    value = values[0]
    if outcome.rc in (1, 2, 3, 4):
        if value is None and outcome.rc == 1 and "inbox" in outcome.argv:
            return []
        error = value.get("error") if isinstance(value, dict) else None
        if not (
            isinstance(error, dict)
            and isinstance(error.get("code"), str)
            and isinstance(error.get("message"), str)
        ):
            return [f"exit {outcome.rc} with --json but no error envelope: {text[:160]!r}"]
    return []


def describe(argv: Sequence[Arg]) -> str:
    return " ".join(
        ascii(a) if isinstance(a, bytes) else a if re.fullmatch(r"[\w./:@=+-]+", a) else repr(a)
        for a in argv
    )


def signature(argv: Sequence[Arg], problem: str) -> str:
    """A short class for a failure: the command words and the problem with specifics blanked."""
    words = [a for a in argv[:2] if isinstance(a, str)]
    command = " ".join(words[:2]) if words[:1] == ["task"] else words[0] if words else "?"
    generic = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", problem)
    generic = re.sub(r"\d+", "N", generic)
    return f"{command}: {generic[:160]}"


# ---- the commands the agents run ---------------------------------------------------------------


@dataclass
class Workbench:
    """Files outside the mesh that commands use: attachments and lock targets."""

    project: Path
    weird_file: bytes = b""
    fifo: Path = field(default_factory=Path)
    big: Path = field(default_factory=Path)  # an attachment over the record bound

    @classmethod
    def build(cls, project: Path) -> Workbench:
        project.mkdir()
        (project / "notes.txt").write_text("notes\n")
        (project / ".tmp-report.txt").write_text("a report whose name looks temporary\n")
        (project / "src").mkdir()
        (project / "src" / "main.py").write_text("print()\n")
        weird = os.fsencode(project) + b"/r\xe9sum\xe9.txt"
        with open(weird, "wb") as handle:
            handle.write(b"cv\n")
        fifo = project / "pipe"
        os.mkfifo(fifo)
        big = project / "big.bin"
        with open(big, "wb") as handle:
            handle.write(b"big attachment\n")
            handle.truncate(BIG_ATTACHMENT_BYTES)
        for path in (project, project / "src"):  # another user may run commands here
            path.chmod(0o755)
        return cls(project, weird, fifo, big)


@dataclass
class Commander:
    rng: random.Random
    mesh: Path
    bench: Workbench
    commands: list[tuple[str, int]] = field(default_factory=lambda: list(COMMANDS))

    def ids(self, folder: str, pattern: str) -> list[str]:
        found: list[str] = []
        for dirpath, _dirs, files in os.walk(self.mesh / folder, followlinks=False):
            found.extend(n.rsplit(".", 1)[0] for n in files if re.fullmatch(pattern, n))
            if dirpath.count(os.sep) > 20:
                break
        return sorted(found)

    def task_id(self) -> str:
        tasks = self.ids("tasks", r"t-[a-z0-9-]+\.json")
        if tasks and self.rng.random() < 0.85:
            tid = self.rng.choice(tasks)
            return tid[:8] if self.rng.random() < 0.15 else tid
        return self.rng.choice(["t-nope", "t-", "t-1hv6z4jcckpyy-zzzz"])

    def message_id(self) -> str:
        messages = self.ids("sent", r"m-[a-z0-9-]+\.json")
        return self.rng.choice(messages) if messages else "m-nope"

    def lock_path(self) -> str:
        p = self.bench.project
        return self.rng.choice(
            [
                str(p / "notes.txt"),
                str(p / "src"),
                "src/main.py",
                str(p / "absent.txt"),
                str(self.bench.fifo),
            ]
        )

    def command(self) -> list[Arg]:
        """One random command line (as a random agent), `--json` half of the time."""
        rng = self.rng
        commands = self.commands
        name = rng.choices([c[0] for c in commands], weights=[c[1] for c in commands])[0]
        me = rng.choice(AGENTS)
        other = rng.choice([*AGENTS, "all", "nobody"])
        build = getattr(self, "cmd_" + name.replace("-", "_"), None)
        argv: list[Arg] = build(me, other) if build else [name]
        if rng.random() < 0.5:
            at = argv.index("--") if "--" in argv else len(argv)  # a mesh option, not CMD's
            argv.insert(at, "--json")
        return argv

    # -- the widened set (issue 24): export/import, watch --once, lock -- CMD, --wait --

    def cmd_export(self, _me: str, _other: str) -> list[Arg]:
        return ["export"]

    def cmd_import(self, _me: str, _other: str) -> list[Arg]:
        return ["import"]  # its stdin: an earlier export, cut short, or garbage (FuzzRun)

    def cmd_watch_once(self, _me: str, _other: str) -> list[Arg]:
        return ["watch", "--once"]

    def cmd_lock_run(self, me: str, _other: str) -> list[Arg]:
        argv: list[Arg] = ["lock", self.lock_path(), "--as", me]
        if self.rng.random() < 0.3:
            argv += ["--wait", "0.5"]
        command = self.rng.choice(
            [["true"], ["false"], ["sh", "-c", "exit 3"], ["sleep", "0.3"], ["sh", "-c", "echo x"]]
        )
        return [*argv, "--", *command]

    def cmd_inbox_wait(self, me: str, _other: str) -> list[Arg]:
        return ["inbox", "--as", me, "--wait", self.rng.choice(["0", "0.2", "0.5"])]

    def cmd_claim_wait(self, me: str, _other: str) -> list[Arg]:
        return ["claim", "--next", "--as", me, "--wait", self.rng.choice(["0.2", "0.5"])]

    def cmd_lock_wait(self, me: str, _other: str) -> list[Arg]:
        return ["lock", self.lock_path(), "--as", me, "--wait", self.rng.choice(["0.2", "0.5"])]

    def cmd_register_wait(self, _me: str, _other: str) -> list[Arg]:
        name = self.rng.choice([*AGENTS, "dave"])
        return ["register", name, "--ram-gb", self.rng.choice(["0.01", "99999"]), "--wait", "0.5"]

    def cmd_send_big(self, me: str, other: str) -> list[Arg]:
        """A send with an attachment over the record bound (the export crash's trigger)."""
        return ["send", other, "the big one", "--as", me, "--attach", str(self.bench.big)]

    def cmd_inbox_last(self, me: str, _other: str) -> list[Arg]:
        return ["inbox", "--as", me, "--last"]

    def cmd_send(self, me: str, other: str) -> list[Arg]:
        rng = self.rng
        argv: list[Arg] = ["send", other, rng.choice(["hello", "please review", "x" * 500])]
        argv += ["--as", me]
        if rng.random() < 0.2:
            argv += ["--priority", "urgent"]
        if rng.random() < 0.25:
            p = self.bench.project
            attach: list[Arg] = [str(p / "notes.txt"), str(p / ".tmp-report.txt")]
            argv += ["--attach", rng.choice([*attach, self.bench.weird_file, str(self.bench.fifo)])]
        if rng.random() < 0.1:
            argv += ["--reply-to", self.message_id()]
        return argv

    def cmd_inbox(self, me: str, _other: str) -> list[Arg]:
        argv: list[Arg] = ["inbox", "--as", me] if self.rng.random() < 0.8 else ["inbox", me]
        return argv + self.rng.choice([[], [], ["--peek"], ["--list"]])

    def cmd_history(self, me: str, _other: str) -> list[Arg]:
        return ["history", *self.rng.choice([[], [me]]), *self.rng.choice([[], ["--limit", "3"]])]

    def cmd_agents(self, _me: str, _other: str) -> list[Arg]:
        return ["agents", *self.rng.choice([[], ["--all"]])]

    def cmd_claim(self, me: str, _other: str) -> list[Arg]:
        if self.rng.random() < 0.7:
            return ["claim", "--next", "--as", me]
        return ["claim", self.task_id(), "--as", me]

    def cmd_task_add(self, me: str, _other: str) -> list[Arg]:
        rng = self.rng
        argv: list[Arg] = ["task", "add", rng.choice(["fix the parser", "write docs", "t"])]
        argv += ["--as", me]
        if rng.random() < 0.3:
            argv += ["--body", "details"]
        if rng.random() < 0.3:
            argv += ["--priority", str(rng.randint(-3, 9))]
        if rng.random() < 0.15:
            argv += ["--depends", self.task_id()]
        if rng.random() < 0.1:
            argv += ["--review"]
        return argv

    def cmd_task_list(self, _me: str, _other: str) -> list[Arg]:
        states = [[], ["--state", "queued"], ["--state", "claimed"]]
        return ["task", "list", *self.rng.choice(states)]

    def cmd_task_show(self, _me: str, _other: str) -> list[Arg]:
        return ["task", "show", self.task_id()]

    def cmd_task_move(self, me: str, _other: str) -> list[Arg]:
        verb = self.rng.choice(["done", "done", "start", "fail", "release"])
        argv: list[Arg] = ["task", verb, self.task_id(), "--as", me]
        if verb in ("done", "fail") and self.rng.random() < 0.5:
            argv += ["--result", "ok"]
        return argv

    def cmd_lock(self, me: str, _other: str) -> list[Arg]:
        argv: list[Arg] = ["lock", self.lock_path(), "--as", me]
        if self.rng.random() < 0.4:
            argv += ["--mode", self.rng.choice(["read", "write", "intent", "co_write"])]
        if self.rng.random() < 0.3:
            argv += ["--ttl", self.rng.choice(["1", "60", "3600"])]
        return argv

    def cmd_unlock(self, me: str, _other: str) -> list[Arg]:
        return ["unlock", self.lock_path(), "--as", me, *self.rng.choice([[], [], ["--force"]])]

    def cmd_heartbeat(self, me: str, _other: str) -> list[Arg]:
        return ["heartbeat", "--as", me]

    def cmd_register(self, _me: str, _other: str) -> list[Arg]:
        role = self.rng.choice([[], ["--role", "reviewer"]])
        return ["register", self.rng.choice([*AGENTS, "dave"]), *role]

    def cmd_prune(self, _me: str, _other: str) -> list[Arg]:
        return ["prune", *self.rng.choice([[], ["--dry-run"]])]

    def cmd_log(self, _me: str, _other: str) -> list[Arg]:
        since = [[], [], ["--since", "2026-01-01T00:00:00Z"], ["--since", "garbage"]]
        return ["log", *self.rng.choice(since)]

    def cmd_non_utf8(self, me: str, other: str) -> list[Arg]:
        return self.non_utf8(me, other)

    def non_utf8(self, me: str, other: str) -> list[Arg]:
        bad = self.rng.choice(NON_UTF8)
        project = os.fsencode(self.bench.project)
        return self.rng.choice(
            [
                ["task", "add", b"title " + bad, "--as", me],
                ["task", "add", "title", "--body", b"body " + bad, "--as", me],
                ["register", me, "--role", b"role " + bad],
                ["register", b"n" + bad],
                ["lock", project + b"/" + bad, "--as", me],
                ["lock", project + b"/src/" + bad + b".py", "--as", me, "--mode", "read"],
                ["unlock", project + b"/" + bad, "--as", me],
                ["send", other, "see attached", "--attach", self.bench.weird_file, "--as", me],
                ["send", other, b"body " + bad, "--as", me],
                ["send", other, "hi", "--as", b"a" + bad],
                ["inbox", b"b" + bad],
                ["history", b"b" + bad],
                ["task", "show", b"t-" + bad],
                ["claim", b"t-" + bad, "--as", me],
                ["log", "--since", bad],
            ]
        )


COMMANDS: list[tuple[str, int]] = [
    ("send", 10),
    ("inbox", 10),
    ("history", 4),
    ("agents", 4),
    ("status", 4),
    ("claim", 5),
    ("task-add", 5),
    ("task-list", 3),
    ("task-show", 3),
    ("task-move", 4),
    ("lock", 4),
    ("unlock", 3),
    ("locks", 3),
    ("heartbeat", 3),
    ("register", 3),
    ("prune", 5),
    ("log", 3),
    ("doctor", 2),
    ("hw", 1),
    ("non-utf8", 6),
]

# The widened fuzzer (issue 24) draws from these too: the commands that move a whole mesh
# (export, import), run long (watch --once, lock -- CMD, the waits) or write big files.
WIDE_COMMANDS: list[tuple[str, int]] = [
    *COMMANDS,
    ("export", 4),
    ("import", 3),
    ("watch-once", 3),
    ("lock-run", 4),
    ("inbox-wait", 3),
    ("claim-wait", 2),
    ("lock-wait", 2),
    ("register-wait", 1),
    ("send-big", 2),
    ("inbox-last", 2),
]


# ---- environment plantings (config file, mesh directory) ---------------------------------------


def config_planting(rng: random.Random, folder: Path, sentinel: Path) -> tuple[dict[str, str], str]:
    """Env overrides for one round: a damaged config file, or the sentinel as the mesh dir."""
    remove_tree(folder)
    folder.mkdir()
    kind = rng.choice(
        ["fifo", "folder", "garbage", "deep", "huge", "non-utf8", "symlink", "mesh-is-sentinel"]
    )
    path = folder / "config.toml"
    if kind == "mesh-is-sentinel":
        return {"DRASILL_MESH_DIR": str(sentinel)}, "mesh dir pointed at the sentinel (not a mesh)"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    elif kind == "garbage":
        path.write_bytes(rng.randbytes(200))
    elif kind == "deep":
        path.write_bytes(b"a = " + b"[" * DEEP + b"]" * DEEP + b"\n")
    elif kind == "huge":
        with open(path, "wb") as handle:
            handle.truncate(HUGE_BYTES)
    elif kind == "non-utf8":
        path.write_bytes(b'mesh_dir = "/tmp/\xff\xfe"\n[lifecycle]\nidle_after = 5\n')
    else:
        path.symlink_to(sentinel / "secret.txt")
    return {"DRASILL_CONFIG": str(path)}, f"DRASILL_CONFIG is a {kind}"


# ---- the run -----------------------------------------------------------------------------------


@dataclass
class Failure:
    signature: str
    detail: str


@dataclass
class FuzzRun:
    """One fuzz run in `work` against a fresh mesh made with `env` (the MeshRunner environment).

    `widened` (issue 24) draws from `WIDE_COMMANDS`, plants also while a command runs (in
    `during` of the commands), and keeps a ledger of the messages sent: after every round each
    one is unread, consumed, archived or quarantined, unless a planting deleted it. `other`: a
    second user (`tests.other_user`) runs some of the commands on a group-shared mesh of the
    group `group_gid` (the config must say `group_shared = true`). `known_issues`: (pattern,
    note) pairs; a failure whose detail matches a pattern is counted in `known`, not failed.
    """

    work: Path
    env: dict[str, str]
    seed: int
    plantings: int
    timeout: float = 20.0
    max_failures: int = 8
    episode: int = 8
    failures: list[Failure] = field(default_factory=list)
    commands_run: int = 0
    planted: int = 0
    log: list[str] = field(default_factory=list)
    widened: bool = False
    during: float = 0.3
    other: OtherUser | None = None
    group_gid: int | None = None
    other_share: float = 0.4
    known_issues: list[tuple[str, str]] = field(default_factory=list)
    known: list[Failure] = field(default_factory=list)  # failures matching `known_issues`
    ledger: dict[str, int] = field(default_factory=dict)  # message id -> round it was sent in
    lost: list[str] = field(default_factory=list)
    tracebacks: int = 0
    sentinel_changes: int = 0
    planted_during: int = 0
    commands_as_other: int = 0
    last_export: bytes = b""
    sent_tracked: int = 0

    def __post_init__(self) -> None:
        self.mesh = Path(self.env["DRASILL_MESH_DIR"])
        self.rng = random.Random(self.seed)
        self.sentinel = self.work / "sentinel"
        self.snapshot_dir = self.work / "mesh-snapshot"
        build_sentinel(self.sentinel)
        self.sentinel_state = snapshot(self.sentinel)
        self.bench = Workbench.build(self.work / "project")
        self.planter = Planter(self.rng, self.mesh, self.sentinel, self.work / "mesh-displaced")
        self.commander = Commander(self.rng, self.mesh, self.bench)
        if self.widened:
            self.commander.commands = list(WIDE_COMMANDS)
        if self.other is not None:
            self.planter.group_gid = self.group_gid

    def setup_mesh(self) -> None:
        """A live mesh made through the real CLI, kept as the copy every episode starts from."""
        p = str(self.bench.project)
        if self.group_gid is not None:  # a group-shared mesh: the group's setgid folder
            self.mesh.mkdir(mode=0o700)
            os.chown(self.mesh, -1, self.group_gid)
            self.mesh.chmod(0o2770)
        script: list[list[Arg]] = [
            ["register", "alice", "--role", "lead"],
            ["register", "bob"],
            ["register", "carol"],
            ["register", "tmp"],
            ["send", "bob", "hi bob", "--as", "alice", "--attach", f"{p}/notes.txt"],
            ["send", "tmp", "report", "--as", "alice", "--attach", f"{p}/.tmp-report.txt"],
            ["send", "all", "everyone", "--as", "carol", "--priority", "urgent"],
            ["inbox", "--as", "bob"],
            ["task", "add", "first", "--body", "b", "--as", "alice"],
            ["task", "add", "second", "--priority", "5", "--as", "alice", "--review"],
            ["claim", "--next", "--as", "bob"],
            ["claim", "--next", "--as", "tmp"],
            ["task", "add", "third", "--as", "carol"],
            ["lock", f"{p}/src", "--as", "carol"],
        ]
        for index, argv in enumerate(script):
            user = self.other if self.other is not None and index % 2 else None
            done = run_mesh(argv, self.env, self.bench.project, self.timeout, user=user)
            assert done.rc == 0, (argv, done.rc, done.stderr)
        shutil.copytree(self.mesh, self.snapshot_dir, symlinks=True)
        self.start_ledger()

    def restore_mesh(self) -> None:
        self.planter.restore_root()
        remove_tree(self.mesh)
        remove_tree(self.work / "mesh-displaced")
        shutil.copytree(self.snapshot_dir, self.mesh, symlinks=True)
        if self.group_gid is not None:
            regroup_tree(self.mesh, self.group_gid)
        beats = self.mesh / "heartbeats"
        now = time.time()
        for name in os.listdir(beats):
            os.utime(beats / name, (now, now))
        self.log = ["-- mesh restored from the copy --"]
        self.start_ledger()

    # -- the ledger: nothing lost --

    def start_ledger(self) -> None:
        """The messages of a fresh (or restored) mesh: every one the mesh keeps for a reader."""
        self.ledger = dict.fromkeys(kept_message_ids(self.mesh), 0) if self.widened else {}
        self.planter.removed = set()

    def note_sent(self, outcome: Outcome, round_no: int) -> None:
        """Add the messages a successful `send` printed to the ledger."""
        if outcome.rc != 0 or not outcome.argv or outcome.argv[0] != "send":
            return
        if outcome.json_mode:
            value = json.loads(outcome.stdout)
            sent = value if isinstance(value, list) else [value]
            ids = [str(m["id"]) for m in sent]
        else:
            text = outcome.stdout.decode()
            ids = re.findall(r"^sent (m-[0-9a-z]{13}-[0-9a-z]{4}) to ", text, re.MULTILINE)
        for msg_id in ids:
            if msg_id not in self.ledger:
                self.ledger[msg_id] = round_no
                self.sent_tracked += 1

    def check_ledger(self) -> list[str]:
        """Every message of the ledger is still kept somewhere a reader finds it (or in
        quarantine), unless the planter deleted it; each loss is reported once."""
        if not self.widened or self.planter.root_replaced:
            return []
        kept = kept_message_ids(self.mesh)
        missing = sorted(set(self.ledger) - kept - self.planter.removed)
        found = [
            f"message lost: {msg_id} (sent in round {self.ledger[msg_id]}) is in no inbox, "
            "archive or quarantine"
            for msg_id in missing
        ]
        for msg_id in missing:
            self.lost.append(msg_id)
            del self.ledger[msg_id]
        return found

    # -- the run --

    def check_sentinel(self) -> list[str]:
        now = snapshot(self.sentinel)
        diff = sentinel_diff(self.sentinel_state, now)
        if diff:
            build_sentinel(self.sentinel)
            self.sentinel_state = snapshot(self.sentinel)
        return [f"sentinel changed: {line}" for line in diff]

    def stdin_for(self, argv: Sequence[Arg]) -> bytes | None:
        """`import` reads an earlier export (whole or cut short), or garbage, or nothing."""
        if not argv or argv[0] != "import":
            return None
        rng = self.rng
        whole = self.last_export
        return rng.choice(
            [whole, whole, whole[: rng.randint(0, max(len(whole) - 1, 0))], rng.randbytes(300), b""]
        )

    def run_command(self, argv: list[Arg], env: dict[str, str], round_no: int) -> Outcome:
        """One command, as the other user some of the time; with `widened`, some of the time
        something is planted while it runs (never the mesh root: its mesh is put back)."""
        user = None
        if self.other is not None and self.rng.random() < self.other_share:
            user = self.other
            self.commands_as_other += 1
        running = start_mesh(argv, env, self.bench.project, stdin=self.stdin_for(argv), user=user)
        if self.widened and self.rng.random() < self.during:
            time.sleep(self.rng.uniform(0.0, 0.3))
            self.planter.allow_root = False
            try:
                what = self.planter.plant()
            except OSError as exc:  # raced the command's own changes: nothing planted
                what = f"(planting raced the command: {exc})"
            finally:
                self.planter.allow_root = True
            self.planted += 1
            self.planted_during += 1
            self.log.append(f"round {round_no}: planted while it ran {what}")
        outcome = running.finish(self.timeout)
        who = " (as the other user)" if user is not None else ""
        self.log.append(f"round {round_no}: mesh {describe(argv)}{who} -> {outcome.rc}")
        return outcome

    def run(self) -> list[Failure]:
        self.setup_mesh()
        round_no = 0
        since_restore = 0
        while self.planted < self.plantings and len(self.failures) < self.max_failures:
            round_no += 1
            env = dict(self.env)
            notes: list[str] = []
            failed = False
            try:
                for _ in range(self.rng.randint(1, 3)):
                    notes.append(self.planter.plant())
                    self.planted += 1
                if self.rng.random() < 0.06:
                    extra, note = config_planting(
                        self.rng, self.work / "config-plant", self.sentinel
                    )
                    env.update(extra)
                    notes.append(note)
                    self.planted += 1
                self.log.extend(f"round {round_no}: planted {n}" for n in notes)
                for _ in range(self.rng.randint(1, 2)):
                    argv = self.commander.command()
                    outcome = self.run_command(argv, env, round_no)
                    self.commands_run += 1
                    found = problems(outcome, self.timeout)
                    found += self.check_sentinel()
                    if not found and env == self.env and not self.planter.root_replaced:
                        self.note_sent(outcome, round_no)
                    if outcome.rc == 0 and argv[:1] == ["export"]:
                        self.last_export = outcome.stdout
                    for problem in found:
                        failed = self.record(round_no, argv, outcome, problem) or failed
            finally:
                self.planter.restore_root()
            for problem in self.check_ledger():
                failed = self.record(round_no, ["(ledger)"], None, problem) or failed
            since_restore += 1
            if failed or since_restore >= self.episode:
                self.restore_mesh()
                since_restore = 0
        return self.failures

    def record(
        self, round_no: int, argv: Sequence[Arg], outcome: Outcome | None, problem: str
    ) -> bool:
        """Keep one failure; True unless it matches a known issue (then it goes to `known`)."""
        recent = [line for line in self.log if "planted" in line or "restored" in line][-14:]
        if outcome is None:
            head = f"seed {self.seed}, round {round_no}: {problem}"
            commands = [line for line in self.log if "mesh " in line][-6:]
            recent = [*recent, "commands:", *commands]
        else:
            stderr_tail = outcome.stderr.decode(errors="replace").strip().splitlines()[-3:]
            head = (
                f"seed {self.seed}, round {round_no}: `mesh {describe(argv)}` exit {outcome.rc}"
                f" ({outcome.seconds:.1f} s): {problem}\n    stderr tail: {stderr_tail}\n"
                f"    stdout head: {outcome.stdout[:160]!r}"
            )
        detail = head + "\n    recent plantings:\n" + "\n".join(f"      {line}" for line in recent)
        failure = Failure(signature(argv, problem), detail)
        for pattern, note in self.known_issues:
            if re.search(pattern, detail):
                failure.detail = f"[known: {note}] {detail}"
                self.known.append(failure)
                return False
        self.failures.append(failure)
        self.tracebacks += problem.startswith("traceback")
        self.sentinel_changes += problem.startswith("sentinel changed")
        return True


def report(run: FuzzRun) -> str:
    """The failures grouped by class, first example of each, for an assertion message."""
    classes: dict[str, list[Failure]] = {}
    for failure in run.failures:
        classes.setdefault(failure.signature, []).append(failure)
    lines = [
        f"planting fuzzer, seed {run.seed} (rerun: DRASILL_FUZZ_SEED={run.seed}): "
        f"{len(run.failures)} failures in {len(classes)} classes after {run.planted} plantings, "
        f"{run.commands_run} commands; {summary(run)}"
    ]
    for sig, members in classes.items():
        lines.append(f"* [{len(members)}x] {sig}\n  {members[0].detail}")
    lines.extend(f"* known: {f.signature}\n  {f.detail}" for f in run.known[:3])
    return "\n".join(lines)


def summary(run: FuzzRun) -> str:
    """The acceptance figures of a run in one line."""
    known = f", {len(run.known)} known issue(s)" if run.known else ""
    return (
        f"{run.tracebacks} tracebacks, {run.sentinel_changes} changes outside the mesh, "
        f"{len(run.lost)} of {run.sent_tracked} sent messages lost, "
        f"{run.planted_during} planted while a command ran, "
        f"{run.commands_as_other} commands as the other user{known}"
    )


def env_int(name: str, default: int) -> int:
    """An integer knob from the environment (seed, plantings, timeout), else `default`."""
    raw = os.environ.get(name, "").strip()
    return int(raw) if raw else default
