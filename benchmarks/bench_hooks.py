"""Hook latency: `.venv/bin/python -m benchmarks.bench_hooks [--rounds N]`.

Times one `mesh hook claude ...` call per case, through `python -m drasill_cli hook` (the fast
path that skips the command layer; the `mesh` console script will take the same path once
`mesh hook` is wired), on a scratch directory mesh, beside the interpreter floor and
`python -c "import typer, pydantic"`, all interleaved so that noise hits each alike:

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

from benchmarks.harness import PYTHON, compile_package, interleaved, median_ms, run_timed, scratch

TARGET = 0.6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    rounds = parser.parse_args().rounds
    compile_package()
    place = scratch("hooks")
    try:
        env = place.env()
        work = place.root / "work"
        work.mkdir()
        held = work / "held.py"
        held.write_text("x = 1\n")

        def mesh(*args: str) -> None:
            subprocess.run([PYTHON, "-m", "drasill_cli", *args], env=env, check=True,
                           capture_output=True)  # fmt: skip

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
        hook = [PYTHON, "-m", "drasill_cli", "hook", "claude"]

        def deliver() -> float:
            mesh("send", "carol", "one message", "--as", "bob")
            return run_timed([*hook, "post-tool"], {**env, "DRASILL_AGENT": "carol"}, post)

        cases = {
            "interpreter floor": lambda: run_timed([PYTHON, "-c", "pass"], env),
            "import typer, pydantic": lambda: run_timed(
                [PYTHON, "-c", "import typer, pydantic"], env
            ),
            "hook, no identity": lambda: run_timed([*hook, "post-tool"], env, post),
            "hook, no-op (agent, no mail)": lambda: run_timed(
                [*hook, "post-tool"], {**env, "DRASILL_AGENT": "alice"}, post
            ),
            "hook, deliver one message": deliver,
            "hook, refuse an edit": lambda: run_timed(
                [*hook, "pre-tool"], {**env, "DRASILL_AGENT": "alice"}, pre
            ),
        }
        samples = interleaved(cases, rounds)
    finally:
        place.cleanup()
    figures = {name: median_ms(values) for name, values in samples.items()}
    floor = figures["import typer, pydantic"]
    print(f"{'case (median of ' + str(rounds) + ')':36s} {'ms':>8s} {'x typer+pydantic':>17s}")
    for name, value in figures.items():
        print(f"{name:36s} {value:8.1f} {value / floor:17.2f}")
    ratio = figures["hook, no-op (agent, no mail)"] / floor
    print(f"target: no-op <= {TARGET}x import typer, pydantic: {ratio:.2f}x, "
          f"{'met' if ratio <= TARGET else 'missed'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
