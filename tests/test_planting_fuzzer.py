"""The planting fuzzer of the Safety contract (issues 13 and 24): damage planted into a live mesh.

Symlinks to a sentinel folder outside the mesh, FIFOs, sockets, folders where files belong,
garbage, deeply nested JSON, 50 MB sparse files, records with bad timestamps, wrong types,
missing keys, Infinity and future times, extreme mtimes and names that are not UTF-8 are
planted at random places in the mesh directory (the root included) while random `mesh`
commands run as several agents, with and without `--json`, some with arguments that are not
UTF-8. The commands include `export`, `import` (of an earlier export, cut short or garbage),
`watch --once`, `lock -- CMD`, the `--wait` variants and big attachments, and some plantings
happen while a command runs. After every command: no traceback, no command past its timeout,
an exit code within the contract, valid JSON under `--json`, and the sentinel folder unchanged
(bytes, mtimes, modes, no new entries). After every round, nothing lost: every message a send
reported is unread, consumed, archived or quarantined, unless a planting deleted it. The
group-shared run does it all on a `group_shared` mesh written by two users (root and
`nobody`); it needs root. The machinery is in tests/planting_support.py.

The short runs run in CI; the long runs (2,000 plantings each, marked slow) by hand:
`.venv/bin/pytest -m slow tests/test_planting_fuzzer.py`. Knobs (environment):
`DRASILL_FUZZ_SEED` (rerun a failure's seed), `DRASILL_FUZZ_PLANTINGS`,
`DRASILL_FUZZ_TIMEOUT` (seconds per command, default 20).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import MeshRunner
from tests.other_user import OtherUser, find_other_user, scratch_dir, shared_group
from tests.planting_support import FUZZ_CONFIG, FuzzRun, env_int, remove_tree, report, summary

SHORT_PLANTINGS = 70
SHORT_GROUP_PLANTINGS = 30
LONG_PLANTINGS = 2_000
GROUP_CONFIG = "group_shared = true\n" + FUZZ_CONFIG

# Failures to tolerate while a fix is on its way, as (pattern, note) pairs: counted and shown in
# the report, kept out of the short runs' verdict (the long runs never tolerate any). None now:
# the export crash on big attachments and FIFOs the widened fuzzer found is fixed in transfer.py.
KNOWN_ISSUES: list[tuple[str, str]] = []


def fuzz(
    cli: MeshRunner,
    work: Path,
    default_seed: int,
    plantings: int,
    *,
    other: OtherUser | None = None,
    known: bool = True,
) -> FuzzRun:
    cli.config(GROUP_CONFIG if other is not None else FUZZ_CONFIG)
    run = FuzzRun(
        work=work,
        env=dict(cli.env),
        seed=env_int("DRASILL_FUZZ_SEED", default_seed),
        plantings=env_int("DRASILL_FUZZ_PLANTINGS", plantings),
        timeout=env_int("DRASILL_FUZZ_TIMEOUT", 20),
        widened=True,
        other=other,
        group_gid=other.gid if other is not None else None,
        known_issues=list(KNOWN_ISSUES) if known else [],
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


@pytest.fixture
def group_fuzz() -> Iterator[tuple[MeshRunner, Path, OtherUser]]:
    """A runner, a work folder and a second user for a group-shared mesh, all where that user
    can reach them (a folder under /tmp; tmp_path is private to root)."""
    other, why = find_other_user(shared_group())
    if other is None:
        pytest.skip(why)
    scratch = scratch_dir("drasill-group-fuzz-")
    try:
        home = scratch / "home"
        home.mkdir(mode=0o755)
        (scratch / "fuzz").mkdir(mode=0o755)
        yield MeshRunner(scratch / "fuzz" / "mesh", home), scratch / "fuzz", other
    finally:
        remove_tree(scratch)


def verdict(run: FuzzRun, plantings: int) -> None:
    if run.run():
        pytest.fail(report(run), pytrace=False)
    assert run.planted >= plantings, summary(run)
    assert not run.lost and not run.tracebacks and not run.sentinel_changes, report(run)


def test_planted_damage_never_breaks_a_command_or_leaks_outside(
    fuzz_cli: MeshRunner, tmp_path: Path
) -> None:
    run = fuzz(fuzz_cli, tmp_path / "fuzz", default_seed=1301, plantings=SHORT_PLANTINGS)
    verdict(run, run.plantings)
    assert run.planted_during and run.sent_tracked, summary(run)  # the widening did its part


def test_planted_damage_on_a_mesh_shared_by_two_users(
    group_fuzz: tuple[MeshRunner, Path, OtherUser],
) -> None:
    cli, work, other = group_fuzz
    run = fuzz(cli, work, default_seed=2401, plantings=SHORT_GROUP_PLANTINGS, other=other)
    verdict(run, run.plantings)
    assert run.commands_as_other, summary(run)


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
def test_planting_fuzzer_long_run(fuzz_cli: MeshRunner, tmp_path: Path) -> None:
    run = fuzz(
        fuzz_cli, tmp_path / "fuzz", default_seed=20261130, plantings=LONG_PLANTINGS, known=False
    )
    run.max_failures = 20
    verdict(run, LONG_PLANTINGS)


@pytest.mark.slow
@pytest.mark.timeout(3 * 3600)
def test_planting_fuzzer_long_run_on_a_mesh_shared_by_two_users(
    group_fuzz: tuple[MeshRunner, Path, OtherUser],
) -> None:
    cli, work, other = group_fuzz
    run = fuzz(cli, work, default_seed=20261206, plantings=LONG_PLANTINGS, other=other, known=False)
    run.max_failures = 20
    verdict(run, LONG_PLANTINGS)


def test_the_ledger_sees_a_message_vanish_unless_a_planting_deleted_it(
    fuzz_cli: MeshRunner, tmp_path: Path
) -> None:
    """The "nothing lost" check can fail: a message file gone without a planting is a loss."""
    run = fuzz(fuzz_cli, tmp_path / "fuzz", default_seed=1, plantings=0)
    run.setup_mesh()
    assert len(run.ledger) >= 5, run.ledger  # the set-up's mail, unread and consumed
    gone, deleted = sorted(run.ledger)[:2]
    for path in (run.mesh / "inbox").rglob(f"*{gone}.json"):
        path.unlink()
    planted = next((run.mesh / "inbox").rglob(f"*{deleted}.json"))
    assert run.planter.clear(str(planted.relative_to(run.mesh)))
    lost = run.check_ledger()
    assert len(lost) == 1 and lost[0].startswith(f"message lost: {gone} "), lost
    assert run.check_ledger() == []  # reported once
