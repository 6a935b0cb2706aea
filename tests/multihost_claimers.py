"""One simulated host's claimers for tests/test_multihost.py, through the Python API.

Run as `python tests/multihost_claimers.py PREFIX COUNT` with $DRASILL_MESH_URL set. COUNT
threads (claimers `PREFIX-c00`...), each with its own Mesh (its own connection), wait for a
line `go` on stdin; then every claimer calls `tasks.claim_next` until nothing is claimable,
and the round's claims are printed as one JSON line: `[[claimer, task id], ...]`. Stdin's end
stops it. A failure other than "nothing claimable" is printed as `{"error": ...}` and ends it
with exit 1.
"""

from __future__ import annotations

import json
import os
import sys
import threading

from drasill_cli import agents, tasks
from drasill_cli.errors import NegativeOutcome
from drasill_cli.mesh import Mesh


def claim_until_empty(mesh: Mesh, claimer: str, into: list[list[str]]) -> None:
    """Claim with `claimer` until nothing is claimable, adding each win to `into`."""
    while True:
        try:
            task = tasks.claim_next(mesh, claimer)
        except NegativeOutcome:
            return
        into.append([claimer, task["id"]])


def race(
    mesh: Mesh, claimer: str, start: threading.Barrier, won: list[list[str]], failures: list[str]
) -> None:
    """One claimer's part of a round: wait for the others, then claim until nothing is left."""
    try:
        start.wait()
        claim_until_empty(mesh, claimer, won)
    except Exception as error:  # any failure is reported to the test, which fails
        failures.append(f"{claimer}: {type(error).__name__}: {error}")


def main(prefix: str, count: int) -> int:
    claimers = [f"{prefix}-c{i:02d}" for i in range(count)]
    meshes = [Mesh.open() for _ in claimers]
    for claimer in claimers:  # only a registered name claims (issue 27); its life is ours
        agents.register(meshes[0], claimer, pid=os.getpid())
    for line in sys.stdin:
        if line.strip() != "go":
            continue
        won: list[list[str]] = []
        failures: list[str] = []
        start = threading.Barrier(count)
        threads = [
            threading.Thread(target=race, args=(mesh, claimer, start, won, failures))
            for mesh, claimer in zip(meshes, claimers, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            print(json.dumps({"error": failures}), flush=True)
            return 1
        print(json.dumps(won), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], int(sys.argv[2])))
