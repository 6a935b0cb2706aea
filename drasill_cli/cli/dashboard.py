"""`mesh dashboard`: a live web page for people, served by this process on 127.0.0.1.

Starlette and uvicorn (the extra `drasill-cli[web]`) are imported only when the command runs;
no other command loads this module.
"""

from __future__ import annotations

import sys
import threading
from typing import Annotated

import typer

from drasill_cli.cli.common import JsonOpt, app, command, note, print_json, state
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


def _open_browser(url: str) -> None:
    """Open the page in the person's browser, without holding up the server."""
    import webbrowser

    threading.Thread(target=webbrowser.open, args=(url,), daemon=True).start()


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
    Ctrl-C stops it.
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
    try:
        served = server.Server(mesh, sock, token, actor)
    except BaseException:
        sock.close()
        raise
    bound = served.port
    url = f"http://{server.HOST}:{bound}/?token={token}"
    if json_out:
        print_json({"url": url, "port": bound, "mesh_dir": mesh.location, "as": actor})
    else:
        sys.stdout.write(url + "\n")
    sys.stdout.flush()
    note(
        f"dashboard of {mesh.location} on {server.HOST}:{bound}, acting as {actor}; the URL above "
        "carries its access token (keep it private); Ctrl-C stops it"
    )
    if not no_open:
        _open_browser(url)
    try:
        served.run()
    finally:
        sock.close()
