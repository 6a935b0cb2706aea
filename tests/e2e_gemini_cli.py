"""The mesh's hooks inside the real Gemini CLI, with a stand-in for the model: not part of the
suite (it needs the npm package), run by hand:

    npm install --prefix /tmp/gem @google/gemini-cli@0.61.0
    .venv/bin/python -m tests.e2e_gemini_cli /tmp/gem/node_modules/.bin/gemini

A throwaway git work tree, home and directory mesh; `mesh hooks install gemini` there; bob
holds `src/app.py` and has mailed alice, who has claimed a task. Gemini runs as alice
(`gemini -p`, `GOOGLE_GEMINI_BASE_URL` pointing at a local server that plays the model: its
first turn asks for `write_file src/app.py`, every later one answers text). Checked: the
session-start hook put the mesh prompt into the model's context, the prompt hook the mail,
the before-tool hook refused the write (the model got the mesh's reason as the tool's error,
the file is unchanged), and the stop hook reminded alice of her open task once (Gemini sent
the reminder back as a new prompt). Exit 0 when all held.
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


def _reply(parts: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 15},
    }


class Model(BaseHTTPRequestHandler):
    """The Gemini API as far as the CLI needs it; every request body kept in `seen`."""

    seen: list[dict[str, Any]] = []  # noqa: RUF012 -- one server per run, shared by design
    chats = 0

    def log_message(self, format: str, *args: Any) -> None:
        del format, args

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Model.seen.append({"path": self.path, "body": json.loads(body or b"{}")})
        stream = ":streamGenerateContent" in self.path
        if ":countTokens" in self.path:
            out: dict[str, Any] = {"totalTokens": 10}
        elif stream:
            Model.chats += 1
            write = {
                "name": "write_file",
                "args": {"file_path": "src/app.py", "content": "x = 2\n"},
            }
            out = _reply(
                [{"functionCall": write}] if Model.chats == 1 else [{"text": "Understood."}]
            )
        else:  # the router's and other helpers' JSON questions
            out = _reply([{"text": json.dumps({"model_choice": "flash", "next_speaker": "user"})}])
        data = json.dumps(out).encode()
        payload = b"data: " + data + b"\r\n\r\n" if stream else data
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream" if stream else "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


def mesh(env: dict[str, str], cwd: Path, *args: str) -> Any:
    done = subprocess.run(
        [MESH, *args, "--json"], env=env, cwd=cwd, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout)


def main(gemini: str) -> int:
    place = Path(tempfile.mkdtemp(prefix="gemini-e2e-"))
    home, repo = place / "home", place / "repo"
    (repo / "src").mkdir(parents=True)
    home.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "src" / "app.py").write_text("x = 1\n")
    (home / ".gemini").mkdir()
    (home / ".gemini" / "settings.json").write_text(
        json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}})
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DRASILL_", "GEMINI"))
    }
    env.update(HOME=str(home), DRASILL_MESH_DIR=str(place / "mesh"))
    mesh(env, repo, "hooks", "install", "gemini")
    mesh(env, repo, "register", "bob")
    mesh(env, repo, "register", "alice")
    mesh(env, repo, "lock", "src/app.py", "--as", "bob")
    mesh(env, repo, "send", "alice", "please review src/app.py", "--as", "bob")
    task = mesh(env, repo, "task", "add", "tidy the app")
    mesh(env, repo, "claim", task["id"], "--as", "alice")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Model)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    run_env = {
        **env,
        "DRASILL_AGENT": "alice",
        "GEMINI_API_KEY": "stand-in",
        "GEMINI_CLI_TRUST_WORKSPACE": "true",
        "GOOGLE_GEMINI_BASE_URL": f"http://127.0.0.1:{server.server_address[1]}",
    }
    done = subprocess.run(
        [gemini, "-p", "edit src/app.py", "--skip-trust", "--approval-mode", "yolo"],
        env=run_env,
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    server.shutdown()
    chats = json.dumps([r["body"] for r in Model.seen if ":streamGenerateContent" in r["path"]])
    checks = {
        "gemini exited 0": done.returncode == 0,
        "session start: the mesh prompt in the context": "You are agent alice" in chats,
        "prompt: bob's mail in the context": "please review src/app.py" in chats,
        "before-tool: write_file refused, naming bob": "Tool execution blocked: mesh: edit of"
        in chats
        and "bob holds a write lock" in chats,
        "the file is unchanged": (repo / "src" / "app.py").read_text() == "x = 1\n",
        f"stop: reminded once of {task['id']}, then allowed": Model.chats == 3
        and chats.count(f"your task {task['id']}") == 1,
    }
    print(f"Gemini CLI {gemini}: {Model.chats} model turns; workspace {place}")
    for name, held in checks.items():
        print(f"  [{'ok' if held else '!!'}] {name}")
    if not all(checks.values()):
        print(done.stderr[-3000:], file=sys.stderr)
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1]))
