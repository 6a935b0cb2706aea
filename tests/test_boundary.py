"""The storage boundary holds: only a backend's own package touches where the mesh is kept.

Every module of drasill_cli outside `drasill_cli/backends/` is parsed (function bodies
included) and must not open, stat, list, walk, link, rename, remove or watch files, nor reach a
directory mesh's `store`/`root`, nor import a backend's package. The few places that touch
files that are NOT the mesh's (the user's config, an attachment being sent, the docs the
reference generator writes, ...) are listed in ALLOWED, each with why.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "drasill_cli"

# Calls that touch the file system, by receiver: `os.X`, `shutil.X`, `open(...)`, and the
# pathlib methods that read, write, list or test files.
OS_CALLS = {
    "open", "stat", "lstat", "fstat", "scandir", "listdir", "walk", "link", "symlink", "rename",
    "replace", "unlink", "remove", "rmdir", "mkdir", "makedirs", "utime", "chmod", "chown",
    "statvfs", "access", "readlink", "mkfifo", "fwalk", "removedirs", "renames", "truncate",
}  # fmt: skip
PATH_CALLS = {
    "open", "read_text", "read_bytes", "write_text", "write_bytes", "iterdir", "glob", "rglob",
    "exists", "is_file", "is_dir", "is_symlink", "touch", "mkdir", "unlink", "rmdir", "stat",
    "lstat", "rename", "replace", "symlink_to", "hardlink_to", "chmod", "walk",
}  # fmt: skip
SHUTIL_CALLS = {"rmtree", "copy", "copy2", "copyfile", "copytree", "move", "chown"}
# The storage interfaces: `board.exists()` asks the task board, not the file system.
INTERFACES = {
    "mailbox", "attachments", "board", "presence", "locks", "budgets", "wake_book",
    "audit_log", "changes", "maintenance", "backend",
}  # fmt: skip
MESH_NAMES = {"mesh", "self.mesh", "self._mesh", "view", "state.mesh"}

# (module, enclosing function) -> why it may touch files: none of these is a mesh file.
ALLOWED: dict[tuple[str, str], str] = {
    ("drasill_cli/config.py", "_read_config_file"): "reads the user's config file",
    ("drasill_cli/cli/common.py", "_reader_gone"): "opens the null device for stdout once its "
    "reader went away (`| head`), so the rest of the output is dropped quietly",
    ("drasill_cli/cli/shells.py", "_install_zsh"): "writes the user's zsh completion file and "
    "adds its folder to ~/.zshrc (`--install-completion zsh`), as the user asked",
    ("drasill_cli/config.py", "_read_memo"): "reads the user's own memo of the validated config "
    "file (in the user's cache directory), checked before it is used",
    ("drasill_cli/config.py", "_write_memo"): "opens the user's cache folder for the config memo",
    ("drasill_cli/atomicfile.py", "write_new"): "the one atomic no-follow writer, given an open "
    "folder by the directory store, the attachment cache and the config memo",
    ("drasill_cli/atomicfile.py", "replace"): "the one atomic no-follow writer's rename (above)",
    ("drasill_cli/messages.py", "_read_file"): "reads the file a sender attaches (the user's "
    "file), whole and checked before anything is written",
    ("drasill_cli/liveness.py", "heimdall_pids"): "reads heimdall's pid file (the supervisor's)",
    ("drasill_cli/liveness.py", "heimdall_session_alive"): "looks for heimdall's socket",
    ("drasill_cli/hooks/identity.py", "_boot_time"): "reads /proc/stat's boot time (a hook's "
    "ancestors' start times, without psutil)",
    ("drasill_cli/hooks/identity.py", "process"): "reads /proc/PID/stat of the hook's ancestors "
    "(the agent registered as one of them is the hook's identity)",
    ("drasill_cli/hooks/install.py", "_open_folders"): "opens (and makes) the folders of an "
    "agent CLI's settings file, never through a link (`mesh hooks install`)",
    ("drasill_cli/hooks/install.py", "_read"): "reads an agent CLI's settings file without "
    "following a link",
    ("drasill_cli/hooks/install.py", "_write"): "writes or removes an agent CLI's settings "
    "file (atomically, via atomicfile, keeping its mode)",
    ("drasill_cli/onboarding.py", "_start_heimdall"): "makes heimdall's socket folder and waits "
    "for its socket (`mesh launch`)",
    ("drasill_cli/onboarding.py", "_start_tmux"): "removes the launch's own environment file "
    "(in the temporary folder) when tmux did not start the pane that reads it",
    ("drasill_cli/childenv.py", "read"): "reads and removes the 0600 environment file `mesh "
    "launch` wrote for a tmux pane (in the temporary folder, not the mesh)",
    ("drasill_cli/cli/dashboard.py", "open"): "writes the 0600 page that sends the browser on "
    "to the dashboard's tokened URL (in a private temporary folder, not the mesh)",
    ("drasill_cli/cli/dashboard.py", "remove"): "removes that page and its private folder",
    ("drasill_cli/demo.py", "throwaway"): "removes the demo's own scratch folder",
    ("drasill_cli/demo.py", "populate"): "writes the demo's sample project (not the mesh)",
    ("drasill_cli/cli/reference.py", "write_all"): "writes the generated docs and completion "
    "scripts into the repository",
    ("drasill_cli/cli/reference.py", "write_capture"): "writes the status screen capture "
    "into docs/",
    ("drasill_cli/web/server.py", "_static"): "reads the dashboard page from the installed package",
}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).as_posix()
        if rel.startswith("drasill_cli/backends/"):
            continue
        yield rel, ast.parse(path.read_text(encoding="utf-8"), rel)


def _functions(tree: ast.AST, outer: str = "<module>") -> Iterator[tuple[str, ast.AST]]:
    """(enclosing function name, node) for every node, the innermost function's name."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node.name, node
            yield from _functions(node, node.name)
        else:
            yield outer, node
            yield from _functions(node, outer)


def _imported(node: ast.Import | ast.ImportFrom) -> str | None:
    names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
    names += [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
    for name in names:
        if name.startswith("drasill_cli.backends.") or name.split(".")[0] in ("watchfiles", "glob"):
            return f"import {name}"
    return None


def _called(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return "open()" if func.id == "open" else None
    if not isinstance(func, ast.Attribute):
        return None
    receiver = ast.unparse(func.value)
    if (
        (receiver in ("os", "os.path") and func.attr in OS_CALLS)
        or (receiver == "shutil" and func.attr in SHUTIL_CALLS)
        or (
            func.attr in PATH_CALLS - {"open", "replace"}
            and receiver not in ("os", "str")
            and receiver.rpartition(".")[2] not in INTERFACES
        )
    ):
        return f"{receiver}.{func.attr}()"
    return None


def _touches(node: ast.AST) -> str | None:
    """What file-system access `node` is, or None."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        return _imported(node)
    if isinstance(node, ast.Call):
        return _called(node.func)
    is_mesh_attr = isinstance(node, ast.Attribute) and node.attr in ("store", "root")
    if is_mesh_attr and ast.unparse(node.value) in MESH_NAMES:  # type: ignore[attr-defined]
        return ast.unparse(node)
    return None


def test_no_module_outside_a_backend_touches_mesh_files() -> None:
    found: dict[tuple[str, str], list[str]] = {}
    for rel, tree in _modules():
        if rel == "drasill_cli/mesh.py":
            continue  # Mesh.store/root: the directory backend's handle for tests and doctor
        for function, node in _functions(tree):
            what = _touches(node)
            if what is not None and (rel, function) not in ALLOWED:
                found.setdefault((rel, function), []).append(
                    f"line {getattr(node, 'lineno', 0)}: {what}"
                )
    report = "\n".join(f"{rel} {fn}(): {'; '.join(w)}" for (rel, fn), w in sorted(found.items()))
    assert not found, f"file access outside drasill_cli/backends/:\n{report}"


def test_every_allowed_place_still_exists_and_still_needs_it() -> None:
    """An entry in ALLOWED that no longer touches files is removed, so the list stays true."""
    needed = set()
    for rel, tree in _modules():
        for function, node in _functions(tree):
            if _touches(node) is not None:
                needed.add((rel, function))
    stale = sorted(set(ALLOWED) - needed)
    assert not stale, f"ALLOWED entries that touch no file any more: {stale}"
