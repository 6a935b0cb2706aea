"""`mesh export` and `mesh import`: a whole mesh as JSON lines, and back, on any backend.

Export writes one item per line (`storage.transfer` lists the kinds), a `meta` line first. An
attachment is read in chunks and its line written in pieces; an entry that cannot be read (a
FIFO, a link or a folder where a file belongs, a damaged record) is skipped and reported, never
the end of the export.

Import reads every line and checks the whole input before it writes anything: each line (UTF-8,
JSON without NaN, at most `line_limit` bytes, an item that passes `check_item`: a strict
pydantic model per kind, `storage.transfer_items`, the error naming the field) and the items
together (one item per key, task dependencies without a cycle, locks that could all be held at
once, attachments within this mesh's limit). One bad line refuses the import, naming the line,
and nothing is written. Then it restores the items in order, keyed by ids: an item already
there is skipped, a message whose id the mesh holds anywhere gets no second copy, a message
read here (its `consume` event is in this mesh's log or the import's) is never unread again,
and history older than `messages.history_days` (which prune would delete) is not brought back.
So importing the same stream twice, or again after prune, changes nothing the second time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from drasill_cli import clock
from drasill_cli.errors import InvalidInput
from drasill_cli.models import RecordError
from drasill_cli.storage.transfer import KINDS

if TYPE_CHECKING:
    from drasill_cli.config import Config
    from drasill_cli.mesh import Mesh

# Shown with every refused import: what to do next.
_NOTHING = "nothing was imported; fix or drop that line (or export again) and rerun mesh import"
# Room on a line beside its largest value (keys, names, a message's other fields).
_LINE_SLACK = 64 * 1024
# An attachment's base64 is written in pieces of this many characters.
_PIECE = 1 << 20


def line_limit(config: Config) -> int:
    """The longest line an import into a mesh with `config` reads: an attachment of
    `messages.max_attachment_bytes` in base64, or a text of `max_body_bytes` with every
    character escaped (`\\u0000` is six bytes), and room for the rest."""
    messages = config.messages
    attachment = 4 * math.ceil(messages.max_attachment_bytes / 3)
    return max(attachment, 6 * messages.max_body_bytes) + _LINE_SLACK


# ---- export -----------------------------------------------------------------------------------


@dataclass
class ExportReport:
    """What an export wrote: `items` lines, and each damaged entry it skipped (in words)."""

    items: int = 0
    skipped: list[str] = field(default_factory=list)


def _pieces(item: dict[str, Any]) -> Iterator[str]:
    """One item as its line, in pieces: an attachment's base64 content (plain ASCII, nothing
    to escape) is given a slice at a time, never as one more copy of the whole."""
    content = item.get("content")
    if item["kind"] != "attachment" or not isinstance(content, str):
        yield json.dumps(item, ensure_ascii=False, separators=(",", ":")) + "\n"
        return
    head = {key: value for key, value in item.items() if key != "content"}
    yield json.dumps(head, ensure_ascii=False, separators=(",", ":"))[:-1] + ',"content":"'
    for start in range(0, len(content), _PIECE):
        yield content[start : start + _PIECE]
    yield '"}\n'


def export(mesh: Mesh, write: Callable[[str], object]) -> ExportReport:
    """Every stored thing of the mesh, one JSON line each, handed to `write` in pieces. What
    was skipped as damaged is in the report (and in the mesh's warnings, said as it happens)."""
    report = ExportReport()
    warnings = mesh.backend.warnings
    seen = len(warnings)
    for item in mesh.backend.transfer.dump():
        for piece in _pieces(item):
            write(piece)
        report.items += 1
    report.skipped = list(warnings[seen:])
    return report


# ---- reading an import ------------------------------------------------------------------------


def _refused(number: int, what: str) -> InvalidInput:
    return InvalidInput(f"line {number}: {what}; {_NOTHING}", code="invalid-import")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _lines(stream: IO[bytes], limit: int) -> Iterator[tuple[int, bytes]]:
    """(number, bytes) of each line, never reading more than `limit` bytes of one."""
    number = 0
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        number += 1
        if len(line) > limit:
            raise _refused(
                number,
                f"is over {limit} bytes, the longest line this mesh reads (an attachment of "
                "messages.max_attachment_bytes in base64); raise that limit in the config file "
                "if the export comes from a mesh that allows more",
            )
        yield number, line


def _parse(number: int, line: bytes) -> Any:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _refused(number, f"is not UTF-8 (a bad byte at column {exc.start + 1})") from None
    try:
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise _refused(number, "nests too deep to be an item") from None
    except ValueError as exc:
        reason = getattr(exc, "msg", str(exc))
        raise _refused(number, f"is not JSON ({reason})") from None


def read_items(stream: IO[bytes], config: Config) -> list[dict[str, Any]]:
    """Every item of an export, checked alone and together; InvalidInput naming the first bad
    line (nothing is written before this returns)."""
    from drasill_cli.storage.transfer_items import check_item  # pydantic: import only

    items: list[dict[str, Any]] = []
    numbers: list[int] = []
    for number, line in _lines(stream, line_limit(config)):
        if not line.strip():
            continue
        raw = _parse(number, line)
        try:
            item = check_item(raw)
        except RecordError as exc:
            kind = raw.get("kind") if isinstance(raw, dict) else None
            what = f"the {kind} item" if kind in KINDS else "the item"
            raise _refused(number, f"{what} {exc.reason}") from None
        if not items and item["kind"] != "meta":
            raise _refused(number, "is not the meta line an export starts with")
        if items and item["kind"] == "meta":
            raise _refused(number, "is a second meta line (two exports joined?)")
        items.append(item)
        numbers.append(number)
    if not items:
        raise InvalidInput(
            "mesh import read no items on stdin; pipe an export into it: "
            "mesh export > mesh.jsonl, then mesh import < mesh.jsonl",
            code="invalid-import",
        )
    _check_together(items, numbers, config)
    return items


def _audit_key(item: dict[str, Any]) -> tuple[Any, ...]:
    return (json.dumps(item["event"], sort_keys=True, ensure_ascii=False), item["nth"])


# What names an item of each kind: two items of one import never share it.
_KEYS: dict[str, Callable[[dict[str, Any]], tuple[Any, ...]]] = {
    "agent": lambda item: (item["record"]["name"],),
    "attachment": lambda item: (item["message_id"], item["name"]),
    "message": lambda item: (item["message"]["id"],),
    "task": lambda item: (item["record"]["id"],),
    "task-sequence": lambda _item: (),
    "lock": lambda item: (item["record"]["path"], item["record"]["holder"]),
    "budget-warning": lambda item: (item["agent"],),
    "budget-pause": lambda item: (item["agent"],),
    "wake": lambda item: (item["agent"],),
    "audit": _audit_key,
}


def _check_together(items: list[dict[str, Any]], numbers: list[int], config: Config) -> None:
    """The rules no single line can break alone."""
    first: dict[tuple[Any, ...], int] = {}
    for item, number in zip(items, numbers, strict=True):
        if item["kind"] not in _KEYS:
            continue
        key = (item["kind"], *_KEYS[item["kind"]](item))
        if key in first:
            raise _refused(number, f"repeats the {item['kind']} of line {first[key]}")
        first[key] = number
        if item["kind"] == "attachment" and item["size"] > config.messages.max_attachment_bytes:
            raise _refused(
                number,
                f"holds an attachment of {item['size']} bytes, over this mesh's "
                f"messages.max_attachment_bytes ({config.messages.max_attachment_bytes}); "
                "raise it in the config file",
            )
    _check_dependencies(items, numbers)
    _check_locks(items, numbers)


def _check_dependencies(items: list[dict[str, Any]], numbers: list[int]) -> None:
    """No cycle among the unfinished tasks of the import (tasks.add refuses one too)."""
    lines: dict[str, int] = {}
    needs: dict[str, list[str]] = {}
    for item, number in zip(items, numbers, strict=True):
        if item["kind"] == "task" and item["record"]["state"] != "completed":
            lines[item["record"]["id"]] = number
            needs[item["record"]["id"]] = list(item["record"].get("depends_on") or [])
    done: set[str] = set()
    for start in sorted(needs, key=lines.__getitem__):
        path: list[str] = []
        on_path: set[str] = set()
        stack: list[tuple[str, Iterator[str]]] = [(start, iter(needs[start]))]
        path.append(start)
        on_path.add(start)
        while stack:
            task_id, deps = stack[-1]
            dep = next(deps, None)
            if dep is None:
                stack.pop()
                on_path.discard(path.pop())
                done.add(task_id)
            elif dep in on_path:
                cycle = " -> ".join([*path[path.index(dep) :], dep])
                raise _refused(
                    lines[dep], f"the task {dep} depends on itself through a cycle ({cycle})"
                )
            elif dep in needs and dep not in done:
                stack.append((dep, iter(needs[dep])))
                path.append(dep)
                on_path.add(dep)


def _check_locks(items: list[dict[str, Any]], numbers: list[int]) -> None:
    """Every imported lock could be held at once: no two holders with modes the lock table
    refuses together on paths that overlap (`mesh lock` would never grant both)."""
    from drasill_cli.lockpaths import split_key
    from drasill_cli.locks import compatible, overlaps

    held: list[tuple[dict[str, Any], int]] = []
    for item, number in zip(items, numbers, strict=True):
        if item["kind"] != "lock":
            continue
        lock = item["record"]
        for other, other_line in held:
            same_place = split_key(lock["path"]) is not None or lock.get("host") == other.get(
                "host"
            )
            if (
                other["holder"] != lock["holder"]
                and same_place
                and overlaps(other["path"], lock["path"])
                and not (compatible(other["mode"], lock["mode"]))
            ):
                raise _refused(
                    number,
                    f"the {lock['mode']} lock of {lock['holder']} on {lock['path']} conflicts "
                    f"with the {other['mode']} lock of {other['holder']} on line {other_line}",
                )
        held.append((lock, number))


# ---- restoring --------------------------------------------------------------------------------


def _consumed_ids(mesh: Mesh, items: list[dict[str, Any]]) -> set[str]:
    """Ids of messages taken from an inbox, by this mesh's log and by the import's."""
    events = [item["event"] for item in items if item["kind"] == "audit"]
    if any(item["kind"] == "message" for item in items):
        events += list(mesh.backend.audit_log.read())
    return {
        str(event["id"])
        for event in events
        if event.get("event") == "consume" and isinstance(event.get("id"), str)
    }


def _planned(mesh: Mesh, item: dict[str, Any], consumed: set[str], cutoff: float) -> dict[str, Any]:
    """A message item as this mesh should take it: keyed by its id, read state kept."""
    message = item["message"]
    created = clock.id_time(message["id"]) or 0.0
    state, sent = item["state"], item["sent"]
    if state is not None and mesh.backend.mailbox.find(message["id"]) is not None:
        state = None  # a copy of this id is here already (in any state, or the sender's)
    if state == "unread" and message["id"] in consumed:
        state = "read"  # read here (or before the export ended): never unread again
    if state == "read" and created < cutoff:
        state = None  # history prune deletes (or deleted): not brought back
    if sent and created < cutoff:
        sent = False
    return {**item, "state": state, "sent": sent}


def import_items(mesh: Mesh, items: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Restore checked items in order; per kind, how many were restored and how many were
    already present. One audit event when anything was restored."""
    summary: dict[str, dict[str, int]] = {}
    transfer = mesh.backend.transfer
    consumed = _consumed_ids(mesh, items)
    days = mesh.config.messages.history_days  # 0 keeps history forever
    cutoff = clock.now() - days * 86400 if days > 0 else -math.inf
    planned = {
        item["message"]["id"]: _planned(mesh, item, consumed, cutoff)
        for item in items
        if item["kind"] == "message"
    }
    for given in items:
        kind, item = given["kind"], given
        if kind == "meta":
            continue
        counts = summary.setdefault(kind, {"restored": 0, "present": 0})
        if kind == "message":
            item = planned[given["message"]["id"]]
            wanted = item["state"] is not None or item["sent"]
        elif kind == "attachment" and item["message_id"] in planned:
            # Only for a copy that will be written: a message here already keeps its files,
            # and history not brought back takes none.
            wanted = planned[item["message_id"]]["state"] is not None
        else:
            wanted = True
        counts["restored" if wanted and transfer.restore(item) else "present"] += 1
    restored = sum(counts["restored"] for counts in summary.values())
    if restored:
        mesh.append_audit_event(
            "mesh-imported", None, restored=restored, source=items[0].get("source")
        )
    return {kind: summary[kind] for kind in KINDS if kind in summary}
