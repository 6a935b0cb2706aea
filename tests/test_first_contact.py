"""The small things a newcomer meets first, each through the CLI: paths, doctor, wording.

The CLI tests run on a directory mesh and on a PostgreSQL mesh."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import MeshRunner

pytestmark = pytest.mark.both_backends


@pytest.mark.directory_only("where a mesh directory is looked for")
def test_relative_mesh_dir_in_the_environment_is_refused(cli: MeshRunner, tmp_path: Path) -> None:
    done = cli.run("agents", env={"DRASILL_MESH_DIR": "mesh"}, cwd=tmp_path)
    assert done.returncode == 2
    assert "DRASILL_MESH_DIR is a relative path" in done.stderr
    assert 'DRASILL_MESH_DIR="$PWD/mesh"' in done.stderr
    assert not (tmp_path / "mesh").exists()
    relative_flag = cli.run("--mesh-dir", "here", "register", "alice", cwd=tmp_path)
    assert relative_flag.returncode == 0, relative_flag.stderr  # typed now, meant now
    assert (tmp_path / "here" / "agents" / "alice.json").exists()


@pytest.mark.directory_only("where a mesh directory is looked for")
def test_relative_mesh_dir_in_the_config_is_refused(cli: MeshRunner) -> None:
    cli.config('mesh_dir = "mesh"\n')
    done = cli.run("agents", env={"DRASILL_MESH_DIR": ""})
    assert done.returncode == 2
    assert "mesh_dir in" in done.stderr and "relative path" in done.stderr


def test_lock_on_a_missing_path_is_granted_with_a_word(cli: MeshRunner, tmp_path: Path) -> None:
    cli.register("alice")
    missing = tmp_path / "not-there.py"
    done = cli.run("lock", str(missing), "--as", "alice")
    assert done.returncode == 0
    assert "does not exist (yet)" in done.stderr
    present = tmp_path / "there.py"
    present.write_text("")
    quiet = cli.run("lock", str(present), "--as", "alice")
    assert "does not exist" not in quiet.stderr


def test_send_all_with_nobody_registered_exits_1(cli: MeshRunner) -> None:
    done = cli.run("send", "all", "anyone?")
    assert done.returncode == 1
    assert done.stderr.startswith("error: nothing was sent")


def test_register_vram_without_a_gpu_says_no_gpu(cli: MeshRunner) -> None:
    if "gpu" in cli.json("hw"):
        pytest.skip("this machine has a GPU")
    done = cli.run("register", "alice", "--vram-gb", "4")
    assert done.returncode == 1
    assert "no GPU was found" in done.stderr
    assert "0 GiB is free" not in done.stderr and " GB" not in done.stderr


@pytest.mark.directory_only("never opens a mesh")
def test_prompt_without_a_name_reads_as_english(cli: MeshRunner) -> None:
    text = cli.run("prompt").stdout
    assert text.startswith("You are an agent on a mesh")
    assert "agent $DRASILL_AGENT" not in text
    assert cli.run("prompt", "alice").stdout.startswith("You are agent alice on a mesh")


@pytest.mark.directory_only("refused before the mesh is opened")
def test_config_type_errors_speak_toml(cli: MeshRunner) -> None:
    cli.config('[lifecycle]\nidle_after = "soon"\n[budgets]\n')
    done = cli.run("agents")
    assert done.returncode == 2
    assert "must be a number (e.g. 2.5)" in done.stderr and "float" not in done.stderr
    cli.config("group_shared = 1\n")
    assert "must be true or false" in cli.run("agents").stderr


def test_prune_dry_run_says_when_there_is_nothing_to_do(cli: MeshRunner) -> None:
    done = cli.run("prune", "--dry-run")
    assert done.returncode == 0
    assert done.stdout.startswith("nothing to prune")
    assert cli.run("prune").stdout == ""  # cron stays quiet


def test_a_completed_task_does_not_show_tries_0(cli: MeshRunner) -> None:
    cli.register("alice")
    task = cli.json("task", "add", "one")
    cli.json("claim", task["id"], "--as", "alice")
    cli.json("task", "done", task["id"], "--as", "alice")
    listing = cli.run("task", "list", env={"COLUMNS": "120"}).stdout
    header, row = listing.splitlines()[:2]
    assert "tries" not in header and "requeued" in header
    column = header.index("requeued")
    assert row[column : column + len("requeued")].strip() == "-"


def test_doctor_names_a_missing_or_directory_config(cli: MeshRunner, tmp_path: Path) -> None:
    missing = json.loads(
        cli.run("doctor", "--json", env={"DRASILL_CONFIG": str(tmp_path / "nope.toml")}).stdout
    )
    config = next(c for c in missing["checks"] if c["name"] == "config")
    assert config["status"] == "warn" and "does not exist" in config["detail"]
    folder = json.loads(cli.run("doctor", "--json", env={"DRASILL_CONFIG": str(tmp_path)}).stdout)
    config = next(c for c in folder["checks"] if c["name"] == "config")
    assert config["status"] == "fail" and "is a directory" in config["detail"]
    assert "permissions" not in config["detail"]


@pytest.mark.directory_only("doctor's checks of a mesh directory")
def test_doctor_fails_mesh_entries_when_the_mesh_path_is_a_file(
    cli: MeshRunner, tmp_path: Path
) -> None:
    file = tmp_path / "a-file"
    file.write_text("x")
    done = cli.run("doctor", "--json", env={"DRASILL_MESH_DIR": str(file)})
    assert done.returncode == 1
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert checks["mesh-entries"]["status"] == "fail"
    assert "not a directory" in checks["mesh-entries"]["detail"]


def test_doctor_lines_line_up_and_say_where_heimdall_comes_from(cli: MeshRunner) -> None:
    done = cli.run("doctor", env={"PATH": "/usr/bin:/bin"})
    lines = [line for line in done.stdout.splitlines() if line[:4] in ("ok  ", "warn", "FAIL")]
    starts = {len(line) - len(line[5:].split(None, 1)[1]) for line in lines}
    assert len(starts) == 1, lines  # every detail starts in the same column
    heimdall = done.stdout.split("heimdall", 1)[1]
    if "not found" in heimdall.splitlines()[0]:
        assert "cargo install --git https://github.com/nazq/heimdall" in heimdall


def test_watch_prints_sentences_not_json(cli: MeshRunner) -> None:
    cli.json("register", "ghost", "--pid", "999999")
    done = cli.run("watch", "--once")
    assert done.returncode == 0, done.stderr
    assert "{" not in done.stderr, done.stderr
    assert "lifecycle: 1 agent(s) marked dead" in done.stderr
