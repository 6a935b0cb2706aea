"""`Maintenance`: upkeep and diagnosis of the store itself.

- `sweep` removes what killed writers left behind (the lifecycle runs it on every prune);
- `check` is the store's part of `mesh doctor`: whether the mesh is usable and safe, and every
  damaged or foreign thing in it, each finding with what to do about it. Doctor adds the checks
  that are not the store's (Python, config, tools).

Neither ever changes a record.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class Finding(NamedTuple):
    """One diagnosis: `status` is `ok`, `warn` or `fail`; `required` findings that fail make
    `mesh doctor` exit 1; `fix` says what to do (None when nothing is to be done)."""

    name: str
    status: str
    detail: str
    fix: str | None = None
    required: bool = False


class Maintenance(Protocol):
    def sweep(self, older_than: float, *, apply: bool = True) -> list[str]:
        """Leftovers of killed writers last touched before `older_than` (epoch seconds):
        removed with `apply`, only listed without. Named for people (e.g. a temp file's place
        in the mesh); a backend whose writes are transactions may have none."""
        ...

    def check(self) -> list[Finding]:
        """The store's health, in a fixed order of findings; reads only, never refuses."""
        ...
