"""`mesh dashboard`: a live web page for people, served by this process on 127.0.0.1.

Starlette and uvicorn (the extra `drasill-cli[web]`) are imported only when the command runs;
no other command loads this module.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Annotated

import typer

from drasill_cli.cli import views
from drasill_cli.cli.common import JsonOpt, Shown, app, command, emit, note, state
from drasill_cli.cli.helpstyle import examples
from drasill_cli.errors import InvalidInput, MeshUnusable

WEB_EXTRA = "pip install 'drasill-cli[web]'"


def _require_web() -> None:
    """Exit 4 with the install command when the web extra is missing."""
    try:
        import starlette
        import uvicorn
    except ImportError as exc:
        raise MeshUnusable(
            f"mesh dashboard needs the web extra, which is not installed ({exc}); install it "
            f"with `{WEB_EXTRA}` and run mesh dashboard again",
            code="web-extra-missing",
        ) from None
    del starlette, uvicorn


REDIRECT_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<meta http-equiv="refresh" content="0; url={url}"><title>mesh dashboard</title></head>
<body><p><a href="{url}">Open the mesh dashboard</a></p></body></html>
"""


class Opener:
    """Opens the page in the person's browser without putting its token on a command line
    (every local user can read those): the browser is given a 0600 local file, in a 0700
    folder of its own, that sends it on to the tokened URL. The file is removed once the page
    has been loaded, and when the dashboard stops."""

    def __init__(self) -> None:
        self.folder: str | None = None

    def open(self, url: str) -> None:
        """Write the redirect file and start the browser on it (in a thread: a slow browser
        start does not hold up the server)."""
        import html
        import tempfile
        import webbrowser
        from pathlib import Path

        base = os.environ.get("XDG_RUNTIME_DIR") or None
        if base is not None and not os.path.isdir(base):
            base = None
        self.folder = tempfile.mkdtemp(prefix="mesh-dashboard-", dir=base)
        path = os.path.join(self.folder, "open.html")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(REDIRECT_PAGE.format(url=html.escape(url, quote=True)))
        target = Path(path).as_uri()
        threading.Thread(target=webbrowser.open, args=(target,), daemon=True).start()

    def remove(self) -> None:
        """Remove the redirect file and its folder (once; a second call does nothing)."""
        import shutil

        folder, self.folder = self.folder, None
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


@command(
    app,
    "dashboard",
    short_help="Serve a live web page of the mesh on 127.0.0.1.",
    epilog=examples(
        "mesh dashboard                  # opens the page in your browser",
        "mesh dashboard --no-open --port 8765 --as lead",
    ),
)
def dashboard_cmd(
    ctx: typer.Context,
    port: Annotated[
        int,
        typer.Option("--port", help="Port on 127.0.0.1 (default 0: a free one).", metavar="N"),
    ] = 0,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Do not open the page in a browser.")
    ] = False,
    as_: Annotated[
        str | None,
        typer.Option(
            "--as", help="Act from the page under this name (default: human).", metavar="NAME"
        ),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Serve a live web page of the mesh on 127.0.0.1; its URL (with a token) is the first line.

    The page shows agents, tasks, locks, budgets and messages as they change, and sends
    messages, adds tasks, approves or rejects reviews and force-unlocks, as `human` or --as.
    Ctrl-C stops it (exit 130). The browser is opened on a private local file that sends it
    on to the URL, so the token never appears on a command line.
    """
    from drasill_cli.names import check_agent_name

    if not 0 <= port <= 65535:
        raise InvalidInput(
            f"--port must be between 0 and 65535 (0: a free one), got {port}", code="invalid-port"
        )
    actor = as_ if as_ is not None else "human"
    check_agent_name(actor)
    _require_web()
    from drasill_cli.web import server

    mesh = state(ctx).mesh()
    try:
        sock = server.bind(port)
    except OSError as exc:
        raise InvalidInput(
            f"cannot listen on {server.HOST}:{port} ({exc.strerror}); pick another port with "
            "--port N, or --port 0 for a free one",
            code="port-unavailable",
        ) from None
    token = server.new_token()
    opener = Opener()
    try:
        served = server.Server(mesh, sock, token, actor, on_page=opener.remove)
    except BaseException:
        sock.close()
        raise
    bound = served.port
    url = f"http://{server.HOST}:{bound}/?token={token}"
    found = {"url": url, "port": bound, "mesh_dir": mesh.location, "as": actor}
    emit(Shown(found, views.dashboard_url), json_out)
    sys.stdout.flush()
    note(
        f"dashboard of {mesh.location} on {server.HOST}:{bound}, acting as {actor}; the URL above "
        "carries its access token (keep it private); Ctrl-C stops it"
    )
    try:
        if not no_open:
            opener.open(url)
        stopped_by = served.run()
    finally:
        opener.remove()
        sock.close()
    if stopped_by:
        raise typer.Exit(128 + stopped_by)  # Ctrl-C: 130
