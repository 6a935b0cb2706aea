"""The mesh's hooks inside the real Codex CLI, with a stand-in for the model: not part of the
suite (it needs the npm package), run by hand:

    npm install --prefix /tmp/cx @openai/codex@0.171.0
    .venv/bin/python -m tests.e2e_codex_cli /tmp/cx/node_modules/.bin/codex

A throwaway git work tree, home and directory mesh; `mesh hooks install codex` there; bob
holds `src/new.py` and has mailed alice, who has claimed a task. Codex runs as alice (`codex
exec --trust --dangerously-bypass-hook-trust`, a model provider pointing at a local server that
plays the Responses API: its first turn runs `apply_patch <<'EOF' ... Add File: src/new.py`
through `exec_command`, every later one answers text; with a model unknown to this Codex no
`apply_patch` tool is offered, so the patch comes in its shell form). Checked: the
session-start hook put the mesh prompt into the model's context, the prompt hook the mail, the
before-tool hook refused the patch (the model got the mesh's reason, no file was made), and the
stop hook reminded alice of her open task once. Exit 0 when all held.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MESH = str(Path(sys.executable).parent / "mesh")
PATCH = "*** Begin Patch\n*** Add File: src/new.py\n+x = 2\n*** End Patch\n"
USAGE = {
    "input_tokens": 10,
    "input_tokens_details": {"cached_tokens": 0},
    "output_tokens": 5,
    "output_tokens_details": {"reasoning_tokens": 0},
    "total_tokens": 15,
}


class Model(BaseHTTPRequestHandler):
    """The Responses API as far as Codex needs it; every request body kept in `seen`."""

    seen: list[dict[str, Any]] = []  # noqa: RUF012 -- one server per run, shared by design

    def log_message(self, format: str, *args: Any) -> None:
        del format, args

    def _answer(self, kind: str, payload: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._answer("application/json", b'{"models": []}')

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        Model.seen.append(body)
        turn = len(Model.seen)
        if turn == 1:
            call = {"cmd": f"apply_patch <<'EOF'\n{PATCH}EOF\n"}
            item: dict[str, Any] = {"type": "function_call", "id": "fc_1", "call_id": "call_1",
                                    "name": "exec_command", "arguments": json.dumps(call),
                                    "status": "completed"}  # fmt: skip
        else:
            item = {"type": "message", "role": "assistant", "id": f"msg_{turn}",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Understood.",
                                 "annotations": []}]}  # fmt: skip
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": {"id": f"resp_{turn}"}},
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": {"id": f"resp_{turn}", "usage": USAGE}},
        ]
        self._answer(
            "text/event-stream",
            b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events),
        )


def mesh(env: dict[str, str], cwd: Path, *args: str) -> Any:
    done = subprocess.run(
        [MESH, *args, "--json"], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def main(codex: str) -> int:
    place = Path(tempfile.mkdtemp(prefix="codex-e2e-"))
    home, repo = place / "home", place / "repo"
    (repo / "src").mkdir(parents=True)
    home.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DRASILL_", "OPENAI_", "CODEX"))
    }
    env.update(HOME=str(home), DRASILL_MESH_DIR=str(place / "mesh"))
    mesh(env, repo, "hooks", "install", "codex")
    mesh(env, repo, "register", "bob")
    mesh(env, repo, "register", "alice")
    mesh(env, repo, "lock", "src/new.py", "--as", "bob")
    mesh(env, repo, "send", "alice", "please review src/app.py", "--as", "bob")
    task = mesh(env, repo, "task", "add", "tidy the app")
    mesh(env, repo, "claim", task["id"], "--as", "alice")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    provider = (
        f'{{name="stand-in", base_url="http://127.0.0.1:{server.server_address[1]}/v1", '
        'wire_api="responses", env_key="OPENAI_API_KEY"}'
    )
    done = subprocess.run(
        [codex, "exec", "--trust", "--skip-git-repo-check", "--dangerously-bypass-hook-trust",
         "-s", "workspace-write", "-m", "gpt-5-codex", "-c", "model_provider=stand-in",
         "-c", f"model_providers.stand-in={provider}", "write src/new.py"],
        env={**env, "DRASILL_AGENT": "alice", "OPENAI_API_KEY": "stand-in"},
        cwd=repo,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    server.shutdown()
    chats = json.dumps(Model.seen)
    checks = {
        "codex exited 0": done.returncode == 0,
        "session start: the mesh prompt in the context": "You are agent alice" in chats,
        "prompt: bob's mail in the context": "please review src/app.py" in chats,
        "before-tool: the patch refused, naming bob": "Command blocked by PreToolUse hook: mesh:"
        in chats
        and "bob holds a write lock" in chats,
        "no file was written": not (repo / "src" / "new.py").exists(),
        f"stop: reminded once of {task['id']}, then allowed": len(Model.seen) == 3
        and f"your task {task['id']}" in chats,
    }
    print(f"Codex {codex}: {len(Model.seen)} model turns; workspace {place}")
    for name, held in checks.items():
        print(f"  [{'ok' if held else '!!'}] {name}")
    if not all(checks.values()):
        print(done.stdout[-2000:], done.stderr[-3000:], file=sys.stderr)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
