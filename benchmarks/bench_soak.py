"""The PostgreSQL soak's figures (issue 23): `python -m benchmarks.bench_soak [--full]`.

Runs tests/pg_soak.py on a dedicated throwaway cluster (it is restarted): by default the CI size
(16 agents on 4 simulated hosts, 20 s, one restart); `--full` the slow test's size (64 agents,
4 hosts, 5 minutes, two restarts); or any size by option. Prints the violations (none when the
mesh held), messages/s, p50/p99 of send, of a consume call and of send-to-consume, and each
restart's gap (from the server going down to the first operation that succeeded after it was
stopped). Opt-in: `python -m benchmarks` does not run it (it takes minutes at full size).
Needs root (`unshare --uts`) and the PostgreSQL server binaries.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

from tests.pg_soak import Sizes, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_soak")
    parser.add_argument("--full", action="store_true", help="64 agents, 4 hosts, 5 min, 2 restarts")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--hosts", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--restarts", type=int)
    parser.add_argument("--json", action="store_true", help="print the whole outcome as JSON")
    args = parser.parse_args(argv)
    sizes = (
        Sizes(64, 4, 300, 2, down_for=3, prune_every=30, tasks_per_worker=100)
        if args.full
        else Sizes()
    )
    given = {k: v for k in ("workers", "hosts", "seconds", "restarts") if (v := getattr(args, k))}
    sizes = Sizes(**{**asdict(sizes), **given})
    with tempfile.TemporaryDirectory(prefix="mesh-soak-") as folder:
        outcome = run(sizes, Path(folder))
    if args.json:
        print(json.dumps(asdict(outcome), indent=2))
    else:
        _print(outcome.sizes, outcome.figures, outcome.violations)
    return 1 if outcome.violations else 0


def _print(sizes: dict[str, object], fig: dict[str, object], violations: list[str]) -> None:
    print(
        f"soak: {sizes['workers']} agents on {sizes['hosts']} hosts, {sizes['seconds']} s, "
        f"{sizes['restarts']} restarts (down {sizes['down_for']} s), prune every "
        f"{sizes['prune_every']} s on every host"
    )
    print(f"  counts: {fig.get('counts')}")
    print(f"  messages/s: {fig.get('messages_per_s')}")
    for key in ("send", "consume_call", "send_to_consume"):
        print(f"  {key}: {fig.get(key)}")
    print(f"  restarts: {fig.get('restarts')}")
    print(f"  failed attempts (retried): {fig.get('failed_attempts')}; prunes: {fig.get('prunes')}")
    print(f"  violations: {violations or 'none'}")


if __name__ == "__main__":
    sys.exit(main())
