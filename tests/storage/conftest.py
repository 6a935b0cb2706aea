"""The storage contract suite: every test here runs against every backend.

A test takes the `backend` fixture (a fresh, empty mesh of each kind) and speaks only the
interfaces of `drasill_cli.storage`; nothing here may look at files or tables. The PostgreSQL
mesh is a fresh schema on the session's throwaway cluster (`pg_url` in tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from drasill_cli.location import Location
from drasill_cli.storage import Backend
from tests.harness import Harness, harness_at, harness_of

BACKENDS = ["directory", "postgres"]


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Backend]:
    """A fresh mesh on each backend (a private cache for a database mesh's attachments)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    location = Location.directory(tmp_path / "mesh")
    if request.param == "postgres":
        location = Location.of_url(request.getfixturevalue("pg_mesh_url"))
    opened = harness_at(location).open_backend()
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def harness(backend: Backend) -> Harness:
    """The test's backend's harness (tests/harness.py): the one place that plants what no
    interface may store, each backend its own way."""
    return harness_of(backend)
