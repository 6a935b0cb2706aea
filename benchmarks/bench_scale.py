"""Scale: consume with few vs many unread, `agents`/`status` with few vs many agents, prune.

Part of `python -m benchmarks`. The small and the large mesh are measured in alternation, so the
ratio between them is taken under the same machine load.
"""

from __future__ import annotations

import functools
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from benchmarks.bench_inbox import AGENT
from benchmarks.harness import Scratch, interleaved, median_ms, mesh_argv, run_timed, scratch
from drasill_cli import agents, messages
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh


def _inbox_mesh(level: int) -> tuple[Scratch, Mesh]:
    work = scratch(f"inbox{level}")
    mesh = Mesh.open(work.mesh_dir, Config())
    agents.register(mesh, AGENT, pid=os.getpid())
    for index in range(level):
        messages.send(mesh, AGENT, f"message {index}", sender="filler")
    return work, mesh


def consume(small: int, big: int, api_rounds: int, cli_rounds: int) -> dict[str, Any]:
    """Median time to consume one message with `small` vs `big` unread (API and `mesh inbox`)."""
    began = time.perf_counter()
    built = {level: _inbox_mesh(level) for level in (small, big)}
    fill_s = time.perf_counter() - began
    try:
        meshes = {level: mesh for level, (_work, mesh) in built.items()}
        envs = {level: work.env() for level, (work, _mesh) in built.items()}
        result = consume_rounds(meshes, envs, AGENT, api_rounds, cli_rounds)
    finally:
        for work, _mesh in built.values():
            work.cleanup()
    return {"fill_s": fill_s, **result}


def consume_rounds(
    meshes: dict[int, Mesh],
    envs: dict[int, dict[str, str]],
    agent: str,
    api_rounds: int,
    cli_rounds: int,
) -> dict[str, Any]:
    """Consume timings for two inboxes whose levels (unread counts) are the keys of `meshes`,
    through the API and `mesh inbox` (run with `envs[level]`), interleaved. The level is kept
    constant: every timed consume is followed by an untimed refill."""
    small, big = sorted(meshes)

    def api(level: int) -> float:
        mesh = meshes[level]
        started = time.perf_counter()
        taken = messages.consume(mesh, agent)
        took = time.perf_counter() - started
        if taken is None:
            raise RuntimeError("the inbox ran dry")
        messages.send(mesh, agent, "refill", sender="filler")
        return took

    def cli(level: int) -> float:
        took = run_timed([*mesh_argv(), "inbox", agent], envs[level])
        messages.send(meshes[level], agent, "refill", sender="filler")
        return took

    api_samples = interleaved(
        {"small": lambda: api(small), "big": lambda: api(big)}, api_rounds, warmup=5
    )
    cli_samples = interleaved({"small": lambda: cli(small), "big": lambda: cli(big)}, cli_rounds)
    for level, mesh in meshes.items():
        if messages.unread_count(mesh, agent) != level:
            raise RuntimeError(f"the {level}-unread inbox did not stay at {level}")
    api_ms = {k: median_ms(v) for k, v in api_samples.items()}
    cli_ms = {k: median_ms(v) for k, v in cli_samples.items()}
    return {
        "unread": {"small": small, "big": big},
        "api_median_ms": api_ms,
        "cli_median_ms": cli_ms,
        "api_ratio": api_ms["big"] / api_ms["small"],
        "cli_ratio": cli_ms["big"] / cli_ms["small"],
    }


def agents_status(small: int, big: int, rounds: int) -> dict[str, Any]:
    """`mesh agents --json` and `mesh status --json` with `small` vs `big` registered agents."""
    began = time.perf_counter()
    built: dict[int, Scratch] = {}
    for level in (small, big):
        work = scratch(f"agents{level}")
        mesh = Mesh.open(work.mesh_dir, Config())
        for index in range(level):
            agents.register(mesh, f"agent-{index:04d}", pid=os.getpid(), role="coder")
        built[level] = work
    build_s = time.perf_counter() - began
    try:
        commands: dict[str, Callable[[], float]] = {}
        for command in ("agents", "status"):
            for level, work in built.items():
                argv = [*mesh_argv(), command, "--json"]
                commands[f"{command} {level}"] = functools.partial(run_timed, argv, work.env())
        samples = interleaved(commands, rounds, warmup=1)
    finally:
        for work in built.values():
            work.cleanup()
    medians = {name: median_ms(values) for name, values in samples.items()}
    return {
        "agents": {"small": small, "big": big},
        "build_s": build_s,
        "median_ms": medians,
        "agents_ratio": medians[f"agents {big}"] / medians[f"agents {small}"],
        "status_ratio": medians[f"status {big}"] / medians[f"status {small}"],
    }


def _plant_stale_temp_files(work: Scratch, count: int) -> None:
    """Leftovers of killed writers: temp files in the store's staging folder, two hours old."""
    old = time.time() - 7200
    folder = work.mesh_dir / "staging"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    for index in range(count):
        path = folder / f".tmp-99999-{index:08x}-1-m-stale.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, b'{"partial": ')
        os.close(fd)
        os.utime(path, (old, old))


def prune(stale: int, rounds: int) -> dict[str, Any]:
    """`mesh prune --json` clearing `stale` temp files, beside the same prune with none."""
    work = scratch("prune")
    try:
        mesh = Mesh.open(work.mesh_dir, Config())
        names = [f"agent-{index:02d}" for index in range(10)]
        for name in names:
            agents.register(mesh, name, pid=os.getpid())
            messages.send(mesh, name, "hello", sender="human")
        argv = [*mesh_argv(), "prune", "--json"]
        env = work.env()
        loaded, empty, plant = [], [], []
        for _ in range(rounds):
            empty.append(run_timed(argv, env))
            started = time.perf_counter()
            _plant_stale_temp_files(work, stale)
            plant.append(time.perf_counter() - started)
            loaded.append(run_timed(argv, env))
            left = sum(
                1
                for _dir, _sub, files in os.walk(work.mesh_dir)
                for name in files
                if name.startswith(".tmp-")
            )
            if left:
                raise RuntimeError(f"prune left {left} stale temp files")
    finally:
        work.cleanup()
    return {
        "stale_files": stale,
        "rounds": rounds,
        "median_ms": {"none": median_ms(empty), "stale": median_ms(loaded)},
        "per_file_us": (statistics.median(loaded) - statistics.median(empty)) / stale * 1e6,
    }
