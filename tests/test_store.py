"""The store and the config: atomicity, symlinks, modes, quarantine, resolution (issue 2)."""

from __future__ import annotations

import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from drasill_cli.backends.directory.store import FileStore
from drasill_cli.config import Config, load_config, resolve_mesh_dir
from drasill_cli.errors import InvalidInput, MeshUnusable
from tests.conftest import MeshRunner


def test_write_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path / "m")
    store.write("things/a.json", {"n": 1})
    store.write("things/a.json", {"n": 2})
    assert store.read("things/a.json") == {"n": 2}
    assert sorted(p.name for p in (tmp_path / "m" / "things").iterdir()) == ["a.json"]
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["schema_version"] == 1


def test_create_has_exactly_one_winner(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path / "m")
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: store.create("x/one.json", {"i": i}), range(64)))
    assert results.count(True) == 1
    winner = results.index(True)
    assert store.read("x/one.json") == {"i": winner}


def test_symlinks_are_never_followed(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path / "m")
    store.write("agents/a.json", {"ok": True})
    secret = tmp_path / "secret.json"
    secret.write_text('{"secret": 1}')
    (tmp_path / "m" / "agents" / "evil.json").symlink_to(secret)
    assert store.read("agents/evil.json") is None
    assert any("symlink" in w for w in store.warnings)
    assert secret.read_text() == '{"secret": 1}'
    (tmp_path / "m" / "agents" / "evil2.json").symlink_to(secret)
    store.write("agents/evil2.json", {"replaced": True})
    assert secret.read_text() == '{"secret": 1}'
    assert not (tmp_path / "m" / "agents" / "evil2.json").is_symlink()


def test_symlinked_subfolder_is_set_aside_never_written_through(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path / "m")
    store.write("meta2.json", {})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "m" / "agents").symlink_to(elsewhere)
    store.write("agents/a.json", {})
    assert list(elsewhere.iterdir()) == []
    assert not (tmp_path / "m" / "agents").is_symlink()
    assert store.read("agents/a.json") == {}
    assert any("quarantined agents" in warning for warning in store.warnings)


def test_private_and_group_shared_modes(tmp_path: Path) -> None:
    private = FileStore.open(tmp_path / "p")
    private.write("a/b.json", {})
    assert stat.S_IMODE((tmp_path / "p").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "p" / "a").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "p" / "a" / "b.json").stat().st_mode) == 0o600
    shared = FileStore.open(tmp_path / "s", group_shared=True)
    shared.write("a/b.json", {})
    assert stat.S_IMODE((tmp_path / "s").stat().st_mode) == 0o2770
    assert stat.S_IMODE((tmp_path / "s" / "a" / "b.json").stat().st_mode) == 0o660
    with pytest.raises(MeshUnusable, match="group_shared"):
        FileStore.open(tmp_path / "s", group_shared=False)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path / "m")
    store.write("meta.json", {"schema_version": 99})
    with pytest.raises(MeshUnusable, match="upgrade"):
        FileStore.open(tmp_path / "m")


def test_quarantine_keeps_the_bytes(tmp_path: Path) -> None:
    store = FileStore.open(tmp_path / "m")
    store.write("tasks/ok.json", {})
    (tmp_path / "m" / "tasks" / "bad.json").write_bytes(b"\x00\xff garbage")
    (tmp_path / "m" / "tasks" / "list.json").write_text("[1, 2]")
    assert store.read("tasks/bad.json") is None
    assert store.read("tasks/list.json") is None
    kept = {p.name: p.read_bytes() for p in (tmp_path / "m" / "quarantine").iterdir()}
    assert b"\x00\xff garbage" in kept.values()
    assert len(store.warnings) == 2


def test_mesh_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("DRASILL_MESH_DIR", raising=False)
    assert resolve_mesh_dir(None, Config()) == tmp_path / "xdg" / "drasill" / "mesh"
    assert resolve_mesh_dir(None, Config(mesh_dir=str(tmp_path / "cfg"))) == tmp_path / "cfg"
    monkeypatch.setenv("DRASILL_MESH_DIR", str(tmp_path / "env"))
    assert resolve_mesh_dir(None, Config(mesh_dir=str(tmp_path / "cfg"))) == tmp_path / "env"
    assert resolve_mesh_dir(tmp_path / "flag", Config()) == tmp_path / "flag"


def test_config_file_is_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    monkeypatch.setenv("DRASILL_CONFIG", str(path))
    assert load_config() == Config()
    path.write_text("group_shared = true\n[lifecycle]\nidle_after = 5\n[budgets]\nram_gb = 8\n")
    config = load_config()
    assert config.group_shared is True
    assert config.lifecycle.idle_after == 5.0
    assert config.budgets.ram_gb == 8.0
    for bad, needle in (
        ("[lifecycle]\nidle_afterr = 5\n", "unknown config key 'lifecycle.idle_afterr'"),
        ("[lifecycle]\nidle_after = 'soon'\n", "lifecycle.idle_after must be"),
        ("[locks]\ndefault_ttl = -3\n", "must not be negative"),
        ("[budgets]\npolicy = 'explode'\n", "budgets.policy"),
        ("group_shared = 1\n", "group_shared must be true or false"),
        ("not toml = = =\n", "not valid TOML"),
    ):
        path.write_text(bad)
        with pytest.raises(InvalidInput, match=needle):
            load_config()


def test_bad_config_exits_2_via_cli(cli: MeshRunner) -> None:
    cli.config("[lifecycle]\nidle_after = 'x'\n")
    done = cli.run("agents", "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["code"] == "invalid-config"


def test_mesh_dir_flag_beats_env(cli: MeshRunner, tmp_path: Path) -> None:
    other = tmp_path / "other"
    cli.json("--mesh-dir", str(other), "register", "alpha")
    assert (other / "agents" / "alpha.json").exists()
    assert not cli.mesh_dir.exists()
    assert os.stat(other).st_mode & 0o777 == 0o700


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown to another uid")
def test_group_shared_mesh_of_another_user_is_accepted_for_group_members(tmp_path: Path) -> None:
    root = tmp_path / "shared"
    FileStore.open(root, group_shared=True).write("agents/a.json", {})
    os.chown(root, 12345, os.getegid())
    assert FileStore.open(root, group_shared=True).read("agents/a.json") == {}
    with pytest.raises(MeshUnusable, match="uid 12345"):
        FileStore.open(root, group_shared=False)
    root.chmod(0o770)
    with pytest.raises(MeshUnusable, match="uid 12345"):
        FileStore.open(root, group_shared=True)


def test_a_marker_linked_between_the_two_looks_is_adopted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process opening a mesh that another process is creating: the marker was not there
    when it looked for it, and is there (with other records) when it lists the folder."""
    root = tmp_path / "mesh"
    FileStore.open(root).write("agents/alpha.json", {"name": "alpha"})  # marker and a record
    store = FileStore.open(root)
    real = store._read_marker
    looks = [0]

    def first_look_misses() -> dict[str, object] | None:
        looks[0] += 1
        return None if looks[0] == 1 else real()

    monkeypatch.setattr(store, "_read_marker", first_look_misses)
    store._check_meta()  # not refused as a foreign folder
    assert store.read("agents/alpha.json") == {"name": "alpha"}
