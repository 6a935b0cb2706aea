"""What a lock is on: a path's lock key, so that every copy of one repository names a file alike.

Inside a git work tree a path is locked by its repository and its place in the tree:
`git:<root commit>/<path relative to the work tree's top>` (the top itself is `git:<root
commit>`). A repository is known by its root commit (the first of the commits with no parent
that HEAD reaches, by hash order, when its history has several), which every clone and worktree
of it shares on any host, so they all contend for the same files. A path outside any work
tree, or in a repository without a commit yet, or where git cannot be run, is locked by its
absolute real path on this host, as before.

Keys keep the shape of paths: a key covers another when it is a whole-component prefix of it
(`locks.covers`), so a lock on a directory of a repository covers the files under it in every
clone. A lock also records where its holder took it (`host`, and for a repository key the
holder's `local_path`), so a lock on a directory of this host that holds a work tree still
covers the files of that work tree (`Target.local`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from typing import Any

from drasill_cli.liveness import hostname

GIT_PREFIX = "git:"
# A repository key: `git:` and a root commit (sha1 or sha256), then nothing or `/` and a path.
_GIT_KEY = re.compile(r"git:([0-9a-f]{40}|[0-9a-f]{64})(/.*)?", re.DOTALL)
GIT_TIMEOUT_S = 10.0
SHORT_ID = 8  # hex digits of a root commit in a lock's human form


@dataclasses.dataclass(frozen=True)
class Target:
    """A path to lock: its `key` (what locks compare), where it is on this host (`local`, an
    absolute real path) and, inside a work tree, its repository's root commit and the path
    relative to the work tree's top ('' for the top)."""

    key: str
    local: str
    repo: str | None = None
    rel: str | None = None

    def record_keys(self) -> dict[str, Any]:
        """What a lock on this target records besides its key: this host, and for a
        repository key the path here (so people see where the holder works)."""
        keys: dict[str, Any] = {"host": hostname()}
        if self.repo is not None and self.local:  # a key typed as listed names no path here
            keys["local_path"] = self.local
        return keys


def is_key(text: str) -> bool:
    """Whether `text` is a lock key: an absolute path or a repository key."""
    return text.startswith("/") or split_key(text) is not None


def split_key(key: str) -> tuple[str, str] | None:
    """(root commit, relative path) of a repository key; None for any other text."""
    found = _GIT_KEY.fullmatch(key)
    if found is None:
        return None
    return found.group(1), (found.group(2) or "/")[1:]


def target(real: str) -> Target:
    """The target of the absolute real path `real`: its repository key inside a git work tree
    with a commit, else the path itself."""
    top = work_tree_top(real)
    if top is not None:
        root = root_commit(top)
        if root is not None:
            rel = os.path.relpath(real, top) if real != top else ""
            key = f"{GIT_PREFIX}{root}/{rel}" if rel else f"{GIT_PREFIX}{root}"
            return Target(key=key, local=real, repo=root, rel=rel)
    return Target(key=real, local=real)


def of_key(key: str) -> Target:
    """A target named by its key (`mesh unlock git:<root>/src/a.py` from anywhere)."""
    parts = split_key(key)
    if parts is None:
        return Target(key=key, local=key)
    return Target(key=key, local="", repo=parts[0], rel=parts[1])


def work_tree_top(real: str) -> str | None:
    """The top of the innermost git work tree holding `real` (the nearest folder, from `real`
    up, with a `.git` folder or file), or None."""
    here = real
    while True:
        if os.path.lexists(os.path.join(here, ".git")) and os.path.isdir(here):
            return here
        parent = os.path.dirname(here)
        if parent == here:
            return None
        here = parent


@functools.cache
def root_commit(top: str) -> str | None:
    """The root commit of the repository checked out at `top` (the first by hash when HEAD
    reaches several), or None when it has no commit yet or git cannot tell."""
    git = shutil.which("git")
    if git is None:
        return None
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}  # this tree only
    try:
        done = subprocess.run(
            [git, "-c", "safe.directory=*", "-C", top, "rev-list", "--max-parents=0", "HEAD"],
            capture_output=True,
            text=True,
            env=env,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    roots = sorted(line for line in done.stdout.split() if _GIT_KEY.fullmatch(GIT_PREFIX + line))
    return roots[0] if done.returncode == 0 and roots else None


# A repository key as `shown` writes it: "src/a.py in repository 1a2b3c4d", then optionally
# " (at /where/it/is[ on host])" ("in git repository" too: the form of an earlier release).
_SHOWN_KEY = re.compile(
    r"(?P<rel>.+?) in (?:git )?repository (?P<root>[0-9a-f]{7,64})(?: \(at (?P<at>/.*)\))?",
    re.DOTALL,
)
WHOLE_TREE = "(the whole work tree)"


def parse_shown(text: str) -> tuple[str, str, str | None] | None:
    """(root commit or its prefix, relative path, the "at" path with any " on HOST") of a
    repository key as `shown` writes it; None for any other text."""
    found = _SHOWN_KEY.fullmatch(text)
    if found is None:
        return None
    rel = found.group("rel")
    return found.group("root"), "" if rel == WHOLE_TREE else rel, found.group("at")


def local(lock: dict[str, Any]) -> tuple[str, str] | None:
    """(host, absolute path there) of where a lock was taken, when the record says."""
    host = lock.get("host")
    where = lock.get("local_path") or lock["path"]
    if not isinstance(host, str) or not isinstance(where, str) or not where.startswith("/"):
        return None
    return host, where


def shown(lock: dict[str, Any], plain: Callable[[str], str] = str) -> str:
    """A lock's path as a person reads it, the one human form the terminal and the dashboard
    share: the path (as `plain` writes it), or for a repository key `PATH in repository
    SHORTID` (the root commit's first 8 hex digits) and where its holder works."""
    parts = split_key(lock["path"])
    if parts is None:
        host = lock.get("host")
        elsewhere = isinstance(host, str) and host != hostname()
        return plain(lock["path"]) + (f" on {host}" if elsewhere else "")
    root, rel = parts
    text = f"{rel or WHOLE_TREE} in repository {root[:SHORT_ID]}"
    where = local(lock)
    if where is not None:
        host, path = where
        text += f" (at {plain(path)}{'' if host == hostname() else f' on {host}'})"
    return text
