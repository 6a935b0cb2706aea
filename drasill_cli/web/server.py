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
- The page is served from the package (drasill_cli/web/static): no CDN, works offline.
- No terminal, no file access: the only actions are the dashboard's five core calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
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
from starlette.responses import JSONResponse, Response, StreamingResponse
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
    """The latest view, as JSON, and a way for open pages to wait for a newer one."""

    def __init__(self) -> None:
        self.version = 0
        self.data = "null"
        self.loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the server's event loop (publish is called from another thread)."""
        self.loop = loop
        self._changed = asyncio.Event()

    def publish(self, data: str) -> None:
        """Hand a new view to the pages (thread-safe)."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._set, data)
        else:
            self.version += 1
            self.data = data

    def _set(self, data: str) -> None:
        self.version += 1
        self.data = data
        if self._changed is not None:
            self._changed.set()
            self._changed = asyncio.Event()

    async def newer(self, version: int, timeout: float) -> None:
        """Until a view newer than `version` is there, or `timeout` seconds pass."""
        if self.version != version or self._changed is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


class Feed:
    """Rebuilds the view after each batch of file events in the mesh; publishes real changes."""

    def __init__(self, mesh: Mesh, hub: Hub, guard: threading.Lock) -> None:
        self.mesh = mesh
        self.hub = hub
        self.guard = guard
        self.stop = threading.Event()
        self.warnings: list[str] = []
        self._key: Any = None
        self._thread = threading.Thread(target=self._run, name="mesh-dashboard-feed", daemon=True)

    def refresh(self) -> None:
        """Build the view now and publish it if it changed (one refresh at a time, in order)."""
        with self.guard:
            view = dashboard.view(self.mesh)
            self.warnings = (self.warnings + self.mesh.warnings)[-20:]
            self.mesh.warnings.clear()
            view["warnings"] = self.warnings
            key = dashboard.change_key(view)
            if key != self._key:
                self._key = key
                self.hub.publish(json.dumps(view, ensure_ascii=False, default=str))

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


def _static(name: str) -> str:
    return resources.files("drasill_cli.web").joinpath("static", name).read_text("utf-8")


def create_app(mesh: Mesh, token: str, port: int, actor: str) -> tuple[ASGIApp, Feed]:
    """The dashboard's ASGI app (guarded) and the feed that keeps its page current."""
    hub = Hub()
    guard = threading.Lock()
    feed = Feed(mesh, hub, guard)
    page = (
        _static("index.html").replace("{{TOKEN}}", token).replace("{{ACTOR}}", html.escape(actor))
    )
    assets = {path: _static(path.lstrip("/")) for path in STATIC}

    async def index(_request: Request) -> Response:
        return Response(page, media_type="text/html; charset=utf-8", headers=SECURITY_HEADERS)

    async def asset(request: Request) -> Response:
        path = request.url.path
        return Response(assets[path], media_type=STATIC[path], headers=SECURITY_HEADERS)

    async def snapshot(_request: Request) -> Response:
        return Response(hub.data, media_type="application/json", headers=SECURITY_HEADERS)

    async def stream(_request: Request) -> Response:
        async def feed_events() -> AsyncIterator[str]:
            seen = -1
            yield "retry: 1000\n\n"
            while True:
                if hub.version != seen:
                    seen = hub.version
                    yield f"event: view\ndata: {hub.data}\n\n"
                else:
                    yield ": still here\n\n"
                await hub.newer(seen, KEEPALIVE_S)

        headers = {**SECURITY_HEADERS, "x-accel-buffering": "no"}
        return StreamingResponse(feed_events(), media_type="text/event-stream", headers=headers)

    def act(name: str) -> Callable[[Request], Awaitable[Response]]:
        action = dashboard.ACTIONS[name]

        def run(payload: dict[str, Any]) -> Any:
            with guard:
                return action(mesh, actor, payload)

        async def endpoint(request: Request) -> Response:
            try:
                payload = json.loads(await request.body() or b"{}")
            except ValueError:
                payload = None
            if not isinstance(payload, dict):
                return _error(400, "invalid-input", "send a JSON object")
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
        Route("/events", stream, methods=["GET"]),
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


def _error(status_code: int, code: str, message: str) -> Response:
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code, SECURITY_HEADERS
    )


class Server:
    """The dashboard of one mesh on a bound loopback socket, ready to run."""

    def __init__(self, mesh: Mesh, sock: socket.socket, token: str, actor: str) -> None:
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.app, self.feed = create_app(mesh, token, self.port, actor)
        self.feed.refresh()  # the first view: a mesh that cannot be read fails here, not later

    def run(self) -> None:
        """Serve until Ctrl-C or SIGTERM."""
        import uvicorn

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
        uvicorn.Server(config).run(sockets=[self.sock])
