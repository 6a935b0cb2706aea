"""The working loop, continued (issue 27): names you can trust, quiet pipes, task cwd, log
filters, unlock by every printed form. The CLI tests run on both backends."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import MeshRunner

pytestmark = pytest.mark.both_backends


def failure(cli: MeshRunner, *args: str) -> tuple[int, dict[str, Any]]:
    done = cli.run(*args, "--json")
    assert done.returncode != 0, done.stdout
    return done.returncode, json.loads(done.stdout)["error"]


def test_task_add_records_the_top_of_the_git_work_tree(cli: MeshRunner, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    deep = repo / "src" / "pkg"
    deep.mkdir(parents=True)
    (repo / ".git").mkdir()  # found by looking, as lock paths are: no git process needed
    assert cli.json("task", "add", "parse", cwd=deep)["cwd"] == str(repo)
    outside = tmp_path / "loose"
    outside.mkdir()
    assert cli.json("task", "add", "docs", cwd=outside)["cwd"] == str(outside)
