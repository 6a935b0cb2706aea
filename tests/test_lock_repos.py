"""Locks inside git work trees: keyed by repository (its root commit) and the path relative to
the work tree's top, so clones of one repository contend for the same files (issue 15)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from drasill_cli import lockpaths, locks
from drasill_cli.errors import NegativeOutcome
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner, register

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git binary")

GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, **GIT_ENV, "HOME": str(cwd)}
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def make_repo(where: Path) -> tuple[Path, str]:
    """A repository with one commit holding src/a.py; (its top, its root commit)."""
    (where / "src").mkdir(parents=True)
    (where / "src" / "a.py").write_text("x = 1\n")
    git(where, "init", "-q")
    git(where, "add", ".")
    # The message names the folder: two repositories made in the same second with the same
    # files would otherwise share their root commit, and so be one repository to git and mesh.
    git(where, "commit", "-q", "-m", f"first commit of {where.name}")
    return where, git(where, "rev-parse", "HEAD")


@pytest.fixture
def clones(tmp_path: Path) -> tuple[Path, Path, str]:
    """A repository and a clone of it (a second commit in the clone: the root is the same)."""
    one, root = make_repo(tmp_path / "one")
    git(tmp_path, "clone", "-q", str(one), "two")
    two = tmp_path / "two"
    (two / "b.py").write_text("y = 2\n")
    git(two, "add", ".")
    git(two, "commit", "-q", "-m", "second")
    return one, two, root


def test_clones_of_one_repository_conflict_on_the_same_relative_file(
    cli: MeshRunner, clones: tuple[Path, Path, str]
) -> None:
    cli.register("alpha", "beta")
    one, two, root = clones
    [held] = cli.json("lock", "src/a.py", "--as", "alpha", cwd=one)
    assert held["path"] == f"git:{root}/src/a.py"
    assert held["repository"] == root and held["repository_path"] == "src/a.py"
    assert held["local_path"] == str((one / "src" / "a.py").resolve())
    denied = cli.run("lock", "a.py", "--as", "beta", "--json", cwd=two / "src")
    assert denied.returncode == 1, denied.stderr
    [conflict] = json.loads(denied.stdout)["error"]["conflicts"]
    assert (conflict["path"], conflict["holder"]) == (f"git:{root}/src/a.py", "alpha")
    # A lock on the clone's `src` folder covers the file in the other clone as well.
    assert cli.run("lock", str(two / "src"), "--as", "beta").returncode == 1
    # Another file of the same repository is free; so is the same name in another repository.
    cli.json("lock", "b.py", "--as", "beta", cwd=two)
    other, _ = make_repo(one.parent / "other")
    cli.json("lock", "src/a.py", "--as", "beta", cwd=other)
    # The holder releases it from the other clone: it is the same lock.
    cli.json("unlock", str(two / "src" / "a.py"), "--as", "alpha")
    cli.json("lock", "src/a.py", "--as", "beta", cwd=two)


def test_a_separate_git_dir_and_a_subfolder_key_alike(mesh: Mesh, tmp_path: Path) -> None:
    register(mesh, "alpha", "beta")
    """A work tree whose `.git` is a file (as in worktrees and `--separate-git-dir` clones)."""
    one, root = make_repo(tmp_path / "one")
    git(tmp_path, "clone", "-q", "--separate-git-dir", str(tmp_path / "store"), str(one), "two")
    assert (tmp_path / "two" / ".git").is_file()
    locks.acquire(mesh, [str(one / "src")], "alpha")
    with pytest.raises(NegativeOutcome, match="alpha holds a write lock on src in repository"):
        locks.acquire(mesh, [str(tmp_path / "two" / "src" / "new.py")], "beta")
    assert locks.resolve(str(tmp_path / "two")) == f"git:{root}"


def test_outside_a_work_tree_the_lock_is_on_the_absolute_path(mesh: Mesh, tmp_path: Path) -> None:
    register(mesh, "alpha", "beta")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "f").write_text("")
    [held] = locks.acquire(mesh, [str(plain / "f")], "alpha")
    assert held["path"] == str((plain / "f").resolve())
    assert "repository" not in held
    # A repository without a commit has no root to be known by: absolute paths too.
    empty = tmp_path / "empty"
    empty.mkdir()
    git(empty, "init", "-q")
    assert locks.resolve(str(empty / "f")) == str((empty / "f").resolve())


def test_a_folder_holding_a_work_tree_covers_its_files_on_this_host(
    mesh: Mesh, clones: tuple[Path, Path, str]
) -> None:
    register(mesh, "alpha", "beta")
    one, _two, _root = clones
    locks.acquire(mesh, [str(one.parent)], "alpha")  # the folder both clones live in
    with pytest.raises(NegativeOutcome):
        locks.acquire(mesh, [str(one / "src" / "a.py")], "beta")
    locks.release(mesh, [str(one.parent)], "alpha")
    locks.acquire(mesh, [str(one / "src" / "a.py")], "beta")
    with pytest.raises(NegativeOutcome, match=r"beta holds a write lock on src/a\.py in repo"):
        locks.acquire(mesh, [str(one.parent)], "alpha")


def test_git_variables_of_the_caller_do_not_change_the_key(
    mesh: Mesh, clones: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Inside a git hook GIT_DIR names the hook's repository: the key is still the tree's."""
    one, two, root = clones
    monkeypatch.setenv("GIT_DIR", str(two / ".git"))
    lockpaths.root_commit.cache_clear()
    assert locks.resolve(str(one / "src" / "a.py")) == f"git:{root}/src/a.py"


def test_mesh_locks_shows_the_repository_and_the_relative_path(
    cli: MeshRunner, clones: tuple[Path, Path, str]
) -> None:
    cli.register("alpha", "beta")
    one, two, root = clones
    cli.json("lock", "src/a.py", "--as", "alpha", cwd=one)
    listed = cli.run("locks", cwd=two)
    assert listed.returncode == 0, listed.stderr
    text = " ".join(listed.stdout.split())
    assert f"src/a.py in repository {root[:8]}" in text
    assert str((one / "src" / "a.py").resolve()) in text
    [shown] = cli.json("locks")
    assert (shown["repository"], shown["repository_path"]) == (root, "src/a.py")
    # The key as listed names the lock from anywhere (here: outside any work tree).
    cli.json("unlock", f"git:{root}/src/a.py", "--as", "alpha", cwd=one.parent)
    assert cli.json("locks") == []
    [by_key] = cli.json("lock", f"git:{root}/src", "--as", "alpha", cwd=one.parent)
    assert (by_key["repository_path"], by_key["local_path"]) == ("src", None)
    assert cli.run("lock", "src/a.py", "--as", "beta", cwd=two).returncode == 1


def test_a_record_with_a_repository_key_is_valid_and_one_with_neither_is_not() -> None:
    from drasill_cli.models import RecordError
    from drasill_cli.storage.locktable import check_lock

    base = {
        "schema_version": 1,
        "mode": "write",
        "holder": "alpha",
        "acquired_at": "2026-01-01T00:00:00Z",
        "expires_at": "2026-01-01T00:01:00Z",
        "ttl": 60.0,
    }
    check_lock({**base, "path": "git:" + "a" * 40 + "/src/a.py"})
    check_lock({**base, "path": "git:" + "b" * 64})
    for bad in ("relative/a.py", "git:nothex/src", "git:" + "a" * 40 + "src"):
        with pytest.raises(RecordError):
            check_lock({**base, "path": bad})
