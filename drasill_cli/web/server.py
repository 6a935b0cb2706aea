"""`mesh dashboard`'s web server: one page, a live feed, the actions; loopback only.

Built on Starlette and uvicorn (the optional extra `drasill-cli[web]`); this module is imported
only by `mesh dashboard`, never by the other commands.

- Access: every request must carry the random token (compared in constant time), else 403 and
  an empty body. A GET may carry it in the URL (`?token=`); a POST must carry it in the
  `X-Mesh-Token` header (a cross-site form or link cannot set it, and a custom header makes a
  cross-origin fetch need a CORS preflight, which is never granted). The Host header must name
  the loopback address the server listens on (no DNS rebinding).
- Live updates: a thread waits on the mesh's changes (`mesh.backend.changes`, topic MESH),
  rebuilds the view after each batch and, when it changed, publishes it to every open page
  over server-sent events. A quiet mesh is re-checked every few seconds (ages, measured memory).
- Memory is bounded by what the page shows, not by what the mesh holds: the page is sent
  `dashboard.page_view` (previews, at most N tasks of a state, no task bodies); a page gets the
  whole view once, then only what changed (`patch`: the sections that changed, tasks by id); a
  page that fell behind gets the whole view again (nothing is queued per page), and one that
  takes no data for `WRITE_TIMEOUT_S` is dropped (its browser reconnects). At most
  `MAX_STREAMS` pages at once.
- Input: a POST body over `max_body()` is 413; the JSON is parsed and checked against the
  action's model (`payloads`: strict types, sizes, no nesting beyond its shape, valid Unicode)
  before anything acts: else 400.
- Ctrl-C or SIGTERM: every page's stream is ended at once, so the server stops within its
  graceful second, quietly; the command then exits 130 (128 + the signal).
- The page is served from the package (drasill_cli/web/static): no CDN, works offline. Its
  HTML already holds the current view (`render.page`, every value escaped, no inline script),
  so nothing is blank before the feed's first event; a task's detail (`GET /api/task/ID`:
  its history from the audit log) is read when the person opens it, never pushed.
- No terminal, no file access: the only actions are the dashboard's five core calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from drasill_cli import dashboard
from drasill_cli.errors import MeshError
from drasill_cli.mesh import Mesh
from drasill_cli.storage.changes import MESH
from drasill_cli.waiting import enduring

HOST = "127.0.0.1"
TOKEN_HEADER = "x-mesh-token"  # noqa: S105 -- the header's name, not a secret
RECHECK_S = 5.0
MIN_GAP_S = 0.25  # at most four views a second, however busy the mesh
KEEPALIVE_S = 15.0
HTTP_STATUS = {1: 409, 2: 400, 3: 404, 4: 503}
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
}
STATIC = {"/app.js": "text/javascript", "/app.css": "text/css"}
STREAM_HEADERS = [
    (key.encode(), value.encode())
    for key, value in {
        **SECURITY_HEADERS,
        "content-type": "text/event-stream; charset=utf-8",
        "x-accel-buffering": "no",
    }.items()
]
MAX_STREAMS = 200  # open pages at once; more get 503 (their browsers retry)
WRITE_TIMEOUT_S = 10.0  # a page that takes no data this long is dropped
MAX_ID = 200  # a task id (or prefix) asked for, in characters
DRAIN_LIMIT = 16 * 1024 * 1024  # an oversized body is read and dropped up to this, then cut


def new_token() -> str:
    """A random access token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def bind(port: int) -> socket.socket:
    """A listening socket on the loopback address (`port` 0: a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, port))
        sock.listen(64)
    except OSError:
        sock.close()
        raise
    return sock


class Guard:
    """ASGI middleware: the token (and a loopback Host) on every request, or 403."""

    def __init__(self, app: ASGIApp, token: str, port: int) -> None:
        self.app = app
        self.token = token.encode()
        self.hosts = {f"{HOST}:{port}".encode(), f"localhost:{port}".encode()}
        self.origins = {b"http://" + host for host in self.hosts}

    def allowed(self, scope: Scope) -> bool:
        """Whether the request carries the token where it must, from the page's own origin."""
        headers = dict(scope.get("headers") or [])
        if headers.get(b"host") not in self.hosts:
            return False
        origin = headers.get(b"origin")
        if origin is not None and origin not in self.origins:
            return False
        if scope.get("method", "GET") in ("GET", "HEAD"):
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = (query.get("token") or [""])[0].encode()
            if not given:
                given = headers.get(TOKEN_HEADER.encode(), b"")
        else:
            given = headers.get(TOKEN_HEADER.encode(), b"")
        return hmac.compare_digest(given, self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a request without the token: 403 and an empty body."""
        if scope["type"] == "http" and not self.allowed(scope):
            await Response(status_code=403, headers=SECURITY_HEADERS)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class Hub:
    """The latest view (as the whole view and as a patch from the one before) and a way for
    open pages to wait for a newer one. Lives on the event loop; `publish` is thread-safe."""

    def __init__(self) -> None:
        self.version = 0
        self.data = b"null"  # the whole view, JSON (GET /api/view)
        self.full = b""  # the whole view as an event
        self.patch: bytes | None = None  # from version - 1 to version, as an event
        self.closing = False
        self.streams = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the server's event loop (publish is called from another thread)."""
        self.loop = loop
        self._changed = asyncio.Event()

    def publish(self, data: bytes, patch: bytes | None) -> None:
        """Hand a new view (and the patch to it from the last one) to the pages."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._set, data, patch)
        else:
            self._set(data, patch)

    def close(self) -> None:
        """End every page's stream (the server is stopping); thread- and signal-safe."""
        self.closing = True
        if self.loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already closed
                self.loop.call_soon_threadsafe(self._wake)

    def _set(self, data: bytes, patch: bytes | None) -> None:
        self.version += 1
        self.data = data
        self.full = b"event: view\ndata: " + data + b"\n\n"
        self.patch = None if patch is None else b"event: patch\ndata: " + patch + b"\n\n"
        self._wake()

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    def chunk(self, seen: int) -> bytes:
        """What a page that has seen version `seen` is sent next: the patch when it is one
        behind, else the whole view (or a keep-alive comment when it is current)."""
        if seen == self.version:
            return b": still here\n\n"
        if seen == self.version - 1 and self.patch is not None:
            return self.patch
        return self.full

    async def newer(self, version: int, timeout: float) -> None:
        """Until a view newer than `version` is there, the hub closes, or `timeout` passes."""
        if self.version != version or self._changed is None or self.closing:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


class Feed:
    """Rebuilds the view after each batch of changes in the mesh; publishes real changes, as
    the page's bounded view and as a patch from the last one."""

    def __init__(self, mesh: Mesh, hub: Hub, guard: threading.Lock) -> None:
        self.mesh = mesh
        self.hub = hub
        self.guard = guard
        self.stop = threading.Event()
        self.warnings: list[str] = []
        self._key: Any = None
        self.view: dict[str, Any] | None = None  # the latest page view (the first HTML's)
        self._sections: dict[str, str] = {}
        self._tasks: dict[str, str] = {}
        self._thread = threading.Thread(target=self._run, name="mesh-dashboard-feed", daemon=True)

    def refresh(self) -> None:
        """Build the view now and publish it if it changed (one refresh at a time, in order)."""
        with self.guard:
            snap = dashboard.view(self.mesh)
            self.warnings = (self.warnings + self.mesh.warnings)[-dashboard.WARNINGS_SHOWN :]
            self.mesh.warnings.clear()
            snap["warnings"] = self.warnings
            key = dashboard.change_key(snap)
            if key == self._key:
                return
            self._key = key
            view = dashboard.page_view(snap, self.warnings)
            self.view = view
            self.hub.publish(_json(view).encode(), self._patch(view))

    def _patch(self, view: dict[str, Any]) -> bytes | None:
        """The change from the last published view: the sections that changed, and the tasks
        by id (put: new or changed, drop: gone); None for the first view."""
        sections = {key: _json(value) for key, value in view.items() if key != "tasks"}
        tasks = {str(task["id"]): _json(task) for task in view["tasks"]}
        first = not self._sections
        changed = {k: v for k, v in sections.items() if self._sections.get(k) != v}
        put = [text for task_id, text in tasks.items() if self._tasks.get(task_id) != text]
        drop = [task_id for task_id in self._tasks if task_id not in tasks]
        self._sections, self._tasks = sections, tasks
        if first:
            return None
        parts = [f"{_json(k)}: {v}" for k, v in changed.items()]
        if put or drop:
            parts.append(f'"tasks": {{"put": [{", ".join(put)}], "drop": {_json(drop)}}}')
        return ("{" + ", ".join(parts) + "}").encode()

    def start(self) -> None:
        """Follow the mesh from now on (in a thread)."""
        self._thread.start()

    def close(self) -> None:
        """Stop following the mesh."""
        self.stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        with self.mesh.backend.changes.watch(MESH, tolerant=True) as changes:
            last = 0.0
            while not self.stop.is_set():
                gap = MIN_GAP_S - (time.monotonic() - last)
                if gap > 0 and self.stop.wait(gap):
                    return
                last = time.monotonic()
                try:  # across a restart of the store's server, without a warning
                    enduring(self.refresh, self.mesh.config.store.reconnect_timeout, self.stop)
                except (MeshError, OSError, ValueError) as exc:
                    self.warnings = [*self.warnings[-19:], f"could not read the mesh: {exc}"]
                changes.next(RECHECK_S, self.stop)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _static(name: str) -> str:
    return resources.files("drasill_cli.web").joinpath("static", name).read_text("utf-8")


def max_body(mesh: Mesh) -> int:
    """The largest POST body taken: a message body at its limit, every character escaped
    (`\\u00XX`, 6 bytes), plus room for the other fields."""
    return 6 * mesh.config.messages.max_body_bytes + 64 * 1024


class Stream:
    """GET /events: the page's live feed (server-sent events), as a plain ASGI app, so that a
    page that goes away, takes too long, or a server that stops ends it cleanly."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one page's stream until it leaves, stalls, or the server stops."""
        hub = self.hub
        if hub.streams >= MAX_STREAMS or hub.closing:
            await _error(503, "busy", "too many open pages; close some")(scope, receive, send)
            return
        hub.streams += 1
        main = asyncio.current_task()
        gone = asyncio.Event()

        async def watch_disconnect() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            gone.set()
            if main is not None:
                main.cancel()

        watcher = asyncio.create_task(watch_disconnect())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
            await send(
                {"type": "http.response.body", "body": b"retry: 1000\n\n", "more_body": True}
            )
            seen = -1
            while not hub.closing:
                chunk, seen = hub.chunk(seen), hub.version
                await asyncio.wait_for(
                    send({"type": "http.response.body", "body": chunk, "more_body": True}),
                    WRITE_TIMEOUT_S,
                )
                await hub.newer(seen, KEEPALIVE_S)
            await asyncio.wait_for(
                send({"type": "http.response.body", "body": b"", "more_body": False}), 0.5
            )
        except TimeoutError:
            return  # a page that takes nothing is dropped; its browser reconnects later
        except asyncio.CancelledError:
            if gone.is_set() or hub.closing:
                return  # it left, or the server stops: nothing more to send
            raise
        finally:
            hub.streams -= 1
            watcher.cancel()


def create_app(
    mesh: Mesh, token: str, port: int, actor: str, on_page: Callable[[], None] | None = None
) -> tuple[ASGIApp, Feed]:
    """The dashboard's ASGI app (guarded) and the feed that keeps its page current."""
    from drasill_cli.web import payloads, render

    hub = Hub()
    guard = threading.Lock()
    feed = Feed(mesh, hub, guard)
    template = _static("index.html")
    assets = {path: _static(path.lstrip("/")) for path in STATIC}
    limit = max_body(mesh)

    opened: list[bool] = []

    async def index(_request: Request) -> Response:
        if on_page is not None and not opened:
            opened.append(True)
            on_page()
        page = render.page(template, feed.view, token, actor)  # the current state, escaped
        return Response(page, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    async def asset(request: Request) -> Response:
        path = request.url.path
        return Response(assets[path], media_type=STATIC[path], headers=SECURITY_HEADERS)

    async def snapshot(_request: Request) -> Response:
        return Response(hub.data, media_type="application/json", headers=SECURITY_HEADERS)

    def act(name: str) -> Callable[[Request], Awaitable[Response]]:
        action = dashboard.ACTIONS[name]
        model = payloads.MODELS[name]

        def run(payload: dict[str, Any]) -> Any:
            with guard:
                return action(mesh, actor, payload)

        async def endpoint(request: Request) -> Response:
            body = await _body(request, limit)
            if body is None:
                return _error(
                    413,
                    "too-large",
                    f"the request is over {limit} bytes; send a shorter message or task",
                )
            try:
                payload = payloads.parse(model, body)
            except payloads.Invalid as exc:
                return _error(400, "invalid-input", str(exc))
            try:
                result = await run_in_threadpool(run, payload)
            except MeshError as exc:
                return JSONResponse(
                    exc.to_json(), HTTP_STATUS.get(exc.exit_code, 400), SECURITY_HEADERS
                )
            with contextlib.suppress(MeshError, OSError):  # done; the feed retries the view
                await run_in_threadpool(feed.refresh)
            return JSONResponse({"ok": True, "as": actor, "result": result}, 200, SECURITY_HEADERS)

        return endpoint

    routes = [
        Route("/", index, methods=["GET"]),
        *[Route(path, asset, methods=["GET"]) for path in STATIC],
        Route("/api/view", snapshot, methods=["GET"]),
        Route("/api/task/{task_id}", _task_detail(mesh, guard), methods=["GET"]),
        Route("/events", Stream(hub), methods=["GET"]),
        *[Route(f"/api/{name}", act(name), methods=["POST"]) for name in dashboard.ACTIONS],
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        hub.attach(asyncio.get_running_loop())
        feed.start()
        try:
            yield
        finally:
            feed.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    return Guard(app, token, port), feed


def _task_detail(mesh: Mesh, guard: threading.Lock) -> Callable[[Request], Awaitable[Response]]:
    """GET /api/task/ID: a task's detail (`dashboard.task_detail`), read when the page asks."""

    async def task(request: Request) -> Response:
        task_id = request.path_params["task_id"]
        if len(task_id) > MAX_ID:
            return _error(400, "invalid-input", f"a task id is at most {MAX_ID} characters")

        def read() -> dict[str, Any]:
            with guard:  # one user of the mesh at a time, as for the feed and the actions
                return dashboard.task_detail(mesh, task_id)

        try:
            detail = await run_in_threadpool(read)
        except MeshError as exc:
            return JSONResponse(
                exc.to_json(), HTTP_STATUS.get(exc.exit_code, 400), SECURITY_HEADERS
            )
        return JSONResponse(detail, 200, SECURITY_HEADERS)

    return task


async def _body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None when it is over `limit` bytes (what follows is read and
    dropped, up to `DRAIN_LIMIT`, so that the answer reaches the client)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > DRAIN_LIMIT:
        return None
    body = bytearray()
    taken = 0
    async for chunk in request.stream():
        taken += len(chunk)
        if taken > DRAIN_LIMIT:
            return None
        if taken <= limit:
            body += chunk
    return None if taken > limit else bytes(body)


def _error(status_code: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code, SECURITY_HEADERS
    )


class _QuietWhenClosing:
    """A logging filter: uvicorn's complaints about streams it had to cut while the server
    stops (a stalled page) are not news to a person who pressed Ctrl-C."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub

    def filter(self, record: Any) -> bool:
        """Keep a record unless the server is stopping and it is an error about a stream."""
        return not (self.hub.closing and record.levelno >= 40)  # logging.ERROR


class Server:
    """The dashboard of one mesh on a bound loopback socket, ready to run."""

    def __init__(
        self,
        mesh: Mesh,
        sock: socket.socket,
        token: str,
        actor: str,
        on_page: Callable[[], None] | None = None,
    ) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.app, self.feed = create_app(mesh, token, self.port, actor, on_page)
        self.feed.refresh()  # the first view: a mesh that cannot be read fails here, not later

    def run(self) -> int:
        """Serve until Ctrl-C or SIGTERM; the signal that stopped it (0: none). Every open
        page's stream ends at once, so it stops within its graceful second, quietly."""
        import logging
        import signal

        import uvicorn

        hub = self.feed.hub

        class Stoppable(uvicorn.Server):
            stopped_by = 0

            def handle_exit(self, sig: int, frame: Any) -> None:
                self.stopped_by = self.stopped_by or sig
                hub.close()
                super().handle_exit(sig, frame)

        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_graceful_shutdown=1,
            ws="none",
            http="h11",
            loop="asyncio",
            server_header=False,
        )
        server = Stoppable(config)
        quiet = _QuietWhenClosing(hub)
        logger = logging.getLogger("uvicorn.error")
        logger.addFilter(quiet)
        # uvicorn raises the signal again once it has stopped: it must find a handler that
        # lets the command finish (and clean up), not Python's default that ends the process.
        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in signals}
        try:
            server.run(sockets=[self.sock])
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            logger.removeFilter(quiet)
        return int(server.stopped_by)
