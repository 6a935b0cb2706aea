"""32 agents incrementing one counter file under `mesh lock`: no update may be lost (issue 5)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import MeshRunner

AGENTS = 32
INCREMENT = 'n=$(cat "$0"); echo $((n + 1)) > "$0"'

API_WORKER = """
import subprocess, sys
from drasill_cli import locks
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh

increment, mesh_dir, target, name, rounds = sys.argv[1:]
mesh = Mesh.open(mesh_dir, Config())
for _ in range(int(rounds)):
    with locks.hold(mesh, [target], name, wait=120):
        subprocess.run(["sh", "-c", increment, target], check=True)
"""


def _start_cli_workers(cli: MeshRunner, counter: Path, rounds: int) -> list[subprocess.Popen[str]]:
    """Each worker is a shell loop of `mesh lock COUNTER --wait 120 -- sh -c INCREMENT` (a
    generous wait: 32 contenders on a loaded two-core machine can keep one waiting past 30 s;
    what this test proves is that no increment is lost)."""
    cli.register(*(f"w{i:02d}" for i in range(AGENTS)))
    workers = []
    for i in range(AGENTS):
        lock = " ".join(cli.argv("lock", str(counter), "--as", f"w{i:02d}", "--wait", "120", "--"))
        loop = (
            f"i=0; while [ $i -lt {rounds} ]; do "
            f"{lock} sh -c '{INCREMENT}' \"$0\" || exit 1; i=$((i + 1)); done"
        )
        workers.append(
            subprocess.Popen(
                ["sh", "-c", loop, str(counter)],
                env=cli.env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return workers


def _finish(workers: list[subprocess.Popen[str]], timeout: float) -> None:
    """Wait for every worker to succeed; on any failure, stop the rest."""
    try:
        for worker in workers:
            _out, err = worker.communicate(timeout=timeout)
            assert worker.returncode == 0, err
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()


def _counter(tmp_path: Path) -> Path:
    counter = tmp_path / "counter"
    counter.write_text("0\n")
    return counter


def test_32_cli_agents_lose_no_increment(cli: MeshRunner, tmp_path: Path) -> None:
    """The CI-sized run through the real CLI: 32 processes x 3 rounds."""
    counter = _counter(tmp_path)
    _finish(_start_cli_workers(cli, counter, rounds=3), timeout=240)
    assert counter.read_text().strip() == str(AGENTS * 3)


def test_32_api_agents_x_50_rounds_lose_no_increment(cli: MeshRunner, tmp_path: Path) -> None:
    """The full 32 x 50 with the lock taken through the Python API in 32 worker processes."""
    cli.register(*(f"w{i:02d}" for i in range(AGENTS)))
    counter = _counter(tmp_path)
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                API_WORKER,
                INCREMENT,
                str(cli.mesh_dir),
                str(counter),
                f"w{i:02d}",
                "50",
            ],
            env=cli.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(AGENTS)
    ]
    _finish(workers, timeout=280)
    assert counter.read_text().strip() == str(AGENTS * 50)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 1,600 CLI runs outlast the suite's 300 s per-test bound
def test_32_cli_agents_x_50_rounds_lose_no_increment(cli: MeshRunner, tmp_path: Path) -> None:
    """The issue's acceptance run as written: 1,600 `mesh lock ... -- sh -c` calls."""
    counter = _counter(tmp_path)
    _finish(_start_cli_workers(cli, counter, rounds=50), timeout=1800)
    assert counter.read_text().strip() == str(AGENTS * 50)
