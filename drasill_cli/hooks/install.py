"""`mesh hooks install|uninstall|status`: the mesh's entries in each CLI's own settings file.

`settings` says what the file holds (pure functions on its text); this module finds the file
and reads and writes it:

- project scope: the file under the top of the git work tree holding the current directory
  (exit 2 outside one); user scope: under the user's home;
- a settings file is written whole or not at all (a temporary file renamed over it, by
  `atomicfile`), keeps its mode (a new file: 0644 in a project, 0600 in the home), and is never
  read or written through a symbolic link: a link where the file or its folder should be is
  refused (exit 2), with the fix;
- uninstall removes exactly the mesh's entries; a file left with nothing else in it (one that
  install made) is removed;
- a dry run reads the file and writes nothing: the result carries the text that would be
  written.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
import sys
from collections.abc import Callable
from typing import Any

from drasill_cli import atomicfile
from drasill_cli.errors import InvalidInput
from drasill_cli.hooks import settings
from drasill_cli.hooks.protocols import CLIS

SCOPES = ("project", "user")
MAX_SETTINGS = 4 * 1024 * 1024
NEW_MODE = {"project": 0o644, "user": 0o600}
FOLDER_MODE = 0o755
CODEX_CONFIG = ".codex/config.toml"


def check_cli(cli: str) -> str:
    if cli not in CLIS:
        raise InvalidInput(
            f"unknown CLI {cli!r}: hooks exist for {', '.join(CLIS)} "
            "(e.g. mesh hooks install claude)",
            code="unknown-cli",
        )
    return cli


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise InvalidInput(
            f"unknown scope {scope!r}: use --scope project (this git work tree) or --scope user",
            code="invalid-scope",
        )
    return scope


def _home(environ: dict[str, str] | None = None) -> str:
    home = (environ or os.environ).get("HOME") or os.path.expanduser("~")
    if not os.path.isabs(home):
        raise InvalidInput(
            f"the home folder {home!r} is not an absolute path: set HOME", code="invalid-home"
        )
    return home


def project_top(cwd: str | None = None) -> str | None:
    """The top of the git work tree holding `cwd` (default: the current directory)."""
    from drasill_cli.lockpaths import work_tree_top

    return work_tree_top(os.path.realpath(cwd or os.getcwd()))


def base_of(scope: str, cwd: str | None = None) -> str:
    """The folder the scope's files are relative to: the work tree's top, or the home."""
    if scope == "user":
        return _home()
    top = project_top(cwd)
    if top is None:
        raise InvalidInput(
            f"{cwd or os.getcwd()} is not inside a git work tree, so there is no project "
            "to install into: run it in the repository, or use --scope user",
            code="not-a-work-tree",
        )
    return top


def _relative(cli: str, scope: str) -> str:
    project, user = settings.FILES[cli]
    return project if scope == "project" else user


_PLAIN_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")


def program(argv0: str | None = None) -> str:
    """How the installed hooks call `mesh`: `mesh` when the `mesh` on PATH is the one running
    (a project's settings stay portable), else this one's absolute path: a hook that cannot
    find `mesh` fails, and Gemini reads a failed hook (exit 127) as a deny."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if os.path.basename(argv0) != settings.PROGRAM:  # `python -m drasill_cli`: no script
        return settings.PROGRAM
    if "/" not in argv0:  # run as a bare name: the one PATH finds
        found = shutil.which(argv0)
        if found is None:  # found nowhere: nothing better than the plain name is known
            return settings.PROGRAM
        argv0 = found
    here = os.path.abspath(argv0)
    on_path = shutil.which(settings.PROGRAM)
    if on_path is not None and os.path.realpath(on_path) == os.path.realpath(here):
        return settings.PROGRAM
    return here if _PLAIN_PATH.match(here) else settings.PROGRAM


# ---- files ---------------------------------------------------------------------------------


def _link_refused(path: str) -> InvalidInput:
    return InvalidInput(
        f"{path} is a symbolic link: the mesh never writes through one; replace it with the "
        "file it points to (or edit that file yourself), then retry",
        code="settings-link",
    )


def _open_folders(base: str, parts: list[str], *, create: bool) -> int | None:
    """The folder `base/parts...` opened (each part without following a link), made when
    `create`; None when a part is missing and not `create`."""
    fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts:
            flags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
            try:
                child = os.open(part, flags, dir_fd=fd)
            except FileNotFoundError:
                if not create:
                    os.close(fd)
                    return None
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, FOLDER_MODE, dir_fd=fd)
                child = os.open(part, flags, dir_fd=fd)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise _link_refused(os.path.join(base, part)) from None
                raise
            os.close(fd)
            fd = child
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd


def _read(folder: int, name: str, shown: str) -> tuple[str | None, int | None]:
    """(the file's text, its mode), or (None, None) when there is none."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _link_refused(shown) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput(
                f"{shown} is not a regular file; move it away, then retry", code="settings-file"
            )
        data = b""
        while len(data) <= MAX_SETTINGS:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    if len(data) > MAX_SETTINGS:
        raise InvalidInput(f"{shown} is over 4 MiB: not a settings file", code="settings-file")
    try:
        return data.decode("utf-8"), stat.S_IMODE(info.st_mode)
    except UnicodeDecodeError:
        raise InvalidInput(
            f"{shown} is not UTF-8 text; fix or move it, then retry", code="settings-file"
        ) from None


def read_settings(base: str, relative: str) -> str | None:
    """The text of the file `base/relative` (None: there is none), read without links."""
    *parts, name = relative.split("/")
    folder = _open_folders(base, parts, create=False)
    if folder is None:
        return None
    try:
        return _read(folder, name, os.path.join(base, relative))[0]
    finally:
        os.close(folder)


def _write(base: str, relative: str, text: str | None, new_mode: int) -> None:
    """Write `text` as `base/relative` (None: remove the file), atomically, keeping its mode."""
    *parts, name = relative.split("/")
    folder = _open_folders(base, parts, create=text is not None)
    if folder is None:
        return
    try:
        _, mode = _read(folder, name, os.path.join(base, relative))
        if text is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=folder)
            return
        atomicfile.replace(
            folder,
            name,
            text.encode("utf-8"),
            new_mode if mode is None else mode,
            temp=f".{name}.mesh-{os.getpid()}.tmp",
        )
    finally:
        os.close(folder)


# ---- commands ------------------------------------------------------------------------------


def _parse_error(path: str, exc: settings.SettingsError) -> InvalidInput:
    return InvalidInput(f"{path}: {exc}", code="invalid-settings")


def install(
    cli: str,
    scope: str,
    *,
    dry_run: bool = False,
    cwd: str | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Merge the mesh's entries into `cli`'s settings file; {cli, scope, path, changed,
    dry_run, text (the resulting file)}. `command`: how the hooks call `mesh` (default:
    `program()`)."""
    hooks = command or program()
    found = _change_settings(
        cli, scope, cwd, dry_run, lambda before: settings.install(cli, before, hooks)
    )
    del found["removed"]
    return found


def uninstall(
    cli: str, scope: str, *, dry_run: bool = False, cwd: str | None = None
) -> dict[str, Any]:
    """Remove exactly the mesh's entries from `cli`'s settings file (the file too when nothing
    else is left in it); {cli, scope, path, changed, removed (the file), dry_run, text}."""
    return _change_settings(
        cli,
        scope,
        cwd,
        dry_run,
        lambda before: None if before is None else settings.uninstall(cli, before),
    )


def _change_settings(
    cli: str,
    scope: str,
    cwd: str | None,
    dry_run: bool,
    change: Callable[[str | None], str | None],
) -> dict[str, Any]:
    """`cli`'s settings file in `scope` made `change(its text)` (None: no file), written
    unless `dry_run` or unchanged; what install and uninstall report."""
    check_cli(cli)
    check_scope(scope)
    base = base_of(scope, cwd)
    relative = _relative(cli, scope)
    path = os.path.join(base, relative)
    before = read_settings(base, relative)
    try:
        after = change(before)
    except settings.SettingsError as exc:
        raise _parse_error(path, exc) from None
    changed = after != before
    if changed and not dry_run:
        _write(base, relative, after, NEW_MODE[scope])
    return {
        "cli": cli,
        "scope": scope,
        "path": path,
        "changed": changed,
        "removed": before is not None and after is None,
        "dry_run": dry_run,
        "text": after,
    }


def _one_status(cli: str, scope: str, base: str) -> dict[str, Any]:
    relative = _relative(cli, scope)
    path = os.path.join(base, relative)
    found: dict[str, Any] = {"cli": cli, "scope": scope, "path": path}
    try:
        text = read_settings(base, relative)
        found.update(settings.status(cli, text), exists=text is not None)
    except (InvalidInput, settings.SettingsError, OSError) as exc:
        return {**found, "exists": True, "installed": False, "events": {}, "error": str(exc)}
    if cli == "codex" and found["installed"]:
        config = read_settings(_home(), CODEX_CONFIG)
        trust = settings.codex_trust(path, text, config)
        found["trusted"] = trust["trusted"]
        found["untrusted"] = trust["untrusted"]
    return found


def status(cwd: str | None = None) -> dict[str, Any]:
    """Where each CLI's hooks are installed: {project (the work tree's top, or None),
    entries: [{cli, scope, path, exists, installed, events: {event: present}, and for Codex
    trusted/untrusted}]}: the project scope's rows only inside a work tree."""
    rows = []
    top = project_top(cwd)
    home = _home()
    for cli in CLIS:
        if top is not None:
            rows.append(_one_status(cli, "project", top))
        rows.append(_one_status(cli, "user", home))
    return {"project": top, "entries": rows}


def missing(report: dict[str, Any], installed_clis: set[str]) -> list[str]:
    """Problems to report (doctor): an installed AI CLI with the mesh's hooks in neither
    scope, hooks installed only in part, or Codex hooks not yet trusted."""
    problems = []
    for cli in CLIS:
        rows = [row for row in report["entries"] if row["cli"] == cli]
        for row in rows:
            if row.get("error"):
                problems.append(f"{cli}: {row['path']}: {row['error']}")
            elif row["exists"] and any(row["events"].values()) and not row["installed"]:
                problems.append(
                    f"{cli}: {row['path']} has only some of the mesh's hooks "
                    f"(mesh hooks install {cli} --scope {row['scope']})"
                )
            elif row.get("trusted") is False:
                problems.append(
                    f"codex: the mesh's hooks in {row['path']} are not trusted yet: run `codex`, "
                    "then /hooks, and trust them"
                )
        if cli in installed_clis and not any(row["installed"] for row in rows):
            problems.append(f"{cli}: no mesh hooks (mesh hooks install {cli})")
    return problems


def for_launch(tool: str, *, apply: bool, cwd: str | None = None) -> dict[str, Any] | None:
    """`mesh launch`'s view of `tool`'s hooks (None: a tool without hooks): installed in the
    project (inside a work tree) or else the user scope when `apply` (`--hooks`); {cli,
    installed, path (where they are or would go), changed}."""
    cli = os.path.basename(tool)
    if cli not in CLIS:
        return None
    scope = "project" if project_top(cwd) is not None else "user"
    if apply:
        found = install(cli, scope, cwd=cwd)
        return {"cli": cli, "installed": True, "path": found["path"], "changed": found["changed"]}
    try:  # only a hint: a settings file that cannot be read never stops a launch
        report = status(cwd)
    except (InvalidInput, OSError):
        return None
    rows = [row for row in report["entries"] if row["cli"] == cli]
    there = [row for row in rows if row["installed"]]
    path = there[0]["path"] if there else next(r["path"] for r in rows if r["scope"] == scope)
    return {"cli": cli, "installed": bool(there), "path": path, "changed": False}
