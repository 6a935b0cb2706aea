"""Messages under load and under SIGKILL: none lost, none twice, never a partial message."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from drasill_cli import messages
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner

PRELUDE = """
import sys
from pathlib import Path
from drasill_cli import messages
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
mesh = Mesh.open(Path(sys.argv[1]), Config())
"""

WRITER = (
    PRELUDE
    + """
worker, count = sys.argv[2], int(sys.argv[3])
ids = [messages.send(mesh, "sink", f"{worker}:{i}", sender=worker)[0]["id"] for i in range(count)]
sys.stdout.write("\\n".join(ids) + "\\n")
"""
)

CONSUMER = (
    PRELUDE
    + """
finished_flag = Path(sys.argv[2])
taken = []
while True:
    finished = finished_flag.exists()  # read before consuming: then None means drained
    message = messages.consume(mesh, "sink")
    if message is not None:
        taken.append(message["id"] + " " + message["body"])
    elif finished:
        break
    else:
        messages.wait_for(mesh, "sink", 0.2)
sys.stdout.write("\\n".join(taken) + "\\n")
"""
)

KILLED_SENDER = (
    PRELUDE
    + """
import os
attachment = sys.argv[2]
sys.stdout.write("ready\\n")
sys.stdout.flush()
i = 0
while True:
    size = (i * 7919) % 3000 + 1
    body = f"{os.getpid()}:{i}:{size}:" + "\\u00fc" * size
    files = [attachment] if i % 4 == 0 else []
    messages.send(mesh, "victim", body, sender="killer", attachments=files)
    i += 1
"""
)


def python(script: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 240) -> list[str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return [line for line in out.splitlines() if line]


def message_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.json") if not p.name.startswith(".tmp-")]


def test_16_writers_x_500_with_4_consumers_exactly_once(cli: MeshRunner, tmp_path: Path) -> None:
    cli.json("register", "sink")
    finished_flag = tmp_path / "writers-finished"
    mesh_arg = str(cli.mesh_dir)
    consumers = [python(CONSUMER, mesh_arg, str(finished_flag), env=cli.env) for _ in range(4)]
    writers = [python(WRITER, mesh_arg, f"w{n:02d}", "500", env=cli.env) for n in range(16)]

    cli_sent: list[dict[str, str]] = []
    cli_taken: list[str] = []

    def cli_sender(name: str) -> None:
        cli_sent.extend(
            cli.json("send", "sink", f"{name}:{index}", "--as", name, process=True)
            for index in range(5)
        )

    def cli_consumer() -> None:
        for _ in range(10):
            done = cli.run("inbox", "sink", "--json", process=True)  # processes race
            assert done.returncode in (0, 1), done.stderr
            if done.returncode == 0:
                message = json.loads(done.stdout)
                cli_taken.append(message["id"] + " " + message["body"])

    threads = [threading.Thread(target=cli_sender, args=(f"cli{n}",)) for n in range(2)]
    threads.append(threading.Thread(target=cli_consumer))
    for thread in threads:
        thread.start()

    sent_ids = [line for proc in writers for line in finish(proc)]
    for thread in threads:
        thread.join(timeout=240)
    finished_flag.touch()
    taken = [line for proc in consumers for line in finish(proc)] + cli_taken

    assert len(sent_ids) == 16 * 500
    expected = set(sent_ids) | {m["id"] for m in cli_sent}
    assert len(expected) == 16 * 500 + 10
    counts = Counter(line.split(" ", 1)[0] for line in taken)
    assert [i for i, n in counts.items() if n > 1] == []  # none twice
    assert set(counts) == expected  # none lost, none invented
    bodies = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in taken}
    assert bodies[cli_sent[0]["id"]] == cli_sent[0]["body"]
    inbox = cli.mesh_dir / "inbox" / "sink"
    assert list((cli.mesh_dir / "staging").iterdir()) == []  # no temp file left behind
    assert message_files(inbox / "new") == []
    assert len(list((inbox / "cur").iterdir())) == len(expected)


def test_send_killed_at_random_points_never_leaves_a_partial_message(
    cli: MeshRunner, tmp_path: Path
) -> None:
    cli.json("register", "victim")
    attachment = tmp_path / "payload.bin"
    payload = os.urandom(20000)
    attachment.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    rng = random.Random(1234)
    trials, parallel = 200, 4
    for _ in range(trials // parallel):
        procs = [
            python(KILLED_SENDER, str(cli.mesh_dir), str(attachment), env=cli.env)
            for _ in range(parallel)
        ]
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n", proc.stderr
        for proc in procs:
            threading.Timer(rng.uniform(0, 0.03), os.kill, (proc.pid, signal.SIGKILL)).start()
        for proc in procs:
            proc.communicate(timeout=60)
            assert proc.returncode == -signal.SIGKILL

    mesh = Mesh.open(cli.mesh_dir, Config())
    stray_tmp = list((cli.mesh_dir / "staging").iterdir())
    assert [p.name for p in stray_tmp if not p.name.startswith(".tmp-")] == []
    unread = messages.unread_count(mesh, "victim")
    assert unread > 0
    listed = cli.json("inbox", "victim", "--list")
    assert len(listed) == unread  # every file in new/ is a whole message
    assert mesh.warnings == []
    seen = set()
    for _ in range(unread):
        message = messages.consume(mesh, "victim")
        assert message is not None
        assert message["id"] not in seen
        seen.add(message["id"])
        _pid, _index, size, text = message["body"].split(":", 3)
        assert text == "\u00fc" * int(size)
        for item in message["attachments"]:
            assert item["sha256"] == digest
            assert hashlib.sha256(Path(item["path"]).read_bytes()).hexdigest() == digest
    assert messages.consume(mesh, "victim") is None
    assert mesh.warnings == []
    print(f"{trials} kills: {unread} whole messages, {len(stray_tmp)} temp files left in staging/")
    for path in (cli.mesh_dir / "sent" / "killer").iterdir():
        assert json.loads(path.read_bytes())["to"] == "victim"
    later = cli.json("send", "victim", "still works", "--as", "killer")
    assert cli.json("inbox", "victim") == later
    assert cli.json("history", "victim", "--limit", "1")[0]["id"] == later["id"]
