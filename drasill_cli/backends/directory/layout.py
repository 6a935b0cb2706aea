"""Where the directory mesh keeps each kind of record: every folder and file name in one place.

docs/store-format.md describes the same layout for people. Only this package reads these names.
"""

from __future__ import annotations

# Agents: one record each, and an empty file whose mtime is the agent's last sign of life.
AGENTS_DIR = "agents"
HEARTBEATS_DIR = "heartbeats"

# Mail: a maildir per recipient (inbox/NAME/{new,cur}), the senders' history, the archive of
# removed agents' unread mail, and each message's attachment files.
INBOX_DIR = "inbox"
SENT_DIR = "sent"
ARCHIVE_DIR = "archive"
ATTACHMENTS_DIR = "attachments"

# Tasks: one record each, the queue index (claim order in the file names) and held-by index.
TASKS_DIR = "tasks"
QUEUE_DIR = f"{TASKS_DIR}/queued"
HELD_DIR = f"{TASKS_DIR}/held"
MARKER_SUFFIX = ".ref"
TASK_SEQUENCE = "counters/tasks.json"
# Sidecar lock names: one per task (every change of it), one for numbering new tasks.
TASK_IDS_LOCK = "task-ids"

# The path-lock table: one record per (path, holder), changed under one sidecar lock.
LOCK_TABLE_DIR = "locks"
LOCK_TABLE_GUARD = "locks"

# Hardware enforcement's book, and the sidecar locks of admission and of an enforcement pass.
PAUSED_DIR = "budgets/paused"
WARNED_DIR = "budgets/warned"
BUDGETS_GUARD = "budgets"
ENFORCE_GUARD = "budgets-enforce"

# mesh watch: per-agent wake state, and who is watching (the sidecar lock `watch`, held by the
# one watcher, and its pid and host for the message a second one gets).
WAKE_DIR = "wake"
WATCH_INFO = "watch.json"
WATCH_LOCK = "watch"

# The audit log: the current file and its rotated predecessors (`events-<time>.jsonl`), rotated
# under the sidecar lock `audit`.
AUDIT_DIR = "audit"
AUDIT_CURRENT = f"{AUDIT_DIR}/events.jsonl"
AUDIT_LOCK = "audit"


def agent_record(name: str) -> str:
    return f"{AGENTS_DIR}/{name}.json"


def heartbeat(name: str) -> str:
    return f"{HEARTBEATS_DIR}/{name}"


def agent_lock(name: str) -> str:
    """The sidecar flock under which an agent's record is decided and written."""
    return f"agent-{name}"


def inbox_new(name: str) -> str:
    return f"{INBOX_DIR}/{name}/new"


def inbox_cur(name: str) -> str:
    return f"{INBOX_DIR}/{name}/cur"


def wake_state(name: str) -> str:
    return f"{WAKE_DIR}/{name}.json"


def audit_rotated(stamp: str) -> str:
    return f"{AUDIT_DIR}/events-{stamp}.jsonl"


def task_record(task_id: str) -> str:
    return f"{TASKS_DIR}/{task_id}.json"


def task_lock(task_id: str) -> str:
    return f"task-{task_id}"


def sent_folder(name: str) -> str:
    return f"{SENT_DIR}/{name}"


def archive_folder(name: str) -> str:
    return f"{ARCHIVE_DIR}/{name}"


def attachment_folder(msg_id: str) -> str:
    return f"{ATTACHMENTS_DIR}/{msg_id}"


def lock_record(path: str, holder: str) -> str:
    """The record of `holder`'s lock on `path`: the path's sha256 names it (any path fits)."""
    import hashlib  # only for locks: loading OpenSSL costs a few ms of start-up

    digest = hashlib.sha256(path.encode("utf-8", "surrogateescape")).hexdigest()
    return f"{LOCK_TABLE_DIR}/{digest}-{holder}.json"
