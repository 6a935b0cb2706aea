"""A PostgreSQL mesh URL fit to print: the one masking function every place that shows a URL
uses (status, doctor, the dashboard, error messages), built on the driver's own parsing.

The driver, not `urllib`, decides what the password is: libpq accepts a password holding an
unencoded `?` or `#` (`postgresql://me:a?b#c@host/db`), where `urlsplit` would cut the URL in
the middle of it and show the rest. So the URL is read with psycopg's `conninfo_to_dict` (what
`connect` itself does) and shown rebuilt from what it found, with `password` and `sslpassword`
replaced by ***. A URL the driver cannot read is never shown (libpq's own error quotes it
whole): only its scheme. psycopg is imported here only when a URL is shown, which only a URL
mesh does.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from drasill_cli.errors import InvalidInput

MASK = "***"
SECRET_KEYS = ("password", "sslpassword")
# Keys a rebuilt URL shows in its authority and path rather than its query.
_URI_KEYS = ("user", "password", "host", "port", "dbname")
_SAFE = "/:,._~-"  # left as they are in a shown value: paths and host lists stay readable


def _scheme(url: str) -> str:
    scheme, sep, _rest = url.partition("://")
    return scheme if sep and scheme.isascii() and scheme.isalpha() else "postgresql"


def parse(url: str) -> dict[str, str] | None:
    """What the driver reads in `url` (its conninfo keys), or None when it cannot read it
    (or the driver is missing)."""
    try:
        from psycopg import Error
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return None
    try:
        found: dict[str, Any] = conninfo_to_dict(url)
    except (Error, ValueError, TypeError):
        return None
    return {str(key): str(value) for key, value in found.items() if value is not None}


def _odd(found: dict[str, str]) -> bool:
    """Whether a password seems to have spilled into another part (an unencoded `@` or `/`
    in it makes libpq read part of it as the host, port or database name)."""
    return any("@" in found.get(key, "") for key in ("host", "port", "dbname", "hostaddr")) or (
        not found.get("port", "0").replace(",", "").isdigit() and "port" in found
    )


def _netloc(found: dict[str, str]) -> tuple[str, list[tuple[str, str]]]:
    """The authority of a rebuilt URL, and what goes to its query instead (socket folders,
    host lists that mix sockets and names)."""
    user = found.get("user")
    auth = ""
    if user is not None:
        auth = quote(user, safe="")
        if any(key in found for key in SECRET_KEYS):
            auth += f":{MASK}"
        auth += "@"
    elif any(key in found for key in SECRET_KEYS):
        auth = f":{MASK}@"
    host, port = found.get("host", ""), found.get("port", "")
    hosts = host.split(",") if host else []
    if any(h.startswith(("/", "@")) for h in hosts):
        extra = [("host", host)] + ([("port", port)] if port else [])
        return auth, extra
    ports = port.split(",") if port else []
    if ports and len(ports) not in (1, len(hosts)):
        return auth + ",".join(hosts), [("port", port)]
    shown = []
    for index, name in enumerate(hosts or [""]):
        part = f"[{name}]" if ":" in name else quote(name, safe=_SAFE)
        chosen = ports[index] if len(ports) == len(hosts) and hosts else (ports or [""])[0]
        shown.append(f"{part}:{chosen}" if chosen else part)
    return auth + ",".join(shown), []


def mask_url(url: str) -> str:
    """`url` fit to print: rebuilt from what the driver reads in it, every password as ***.

    A URL the driver cannot read is shown as its scheme and a note only."""
    scheme = _scheme(url)
    found = parse(url)
    if found is None:
        return f"{scheme}://(a URL the driver cannot read; not shown)"
    if _odd(found):
        return f"{scheme}://(a URL with a password that needs %-encoding; not shown)"
    netloc, query = _netloc(found)
    dbname = found.get("dbname")
    path = "/" + quote(dbname, safe=_SAFE) if dbname is not None else "/"
    query += [(key, value) for key, value in found.items() if key not in _URI_KEYS]
    shown = f"{scheme}://{netloc}{path}"
    if query:
        shown += "?" + "&".join(
            f"{quote(key, safe='')}={MASK if key in SECRET_KEYS else quote(value, safe=_SAFE)}"
            for key, value in query
        )
    return shown


def passwords(url: str) -> list[str]:
    """Every text of `url` that must never be printed, for scrubbing what the driver says:
    the passwords the driver reads (decoded), as they are written in the URL, and the whole
    URL when the driver cannot read it (libpq's parse errors quote it whole)."""
    from urllib.parse import unquote

    found: list[str] = []
    parsed = parse(url)
    if parsed is None or _odd(parsed):
        found.append(url)
    if parsed is not None:
        found += [parsed[key] for key in SECRET_KEYS if parsed.get(key)]
    _scheme_part, _sep, rest = url.partition("://")
    userinfo = rest.rpartition("@")[0] if "@" in rest else ""
    if ":" in userinfo:  # as written: up to the last @, whatever a parser makes of it
        written = userinfo.partition(":")[2]
        found += [written, unquote(written)]
    return sorted({text for text in found if text}, key=len, reverse=True)


def describe_host(url: str) -> str:
    """The server `url` names, in words: `db.example.com:5432`, `the socket in /run/x`."""
    found = parse(url)
    if found is None or _odd(found):
        return "the database server"
    host = found.get("host") or os.environ.get("PGHOST") or ""
    port = found.get("port") or os.environ.get("PGPORT", "") or "5432"
    if not host or host.startswith("/"):
        return f"the local socket in {host or 'the default socket directory'} (port {port})"
    return f"{host}:{port}"


def check_url(url: str, where: str) -> None:
    """Refuse (exit 2) a URL the driver cannot read, saying why without quoting it (libpq's
    message quotes the whole URL, password included). Without the driver installed nothing is
    checked here: opening the mesh says what to install."""
    try:
        from psycopg import Error
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        return
    try:
        conninfo_to_dict(url)
    except (Error, ValueError, TypeError) as exc:
        reason = " ".join(str(exc).split())
        for text in passwords(url):
            reason = reason.replace(text, MASK)
        reason = reason.split(' in URI: "', 1)[0].split(': "', 1)[0][:160]
        raise InvalidInput(
            f"{where} is not a URL the PostgreSQL driver can read ({reason}); fix it (a "
            "password with @, /, ?, # or [ in it must be %-encoded, e.g. @ as %40)",
            code="invalid-mesh-url",
        ) from None
