"""Commands that move a whole mesh: `export` (JSON lines on stdout) and `import` (from stdin)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from drasill_cli.cli import views
from drasill_cli.cli.common import JsonOpt, Shown, app, command, note, state
from drasill_cli.cli.helpstyle import examples


@command(
    app,
    "export",
    short_help="Write every record of the mesh as JSON lines on stdout.",
    epilog=examples(
        "mesh export > mesh.jsonl   # a backup",
        "mesh --mesh-dir ~/.drasill/mesh export | mesh --mesh-url postgresql://db/team import",
    ),
)
def export_cmd(
    ctx: typer.Context,
    json_out: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Accepted for symmetry: the output is always JSON lines; errors become one "
            "JSON object.",
        ),
    ] = False,
) -> None:
    """Write every record of the mesh as JSON lines on stdout, a meta line first.

    Agents (with their last heartbeat), unread, read and archived mail with the senders'
    history, attachments (their bytes in base64, any size up to messages.max_attachment_bytes),
    tasks and the task number sequence, locks, budget records, wake state and the audit log.
    Feed it to `mesh import` on any mesh, a directory or a database.

    A damaged entry (a FIFO, link or folder where an attachment belongs, a record that fails
    its check) is skipped with a warning on stderr and the export goes on; the last stderr line
    says how many items were written and how many entries were skipped. An error that stops
    the export says that the output is incomplete.
    """
    del json_out  # the command's wrapper renders errors by it
    from drasill_cli import transfer
    from drasill_cli.errors import MeshError

    mesh = state(ctx).mesh()
    out = sys.stdout
    report = transfer.ExportReport()
    try:
        report = transfer.export(mesh, out.write)
        out.flush()
    except MeshError:
        note(
            "mesh export: stopped by the error below; the output is incomplete and is not a "
            "backup (fix the cause and export again)"
        )
        raise
    skipped = len(report.skipped)
    state(ctx).flush_warnings()  # each skipped entry, then the summary
    note(
        f"mesh export: {report.items} items written"
        + (
            f"; {skipped} damaged entr{'y' if skipped == 1 else 'ies'} skipped (said above): "
            "everything else readable is in the export"
            if skipped
            else "; nothing was skipped"
        )
    )


@command(
    app,
    "import",
    short_help="Read a mesh export from stdin and add what is missing.",
    epilog=examples(
        "mesh import < mesh.jsonl",
        "mesh export | mesh --mesh-url postgresql://db/team import --json",
    ),
)
def import_cmd(ctx: typer.Context, json_out: JsonOpt = False) -> Shown:
    """Read the JSON lines of `mesh export` from stdin and restore every record not there yet.

    The whole input is checked first: one bad line (not UTF-8, not JSON, too long, an unknown
    kind, a record that fails its check, a second item with the same id, a dependency cycle,
    two locks that could not both be held) exits 2 naming the line, and nothing is written.
    Restoring is keyed by ids: a message whose id this mesh holds is not delivered again, mail
    read here stays read, history older than messages.history_days is not brought back, tasks
    keep their ids and the task numbers continue after the highest one; importing the same
    export twice changes nothing the second time. With --json, one object: per kind, how many
    were restored and how many were already present.
    """
    from drasill_cli import transfer
    from drasill_cli.config import load_config
    from drasill_cli.errors import MeshError

    items = transfer.read_items(sys.stdin.buffer, load_config())
    mesh = state(ctx).mesh()
    try:
        summary = transfer.import_items(mesh, items)
    except (MeshError, OSError):
        note(
            "mesh import: stopped by the error below after part of the input was restored; "
            "fix the cause and rerun the same import: it adds only what is still missing"
        )
        raise
    restored = sum(counts["restored"] for counts in summary.values())
    present = sum(counts["present"] for counts in summary.values())
    found = {"restored": restored, "present": present, "kinds": summary}
    return Shown(found, views.imported, mesh.location)
