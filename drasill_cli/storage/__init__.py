"""The storage boundary: what the mesh keeps, in the mesh's own words.

Feature modules (messages, tasks, agents, locks, lifecycle, hardware, watcher, status, ...) reach
stored state only through a `Backend` and the interfaces it carries; they never see a path, a
file, a folder, a table or a row. Each backend implements every interface natively in its own
package under `drasill_cli/backends/`:

- `backends/directory`: the directory mesh (one file per record, maildir, queue and held
  markers, mtime heartbeats, sidecar flocks, watchfiles), all private to that package;
- `backends/postgres`: one mesh across machines (transactions, row locks, `SKIP LOCKED`,
  `LISTEN/NOTIFY`).

Each interface lives in its own module here:

| interface | module | in the mesh's words |
| --- | --- | --- |
| `Mailbox` | `mailbox.py` | deliver, take next, peek, list unread, history, archive, expire |
| `Attachments` | `attachments.py` | put and get files by message reference |
| `TaskBoard` | `board.py` | add with the next number, change a task under its lock, queue, held |
| `Presence` | `presence.py` | agent records, heartbeats (beat, last seen) |
| `LockTable` | `locktable.py` | the advisory path-lock table, changed as a whole under one guard |
| `BudgetBook` | `budgets.py` | who is warned or paused by hardware enforcement |
| `WakeBook` | `wakebook.py` | `mesh watch`: one watcher per mesh (host), per-agent wake state |
| `AuditLog` | `auditlog.py` | append, read since, follow |
| `Changes` | `changes.py` | wait for a change in a set of topics (no polling loop) |
| `Maintenance` | `maintenance.py` | sweep leftovers of killed writers, report quarantined records |
| `Transfer` | `transfer.py` | every stored thing as JSON-able items, and back (export, import) |

Rules every implementation keeps:
- every record handed to a feature module has passed its `models.*.check`; a stored record that
  fails is quarantined (kept aside, reported through `Backend.warnings`), never returned;
- each operation is atomic on its own (a whole record or none); the operations that decide and
  write (`TaskBoard.change`, `LockTable.transact`, `Presence.change`, ...) run their decision
  under the backend's own exclusion (a sidecar flock; a row lock or an advisory lock inside one
  transaction) and commit it whole;
- errors cross the boundary as `drasill_cli.errors.MeshError` subclasses only (never an
  `OSError` or a driver's exception).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from drasill_cli.storage.attachments import Attachments
    from drasill_cli.storage.auditlog import AuditLog
    from drasill_cli.storage.board import TaskBoard
    from drasill_cli.storage.budgets import BudgetBook
    from drasill_cli.storage.changes import Changes
    from drasill_cli.storage.locktable import LockTable
    from drasill_cli.storage.mailbox import Mailbox
    from drasill_cli.storage.maintenance import Maintenance
    from drasill_cli.storage.presence import Presence
    from drasill_cli.storage.transfer import Transfer
    from drasill_cli.storage.wakebook import WakeBook


class Backend(Protocol):
    """One opened mesh: every storage interface, plus what the CLI shows about it."""

    @property
    def location(self) -> str:
        """Where the mesh lives, fit to print: a directory, or a URL with its password masked."""
        ...

    @property
    def kind(self) -> str:
        """`directory` or `postgres`."""
        ...

    @property
    def warnings(self) -> list[str]:
        """Problems met and handled (quarantined records); the CLI shows them on stderr."""
        ...

    @property
    def read_only(self) -> bool:
        """Whether this is a view that refuses every write (dry runs)."""
        ...

    def exists(self) -> bool:
        """Whether the mesh has been made yet (completion and status read nothing otherwise)."""
        ...

    def child_env(self) -> dict[str, str]:
        """The environment variables that point a child process (an agent `mesh launch`
        starts) at this same mesh; the other kind's variable is set empty (unset), so an
        inherited one cannot conflict."""
        ...

    def read_only_view(self) -> Backend:
        """A view of the same mesh that refuses every write."""
        ...

    # ---- the interfaces (one property each, in the order of the table above) ---------------

    @property
    def wake_book(self) -> WakeBook: ...

    @property
    def audit_log(self) -> AuditLog: ...

    @property
    def board(self) -> TaskBoard: ...

    @property
    def mailbox(self) -> Mailbox: ...

    @property
    def attachments(self) -> Attachments: ...

    @property
    def locks(self) -> LockTable: ...

    @property
    def budgets(self) -> BudgetBook: ...

    @property
    def changes(self) -> Changes: ...

    @property
    def maintenance(self) -> Maintenance: ...

    @property
    def presence(self) -> Presence: ...

    @property
    def transfer(self) -> Transfer: ...

    def close(self) -> None:
        """Release what the backend holds (a connection); the files backend holds nothing."""
        ...
