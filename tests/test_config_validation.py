"""The config file is validated by pydantic models (issue 26, point 7), memoized in the user's
cache so that later runs build the config without pydantic; a memo is never trusted blindly."""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from drasill_cli import __version__, config_schema
from drasill_cli import config as config_module
from drasill_cli.config import (
    BUDGET_POLICIES,
    BudgetsConfig,
    Config,
    LifecycleConfig,
    StoreConfig,
    load_config,
    memo_path,
)
from drasill_cli.errors import InvalidInput
from tests.conftest import MeshRunner


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the config lives, with this test's own cache directory."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / "config.toml"
    monkeypatch.setenv("DRASILL_CONFIG", str(path))
    return path


def _refuse_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, a load that validates (rather than use the memo) fails the test."""

    def validate(raw: bytes, path: Path) -> dict[str, object]:
        pytest.fail(f"{path} was validated again instead of read from the memo")

    monkeypatch.setattr(config_module, "_validate", validate)


# ---- one definition: the models and the dataclasses cannot drift -------------------------------


def test_schema_mirrors_the_dataclasses_field_by_field() -> None:
    pairs: list[tuple[object, type]] = [(config_schema.ConfigFile, Config)]
    for name, cls in config_module._SECTIONS.items():
        pairs.append((config_schema.ConfigFile.model_fields[name].annotation, cls))
    for model, cls in pairs:
        assert isinstance(model, type) and issubclass(model, BaseModel)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
        assert set(model.model_fields) == set(fields), cls
        for name, field in fields.items():
            if field.default is not dataclasses.MISSING:
                assert model.model_fields[name].default == field.default, (cls, name)
    policy = config_schema.BudgetsSection.model_fields["policy"].annotation
    assert typing.get_args(policy) == BUDGET_POLICIES


# ---- valid files: unchanged behaviour --------------------------------------------------------


def test_a_valid_file_gives_the_same_config_as_before(config_file: Path) -> None:
    config_file.write_text(
        'mesh_dir = "/srv/mesh"\ngroup_shared = true\n[lifecycle]\nidle_after = 5\n'
        '[budgets]\nram_gb = 8\npolicy = "pause"\n[store]\nfsync = false\n'
        '[tools.mycli]\ncommand = ["mycli", "{prompt}"]\n'
    )
    config = load_config()
    assert config == Config(
        mesh_dir="/srv/mesh",
        group_shared=True,
        lifecycle=LifecycleConfig(idle_after=5.0),
        budgets=BudgetsConfig(ram_gb=8.0, policy="pause"),
        store=StoreConfig(fsync=False),
        tools={"mycli": {"command": ["mycli", "{prompt}"]}},
        source=str(config_file),
    )
    assert type(config.lifecycle.idle_after) is float  # the TOML int became the float it is
    assert load_config() == config  # the memo gives the same


# ---- each class of error: file, key, what is wrong, the fix ----------------------------------


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            "colour = 1\n",
            ["unknown config key 'colour'", "known keys here: audit, bridge, budgets"],
        ),
        ("[locks]\nttl = 1\n", ["unknown config key 'locks.ttl'", "known keys here: default_ttl"]),
        ('[lifecycle]\nidle_after = "soon"\n', ["lifecycle.idle_after must be a number (e.g."]),
        ("[lifecycle]\nmax_attempts = 2.5\n", ["max_attempts must be a whole number (e.g. 3)"]),
        ("[store]\nfsync = 0\n", ["store.fsync must be true or false, got 0"]),
        ("[wake]\nheimdall_socket_dir = 7\n", ["heimdall_socket_dir must be a quoted string"]),
        ("lifecycle = 3\n", ["config key lifecycle must be a table ([lifecycle]), got 3"]),
        ("[budgets]\nvram_gb = inf\n", ["budgets.vram_gb must be a finite number, got inf"]),
        ("[watch]\nhardware_every = -1\n", ["watch.hardware_every must not be negative"]),
        ("[audit]\nmax_bytes = 100\n", ["audit.max_bytes must be at least 1024, got 100"]),
        ("[budgets]\nram_gb = 0\n", ["budgets.ram_gb must be more than 0 (or left out"]),
        ('[budgets]\npolicy = "loud"\n', ["budgets.policy must be one of 'warn', 'pause' or"]),
        ("[lifecycle]\ndead_after = 60\n", ["idle_after (120) must be less than lifecycle.dead"]),
        ("tools = 1\n", ["config key tools must hold one table per tool, e.g. [tools.mycli]"]),
        ("[tools]\nmycli = 1\n", ["config key tools.mycli must hold one table per tool"]),
        (f'mesh_dir = "/{"x" * 5000}"\n', ["mesh_dir is over 4096 characters"]),
        ("not toml = = =\n", ["is not valid TOML", "fix the syntax"]),
        (
            "[locks]\ndefault_ttl = 0\n[messages]\nmax_body_bytes = 0\n",
            ["locks.default_ttl must be more than 0 seconds", "max_body_bytes must be at least 1"],
        ),
    ],
)
def test_each_class_of_error_names_file_key_problem_and_fix(
    config_file: Path, text: str, needles: list[str]
) -> None:
    config_file.write_text(text)
    with pytest.raises(InvalidInput) as caught:
        load_config()
    message = caught.value.message
    assert caught.value.code == "invalid-config"
    assert message.startswith(f"config file {config_file}")
    assert message.endswith(("fix the config file", "fix the syntax"))
    for needle in needles:
        assert needle in message, message
    assert "pydantic" not in message and "Input should" not in message
    assert not memo_path(config_file).exists()  # a bad file is never memoized


def test_many_problems_are_named_five_at_a_time(config_file: Path) -> None:
    config_file.write_text("".join(f"key{n} = 1\n" for n in range(8)))
    with pytest.raises(InvalidInput, match=r"'key4'.*\(and 3 more\); fix the config file$"):
        load_config()


def test_a_bad_config_exits_2_naming_the_file_via_cli(cli: MeshRunner) -> None:
    path = cli.config("[audit]\nkeep = -2\n")
    done = cli.run("agents", "--json")
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "invalid-config"
    assert str(path) in error["message"] and "audit.keep must not be negative" in error["message"]


# ---- the memo --------------------------------------------------------------------------------


def test_a_valid_file_is_memoized_0600_and_read_back_without_validating(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file.write_text("[lifecycle]\nidle_after = 60\n")
    first = load_config()
    memo = memo_path(config_file)
    assert memo.parent == config_file.parent / "cache" / "drasill" / "config"
    assert memo.stat().st_mode & 0o777 == 0o600
    assert memo.parent.stat().st_mode & 0o777 == 0o700
    _refuse_validation(monkeypatch)
    assert load_config() == first
    assert load_config().lifecycle.idle_after == 60.0


def test_an_edited_file_is_validated_again(config_file: Path) -> None:
    config_file.write_text("[lifecycle]\nidle_after = 60\n")
    load_config()
    config_file.write_text("[lifecycle]\nidle_after = -60\n")
    with pytest.raises(InvalidInput, match="must not be negative"):
        load_config()
    config_file.write_text("[lifecycle]\nidle_after = 61\n")
    assert load_config().lifecycle.idle_after == 61.0


def test_a_bad_edit_exits_2_although_a_memo_exists_via_cli(cli: MeshRunner) -> None:
    cli.config("[lifecycle]\nidle_after = 60\n")
    assert cli.run("agents", "--json").returncode == 0
    memos = list((Path(cli.env["XDG_CACHE_HOME"]) / "drasill" / "config").iterdir())
    assert len(memos) == 1
    cli.config("[lifecycle]\nidle_after = 'soon'\n")
    done = cli.run("agents", "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"]["code"] == "invalid-config"
    assert list(memos[0].parent.iterdir()) == memos  # the old memo stays for what it was made for


def _memo_of(text: str) -> dict[str, typing.Any]:
    return {"format": 1, "version": __version__, "text": text}


GOOD = '[lifecycle]\nidle_after = 60\n[wake]\nheimdall_socket_dir = "/run/heimdall"\n'
PLANTED = {"wake": {"heimdall_socket_dir": "/tmp/planted"}, "lifecycle": {"idle_after": 60.0}}


@pytest.mark.parametrize(
    "plant",
    [
        "garbage",
        "not-an-object",
        "other-text",
        "other-release",
        "wrong-type",
        "unknown-key",
        "nan",
        "readable-by-others",
        "symlink",
        "directory",
    ],
)
def test_a_corrupt_or_planted_memo_is_ignored_and_rebuilt(  # noqa: PLR0912 -- one per plant
    config_file: Path, tmp_path: Path, plant: str
) -> None:
    config_file.write_text(GOOD)
    memo = memo_path(config_file)
    memo.parent.mkdir(parents=True, mode=0o700)
    planted: typing.Any = {"key": _memo_of(GOOD), "config": PLANTED}
    if plant == "garbage":
        planted = "\x00{not json"
    elif plant == "not-an-object":
        planted = [1, 2]
    elif plant == "other-text":
        planted["key"] = _memo_of(GOOD + "# another edit\n")
    elif plant == "other-release":
        planted["key"]["version"] = "0.0.0-other"
    elif plant == "wrong-type":
        planted["config"]["lifecycle"]["idle_after"] = "soon"
    elif plant == "unknown-key":
        planted["config"]["evil"] = 1
    elif plant == "nan":
        key = json.dumps(_memo_of(GOOD))
        planted = f'{{"key": {key}, "config": {{"lifecycle": {{"idle_after": NaN}}}}}}'
    text = planted if isinstance(planted, str) else json.dumps(planted)
    target = memo
    if plant in ("symlink", "directory"):
        target = tmp_path / "elsewhere.json"
    if plant == "directory":
        memo.mkdir()
    else:
        target.write_text(text)
        target.chmod(0o644 if plant == "readable-by-others" else 0o600)
    if plant == "symlink":
        memo.symlink_to(target)
    config = load_config()
    assert config.heimdall_socket_dir() == Path("/run/heimdall")
    assert config.lifecycle.idle_after == 60.0
    if plant == "directory":
        return  # cannot be replaced by a file: validated each time, and that is all
    assert not memo.is_symlink() and memo.stat().st_mode & 0o777 == 0o600  # rebuilt
    assert json.loads(memo.read_text())["config"]["wake"]["heimdall_socket_dir"] == "/run/heimdall"
    if plant == "symlink":
        assert json.loads(target.read_text())["config"] == PLANTED  # the link's target untouched


def test_an_unwritable_cache_only_costs_a_validation(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    config_file.write_text(GOOD)
    assert load_config().lifecycle.idle_after == 60.0
    assert load_config().lifecycle.idle_after == 60.0
    assert blocker.read_text() == ""


def test_a_file_that_json_cannot_hold_is_validated_each_time(config_file: Path) -> None:
    config_file.write_text("[tools.mycli]\ncommand = ['mycli']\nsince = 2024-01-01\n")
    assert "mycli" in load_config().tools
    assert not memo_path(config_file).exists()
    assert "mycli" in load_config().tools


def test_an_empty_file_or_dev_null_gives_the_defaults_without_a_memo(config_file: Path) -> None:
    config_file.write_text("")
    assert load_config() == Config(source=str(config_file))
    assert load_config(Path(os.devnull)) == Config(source=os.devnull)
    assert not memo_path(config_file).parent.exists()
