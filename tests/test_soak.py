"""Issue 23's soak: agents on simulated hosts send, consume, claim, lock and heartbeat on one
PostgreSQL mesh while its server is restarted and prune runs from cron on every host; nothing
is lost, nothing duplicated, no task claimed by two, no lock held by two (tests/soak.py).

The CI version is short (16 agents on 4 hosts for 15 s, one restart); the full one (64 agents,
4 hosts, 5 minutes, two restarts) is `-m slow`. Each runs its own throwaway cluster, since it
restarts it. `python -m benchmarks.bench_soak` prints the figures.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import pg_cluster
from tests.soak import Sizes, run, unshare_refusal

_REFUSAL = unshare_refusal()
pytestmark = [
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


def test_soak_short(tmp_path: Path) -> None:
    _soak(Sizes(workers=16, hosts=4, seconds=15, restarts=1, prune_every=5), tmp_path)


@pytest.mark.slow
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
