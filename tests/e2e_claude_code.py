"""The mesh's hooks inside the real Claude Code, with a stand-in for the model: not part of the
suite (it needs the npm package), run by hand:

    npm install --prefix /tmp/cc @anthropic-ai/claude-code@2.1.332
    .venv/bin/python -m tests.e2e_claude_code /tmp/cc/node_modules/.bin/claude

A throwaway git work tree, home and directory mesh; `mesh hooks install claude` there; bob
holds `src/new.py` and has mailed alice, who has claimed a task. Claude Code runs as alice
(`claude -p`, `ANTHROPIC_BASE_URL` pointing at a local server that plays the model: its first
turn with tools asks to `Write src/new.py`, every later one answers text). Checked: the
session-start hook put the mesh prompt into the model's context, the prompt hook the mail,
the before-tool hook refused the write (the model got the mesh's reason, no file was made),
and the stop hook reminded alice of her open task once. Exit 0 when all held.
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


def _events(blocks: list[dict[str, Any]], stop: str) -> bytes:
    """A Messages API stream of `blocks` (each `{"start": ..., "delta": ...}`)."""
    out: list[tuple[str, dict[str, Any]]] = [
        (
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_stand_in",
                    "type": "message",
                    "role": "assistant",
                    "model": "stand-in",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 10, "output_tokens": 1},
                },
            },
        )
    ]
    for index, block in enumerate(blocks):
        out += [
            ("content_block_start", {"type": "content_block_start", "index": index,
                                     "content_block": block["start"]}),
            ("content_block_delta", {"type": "content_block_delta", "index": index,
                                     "delta": block["delta"]}),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]  # fmt: skip
    out += [
        ("message_delta", {"type": "message_delta",
                           "delta": {"stop_reason": stop, "stop_sequence": None},
                           "usage": {"output_tokens": 5}}),
        ("message_stop", {"type": "message_stop"}),
    ]  # fmt: skip
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in out)


def _text(text: str) -> dict[str, Any]:
    return {"start": {"type": "text", "text": ""}, "delta": {"type": "text_delta", "text": text}}


class Model(BaseHTTPRequestHandler):
    """The Messages API as far as Claude Code needs it; every request body kept in `seen`."""

    seen: list[dict[str, Any]] = []  # noqa: RUF012 -- one server per run, shared by design
    turns = 0
    target = ""

    def log_message(self, format: str, *args: Any) -> None:
        del format, args

    def _answer(self, status: int, kind: str, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        self._answer(200, "application/json", b"{}")

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = json.loads(raw or b"{}")
        Model.seen.append({"path": self.path, "body": body})
        if "count_tokens" in self.path:
            self._answer(200, "application/json", b'{"input_tokens": 10}')
            return
        tools = {tool.get("name") for tool in body.get("tools") or []}
        if "Write" in tools:
            Model.turns += 1
        if "Write" in tools and Model.turns == 1:
            call = json.dumps({"file_path": Model.target, "content": "x = 2\n"})
            blocks = [{"start": {"type": "tool_use", "id": "toolu_stand_in", "name": "Write",
                                 "input": {}},
                       "delta": {"type": "input_json_delta", "partial_json": call}}]  # fmt: skip
            stop = "tool_use"
        else:
            blocks, stop = [_text("Understood.")], "end_turn"
        if body.get("stream"):
            self._answer(200, "text/event-stream", _events(blocks, stop))
            return
        message = {
            "id": "msg_stand_in",
            "type": "message",
            "role": "assistant",
            "model": "stand-in",
            "content": [{"type": "text", "text": "Understood."}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }
        self._answer(200, "application/json", json.dumps(message).encode())


def mesh(env: dict[str, str], cwd: Path, *args: str) -> Any:
    done = subprocess.run(
        [MESH, *args, "--json"], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def main(claude: str) -> int:
    place = Path(tempfile.mkdtemp(prefix="claude-e2e-"))
    home, repo = place / "home", place / "repo"
    (repo / "src").mkdir(parents=True)
    home.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    target = repo / "src" / "new.py"
    Model.target = str(target)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DRASILL_", "ANTHROPIC_", "CLAUDE"))
    }
    env.update(HOME=str(home), DRASILL_MESH_DIR=str(place / "mesh"))
    mesh(env, repo, "hooks", "install", "claude")
    mesh(env, repo, "register", "bob")
    mesh(env, repo, "register", "alice")
    mesh(env, repo, "lock", "src/new.py", "--as", "bob")
    mesh(env, repo, "send", "alice", "please review src/app.py", "--as", "bob")
    task = mesh(env, repo, "task", "add", "tidy the app")
    mesh(env, repo, "claim", task["id"], "--as", "alice")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    run_env = {
        **env,
        "DRASILL_AGENT": "alice",
        "ANTHROPIC_API_KEY": "stand-in",
        "ANTHROPIC_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
    }
    done = subprocess.run(
        [claude, "-p", "write src/new.py", "--permission-mode", "acceptEdits"],
        env=run_env,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    server.shutdown()
    chats = json.dumps([r["body"] for r in Model.seen if "Write" in json.dumps(r["body"])])
    checks = {
        "claude exited 0": done.returncode == 0,
        "session start: the mesh prompt in the context": "You are agent alice" in chats,
        "prompt: bob's mail in the context": "please review src/app.py" in chats,
        "before-tool: Write refused, naming bob": "bob holds a write lock" in chats,
        "no file was written": not target.exists(),
        # Claude shows the reason twice in the turn after the stop; a second refusal would
        # have made a fourth turn.
        f"stop: reminded once of {task['id']}, then allowed": Model.turns == 3
        and f"your task {task['id']}" in chats,
    }
    print(f"Claude Code {claude}: {Model.turns} model turns; workspace {place}")
    if "--show" in sys.argv:
        print(json.dumps(Model.seen[-1]["body"]["messages"], indent=1)[-3000:])
    for name, held in checks.items():
        print(f"  [{'ok' if held else '!!'}] {name}")
    if not all(checks.values()):
        print(done.stdout[-2000:], done.stderr[-3000:], file=sys.stderr)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
