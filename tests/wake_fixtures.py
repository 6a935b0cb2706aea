"""Fixtures for the wake and watch tests (loaded with `pytest_plugins`, never imported)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A short directory for heimdall sockets (Unix socket paths are limited to 108 bytes)."""
    directory = Path(tempfile.mkdtemp(prefix="hm", dir="/tmp"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def tmux_tmpdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private tmux server for this test: its own TMUX_TMPDIR, killed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="tmx", dir="/tmp"))
    monkeypatch.setenv("TMUX_TMPDIR", str(directory))
    monkeypatch.delenv("TMUX", raising=False)
    yield directory
    subprocess.run(["tmux", "kill-server"], capture_output=True, check=False)
    shutil.rmtree(directory, ignore_errors=True)
