"""Hook latency: `.venv/bin/python -m benchmarks.bench_hooks [--rounds N]` (also a section of
`python -m benchmarks`).

Times one `mesh hook claude ...` call per case through the installed `mesh` console script
(its entry, drasill_cli/cli/entry.py, answers `mesh hook` without loading Typer), on a scratch
directory mesh, beside the interpreter floor and `python -c "import typer, pydantic"`, all
interleaved so that noise hits each alike:

- no identity: no `$DRASILL_AGENT`, no registered ancestor (a session not on the mesh);
- no-op: an agent on the mesh, after a tool call, no mail (heartbeat, hook locks, mail count);
- deliver one message: the same, with one message waiting (consumed into the context);
- refuse an edit: a PreToolUse `Write` of a file another agent holds.

Target (issue 25): a no-op hook at most 0.6x `import typer, pydantic`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from typing import Any

from benchmarks.harness import (
    PYTHON,
    compile_package,
    interleaved,
    median_ms,
    mesh_argv,
    run_timed,
    scratch,
)

TARGET = 0.6
FLOOR = "python -c pass (interpreter floor)"
FRAMEWORK = "python -c 'import typer, pydantic'"
NO_IDENTITY = "mesh hook, no identity"
NO_OP = "mesh hook, no-op (agent, no mail)"
DELIVER = "mesh hook, deliver one message"
REFUSE = "mesh hook, refuse an edit"


def measure(rounds: int) -> dict[str, Any]:
    """{rounds, entry_point, median_ms: {case: ms}, ratio: {case: x import typer+pydantic}}."""
    place = scratch("hooks")
    mesh_cmd = mesh_argv()
    try:
        env = place.env()
        work = place.root / "work"
        work.mkdir()
        held = work / "held.py"
        held.write_text("x = 1\n")

        def mesh(*args: str) -> None:
            subprocess.run([*mesh_cmd, *args], env=env, check=True, capture_output=True)

        mesh("register", "alice")
        mesh("register", "bob")
        mesh("register", "carol")
        mesh("lock", str(held), "--as", "bob", "--ttl", "3600")
        post = json.dumps(
            {"session_id": "s", "cwd": str(work), "hook_event_name": "PostToolUse",
             "tool_name": "Bash", "tool_input": {"command": "ls"}}
        ).encode()  # fmt: skip
        pre = json.dumps(
            {"session_id": "s", "cwd": str(work), "hook_event_name": "PreToolUse",
             "tool_name": "Write", "tool_input": {"file_path": str(held)}}
        ).encode()  # fmt: skip
        hook = [*mesh_cmd, "hook", "claude"]

        def deliver() -> float:
            mesh("send", "carol", "one message", "--as", "bob")
            return run_timed([*hook, "post-tool"], {**env, "DRASILL_AGENT": "carol"}, post)

        cases = {
            FLOOR: lambda: run_timed([PYTHON, "-c", "pass"], env),
            FRAMEWORK: lambda: run_timed([PYTHON, "-c", "import typer, pydantic"], env),
            NO_IDENTITY: lambda: run_timed([*hook, "post-tool"], env, post),
            NO_OP: lambda: run_timed([*hook, "post-tool"], {**env, "DRASILL_AGENT": "alice"}, post),
            DELIVER: deliver,
            REFUSE: lambda: run_timed([*hook, "pre-tool"], {**env, "DRASILL_AGENT": "alice"}, pre),
        }
        samples = interleaved(cases, rounds)
    finally:
        place.cleanup()
    figures = {name: round(median_ms(values), 1) for name, values in samples.items()}
    framework = figures[FRAMEWORK]
    return {
        "rounds": rounds,
        "entry_point": " ".join(mesh_cmd),
        "median_ms": figures,
        "ratio": {name: round(value / framework, 2) for name, value in figures.items()},
        "target": TARGET,
    }


def report(found: dict[str, Any]) -> list[str]:
    """The table's lines (also printed by `python -m benchmarks`)."""
    lines = [
        f"Hook latency (median of {found['rounds']} interleaved runs, entry point "
        f"{found['entry_point']}; ratio to `import typer, pydantic`)"
    ]
    for name, value in found["median_ms"].items():
        lines.append(f"  {name:<46} {value:8.1f} ms  {found['ratio'][name]:.2f}x")
    ratio = found["ratio"][NO_OP]
    lines.append(
        f"  target: no-op <= {found['target']}x import typer, pydantic: {ratio:.2f}x, "
        f"{'met' if ratio <= found['target'] else 'missed'}"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    compile_package()
    print("\n".join(report(measure(rounds))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
