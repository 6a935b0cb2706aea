"""Reliability under faults: random SIGKILLs, a full disk, and generated bad input at the CLI.

The kill storm runs in CI with about 100 kills; the long run (1,000+ kills, marked slow) is run
by hand: `.venv/bin/pytest -m slow tests/test_reliability.py`. After every storm the invariants
are checked: no message whose send completed is lost or duplicated, every message is consumed at
most once, every claim is unique, no two conflicting locks were ever held at once, no lock of a
dead agent survives its lease (or prune), every file parses and nothing is quarantined, temp
leftovers are cleared by prune, and later commands (API and CLI) work.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from drasill_cli import agents, lifecycle, locks, messages, tasks
from drasill_cli.backends.directory import DirectoryBackend
from drasill_cli.backends.postgres import PostgresBackend
from drasill_cli.config import Config, LifecycleConfig
from drasill_cli.errors import NegativeOutcome, StoreFull
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner, tree
from tests.harness import directory_of
from tests.reliability_support import (
    LOCK_MODES,
    RECEIVER,
    Storm,
    every_json_parses,
    lock_intervals,
    message_files,
    message_rows,
    open_mesh,
    quarantined_rows,
    read_journal,
    temp_leftovers,
)

TASKS = 400
COMPATIBLE = {
    "read": {"read", "intent"},
    "intent": {"read"},
    "write": set(),
    "co_write": {"co_write"},
}


# ---- the kill storm --------------------------------------------------------------------------


def _storm(location: Path | str, tmp_path: Path, kills: int, seed: int) -> tuple[Mesh, Storm, Path]:
    log = tmp_path / "journal"
    log.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    paths = [str(work / name) for name in ("a.py", "b.py", "sub")]
    setup = open_mesh(location)
    agents.register(setup, RECEIVER, pid=os.getpid())
    for index in range(TASKS):
        tasks.add_task(setup, f"task {index}", actor="boss", priority=index % 5)
    # The workers are forks of this process: no connection of ours may be open across a fork.
    setup.backend.close()
    storm = Storm(location, log, paths, seed)
    storm.run(kills)
    return open_mesh(location), storm, log


def _stored_messages(mesh: Mesh) -> dict[str, list[dict[str, Any]]]:
    """Every stored copy in the receiver's inbox, by id (files, or rows of a database)."""
    if isinstance(mesh.backend, PostgresBackend):
        return message_rows(mesh.backend.db.url, RECEIVER)
    return message_files(mesh, RECEIVER)


def _check_messages(mesh: Mesh, log: Path) -> None:
    sent = {row[0]: row[1] for row in read_journal(log, "send-")}
    consumed = read_journal(log, "consume-")
    files = _stored_messages(mesh)
    duplicated = {mid: where for mid, where in files.items() if len(where) > 1}
    assert not duplicated, f"messages stored twice: {duplicated}"
    bodies = Counter(copies[0]["body"] for copies in files.values())
    assert not [b for b, n in bodies.items() if n > 1], "one send stored under two ids"
    lost = [mid for mid in sent if mid not in files]
    assert not lost, f"{len(lost)} messages whose send completed are gone: {lost[:5]}"
    for mid, body in sent.items():
        assert files[mid][0]["body"] == body
    taken = Counter(row[0] for row in consumed)
    assert not [mid for mid, n in taken.items() if n > 1], "a message was consumed twice"
    for mid, body in (row[:2] for row in consumed):
        assert files[mid][0]["_where"] == "cur" and files[mid][0]["body"] == body
    # The unread rest drains completely, each exactly once.
    unread = {mid for mid, copies in files.items() if copies[0]["_where"] == "new"}
    drained = set()
    while (message := messages.consume(mesh, RECEIVER)) is not None:
        assert message["id"] not in drained
        drained.add(message["id"])
    assert drained == unread
    assert len(sent) > 0 and len(consumed) > 0, "the storm did no messaging work"


def _check_claims(mesh: Mesh, log: Path) -> None:
    rows = read_journal(log, "claim-")
    claims = [(task_id, actor) for kind, task_id, actor in rows if kind == "claim"]
    per_task = Counter(task_id for task_id, _ in claims)
    assert not [t for t, n in per_task.items() if n > 1], "a task was claimed twice"
    records = {task["id"]: task for task in tasks.list_tasks(mesh)}
    assert len(records) == TASKS, "a task record is missing"
    for task_id, actor in claims:
        assert records[task_id]["claimed_by"] == actor
        assert records[task_id]["state"] in ("claimed", "completed")
    queued = {t for t, task in records.items() if task["state"] == "queued"}
    assert not queued & set(per_task), "a journaled claim is back in the queue"
    # Later claims work: the queued rest is claimed, each once, then nothing is left.
    got = set()
    agents.register(mesh, "late-claimer", pid=os.getpid(), replace=True)
    while True:
        try:
            got.add(tasks.claim_next(mesh, "late-claimer")["id"])
        except NegativeOutcome as exc:
            assert exc.code == "nothing-claimable"
            break
    assert got == queued
    assert len(claims) > 0, "the storm did no claiming work"


def _check_locks(mesh: Mesh, log: Path, storm: Storm) -> None:
    spans = lock_intervals(log, storm.deaths)
    assert spans, "the storm did no locking work"
    by_path: dict[str, list[tuple[str, str, int, float, float]]] = {}
    for span in spans:
        by_path.setdefault(span[0], []).append(span)
    for path, held in by_path.items():
        held.sort(key=lambda s: s[3])
        for i, first in enumerate(held):
            for second in held[i + 1 :]:
                if second[3] >= first[4]:
                    break
                if first[2] != second[2] and second[1] not in COMPATIBLE[first[1]]:
                    raise AssertionError(
                        f"conflicting locks held at once on {path}: {first} {second}"
                    )
    # Every lock worker is dead now: their locks bind nobody, and prune removes them.
    listed = locks.list_locks(mesh)
    live = [lock for lock in listed if not lock["stale"]]
    assert not live, f"locks of dead agents still bind: {live}"
    lifecycle.prune(mesh)
    assert locks.list_locks(mesh) == []
    agents.register(mesh, "late-locker", pid=os.getpid(), replace=True)
    locks.acquire(mesh, storm.paths, "late-locker", mode="write", ttl=5)
    locks.release(mesh, storm.paths, "late-locker")


def _check_files(mesh: Mesh) -> None:
    assert every_json_parses(directory_of(mesh).root) == []
    quarantine = directory_of(mesh).root / "quarantine"
    assert not quarantine.exists() or not os.listdir(quarantine)
    assert mesh.warnings == []
    # Temp files of killed writers are only leftovers: prune (any age) clears them all.
    eager = Mesh.open(directory_of(mesh).root, Config(lifecycle=LifecycleConfig(stale_tmp_after=0)))
    lifecycle.prune(eager)
    assert temp_leftovers(directory_of(mesh).root) == []


def _check_records(mesh: Mesh) -> None:
    """A PostgreSQL mesh: every row reads back valid (a damaged one would be quarantined, with
    a warning), and nothing was set aside."""
    assert isinstance(mesh.backend, PostgresBackend)
    tasks.list_tasks(mesh)
    for name in mesh.backend.presence.names():
        assert mesh.backend.presence.get(name) is not None
    locks.list_locks(mesh)
    messages.history(mesh, RECEIVER, limit=100_000)
    assert quarantined_rows(mesh.backend.db.url) == []
    assert mesh.warnings == []


def _check_cli(mesh: Mesh, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    directory = isinstance(mesh.backend, DirectoryBackend)
    cli = MeshRunner(directory_of(mesh).root if directory else tmp_path / "no-mesh-dir", home)
    if not directory:
        assert isinstance(mesh.backend, PostgresBackend)
        del cli.env["DRASILL_MESH_DIR"]
        cli.env["DRASILL_MESH_URL"] = mesh.backend.db.url
    sent = cli.json("send", RECEIVER, "after the storm", "--as", "human")
    assert cli.json("inbox", RECEIVER)["id"] == sent["id"]
    cli.json("task", "add", "one more")
    for name in ("cli-claimer", "cli-locker"):
        agents.register(mesh, name, pid=os.getpid(), replace=True)
    assert cli.json("claim", "--next", "--as", "cli-claimer")["title"] == "one more"
    lock_path = str(tmp_path / "work" / "a.py")
    cli.json("lock", lock_path, "--as", "cli-locker", "--ttl", "5")
    cli.json("unlock", lock_path, "--as", "cli-locker")
    cli.json("prune")
    if directory:
        assert every_json_parses(directory_of(mesh).root) == []


@contextlib.contextmanager
def _reporting_seed(seed: int) -> Iterator[None]:
    """Name the random seed in any failure, so the kill schedule can be replayed."""
    try:
        yield
    except Exception as exc:
        exc.add_note(f"random seed of this run: {seed}")
        raise


def _kill_storm(tmp_path: Path, kills: int, seed: int, url: str | None = None) -> None:
    """The storm on a directory mesh, or on the PostgreSQL mesh at `url`."""
    location: Path | str = tmp_path / "mesh" if url is None else url
    with _reporting_seed(seed):
        mesh, storm, log = _storm(location, tmp_path, kills, seed)
        errors = read_journal(log, "errors-")
        assert not errors, "a worker failed:\n" + "\n".join(json.loads(e[0]) for e in errors[:3])
        assert not storm.unexpected_exits, storm.unexpected_exits
        assert storm.kills >= kills
        _check_messages(mesh, log)
        _check_claims(mesh, log)
        _check_locks(mesh, log, storm)
        if url is None:
            _check_files(mesh)
        else:
            _check_records(mesh)
        _check_cli(mesh, tmp_path)


def test_kill_storm_short(tmp_path: Path) -> None:
    """About 100 SIGKILLs during send, consume, claim, lock and prune (the CI version)."""
    _kill_storm(tmp_path, kills=120, seed=random.randrange(1 << 30))


@pytest.mark.slow
def test_kill_storm_long(tmp_path: Path) -> None:
    """The long run, by hand: 1,200 SIGKILLs."""
    _kill_storm(tmp_path, kills=1200, seed=random.randrange(1 << 30))


@pytest.mark.slow
def test_kill_storm_long_postgres(tmp_path: Path, pg_mesh_url: str) -> None:
    """The long run on a PostgreSQL mesh, by hand: 1,200 SIGKILLs of workers mid-transaction.
    The file-level checks (temp leftovers, files that parse) have no meaning there; instead no
    row is quarantined and every record reads back valid. About 2 minutes."""
    _kill_storm(tmp_path, kills=1200, seed=random.randrange(1 << 30), url=pg_mesh_url)


def _cli_kills(cli: MeshRunner, mesh: Mesh, tmp_path: Path, kills: int, seed: int) -> None:
    """Kill real `mesh` processes at random instants; completed sends must all arrive."""
    with _reporting_seed(seed):
        _cli_kills_seeded(cli, mesh, tmp_path, kills, seed)


def _cli_kills_seeded(cli: MeshRunner, mesh: Mesh, tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    target = str(tmp_path / "locked.py")
    completed: dict[str, str] = {}
    consumed: list[str] = []
    done_kills = 0
    for name in ("cli-claimer", "cli-locker"):
        agents.register(mesh, name, pid=os.getpid(), replace=True)
    while done_kills < kills:
        kind = rng.choice(("send", "send", "inbox", "claim", "lock", "prune"))
        body = f"cli-{done_kills}-{rng.getrandbits(32):x}"
        argv = {
            "send": ["send", RECEIVER, body, "--as", "human"],
            "inbox": ["inbox", RECEIVER],
            "claim": ["claim", "--next", "--as", "cli-claimer"],
            "lock": ["lock", target, "--as", "cli-locker", "--ttl", "30"],
            "prune": ["prune"],
        }[kind]
        proc = subprocess.Popen(
            [*cli.argv(*argv), "--json"], env=cli.env, stdout=subprocess.PIPE, text=True
        )
        time.sleep(rng.uniform(0.02, 0.2))
        if proc.poll() is None:
            proc.kill()
            done_kills += 1
        out, _ = proc.communicate()
        if proc.returncode == 0 and kind == "send":
            completed[json.loads(out)["id"]] = body
        elif proc.returncode == 0 and kind == "inbox":
            consumed.append(json.loads(out)["id"])
        elif kind == "lock" and proc.returncode == 0:
            cli.run("unlock", target, "--as", "cli-locker")
    assert len(consumed) == len(set(consumed))
    files = message_files(mesh, RECEIVER)
    assert all(len(copies) == 1 for copies in files.values())
    assert set(completed) <= set(files)
    assert every_json_parses(directory_of(mesh).root) == []
    eager = Mesh.open(directory_of(mesh).root, Config(lifecycle=LifecycleConfig(stale_tmp_after=0)))
    lifecycle.prune(eager)
    assert temp_leftovers(directory_of(mesh).root) == []
    assert cli.run("send", RECEIVER, "still works", "--as", "human").returncode == 0


def test_cli_kills_short(cli: MeshRunner, mesh: Mesh, tmp_path: Path) -> None:
    """SIGKILLs of real `mesh send/inbox/claim/lock/prune` processes (about 15)."""
    agents.register(mesh, RECEIVER, pid=os.getpid())
    for index in range(20):
        tasks.add_task(mesh, f"task {index}", actor="boss")
    _cli_kills(cli, mesh, tmp_path, kills=15, seed=random.randrange(1 << 30))


@pytest.mark.slow
def test_cli_kills_long(cli: MeshRunner, mesh: Mesh, tmp_path: Path) -> None:
    """The long run of process kills, by hand: 200."""
    agents.register(mesh, RECEIVER, pid=os.getpid())
    for index in range(300):
        tasks.add_task(mesh, f"task {index}", actor="boss")
    _cli_kills(cli, mesh, tmp_path, kills=200, seed=random.randrange(1 << 30))


# ---- a full disk ---------------------------------------------------------------------------


def _enospc(*_args: Any, **_kwargs: Any) -> Any:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _assert_nothing_partial(root: Path, before: dict[str, bytes]) -> None:
    assert temp_leftovers(root) == []
    assert every_json_parses(root) == []
    after = tree(root)
    changed = {
        k for k in set(after) | set(before) if after.get(k) != before.get(k) and "audit" not in k
    }
    # Empty marker and heartbeat files are hints, not records; no record may appear or change.
    assert {k for k in changed if after.get(k, b"") != b"" or k.endswith(".json")} == set()


@pytest.mark.parametrize("fault", ["fsync", "write-half"])
def test_full_disk_python_api(
    mesh: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str
) -> None:
    """ENOSPC injected into writes: StoreFull, and no temp file, record or message is left."""
    agents.register(mesh, RECEIVER)
    tasks.add_task(mesh, "existing", actor="boss")
    before = tree(directory_of(mesh).root)
    real_write = os.write

    def half_then_full(fd: int, data: Any) -> int:
        view = memoryview(data)
        if len(view) > 1:
            return real_write(fd, view[: len(view) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    target = tmp_path / "file.py"
    target.write_text("")
    actions = [
        lambda: messages.send(mesh, RECEIVER, "a message that does not fit", sender="human"),
        lambda: agents.register(mesh, "newcomer"),
        lambda: tasks.add_task(mesh, "a task that does not fit", actor="boss"),
        lambda: locks.acquire(mesh, [str(target)], RECEIVER),
    ]
    for action in actions:
        with monkeypatch.context() as patch:
            patch.setattr(
                os,
                "fsync" if fault == "fsync" else "write",
                _enospc if fault == "fsync" else half_then_full,
            )
            with pytest.raises(StoreFull) as caught:
                action()
        assert caught.value.code == "store-write-failed" and caught.value.exit_code == 4
        assert "free disk space" in caught.value.message
        _assert_nothing_partial(directory_of(mesh).root, before)
    # With space again, everything works and nothing of the failed attempts shows.
    assert messages.list_unread(mesh, RECEIVER) == []
    assert [t["title"] for t in tasks.list_tasks(mesh)] == ["existing"]
    assert messages.send(mesh, RECEIVER, "fits now", sender="human")[0]["body"] == "fits now"
    agents.register(mesh, "worker", pid=os.getpid())
    assert tasks.claim_next(mesh, "worker")["title"] == "existing"


def test_broadcast_cut_short_by_a_full_disk_says_who_got_it(
    mesh: Mesh, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk fills after the first copy: the error lists delivered and missed recipients,
    and the failed copy leaves neither a message nor attachment files."""
    for name in ("ann", "bea", "cid"):
        agents.register(mesh, name)
    source = tmp_path / "notes.txt"
    source.write_text("see these")
    real_link = os.link
    links: list[str] = []

    def full_after_first_copy(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
        folder = kwargs.get("dst_dir_fd")  # the store links into its folder's descriptor
        target = str(dst) if folder is None else f"{os.readlink(f'/proc/self/fd/{folder}')}/{dst}"
        if "/new/" in target and links:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_link(src, dst, *args, **kwargs)
        if "/new/" in target:
            links.append(target)

    monkeypatch.setattr(os, "link", full_after_first_copy)
    with pytest.raises(StoreFull) as caught:
        messages.send(mesh, "all", "hello all", sender="human", attachments=[str(source)])
    monkeypatch.undo()
    error = caught.value
    assert "not_delivered" in error.details, error.message
    assert error.details["not_delivered"] == ["bea", "cid"]
    assert "reached ann but not bea, cid" in error.message
    assert "not to `all` again" in error.message
    [delivered] = messages.list_unread(mesh, "ann")
    assert error.details["delivered"] == [delivered["id"]]
    assert Path(delivered["attachments"][0]["path"]).read_text() == "see these"
    assert messages.list_unread(mesh, "bea") == []
    root = directory_of(mesh).root
    assert [p.name for p in (root / "attachments").iterdir()] == [delivered["id"]]
    assert temp_leftovers(root) == []


_INJECT = """
import errno, os, sys
def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
os.fsync = full
sys.argv[0] = "mesh"
from drasill_cli.cli.app import main
main()
"""


def test_full_disk_cli_injected(cli: MeshRunner, mesh: Mesh) -> None:
    """The CLI on a disk that refuses writes: exit 4 `store-write-failed`, no traceback."""
    agents.register(mesh, RECEIVER)
    before = tree(directory_of(mesh).root)
    for args in (
        ["send", RECEIVER, "hello", "--as", "human"],
        ["task", "add", "title"],
        ["register", "newcomer"],
    ):
        done = subprocess.run(
            [sys.executable, "-c", _INJECT, *args, "--json"],
            env=cli.env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 4, (done.stdout, done.stderr)
        assert json.loads(done.stdout)["error"]["code"] == "store-write-failed"
        assert "Traceback" not in done.stderr
        _assert_nothing_partial(directory_of(mesh).root, before)


@contextlib.contextmanager
def _tiny_tmpfs(size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root")
    where = Path(tempfile.mkdtemp(prefix="tinyfs-"))
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        where.rmdir()
        pytest.skip(f"mount is not permitted here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, check=False)
        with contextlib.suppress(OSError):
            where.rmdir()


def test_full_disk_tmpfs_cli(tmp_path: Path) -> None:
    """A real full file system (a 256 KiB tmpfs): sends fail with exit 4, leave nothing half."""
    with _tiny_tmpfs("256k") as disk:
        home = tmp_path / "home"
        home.mkdir()
        cli = MeshRunner(disk / "mesh", home)
        assert cli.run("register", RECEIVER).returncode == 0
        body = "x" * 6000
        accepted: list[str] = []
        failure = None
        for _ in range(200):
            done = cli.run("send", RECEIVER, body + str(len(accepted)), "--as", "human", "--json")
            if done.returncode != 0:
                failure = done
                break
            accepted.append(json.loads(done.stdout)["id"])
        assert failure is not None, "the tiny disk never filled"
        assert failure.returncode == 4, (failure.stdout, failure.stderr)
        assert json.loads(failure.stdout)["error"]["code"] == "store-write-failed"
        assert "Traceback" not in failure.stderr
        root = disk / "mesh"
        assert temp_leftovers(root) == []
        assert every_json_parses(root) == []
        mesh = Mesh.open(root, Config())
        files = message_files(mesh, RECEIVER)
        assert set(accepted) <= set(files)
        assert len(files) <= len(accepted) + 1  # at most the failed one, delivered whole
        # Reading still works on the full disk, and a freed disk takes mail again.
        listed = cli.run("inbox", RECEIVER, "--list", "--json")
        assert listed.returncode == 0 and len(json.loads(listed.stdout)) == len(files)
        for _ in range(len(files)):
            assert cli.run("inbox", RECEIVER, "--json").returncode in (0, 4)
        (root / "audit" / "events.jsonl").write_text("")
        for path in root.joinpath("inbox", RECEIVER, "cur").iterdir():
            path.unlink()
        assert cli.run("send", RECEIVER, "room again", "--as", "human").returncode == 0


# ---- generated bad input at the CLI --------------------------------------------------------


def _arg() -> st.SearchStrategy[str]:
    """Any argument a process can receive (no NUL, no surrogates), never the `--` separator."""
    text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=40)
    tricky = st.sampled_from(
        ["", " ", "all", "-1", "nan", "inf", "1e999", "../x", "/", "a" * 70, "ALPHA", "\t", "é"]
    )
    return st.one_of(
        text, tricky, st.from_regex(r"[a-z0-9][a-z0-9_-]{0,10}", fullmatch=True)
    ).filter(lambda s: s != "--")


def _short_wait() -> st.SearchStrategy[str]:
    """A --wait/--ttl value that is invalid or short, so no example blocks for long."""

    def short(value: str) -> bool:
        try:
            return not float(value) > 0.3
        except ValueError:
            return True

    return st.one_of(_arg(), st.floats().map(repr), st.integers(-5, 0).map(str)).filter(short)


class _Fuzz:
    """One mesh (with agent `alpha` registered) shared by the examples of one test."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="fuzz-"))
        home = self.dir / "home"
        home.mkdir()
        self.cli = MeshRunner(self.dir / "mesh", home)
        assert self.cli.run("register", "alpha").returncode == 0
        (self.dir / "small.txt").write_text("attachment")

    def check(self, *args: str, stdin: str | None = None) -> int:
        before = tree(self.cli.mesh_dir)
        done = self.cli.run(*args, input=stdin, timeout=30, cwd=self.dir)
        assert done.returncode in (0, 1, 2, 3), (args, done.returncode, done.stderr)
        assert "Traceback" not in done.stderr, (args, done.stderr)
        if done.returncode == 2:
            assert tree(self.cli.mesh_dir) == before, f"exit 2 but something was written: {args}"
        if "--json" in args and done.returncode != 0 and done.stdout.strip():
            value = json.loads(done.stdout)
            assert value is None or "error" in value
        return done.returncode


FUZZ = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.fixture(scope="module")
def fuzz() -> _Fuzz:
    return _Fuzz()


@FUZZ
@given(
    to=st.one_of(st.just("alpha"), _arg()),
    body=st.one_of(_arg(), st.just("-")),
    stdin=st.one_of(st.none(), st.text(max_size=50), st.just("y" * 300_000)),
    priority=st.one_of(st.none(), st.sampled_from(["normal", "urgent"]), _arg()),
    reply_to=st.one_of(st.none(), _arg()),
    attach=st.one_of(st.none(), st.just("small.txt"), _arg()),
    sender=st.one_of(st.none(), st.just("beta"), _arg()),
    json_out=st.booleans(),
)
def test_fuzz_send(
    fuzz: _Fuzz,
    to: str,
    body: str,
    stdin: str | None,
    priority: str | None,
    reply_to: str | None,
    attach: str | None,
    sender: str | None,
    json_out: bool,
) -> None:
    args = ["send", to, body]
    for flag, value in (
        ("--priority", priority),
        ("--reply-to", reply_to),
        ("--attach", attach),
        ("--as", sender),
    ):
        if value is not None:
            args += [flag, value]
    fuzz.check(*args, *(["--json"] if json_out else []), stdin=stdin)


@FUZZ
@given(
    name=st.one_of(st.none(), st.just("alpha"), _arg()),
    flag=st.sampled_from([None, "--peek", "--list", "--wait"]),
    wait=_short_wait(),
    extra=st.lists(_arg(), max_size=2),
    json_out=st.booleans(),
)
def test_fuzz_inbox_and_history(
    fuzz: _Fuzz, name: str | None, flag: str | None, wait: str, extra: list[str], json_out: bool
) -> None:
    args = ["inbox"] + ([name] if name is not None else [])
    if flag == "--wait":
        args += [flag, wait]
    elif flag is not None:
        args.append(flag)
    fuzz.check(*args, *(["--json"] if json_out else []))
    fuzz.check("history", *([name] if name else []), "--limit", wait, *extra)


@FUZZ
@given(
    paths=st.lists(
        st.one_of(_arg(), st.just("small.txt"), st.just("/tmp")), min_size=0, max_size=3
    ),
    mode=st.one_of(st.none(), st.sampled_from(LOCK_MODES), _arg()),
    ttl=st.one_of(st.none(), _arg(), st.floats().map(repr)),
    wait=st.one_of(st.none(), _short_wait()),
    holder=st.one_of(st.just("alpha"), _arg()),
    unlock=st.booleans(),
)
def test_fuzz_lock(
    fuzz: _Fuzz,
    paths: list[str],
    mode: str | None,
    ttl: str | None,
    wait: str | None,
    holder: str,
    unlock: bool,
) -> None:
    args = ["unlock" if unlock else "lock", *paths, "--as", holder]
    if not unlock:
        for flag, value in (("--mode", mode), ("--ttl", ttl), ("--wait", wait)):
            if value is not None:
                args += [flag, value]
    fuzz.check(*args, "--json")


@FUZZ
@given(
    title=_arg(),
    priority=st.one_of(st.none(), _arg(), st.integers().map(str)),
    depends=st.lists(_arg(), max_size=2),
    name=_arg(),
    pid=st.one_of(st.none(), _arg(), st.integers(-10, 1 << 40).map(str)),
    ram=st.one_of(st.none(), _arg(), st.floats().map(repr)),
    ref=_arg(),
)
def test_fuzz_tasks_and_register(
    fuzz: _Fuzz,
    title: str,
    priority: str | None,
    depends: list[str],
    name: str,
    pid: str | None,
    ram: str | None,
    ref: str,
) -> None:
    args = ["task", "add", title]
    if priority is not None:
        args += ["--priority", priority]
    for dep in depends:
        args += ["--depends", dep]
    fuzz.check(*args, "--json")
    register = ["register", name]
    for flag, value in (("--pid", pid), ("--ram-gb", ram)):
        if value is not None:
            register += [flag, value]
    fuzz.check(*register)
    verb = random.choice(["show", "start", "done", "fail", "release", "approve"])
    fuzz.check("task", verb, ref, *(["--as", "alpha"] if verb != "show" else []))
    fuzz.check("claim", ref, "--as", random.choice(["alpha", name]))
