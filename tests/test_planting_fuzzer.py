"""The planting fuzzer of the Safety contract (issue 13): damage planted into a live mesh.

Symlinks to a sentinel folder outside the mesh, FIFOs, sockets, folders where files belong,
garbage, deeply nested JSON, 50 MB sparse files, records with bad timestamps, wrong types,
missing keys, Infinity and future times, extreme mtimes and names that are not UTF-8 are
planted at random places in the mesh directory (the root included) while random `mesh`
commands run as several agents, with and without `--json`, some with arguments that are not
UTF-8. After every command: no traceback, no command past its timeout, an exit code within
the contract, valid JSON under `--json`, and the sentinel folder unchanged (bytes, mtimes,
modes, no new entries). The machinery is in tests/planting_support.py.

The short run (about 80 plantings) runs in CI; the long run (2,000 plantings, marked slow) by
hand: `.venv/bin/pytest -m slow tests/test_planting_fuzzer.py`. Knobs (environment):
`DRASILL_FUZZ_SEED` (rerun a failure's seed), `DRASILL_FUZZ_PLANTINGS`,
`DRASILL_FUZZ_TIMEOUT` (seconds per command, default 20).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import MeshRunner
from tests.planting_support import FUZZ_CONFIG, FuzzRun, env_int, report

SHORT_PLANTINGS = 70
LONG_PLANTINGS = 2_000


def fuzz(cli: MeshRunner, tmp_path: Path, default_seed: int, plantings: int) -> FuzzRun:
    cli.config(FUZZ_CONFIG)
    run = FuzzRun(
        work=tmp_path / "fuzz",
        env=dict(cli.env),
        seed=env_int("DRASILL_FUZZ_SEED", default_seed),
        plantings=env_int("DRASILL_FUZZ_PLANTINGS", plantings),
        timeout=env_int("DRASILL_FUZZ_TIMEOUT", 20),
    )
    run.work.mkdir(exist_ok=True)
    return run


@pytest.fixture
def fuzz_cli(tmp_path: Path) -> MeshRunner:
    """A runner whose mesh, sentinel and project live side by side under tmp_path/fuzz."""
    home = tmp_path / "home"
    home.mkdir()
    (tmp_path / "fuzz").mkdir()
    return MeshRunner(tmp_path / "fuzz" / "mesh", home)


def test_planted_damage_never_breaks_a_command_or_leaks_outside(
    fuzz_cli: MeshRunner, tmp_path: Path
) -> None:
    run = fuzz(fuzz_cli, tmp_path, default_seed=1301, plantings=SHORT_PLANTINGS)
    if run.run():
        pytest.fail(report(run), pytrace=False)
    assert run.planted >= run.plantings


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
def test_planting_fuzzer_long_run(fuzz_cli: MeshRunner, tmp_path: Path) -> None:
    run = fuzz(fuzz_cli, tmp_path, default_seed=20261130, plantings=LONG_PLANTINGS)
    run.max_failures = 20
    if run.run():
        pytest.fail(report(run), pytrace=False)
    assert run.planted >= LONG_PLANTINGS
