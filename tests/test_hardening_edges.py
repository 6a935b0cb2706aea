"""The edges of the store (issue: never follow a link, never touch what the mesh did not make,
never crash on a damaged record). One test per defect found by the adversarial review, each
through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import MeshRunner


def snapshot(root: Path) -> dict[str, tuple[int, float, bytes | None]]:
    """Every entry under `root`: mode, mtime and bytes (files), without following links."""
    found: dict[str, tuple[int, float, bytes | None]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath) / name
            info = path.lstat()
            data = path.read_bytes() if path.is_file() and not path.is_symlink() else None
            found[str(path.relative_to(root))] = (info.st_mode, info.st_mtime, data)
    return found


def no_traceback(done: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in done.stderr + done.stdout, done.stderr


def new_shard(cli: MeshRunner, agent: str) -> Path:
    """The deepest shard folder holding one of `agent`'s unread messages."""
    found = sorted((cli.mesh_dir / "inbox" / agent / "new").rglob("*.json"))
    assert found
    return found[0].parent


# ---- 1: a symlinked folder inside inbox/NAME/new/ ---------------------------------------------


def test_inbox_never_follows_a_symlinked_folder_inside_new(cli: MeshRunner, tmp_path: Path) -> None:
    cli.json("register", "victim")
    cli.json("send", "victim", "real mail", "--as", "human")
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir(mode=0o700)
    (secret_dir / "1-m-0000000000000-aaaa.json").write_text('{"private": true}')
    before = snapshot(secret_dir)
    shard = new_shard(cli, "victim")
    (shard.parent / "zzlink").symlink_to(secret_dir)
    for args in (("inbox", "victim", "--json"), ("inbox", "victim", "--json")):
        done = cli.run(*args)
        no_traceback(done)
        assert done.returncode in (0, 1), done.stderr
    assert snapshot(secret_dir) == before
    quarantined = list((cli.mesh_dir / "quarantine").iterdir())
    assert all(path.is_symlink() or not path.exists() for path in quarantined)


# ---- 2: prune on a folder that is not a mesh -------------------------------------------------


def test_a_folder_that_is_not_a_mesh_is_refused_and_untouched(
    cli: MeshRunner, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    (project / "tmp").mkdir(parents=True)
    (project / "tmp" / "build.o").write_text("object")
    (project / ".tmp-notes").write_text("mine")
    old = time.time() - 10 * 86400
    for path in (project / "tmp" / "build.o", project / ".tmp-notes"):
        os.utime(path, (old, old))
    before = snapshot(project)
    for args in (("prune", "--json"), ("prune", "--dry-run", "--json"), ("agents", "--json")):
        done = cli.run("--mesh-dir", str(project), *args)
        no_traceback(done)
        assert done.returncode == 4, (args, done.stdout)
        assert json.loads(done.stdout)["error"]["code"] == "not-a-mesh"
    assert snapshot(project) == before
    assert not (project / "meta.json").exists()


def test_a_symlinked_mesh_root_is_refused(cli: MeshRunner, tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "keep.txt").write_text("x")
    link = tmp_path / "link"
    link.symlink_to(real)
    done = cli.run("--mesh-dir", str(link), "prune", "--json")
    assert done.returncode == 4
    assert json.loads(done.stdout)["error"]["code"] == "mesh-dir-symlink"
    assert sorted(p.name for p in real.iterdir()) == ["keep.txt"]


def test_an_empty_folder_becomes_a_mesh(cli: MeshRunner, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    assert cli.run("--mesh-dir", str(empty), "register", "a").returncode == 0
    assert json.loads((empty / "meta.json").read_text())["kind"] == "drasill-mesh"


# ---- 3 and 4: the temp sweep touches only the store's own temp files --------------------------


def test_agent_named_tmp_keeps_its_mail_and_tasks_through_prune(cli: MeshRunner) -> None:
    cli.config("[lifecycle]\nstale_tmp_after = 0\n")
    cli.json("register", "tmp")
    cli.json("register", "other")
    cli.json("send", "other", "from tmp", "--as", "tmp")
    cli.json("send", "tmp", "to tmp", "--as", "other")
    task = cli.json("task", "add", "work", "--as", "other")
    cli.json("claim", task["id"], "--as", "tmp")
    before = snapshot(cli.mesh_dir / "sent")
    report = cli.json("prune")
    assert report["temp_files_removed"] == []
    assert snapshot(cli.mesh_dir / "sent") == before
    assert cli.json("task", "show", task["id"])["claimed_by"] == "tmp"
    assert cli.json("inbox", "tmp")["body"] == "to tmp"


def test_attachment_named_like_a_temp_file_survives_prune(cli: MeshRunner, tmp_path: Path) -> None:
    cli.config("[lifecycle]\nstale_tmp_after = 0\n")
    cli.json("register", "a")
    report_file = tmp_path / ".tmp-report.txt"
    report_file.write_text("numbers")
    sent = cli.json("send", "a", "see attached", "--attach", str(report_file), "--as", "human")
    path = Path(sent["attachments"][0]["path"])
    assert cli.json("prune")["temp_files_removed"] == []
    assert path.read_text() == "numbers"
    assert Path(cli.json("inbox", "a")["attachments"][0]["path"]).read_text() == "numbers"


def test_prune_clears_a_killed_writers_temp_file(cli: MeshRunner) -> None:
    cli.config("[lifecycle]\nstale_tmp_after = 0\n")
    cli.json("register", "a")
    staging = cli.mesh_dir / "staging"
    leftover = staging / ".tmp-123-0123abcd-agents.json"
    leftover.write_text("half")
    foreign = staging / "notes.txt"
    foreign.write_text("not ours")
    report = cli.json("prune")
    assert report["temp_files_removed"] == ["staging/.tmp-123-0123abcd-agents.json"]
    assert not leftover.exists()
    assert foreign.read_text() == "not ours"


# ---- 5: damaged records ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000,
        b'{"name": "a", "host": "h", "registered_at": "not a time"}',
        b'{"name": "a", "host": "h", "registered_at": "2026-01-01T00:00:00Z", "pid": Infinity}',
        b'{"name": "a", "host": "h", "registered_at": "2026-01-01T00:00:00Z", "role": 7}',
    ],
    ids=["deep", "bad-time", "infinity", "wrong-type"],
)
def test_damaged_agent_record_is_quarantined_everywhere(cli: MeshRunner, content: bytes) -> None:
    cli.json("register", "a")
    cli.json("register", "b")
    (cli.mesh_dir / "agents" / "a.json").write_bytes(content)
    for args in (("agents", "--json"), ("status", "--json"), ("prune", "--json")):
        done = cli.run(*args)
        no_traceback(done)
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    assert [a["name"] for a in cli.json("agents")] == ["b"]
    kept = [p.read_bytes() for p in (cli.mesh_dir / "quarantine").iterdir()]
    assert kept == [content]


def test_fifo_in_place_of_a_record_never_hangs(cli: MeshRunner) -> None:
    cli.json("register", "a")
    fifo = cli.mesh_dir / "agents" / "z.json"
    os.mkfifo(fifo)
    done = cli.run("agents", "--json", timeout=20)
    assert done.returncode == 0
    assert not fifo.exists()


def test_config_pointing_at_a_fifo_is_refused_not_hung(cli: MeshRunner, tmp_path: Path) -> None:
    fifo = tmp_path / "config.fifo"
    os.mkfifo(fifo)
    done = cli.run("agents", "--json", env={"DRASILL_CONFIG": str(fifo)}, timeout=20)
    assert done.returncode == 2
    assert "not a regular file" in json.loads(done.stdout)["error"]["message"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda m: {k: v for k, v in m.items() if k != "from"},
        lambda m: {**m, "created_at": "yesterday"},
    ],
    ids=["no-from", "bad-time"],
)
def test_unshowable_message_is_never_consumed(cli: MeshRunner, damage: object) -> None:
    cli.json("register", "a")
    cli.json("send", "a", "first", "--as", "human")
    cli.json("send", "a", "second", "--as", "human")
    first = sorted((cli.mesh_dir / "inbox" / "a" / "new").rglob("*.json"))[0]
    message = json.loads(first.read_text())
    assert callable(damage)
    first.write_text(json.dumps(damage(message)))
    done = cli.run("inbox", "a", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["body"] == "second"
    assert "quarantined" in done.stderr
    assert not list((cli.mesh_dir / "inbox" / "a" / "cur").glob(f"*{message['id']}*"))
    for args in (("history", "a", "--json"), ("history", "human", "--json")):
        done = cli.run(*args)
        no_traceback(done)
        assert done.returncode == 0


def test_infinity_in_a_message_is_quarantined(cli: MeshRunner) -> None:
    cli.json("register", "a")
    cli.json("send", "a", "first", "--as", "human")
    first = sorted((cli.mesh_dir / "inbox" / "a" / "new").rglob("*.json"))[0]
    first.write_text(first.read_text().replace('"wake":true', '"wake":true,"x":Infinity'))
    done = cli.run("inbox", "a", "--json")
    assert done.returncode == 1
    assert done.stdout.strip() == "null"
    no_traceback(cli.run("history", "a"))


def test_doctor_names_every_bad_entry(cli: MeshRunner, tmp_path: Path) -> None:
    cli.json("register", "a")
    cli.json("send", "a", "hi", "--as", "human")
    (cli.mesh_dir / "agents" / "bad.json").write_text("[[[")
    (cli.mesh_dir / "tasks" / "deep").mkdir(parents=True)
    os.mkfifo(cli.mesh_dir / "tasks" / "deep" / "f.json")
    shard = new_shard(cli, "a")
    (shard / "link").symlink_to(tmp_path)
    done = cli.run("doctor", "--json")
    assert done.returncode == 1
    check = next(c for c in json.loads(done.stdout)["checks"] if c["name"] == "mesh-entries")
    assert check["status"] == "fail"
    for needle in ("agents/bad.json", "f.json", "is a symlink"):
        assert needle in json.dumps(check), needle


# ---- 6: a symlink or folder in place of a sidecar ----------------------------------------------


@pytest.mark.parametrize("kind", ["symlink", "folder"])
def test_bad_sidecar_is_set_aside_and_the_name_works(
    cli: MeshRunner, tmp_path: Path, kind: str
) -> None:
    cli.json("register", "a")
    sidecar = cli.mesh_dir / ".locks" / "agent-b.lock"
    target = tmp_path / "precious"
    target.write_text("keep me")
    if kind == "symlink":
        sidecar.symlink_to(target)
    else:
        sidecar.mkdir()
    done = cli.run("register", "b", "--json")
    no_traceback(done)
    assert done.returncode == 0, done.stdout
    assert target.read_text() == "keep me"
    assert sidecar.is_file()
    assert not sidecar.is_symlink()
    assert cli.run("register", "b", "--json").returncode == 0


# ---- 7: text that is not UTF-8 ----------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        [b"task", b"add", b"bad \xff title", b"--as", b"a"],
        [b"task", b"add", b"ok", b"--body", b"\xfe\xff", b"--as", b"a"],
        [b"register", b"b", b"--role", b"r\xff"],
        [b"lock", b"/tmp/x\xff", b"--as", b"a"],
    ],
    ids=["title", "body", "role", "lock-path"],
)
def test_non_utf8_arguments_exit_2_and_write_nothing(cli: MeshRunner, args: list[bytes]) -> None:
    cli.json("register", "a")
    before = snapshot(cli.mesh_dir)
    for extra in ([], [b"--json"]):
        done = subprocess.run(
            [sys.executable.encode(), b"-m", b"drasill_cli", *args, *extra],
            env=cli.env,
            capture_output=True,
            check=False,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert b"Traceback" not in done.stderr
        assert b"UTF-8" in done.stdout + done.stderr
    assert snapshot(cli.mesh_dir) == before


def test_non_utf8_attachment_name_exits_2(cli: MeshRunner, tmp_path: Path) -> None:
    cli.json("register", "a")
    odd = os.fsencode(tmp_path) + b"/r\xffport.txt"
    with open(odd, "wb") as handle:
        handle.write(b"data")
    before = snapshot(cli.mesh_dir)
    done = subprocess.run(
        [sys.executable.encode(), b"-m", b"drasill_cli", b"send", b"a", b"hi", b"--attach", odd],
        env=cli.env,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2
    assert snapshot(cli.mesh_dir) == before


# ---- 8: a heartbeat from the future -------------------------------------------------------------


def test_future_heartbeat_counts_as_now_and_ages(cli: MeshRunner) -> None:
    cli.config("[lifecycle]\nidle_after = 1\ndead_after = 2\n")
    cli.json("register", "a", "--pid", "999999")  # no such process: judged by heartbeat...
    cli.json("register", "b")
    beat = cli.mesh_dir / "heartbeats" / "b"
    future = time.time() + 3600
    os.utime(beat, (future, future))
    assert time.time() + 3000 < beat.stat().st_mtime
    agents = {a["name"]: a for a in cli.json("agents", "--all")}
    assert agents["b"]["state"] == "active"
    assert beat.stat().st_mtime <= time.time() + 1  # reset when first seen


def test_future_lease_is_reset_and_expires(cli: MeshRunner, tmp_path: Path) -> None:
    target = tmp_path / "file.py"
    target.write_text("x")
    cli.json("register", "a")
    cli.json("register", "b")
    cli.json("lock", str(target), "--ttl", "1", "--as", "a")
    record = next((cli.mesh_dir / "locks").glob("*.json"))
    lock = json.loads(record.read_text())
    lock["expires_at"] = "2099-01-01T00:00:00.000000Z"
    record.write_text(json.dumps(lock))
    assert cli.run("lock", str(target), "--as", "b", "--json").returncode == 1  # reset to now+1s
    time.sleep(1.5)
    assert cli.run("lock", str(target), "--as", "b", "--json").returncode == 0


# ---- 9: a read-only or immutable mesh -----------------------------------------------------------


def test_unwritable_store_is_exit_4_with_one_line(cli: MeshRunner) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes through a 0500 folder; the immutable test covers root")
    cli.json("register", "a")
    for folder in [cli.mesh_dir, *[p for p in cli.mesh_dir.rglob("*") if p.is_dir()]]:
        folder.chmod(0o500)
    try:
        # A heartbeat (utime of a file we own) and a prune with nothing to do need no
        # writable folder, so only the commands that create files are checked here.
        check_store_refuses_writes(cli, WRITERS[:4])
    finally:
        for folder in [cli.mesh_dir, *[p for p in cli.mesh_dir.rglob("*") if p.is_dir()]]:
            folder.chmod(0o700)


def test_immutable_mesh_is_exit_4_with_one_line(cli: MeshRunner) -> None:
    cli.json("register", "a")
    folders = [cli.mesh_dir, *cli.mesh_dir.rglob("*")]
    done = subprocess.run(
        ["chattr", "+i", *map(str, folders)], capture_output=True, check=False, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {done.stderr.strip()}")
    try:
        check_store_refuses_writes(cli)
        doctor = cli.run("doctor", "--json")
        assert doctor.returncode == 1
        writable = next(c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "mesh-dir")
        assert writable["status"] == "fail"
        assert "chattr -i" in writable["fix"]
    finally:
        subprocess.run(["chattr", "-i", *map(str, folders)], check=False)


WRITERS: list[tuple[str, ...]] = [
    ("send", "a", "hi", "--as", "human"),
    ("register", "b"),
    ("task", "add", "t", "--as", "a"),
    ("lock", "/tmp/mesh-ro-test", "--as", "a"),
    ("heartbeat", "--as", "a"),
    ("prune",),
]


def check_store_refuses_writes(
    cli: MeshRunner, commands: list[tuple[str, ...]] | None = None
) -> None:
    for args in commands or WRITERS:
        done = cli.run(*args, "--json")
        no_traceback(done)
        assert done.returncode == 4, (args, done.stdout, done.stderr)
        error = json.loads(done.stdout)["error"]
        assert error["code"].startswith("store-"), error
        plain = cli.run(*args)
        assert plain.returncode == 4
        assert plain.stderr.count("\n") == 1 and plain.stderr.startswith("error: ")


# ---- 10: launch with a tmux that hangs ----------------------------------------------------------


def test_launch_with_a_hung_tmux_is_one_line(cli: MeshRunner, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "tmux"
    fake.write_text("#!/bin/sh\nexec sleep 600\n")
    fake.chmod(0o755)
    tool = bin_dir / "claude"
    tool.write_text("#!/bin/sh\nexit 0\n")
    tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}"}
    script = (
        "import sys; import drasill_cli.onboarding as o; o.TMUX_TIMEOUT_S = 1.0;"
        "sys.argv = ['mesh', *sys.argv[1:]]; from drasill_cli.cli.app import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, "launch", "a", "--tool", "claude", "--backend", "tmux"],
        env={**cli.env, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    no_traceback(done)
    assert done.returncode == 4, done.stderr
    assert "tmux did not answer" in done.stderr
