"""`mesh export` and `mesh import`: a whole mesh as JSON lines, and back, on any backend.

Export writes one item per line (`storage.transfer` lists the kinds), a `meta` line first.
Import reads every line and checks every item before it writes anything, so a damaged stream
changes nothing; then it restores the items in order, each skipped when it is there already,
so importing the same stream twice changes nothing the second time.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from drasill_cli.errors import InvalidInput
from drasill_cli.models import RecordError
from drasill_cli.storage.transfer import KINDS, check_item

if TYPE_CHECKING:
    from drasill_cli.mesh import Mesh

# Shown with every refused import: what to do next.
_NOTHING = "nothing was imported; fix or drop that line (or export again) and rerun mesh import"


def export_lines(mesh: Mesh) -> Iterator[str]:
    """Every stored thing of the mesh, one JSON line each (with its newline)."""
    for item in mesh.backend.transfer.dump():
        yield json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n"


def _refused(number: int, what: str) -> InvalidInput:
    return InvalidInput(f"line {number}: {what}; {_NOTHING}", code="invalid-import")


def read_items(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Every item of an export, checked; InvalidInput naming the first bad line."""
    items: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            raw = json.loads(line)
        except ValueError as exc:
            reason = getattr(exc, "msg", str(exc))
            raise _refused(number, f"is not JSON ({reason})") from None
        try:
            item = check_item(raw)
        except RecordError as exc:
            kind = raw.get("kind") if isinstance(raw, dict) else None
            what = f"the {kind} item" if kind in KINDS else "the item"
            raise _refused(number, f"{what} {exc.reason}") from None
        if not items and item["kind"] != "meta":
            raise _refused(number, "is not the meta line an export starts with")
        items.append(item)
    if not items:
        raise InvalidInput(
            "mesh import read no items on stdin; pipe an export into it: "
            "mesh export > mesh.jsonl, then mesh import < mesh.jsonl",
            code="invalid-import",
        )
    return items


def import_items(mesh: Mesh, items: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Restore checked items in order; per kind, how many were restored and how many were
    already present. One audit event when anything was restored."""
    summary: dict[str, dict[str, int]] = {}
    transfer = mesh.backend.transfer
    for item in items:
        if item["kind"] == "meta":
            continue
        counts = summary.setdefault(item["kind"], {"restored": 0, "present": 0})
        counts["restored" if transfer.restore(item) else "present"] += 1
    restored = sum(counts["restored"] for counts in summary.values())
    if restored:
        mesh.record("mesh-imported", None, restored=restored, source=items[0].get("source"))
    return {kind: summary[kind] for kind in KINDS if kind in summary}
