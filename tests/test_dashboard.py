"""`mesh dashboard`: the real command in a subprocess, reached over HTTP and by a real browser.

The browser tests drive Debian's headless Chromium through chromedriver (tests/browser.py);
they are skipped, with the reason, only when chromium is not installed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import locks, messages, tasks
from drasill_cli.backends.directory.layout import AUDIT_CURRENT
from drasill_cli.config import Config
from drasill_cli.mesh import Mesh
from tests import browser
from tests.conftest import MeshRunner
from tests.harness import directory_of

NO_BROWSER = browser.available()
needs_browser = pytest.mark.skipif(NO_BROWSER is not None, reason=str(NO_BROWSER))


class Dashboard:
    """A running `mesh dashboard --no-open --port 0`, and HTTP helpers against it."""

    def __init__(
        self,
        cli: MeshRunner,
        *args: str,
        no_open: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        flags = ("--no-open",) if no_open else ()
        self.proc = subprocess.Popen(
            cli.argv("dashboard", *flags, "--port", "0", *args),
            env={**cli.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.first_line = self.proc.stdout.readline().strip()
        if not self.first_line:
            self.proc.wait(10)
            raise AssertionError(
                f"no URL; stderr: {self.proc.stderr.read() if self.proc.stderr else ''}"
            )
        self.cli = cli
        self.url = self.first_line
        self.base, _, query = self.url.partition("/?")
        self.token = query.removeprefix("token=")

    def request(
        self,
        path: str,
        *,
        method: str = "GET",
        payload: Any = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(  # noqa: S310 -- the dashboard on loopback
            self.base + path, data=data, method=method, headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 -- loopback
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def act(self, name: str, payload: dict[str, Any]) -> tuple[int, Any]:
        """POST an action the way the page does: token in the header."""
        code, body = self.request(
            f"/api/{name}",
            method="POST",
            payload=payload,
            headers={"X-Mesh-Token": self.token, "Content-Type": "application/json"},
        )
        return code, json.loads(body)

    def post_raw(self, name: str, data: bytes) -> tuple[int, bytes]:
        """POST `data` as it is (bytes no JSON encoder would make) with the token."""
        request = urllib.request.Request(  # noqa: S310 -- the dashboard on loopback
            f"{self.base}/api/{name}",
            data=data,
            method="POST",
            headers={"X-Mesh-Token": self.token, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 -- loopback
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def view(self) -> dict[str, Any]:
        code, body = self.request(f"/api/view?token={self.token}")
        assert code == 200
        result: dict[str, Any] = json.loads(body)
        return result

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.proc.returncode


@pytest.fixture
def api(mesh_dir: Path) -> Mesh:
    return Mesh.open(mesh_dir, Config())


@pytest.fixture
def populated(cli: MeshRunner, api: Mesh) -> dict[str, Any]:
    """Two agents, a plain task, a task in review done by alice, and a lock held by bob."""
    cli.json("register", "alice", "--role", "writer")
    cli.json("register", "bob")
    plain = tasks.add_task(api, "Index the corpus", actor="alice", priority=3)
    reviewed = tasks.add_task(api, "Write the release notes", actor="alice", review=True)
    tasks.claim(api, "alice", reviewed["id"])
    tasks.done(api, reviewed["id"], "alice", "notes drafted")
    after = tasks.add_task(api, "Publish", actor="alice", depends_on=[reviewed["id"]])
    lock_path = str(cli.mesh_dir.parent / "src" / "app.py")
    locks.acquire(api, [lock_path], "bob")
    return {"plain": plain, "review": reviewed, "after": after, "lock": locks.resolve(lock_path)}


@pytest.fixture
def dash(cli: MeshRunner, populated: dict[str, Any]) -> Iterator[Dashboard]:
    del populated
    board = Dashboard(cli)
    yield board
    board.stop()


def audit_events(mesh: Mesh) -> list[dict[str, Any]]:
    lines = Path(directory_of(mesh).store.path(AUDIT_CURRENT)).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


# ---- access ----------------------------------------------------------------------------------


def test_first_line_is_a_loopback_url_with_a_token(dash: Dashboard) -> None:
    assert dash.url.startswith("http://127.0.0.1:")
    assert len(dash.token) >= 32
    code, body = dash.request(f"/?token={dash.token}")
    assert code == 200
    assert b"mesh dashboard" in body


@pytest.mark.parametrize(
    "path", ["/", "/app.js", "/app.css", "/events", "/api/view", "/api/task/t-0001", "/nope"]
)
def test_requests_without_the_token_get_403_and_nothing(dash: Dashboard, path: str) -> None:
    assert dash.request(path) == (403, b"")
    wrong = "x" * len(dash.token)
    assert dash.request(f"{path}?token={wrong}") == (403, b"")
    assert dash.request(f"{path}?token={dash.token[:-1]}") == (403, b"")


def test_the_first_response_already_shows_the_mesh(
    dash: Dashboard, populated: dict[str, Any]
) -> None:
    """No blank cards before the first event: the HTML holds agents, cards and locks, under
    the same strict policy (no inline script or style)."""
    request = urllib.request.Request(f"{dash.url}")  # noqa: S310 -- the dashboard on loopback
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 -- loopback
        page = response.read().decode()
        policy = response.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "unsafe-inline" not in policy
    assert '<tr data-name="alice"' in page and '<tr data-name="bob"' in page
    review = populated["review"]["id"]
    assert f'data-id="{review}" data-state="review"' in page
    assert f"waits on {review} (review)" in page
    assert 'data-holder="bob"' in page
    assert "connecting" in page  # the live badge: the feed is not needed to see the mesh


def test_a_tasks_detail_is_one_get(dash: Dashboard, populated: dict[str, Any]) -> None:
    review = populated["review"]["id"]
    code, body = dash.request(f"/api/task/{review}?token={dash.token}")
    assert code == 200, body
    detail = json.loads(body)
    assert [h["event"] for h in detail["history"]] == ["task-add", "task-claim", "task-done"]
    assert detail["result"] == "notes drafted"
    code, body = dash.request(f"/api/task/t-9999?token={dash.token}")
    assert code == 404, body
    code, body = dash.request(f"/api/task/{'t' * 500}?token={dash.token}")
    assert code == 400, body


def test_a_post_needs_the_token_in_a_header_not_only_the_url(dash: Dashboard, api: Mesh) -> None:
    payload = {"to": "bob", "body": "from a link"}
    before = messages.unread_count(api, "bob")
    in_url = dash.request(f"/api/send?token={dash.token}", method="POST", payload=payload)
    assert in_url == (403, b"")
    no_token = dash.request("/api/send", method="POST", payload=payload)
    assert no_token == (403, b"")
    assert messages.unread_count(api, "bob") == before
    code, answer = dash.act("send", payload)
    assert code == 200, answer
    assert messages.unread_count(api, "bob") == before + 1


def test_another_origin_or_host_is_refused(dash: Dashboard, api: Mesh) -> None:
    headers = {"X-Mesh-Token": dash.token, "Origin": "http://evil.example"}
    before = messages.unread_count(api, "bob")
    code, body = dash.request(
        "/api/send", method="POST", payload={"to": "bob", "body": "x"}, headers=headers
    )
    assert (code, body) == (403, b"")
    code, body = dash.request(f"/?token={dash.token}", headers={"Host": "evil.example"})
    assert (code, body) == (403, b"")
    assert messages.unread_count(api, "bob") == before


def test_json_first_line_names_the_url(cli: MeshRunner) -> None:
    board = Dashboard(cli, "--json")
    try:
        first = json.loads(board.first_line)
        assert first["url"].startswith(f"http://127.0.0.1:{first['port']}/?token=")
        assert first["as"] == "human"
    finally:
        board.stop()


def test_a_busy_port_or_a_bad_port_is_exit_2(cli: MeshRunner) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = cli.run("dashboard", "--no-open", "--port", str(port))
    assert done.returncode == 2
    assert "--port 0" in done.stderr
    done = cli.run("dashboard", "--no-open", "--port", "70000", "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["code"] == "invalid-port"


def test_without_the_web_extra_it_says_what_to_install(cli: MeshRunner, tmp_path: Path) -> None:
    fake = tmp_path / "no-web"
    (fake / "starlette").mkdir(parents=True)
    (fake / "starlette" / "__init__.py").write_text("raise ImportError('starlette is absent')\n")
    env = {"PYTHONPATH": f"{fake}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = cli.run("dashboard", "--no-open", env=env, process=True)  # a fresh interpreter
    assert done.returncode == 4
    assert "pip install 'drasill-cli[web]'" in done.stderr
    assert done.stdout == ""


def test_other_commands_do_not_load_the_web_stack(cli: MeshRunner) -> None:
    probe = (
        "import sys; sys.argv = ['mesh', '--help']\n"
        "from drasill_cli.cli.app import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "web = sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn'))\n"
        "print('WEB', web, 'dashboard' in ' '.join(sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=cli.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert "WEB [] " in done.stdout, done.stdout + done.stderr
    assert "dashboard" in done.stdout  # --help lists it (its module loads, the web stack not)


def test_ctrl_c_stops_it_promptly(cli: MeshRunner) -> None:
    board = Dashboard(cli)
    started = time.monotonic()
    code = board.stop()
    assert time.monotonic() - started < 10
    assert code == 130


def test_ctrl_c_with_pages_open_exits_130_without_a_traceback(cli: MeshRunner) -> None:
    import http.client

    board = Dashboard(cli)
    host, _, port = board.base.removeprefix("http://").partition(":")
    pages = []
    for _ in range(3):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", f"/events?token={board.token}")
        response = conn.getresponse()
        assert response.status == 200
        assert response.readline()  # the stream is open
        pages.append(conn)
    assert board.proc.stderr is not None
    board.proc.send_signal(signal.SIGINT)
    code = board.proc.wait(15)
    stderr = board.proc.stderr.read()
    board.stop()
    for conn in pages:
        conn.close()
    assert code == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert "ERROR" not in stderr, stderr


# A stand-in for the browser ($BROWSER): records its command line and what it was asked to open.
FAKE_BROWSER = """\
#!{python}
import json, os, stat, sys
target = sys.argv[-1]
path = target.removeprefix("file://")
seen = {{"argv": sys.argv[1:]}}
if os.path.isfile(path):
    seen["mode"] = stat.S_IMODE(os.stat(path).st_mode)
    seen["content"] = open(path).read()
with open(os.environ["BROWSER_OUT"] + ".tmp", "w") as f:
    json.dump(seen, f)
os.rename(os.environ["BROWSER_OUT"] + ".tmp", os.environ["BROWSER_OUT"])
"""


def test_the_browser_is_opened_without_the_token_on_its_command_line(
    cli: MeshRunner, tmp_path: Path
) -> None:
    """A command line is readable by every local user (`ps`): the browser gets a private local
    file that sends it on to the tokened URL."""
    fake = tmp_path / "fake-browser"
    fake.write_text(FAKE_BROWSER.format(python=sys.executable))
    fake.chmod(0o755)
    out = tmp_path / "browser.json"
    board = Dashboard(
        cli, no_open=False, env={"BROWSER": str(fake), "BROWSER_OUT": str(out), "DISPLAY": ":0"}
    )
    try:
        deadline = time.monotonic() + 15
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert out.exists(), "the browser was not started"
        seen = json.loads(out.read_text())
        assert board.token not in " ".join(seen["argv"])
        assert seen["mode"] == 0o600
        assert board.url in seen["content"]
    finally:
        board.stop()
    opened = Path(seen["argv"][-1].removeprefix("file://"))
    assert not opened.exists(), "the redirect file outlives the dashboard"


# ---- actions over HTTP -----------------------------------------------------------------------


def test_actions_go_through_the_core_and_are_audited_as_human(
    dash: Dashboard, api: Mesh, populated: dict[str, Any]
) -> None:
    code, answer = dash.act(
        "task",
        {
            "title": "Ship it",
            "priority": 5,
            "depends": [populated["plain"]["id"]],
            "review": True,
        },
    )
    assert code == 200, answer
    added = tasks.get_task(api, answer["result"]["id"])
    assert added["priority"] == 5
    assert added["depends_on"] == [populated["plain"]["id"]]
    assert added["review"] is True
    assert added["created_by"] == "human"

    code, answer = dash.act("approve", {"id": populated["review"]["id"], "note": "looks good"})
    assert code == 200, answer
    done = tasks.get_task(api, populated["review"]["id"])
    assert done["state"] == "completed"
    assert done["approved_by"] == "human"
    assert done["result"] == "notes drafted"  # the worker's result is kept

    events = audit_events(api)
    assert any(e["event"] == "task-add" and e["actor"] == "human" for e in events)
    assert any(e["event"] == "task-approve" and e["actor"] == "human" for e in events)
    assert any(e.get("note") == "looks good" and e["actor"] == "human" for e in events), (
        "the review note is in the audit log"
    )


def test_reject_sends_a_review_back_with_the_note(
    dash: Dashboard, api: Mesh, populated: dict[str, Any]
) -> None:
    code, answer = dash.act("reject", {"id": populated["review"]["id"], "note": "cite sources"})
    assert code == 200, answer
    task = tasks.get_task(api, populated["review"]["id"])
    assert task["state"] == "working"
    assert task["review_note"] == "cite sources"
    assert any(e.get("note") == "cite sources" and e["actor"] == "human" for e in audit_events(api))
    code, answer = dash.act("reject", {"id": populated["plain"]["id"], "note": "no"})
    assert code == 409
    assert answer["error"]["code"] == "wrong-state"
    code, answer = dash.act("reject", {"id": populated["plain"]["id"]})
    assert code == 400, answer


def test_bad_input_is_refused_and_writes_nothing(dash: Dashboard, api: Mesh) -> None:
    before = len(audit_events(api))
    for name, payload, status in (
        ("send", {"to": "bob", "body": ""}, 400),
        ("send", {"to": "nobody", "body": "hi"}, 404),
        ("send", {"to": "bob", "body": 5}, 400),
        ("task", {"title": "x", "priority": "high"}, 400),
        ("task", {"title": "x", "depends": ["t-nope"]}, 400),
        ("approve", {"id": "t-nope"}, 404),
    ):
        code, answer = dash.act(name, payload)
        assert code == status, (name, payload, answer)
        assert "message" in answer["error"]
    code, _body = dash.request(
        "/api/send",
        method="POST",
        headers={"X-Mesh-Token": dash.token},
        payload=["not", "an", "object"],
    )
    assert code == 400
    assert len(audit_events(api)) == before


def test_malformed_or_oversized_input_is_a_4xx_and_writes_nothing(dash: Dashboard) -> None:
    """A lone surrogate, JSON nested past any payload's shape, a body past the cap: each is
    refused before anything acts on it (no 500, no stray file)."""
    before = dash_snapshot(dash)
    for name, data in (
        ("task", b'{"title": "bad \\ud800 title"}'),
        ("send", b'{"to": "bob", "body": "\\udfff"}'),
        ("task", b'{"title": "x", "depends": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
        ("send", b"[" * 50 + b"]" * 50),
        ("task", b'{"title": "x", "priority": 1e400}'),
        ("task", b'{"title": "x", "unknown": 1}'),
        ("send", b'{"to": "bob", "body": "\xff\xfe"}'),
    ):
        code, body = dash.post_raw(name, data)
        assert code == 400, (name, data[:60], code, body[:300])
        assert "message" in json.loads(body)["error"]
    code, _body = dash.post_raw("send", b'{"to": "bob", "body": "' + b"x" * 8_000_000 + b'"}')
    assert code == 413
    assert dash_snapshot(dash) == before
    code, answer = dash.act("send", {"to": "bob", "body": "still fine"})
    assert code == 200, answer


def dash_snapshot(dash: Dashboard) -> Any:
    return dash.cli.snapshot()


def test_force_unlock_needs_a_confirmation(
    dash: Dashboard, api: Mesh, populated: dict[str, Any]
) -> None:
    code, answer = dash.act("unlock", {"path": populated["lock"]})
    assert code == 400
    assert answer["error"]["code"] == "unconfirmed"
    assert len(locks.list_locks(api)) == 1
    code, answer = dash.act("unlock", {"path": populated["lock"], "confirm": True})
    assert code == 200, answer
    assert locks.list_locks(api) == []
    unlock = [e for e in audit_events(api) if e["event"] == "unlock"][-1]
    assert unlock["actor"] == "human"
    assert unlock["forced_from"] == ["bob"]


def test_as_names_the_acting_agent(cli: MeshRunner, api: Mesh, populated: dict[str, Any]) -> None:
    del populated
    board = Dashboard(cli, "--as", "carol")
    try:
        code, answer = board.act("send", {"to": "alice", "body": "hello", "urgent": True})
        assert code == 200, answer
        message = messages.consume(api, "alice")
        assert message is not None
        assert message["from"] == "carol"
        assert message["priority"] == "urgent"
    finally:
        board.stop()
    done = cli.run("dashboard", "--no-open", "--as", "bad name!")
    assert done.returncode == 2


def test_the_view_follows_the_mesh(dash: Dashboard, cli: MeshRunner) -> None:
    view = dash.view()
    assert [a["name"] for a in view["agents"]] == ["alice", "bob"]
    assert len(view["tasks"]) == 3
    assert len(view["locks"]) == 1
    cli.json("send", "alice", "watch this", "--as", "bob")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        latest = dash.view()["messages"]
        if latest and latest[0]["body"] == "watch this":
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the message did not reach the view")
    assert latest[0]["from"] == "bob"


# ---- with a real browser ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def chrome() -> Iterator[browser.Browser]:
    if NO_BROWSER is not None:
        pytest.skip(NO_BROWSER)
    with browser.Browser() as session:
        yield session


def open_page(chrome: browser.Browser, dash: Dashboard) -> None:
    chrome.get(dash.url)
    chrome.wait("return document.getElementById('live').textContent === 'live'")
    chrome.wait("return document.querySelectorAll('#agents tbody tr[data-name]').length > 0")
    chrome.run("window.__sameLoad = true")


@needs_browser
def test_page_lists_agents_and_tasks(
    chrome: browser.Browser, dash: Dashboard, populated: dict[str, Any]
) -> None:
    open_page(chrome, dash)
    names = chrome.run(
        "return [...document.querySelectorAll('#agents tbody tr')].map(r => r.dataset.name)"
    )
    assert names == ["alice", "bob"]
    role = chrome.run("return document.querySelector('#agents tr[data-name=alice]').textContent")
    assert "writer" in role
    cards = chrome.run(
        "return Object.fromEntries([...document.querySelectorAll('#board .task')]"
        ".map(c => [c.dataset.id, c.dataset.state]))"
    )
    assert cards == {
        populated["plain"]["id"]: "queued",
        populated["review"]["id"]: "review",
        populated["after"]["id"]: "queued",
    }
    deps = chrome.run(
        "const d = document.querySelector(`#board .task[data-id='${arguments[0]}'] .deps`);"
        "return [d.textContent, d.dataset.deps]",
        populated["after"]["id"],
    )
    assert deps == [
        f"waits on {populated['review']['id']} (review)",
        populated["review"]["id"],
    ]
    holder = chrome.run(
        "return document.querySelector(`#board .task[data-id='${arguments[0]}'] .holder`)"
        ".textContent",
        populated["review"]["id"],
    )
    assert holder == "held by alice"
    held = chrome.run("return document.querySelector('#locks tbody tr').dataset.holder")
    assert held == "bob"
    # `/` goes to the search box; what it holds filters every section
    chrome.press("/")
    assert chrome.run("return document.activeElement.id") == "search"
    chrome.type("#search", "release")
    visible = chrome.run(
        "return [...document.querySelectorAll('#board .task')].filter(c => !c.hidden)"
        ".map(c => c.dataset.id)"
    )
    assert visible == [populated["review"]["id"]]
    assert chrome.run("return document.querySelector('#agents tr[data-name=bob]').hidden")


@needs_browser
def test_a_cli_send_appears_on_the_open_page_within_2s(
    chrome: browser.Browser, dash: Dashboard, cli: MeshRunner
) -> None:
    open_page(chrome, dash)
    done = cli.run("send", "alice", "deploy window opens at 14:00", "--as", "bob")
    assert done.returncode == 0, done.stderr
    sent = time.monotonic()
    chrome.wait(
        "return [...document.querySelectorAll('#messages li .body')]"
        ".some(b => b.textContent === 'deploy window opens at 14:00')",
        timeout=2.0,
    )
    assert time.monotonic() - sent <= 2.0
    assert chrome.run("return window.__sameLoad === true"), "the page was reloaded"
    unread = chrome.run(
        "return document.querySelector('#agents tr[data-name=alice] .unread').textContent"
    )
    assert unread == "1"


@needs_browser
def test_sending_from_the_form_delivers_to_the_inbox(
    chrome: browser.Browser, dash: Dashboard, api: Mesh
) -> None:
    open_page(chrome, dash)
    assert not chrome.run("return document.getElementById('send-dialog').open")
    chrome.press("m")  # the form is behind a button, and a key
    chrome.wait("return document.getElementById('send-dialog').open")
    chrome.run("document.getElementById('send-to').value = 'bob'")
    chrome.type("#send-body", "please rebase on main")
    chrome.click("#send-urgent")
    chrome.click("#send-button")
    chrome.wait("return !document.getElementById('flash').hidden")
    flash = chrome.run("return document.getElementById('flash').textContent")
    assert flash.startswith("sent m-"), flash
    after = chrome.run(
        "return [document.getElementById('send-dialog').open,"
        " document.getElementById('send-body').value,"
        " document.getElementById('send-urgent').checked]"
    )
    assert after == [False, "", False], "the form is reset after a send"
    message = messages.consume(api, "bob")
    assert message is not None
    assert message["body"] == "please rebase on main"
    assert message["from"] == "human"
    assert message["priority"] == "urgent"


@needs_browser
def test_approving_from_the_page_completes_the_task(
    chrome: browser.Browser, dash: Dashboard, api: Mesh, populated: dict[str, Any]
) -> None:
    open_page(chrome, dash)
    card = f"#board .task[data-id='{populated['review']['id']}']"
    chrome.click(f"{card} button.review-open")
    chrome.wait("return document.querySelector('#detail li[data-event=task-done]')")
    history = chrome.run(
        "return [...document.querySelectorAll('#detail .history li')].map(l => l.dataset.event)"
    )
    assert history == ["task-add", "task-claim", "task-done"]
    detail = chrome.run("return document.getElementById('detail').textContent")
    assert "result notes drafted" in detail and "null" not in detail
    chrome.click("#reject-button")  # no note: refused on the page, as the server would
    chrome.wait("return document.getElementById('flash').className === 'error'")
    assert "needs a note" in chrome.run("return document.getElementById('flash').textContent")
    assert tasks.get_task(api, populated["review"]["id"])["state"] == "review"
    chrome.type("#review-note", "ship it")
    chrome.click("#approve-button")
    chrome.wait(
        f"return document.querySelector(\"{card}\")?.dataset.state === 'completed'", timeout=5
    )
    chrome.wait("return document.querySelector('#detail li[data-event=task-approve]')")
    assert chrome.run("return document.getElementById('review-note').value") == ""
    task = tasks.get_task(api, populated["review"]["id"])
    assert task["state"] == "completed"
    assert task["approved_by"] == "human"
    assert any(e.get("note") == "ship it" for e in audit_events(api))
    chrome.press("Escape")
    chrome.wait("return !document.getElementById('detail-dialog').open")


@needs_browser
def test_adding_a_task_and_force_unlocking_from_the_page(
    chrome: browser.Browser, dash: Dashboard, api: Mesh, populated: dict[str, Any]
) -> None:
    open_page(chrome, dash)
    chrome.press("n")
    chrome.wait("return document.getElementById('task-dialog').open")
    chrome.type("#task-title", "Profile the indexer")
    chrome.run("document.getElementById('task-priority').value = '7'")
    chrome.click("#task-review")
    chrome.run(
        "for (const o of document.getElementById('task-depends').options)"
        " o.selected = o.value === arguments[0]",
        populated["plain"]["id"],
    )
    chrome.click("#task-button")
    chrome.wait(
        "return [...document.querySelectorAll('#board .task .title')]"
        ".some(t => t.textContent === 'Profile the indexer')"
    )
    added = next(t for t in tasks.list_tasks(api) if t["title"] == "Profile the indexer")
    assert (added["priority"], added["review"]) == (7, True)
    assert added["depends_on"] == [populated["plain"]["id"]]
    form = chrome.run(
        "return [document.getElementById('task-dialog').open,"
        " document.getElementById('task-title').value,"
        " document.getElementById('task-priority').value,"
        " document.getElementById('task-review').checked,"
        " document.getElementById('task-depends').selectedOptions.length]"
    )
    assert form == [False, "", "0", False, 0], "the form is reset after a task is added"

    chrome.click("#locks tbody button.unlock")
    assert len(locks.list_locks(api)) == 1, "one click does not unlock"
    chrome.click("#locks tbody button.confirm-unlock")
    chrome.wait("return document.querySelector('#locks tbody tr[data-path]') === null")
    assert locks.list_locks(api) == []


def test_on_postgresql_the_password_stays_hidden_and_bad_text_is_a_400(
    tmp_path: Path, pg_mesh_url: str
) -> None:
    url = pg_mesh_url.replace("mesh@", "mesh:hunter2?se#cret@", 1)
    cli = MeshRunner(tmp_path / "unused", tmp_path / "home", url=url)
    cli.json("register", "bob")
    board = Dashboard(cli, "--json")
    try:
        first = json.loads(board.first_line)
        assert first["mesh_dir"].startswith("postgresql://mesh:***@")
        assert "hunter2" not in board.first_line
        assert "cret" not in board.first_line
    finally:
        board.stop()
    board = Dashboard(cli)
    try:
        assert "hunter2" not in json.dumps(board.view())

        def rows() -> dict[str, Any]:  # the dashboard's own LISTEN registration aside
            return {k: v for k, v in cli.snapshot().items() if k != "mesh_listening"}

        before = rows()
        code, body = board.post_raw("task", b'{"title": "bad \\ud800 title"}')
        assert code == 400, body
        assert rows() == before
    finally:
        board.stop()
        assert board.proc.stderr is not None


# ---- memory bounded by what the page shows ---------------------------------------------------


def test_the_page_gets_previews_not_every_task_body(cli: MeshRunner, api: Mesh) -> None:
    from drasill_cli import dashboard

    cli.json("register", "alice")
    for index in range(dashboard.TASKS_PER_STATE + 20):
        priority = 1 if index >= 20 else 0
        tasks.add_task(api, f"task {index}", actor="alice", body="x" * 5000, priority=priority)
    board = Dashboard(cli)
    try:
        view = board.view()
    finally:
        board.stop()
    queued = [t for t in view["tasks"] if t["state"] == "queued"]
    assert len(queued) == dashboard.TASKS_PER_STATE
    assert view["counts"]["tasks"]["queued"] == dashboard.TASKS_PER_STATE + 20
    assert all("body" not in task for task in view["tasks"])
    assert {t["priority"] for t in queued} == {1}  # the first to be claimed are shown
    assert len(json.dumps(view)) < 40_000


def _events(response: Any) -> Iterator[tuple[str, Any]]:
    """(event name, data) of each server-sent event on an open /events response."""
    name, data = "", ""
    while True:
        line = response.readline().decode()
        if not line:
            return
        if line.startswith("event:"):
            name = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data += line.partition(":")[2].strip()
        elif line in ("\n", "\r\n") and data:
            yield name, json.loads(data)
            name, data = "", ""


def test_after_the_first_view_a_page_gets_only_what_changed(
    dash: Dashboard, cli: MeshRunner, api: Mesh, populated: dict[str, Any]
) -> None:
    import http.client

    host, _, port = dash.base.removeprefix("http://").partition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", f"/events?token={dash.token}")
    stream = _events(conn.getresponse())
    try:
        kind, shown = next(stream)
        assert kind == "view"
        tasks.claim(api, "alice", populated["plain"]["id"])
        cli.json("send", "bob", "a change", "--as", "alice")
        deadline = time.monotonic() + 10
        patches = []
        while time.monotonic() < deadline:
            kind, data = next(stream)
            assert kind == "patch", kind
            patches.append(data)
            shown = {**shown, **{k: v for k, v in data.items() if k != "tasks"}}
            if "tasks" in data:
                put = {t["id"]: t for t in data["tasks"]["put"]}
                shown["tasks"] = [
                    t
                    for t in shown["tasks"]
                    if t["id"] not in put and t["id"] not in data["tasks"]["drop"]
                ] + list(put.values())
            if shown["messages"] and shown["messages"][0]["body"] == "a change":
                break
        current = dash.view()
        key = lambda t: t["id"]  # noqa: E731 -- a sort key
        assert sorted(shown["tasks"], key=key) == sorted(current["tasks"], key=key)
        assert {k: v for k, v in shown.items() if k != "tasks"} == {
            k: v for k, v in current.items() if k != "tasks"
        }
        task_patches = [p["tasks"] for p in patches if "tasks" in p]
        assert task_patches, "the claim reached the page"
        assert all(len(p["put"]) == 1 and p["drop"] == [] for p in task_patches)
        assert all("locks" not in p for p in patches)
    finally:
        conn.close()


def test_a_page_that_fell_behind_gets_the_whole_view_again() -> None:
    from drasill_cli.web.server import Hub

    hub = Hub()
    hub.publish(b'{"v": 1}', None)
    assert hub.chunk(-1).startswith(b"event: view\n")
    hub.publish(b'{"v": 2}', b'{"v": 2}')
    assert hub.chunk(1) == b'event: patch\ndata: {"v": 2}\n\n'
    hub.publish(b'{"v": 3}', b'{"v": 3}')
    assert hub.chunk(1) == b'event: view\ndata: {"v": 3}\n\n'  # two behind: no queue
    assert hub.chunk(3).startswith(b":")  # current: a keep-alive comment


def test_a_page_that_takes_nothing_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stalled page holds no more than the chunk being written, and only for a while."""
    import asyncio

    from drasill_cli.web import server

    monkeypatch.setattr(server, "WRITE_TIMEOUT_S", 0.2)
    hub = server.Hub()
    sent: list[bytes] = []

    async def send(message: Any) -> None:
        sent.append(message.get("body", b""))
        if len(sent) > 3:  # the page stops reading: every later write waits for it
            await asyncio.Event().wait()

    async def receive() -> Any:
        await asyncio.Event().wait()  # never leaves on its own

    async def scenario() -> None:
        hub.attach(asyncio.get_running_loop())
        hub.publish(b'{"v": 1}', None)
        await asyncio.sleep(0)
        page = asyncio.create_task(server.Stream(hub)({"type": "http"}, receive, send))
        for version in range(2, 30):
            hub.publish(b'{"v": %d}' % version, b'{"v": %d}' % version)
            await asyncio.sleep(0.02)
        await asyncio.wait_for(page, 2)
        assert hub.streams == 0

    asyncio.run(scenario())
    assert len(sent) == 4  # the head, the retry hint, the view, one patch: then dropped


# ---- one description of an event, on the terminal and on the page -----------------------------


def _recent_on_the_terminal(snap: dict[str, Any]) -> str:
    """The status screen as `mesh status` prints it, wide enough that no line wraps."""
    import io

    from rich.console import Console

    from drasill_cli.cli.statusview import status_screen

    out = io.StringIO()
    console = Console(file=out, width=240, highlight=False, soft_wrap=False)
    console.print(status_screen(snap, width=240))
    return out.getvalue()


def test_the_terminal_and_the_page_describe_each_event_alike(
    api: Mesh, populated: dict[str, Any]
) -> None:
    from drasill_cli import dashboard
    from drasill_cli.cli.statusview import FULL

    messages.send(api, "bob", "hello", sender="alice", priority="urgent")
    messages.consume(api, "bob")
    snap = dashboard.view(api)
    page = dashboard.page_view(snap, [])["recent"]
    said = [event["what"] for event in page[: FULL.recent]]
    assert said[:2] == ["bob read a message from alice", "alice -> bob (urgent)"]
    assert any(what.startswith("bob lock ") and what.endswith("app.py") for what in said)
    screen = _recent_on_the_terminal(snap)
    for what in said:
        assert what in screen, f"{what!r} is not on the status screen"
    # The page has no description of its own: it shows what the server sent.
    script = (Path(dashboard.__file__).parent / "web" / "static" / "app.js").read_text()
    assert "function describe" not in script
    assert "e.what" in script


@needs_browser
def test_the_page_shows_the_servers_description_of_each_event(
    chrome: browser.Browser, dash: Dashboard, api: Mesh
) -> None:
    from drasill_cli import dashboard

    open_page(chrome, dash)
    expected = [e["what"] for e in dashboard.page_view(dashboard.view(api), [])["recent"]]
    shown = chrome.run(
        "return [...document.querySelectorAll('#events li')].map(li => li.textContent)"
    )
    assert len(shown) == len(expected)
    for line, what in zip(shown, expected, strict=True):
        assert line.endswith(" " + what), (line, what)
