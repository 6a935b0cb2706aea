"""Issue 23's soak: agents on simulated hosts send, consume, claim, lock and heartbeat on one
PostgreSQL mesh while its server is restarted and prune runs from cron on every host; nothing
is lost, nothing duplicated, no task claimed by two, no lock held by two (tests/pg_soak.py).

The CI version is short (16 agents on 4 hosts for 15 s, one restart); the full one (64 agents,
4 hosts, 5 minutes, two restarts) is `-m slow`. Each runs its own throwaway cluster, since it
restarts it. `python -m benchmarks.bench_soak` prints the figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests import pg_cluster
from tests.pg_soak import Outcome, Sizes, check, run, unshare_refusal

_REFUSAL = unshare_refusal()
needs_hosts_and_server = [
    pytest.mark.skipif(
        _REFUSAL is not None, reason=f"simulated hosts need `unshare --uts` (root): {_REFUSAL}"
    ),
    pytest.mark.skipif(
        pg_cluster.server_bindir() is None, reason="needs the PostgreSQL server binaries"
    ),
]


def _soak(sizes: Sizes, tmp_path: Path) -> None:
    outcome = run(sizes, tmp_path)
    assert outcome.violations == [], outcome.violations
    counts = outcome.figures["counts"]
    # The run did work on every front, and across the restarts.
    assert counts["sent"] > 0 and counts["received"] == counts["sent"], counts
    assert counts["tasks_completed"] > 0 and counts["lock_holds"] > 0, counts
    assert len(outcome.figures["restarts"]) == sizes.restarts
    assert all(gap["gap_s"] is not None for gap in outcome.figures["restarts"]), outcome.figures
    assert outcome.figures["prunes"], "prune never ran"


@needs_hosts_and_server[0]
@needs_hosts_and_server[1]
def test_soak_short(tmp_path: Path) -> None:
    _soak(Sizes(workers=16, hosts=4, seconds=15, restarts=1, prune_every=5), tmp_path)


@pytest.mark.slow
@needs_hosts_and_server[0]
@needs_hosts_and_server[1]
def test_soak_full(tmp_path: Path) -> None:
    _soak(
        Sizes(
            workers=64,
            hosts=4,
            seconds=300,
            restarts=2,
            down_for=3,
            prune_every=30,
            tasks_per_worker=100,
        ),
        tmp_path,
    )


# ---- the checks themselves catch what they are for (synthetic ledgers, no server) -------------


def _violations(records: dict[str, list[dict[str, Any]]], board: dict[str, Any]) -> list[str]:
    outcome = Outcome({})
    check(records, board, outcome)
    return outcome.violations


def _send(msg: str, to: str) -> dict[str, Any]:
    return {"op": "send", "id": msg, "to": to, "t0": 1.0, "t1": 1.1, "tries": 1}


def _recv(msg: str) -> dict[str, Any]:
    return {"op": "recv", "id": msg, "sent": 1.0, "t": 2.0}


def test_the_checks_pass_a_clean_ledger() -> None:
    records = {
        "a": [_send("a:1", "b"), {"op": "lock", "enter": 1.0, "exit": 2.0}],
        "b": [_recv("a:1"), {"op": "lock", "enter": 2.0, "exit": 3.0}],
    }
    assert _violations(records, {}) == []


@pytest.mark.parametrize(
    ("records", "found"),
    [
        ({"a": [_send("a:1", "b")], "b": []}, "never received"),
        ({"a": [_send("a:1", "b")], "b": [_recv("a:1"), _recv("a:1")]}, "more than once"),
        ({"a": [], "b": [_recv("a:9")]}, "no send returned"),
        ({"a": [_send("a:1", "b")], "c": [_recv("a:1")]}, "by another agent"),
        (
            {
                "a": [{"op": "lock", "enter": 1.0, "exit": 2.0}],
                "b": [{"op": "lock", "enter": 1.5, "exit": 2.5}],
            },
            "overlapping holds",
        ),
    ],
)
def test_the_checks_catch_a_loss_a_duplicate_and_an_overlap(
    records: dict[str, list[dict[str, Any]]], found: str
) -> None:
    violations = _violations(records, {})
    assert any(found in line for line in violations), violations


def _claimed(task: str, at: float, until: float) -> list[dict[str, Any]]:
    return [{"op": "claim", "task": task, "t": at}, {"op": "finishing", "task": task, "t": until}]


def test_the_checks_catch_a_task_claimed_twice_or_left_claimed() -> None:
    done = {"T1": {"id": "T1", "state": "completed", "claimed_by": "a"}}
    twice = {"a": _claimed("T1", 1.0, 2.0), "b": _claimed("T1", 1.5, 2.5)}
    assert any("claimed by 2 workers" in line for line in _violations(twice, done))
    left = {"T1": {"id": "T1", "state": "claimed", "claimed_by": "a"}}
    assert any("left claimed" in line for line in _violations({"a": []}, left))
    assert _violations({"a": _claimed("T1", 1.0, 2.0)}, done) == []
