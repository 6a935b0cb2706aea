"""The hooks' core (`drasill_cli.hooks`): each CLI's documented payloads (tests/fixtures/hooks)
driven through `run.main` against a real mesh on both backends, and the answers checked against
each CLI's protocol; plus the settings merge, the patch parser and the identity rules."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from drasill_cli import agents, locks, messages, tasks
from drasill_cli.hooks import decide, identity, run, settings
from drasill_cli.hooks.patch import patch_paths
from drasill_cli.mesh import Mesh
from tests.conftest import MeshRunner

pytestmark = pytest.mark.both_backends

FIXTURES = Path(__file__).parent / "fixtures" / "hooks"
CLIS = ("claude", "codex", "gemini", "copilot")


def payload(cli: str, name: str, cwd: Path, **changes: Any) -> str:
    text = (FIXTURES / cli / f"{name}.json").read_text().replace("${CWD}", str(cwd))
    return json.dumps({**json.loads(text), **changes})


def hook(
    mesh: Mesh, cli: str, event: str, stdin: str, env: dict[str, str] | None = None
) -> tuple[int, dict[str, Any] | None, str]:
    """One hook call in-process: (exit status, stdout's JSON or None when empty, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    code = run.main(cli, event, io.StringIO(stdin), out, err, env or {}, mesh=mesh)
    text = out.getvalue()
    return code, (json.loads(text) if text else None), err.getvalue()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """The session's working directory (not a git work tree: lock keys are absolute paths)."""
    place = tmp_path / "work"
    (place / "src").mkdir(parents=True)
    (place / "src" / "app.py").write_text("print('hi')\n")
    return place


def two_agents(mesh: Mesh) -> None:
    agents.register(mesh, "alice")
    agents.register(mesh, "bob")


def denial(cli: str, answer: dict[str, Any] | None) -> str:
    """The refusal's reason, checked to be in the CLI's blocking form."""
    assert answer is not None
    if cli in ("claude", "codex"):
        out = answer["hookSpecificOutput"]
        assert out["hookEventName"] == "PreToolUse"
        assert out["permissionDecision"] == "deny"
        return str(out["permissionDecisionReason"])
    if cli == "gemini":
        assert answer["decision"] == "deny"
        return str(answer["reason"])
    assert answer["permissionDecision"] == "deny"
    return str(answer["permissionDecisionReason"])


def context(cli: str, event: str, answer: dict[str, Any] | None) -> str:
    """The text put into the model's context, checked to be in the CLI's context field."""
    assert answer is not None
    if cli == "copilot":
        return str(answer["additionalContext"])
    native = {
        ("claude", "post-tool"): "PostToolUse",
        ("codex", "post-tool"): "PostToolUse",
        ("gemini", "post-tool"): "AfterTool",
        ("claude", "prompt"): "UserPromptSubmit",
        ("codex", "prompt"): "UserPromptSubmit",
        ("gemini", "prompt"): "BeforeAgent",
        ("claude", "session-start"): "SessionStart",
        ("codex", "session-start"): "SessionStart",
        ("gemini", "session-start"): "SessionStart",
    }[(cli, event)]
    out = answer["hookSpecificOutput"]
    assert out["hookEventName"] == native
    return str(out["additionalContext"])


def stop_reason(cli: str, answer: dict[str, Any] | None) -> str:
    """The reason a stop was refused, checked to be in the CLI's form (the turn continues)."""
    assert answer is not None
    assert answer["decision"] == ("deny" if cli == "gemini" else "block")
    return str(answer["reason"])


PRE_TOOL_PATHS = {  # what each CLI's pre-tool fixture writes, relative to the cwd
    "claude": ["src/app.py"],
    "codex": ["src/new.py", "src/app.py", "src/main.py", "src/old.py"],
    "gemini": ["src/app.py"],
    "copilot": ["src/app.py"],
}


# ---- edits --------------------------------------------------------------------------------


@pytest.mark.parametrize("cli_name", CLIS)
def test_a_held_file_is_refused_naming_holder_mode_and_lease_end(
    cli: MeshRunner, mesh: Mesh, work: Path, cli_name: str
) -> None:
    two_agents(mesh)
    held = PRE_TOOL_PATHS[cli_name][-1]  # codex: the last path of the patch (a deleted file)
    [lock] = locks.acquire(mesh, [str(work / held)], "bob", mode="co_write")
    code, answer, _ = hook(
        mesh, cli_name, "pre-tool", payload(cli_name, "pre-tool", work), {"DRASILL_AGENT": "alice"}
    )
    assert code == 0
    reason = denial(cli_name, answer)
    assert "bob holds a co_write lock" in reason and lock["expires_at"] in reason
    assert [(x["holder"], x["mode"]) for x in locks.list_locks(mesh)] == [("bob", "co_write")]


@pytest.mark.parametrize("cli_name", CLIS)
def test_a_free_file_is_taken_with_a_write_lock_on_every_path(
    cli: MeshRunner, mesh: Mesh, work: Path, cli_name: str
) -> None:
    two_agents(mesh)
    code, answer, err = hook(
        mesh, cli_name, "pre-tool", payload(cli_name, "pre-tool", work), {"DRASILL_AGENT": "alice"}
    )
    assert (code, answer, err) == (0, None, "")
    taken = {lock["path"]: lock for lock in mesh.backend.locks.all()}
    wanted = {os.path.realpath(work / path) for path in PRE_TOOL_PATHS[cli_name]}
    assert set(taken) == wanted
    assert all(lock["holder"] == "alice" and lock["mode"] == "write" for lock in taken.values())
    assert all(lock[decide.HOOK_KEY]["cli"] == cli_name for lock in taken.values())
    # Bob's edit of the same file is now refused, naming alice.
    _, answer, _ = hook(
        mesh, cli_name, "pre-tool", payload(cli_name, "pre-tool", work), {"DRASILL_AGENT": "bob"}
    )
    assert "alice holds a write lock" in denial(cli_name, answer)


def test_a_lock_in_a_git_work_tree_is_repository_relative(
    cli: MeshRunner, mesh: Mesh, work: Path
) -> None:
    git = ["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "root"], check=True)
    agents.register(mesh, "alice")
    hook(mesh, "gemini", "pre-tool", payload("gemini", "pre-tool-replace", work),
         {"DRASILL_AGENT": "alice"})  # fmt: skip
    [lock] = locks.list_locks(mesh)
    assert lock["path"].startswith("git:") and lock["repository_path"] == "src/app.py"


def test_the_agents_own_lock_is_renewed_not_taken_over_by_the_hook(
    cli: MeshRunner, mesh: Mesh, work: Path
) -> None:
    agents.register(mesh, "alice")
    locks.acquire(mesh, [str(work / "src")], "alice", mode="write")  # the folder, by hand
    code, answer, _ = hook(mesh, "claude", "pre-tool", payload("claude", "pre-tool-edit", work),
                           {"DRASILL_AGENT": "alice"})  # fmt: skip
    assert (code, answer) == (0, None)
    [lock] = mesh.backend.locks.all()
    assert lock["path"] == os.path.realpath(work / "src") and decide.HOOK_KEY not in lock
    decide.release_hook_locks(mesh, "alice")  # session end: the agent's own lock stays
    assert len(mesh.backend.locks.all()) == 1


def test_hook_locks_are_released_when_the_task_ends_and_at_session_end(
    cli: MeshRunner, mesh: Mesh, work: Path
) -> None:
    agents.register(mesh, "alice")
    env = {"DRASILL_AGENT": "alice"}
    task = tasks.add_task(mesh, "edit the app")
    tasks.claim(mesh, "alice", task["id"])
    hook(mesh, "claude", "pre-tool", payload("claude", "pre-tool", work), env)
    hook(mesh, "claude", "pre-tool", payload("claude", "pre-tool-notebook", work), env)
    hook(mesh, "claude", "pre-tool", payload("claude", "pre-tool-edit", work), env)  # renewed
    assert {lock[decide.HOOK_KEY]["task"] for lock in mesh.backend.locks.all()} == {task["id"]}
    assert len(mesh.backend.locks.all()) == 2
    hook(mesh, "claude", "post-tool", payload("claude", "post-tool", work), env)
    assert len(mesh.backend.locks.all()) == 2  # the task is still open
    tasks.done(mesh, task["id"], "alice")
    hook(mesh, "claude", "post-tool", payload("claude", "post-tool", work), env)
    assert mesh.backend.locks.all() == []
    # Without a task: kept until the session ends.
    hook(mesh, "claude", "pre-tool", payload("claude", "pre-tool", work), env)
    hook(mesh, "claude", "post-tool", payload("claude", "post-tool", work), env)
    assert len(mesh.backend.locks.all()) == 1
    hook(mesh, "claude", "session-end", payload("claude", "session-end", work), env)
    assert mesh.backend.locks.all() == []


# ---- mail ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("cli_name", "event"), [
    ("claude", "post-tool"), ("codex", "prompt"), ("gemini", "post-tool"),
    ("gemini", "prompt"), ("copilot", "post-tool"),
])  # fmt: skip
def test_mail_is_delivered_once_urgent_first_five_at_a_time(
    cli: MeshRunner, mesh: Mesh, work: Path, cli_name: str, event: str
) -> None:
    two_agents(mesh)
    for number in range(6):
        messages.send(mesh, "alice", f"note {number}", sender="bob")
    messages.send(mesh, "alice", "the build is broken", sender="bob", priority="urgent")
    env = {"DRASILL_AGENT": "alice"}
    stdin = payload(cli_name, event, work)
    _, answer, _ = hook(mesh, cli_name, event, stdin, env)
    first = context(cli_name, event, answer)
    assert first.index("the build is broken") < first.index("note 0")
    assert [f"note {n}" in first for n in range(6)] == [True] * 4 + [False] * 2
    assert "2 more message(s) wait" in first
    _, answer, _ = hook(mesh, cli_name, event, stdin, env)
    second = context(cli_name, event, answer)
    assert "note 4" in second and "note 5" in second and "more message" not in second
    assert hook(mesh, cli_name, event, stdin, env) == (0, None, "")
    assert messages.unread_count(mesh, "alice") == 0


# ---- stop ---------------------------------------------------------------------------------


@pytest.mark.parametrize("cli_name", CLIS)
def test_stop_is_refused_with_mail_and_allowed_when_already_continuing(
    cli: MeshRunner, mesh: Mesh, work: Path, cli_name: str
) -> None:
    two_agents(mesh)
    messages.send(mesh, "alice", "please rebase first", sender="bob")
    env = {"DRASILL_AGENT": "alice"}
    again = payload(cli_name, "stop", work, stop_hook_active=True)
    assert hook(mesh, cli_name, "stop", again, env) == (0, None, "")
    assert messages.unread_count(mesh, "alice") == 1  # not taken when the stop goes ahead
    _, answer, _ = hook(mesh, cli_name, "stop", payload(cli_name, "stop", work), env)
    assert "please rebase first" in stop_reason(cli_name, answer)
    assert hook(mesh, cli_name, "stop", payload(cli_name, "stop", work), env) == (0, None, "")


def test_a_claimed_open_task_is_reminded_once(cli: MeshRunner, mesh: Mesh, work: Path) -> None:
    agents.register(mesh, "alice")
    task = tasks.add_task(mesh, "write the parser")
    tasks.claim(mesh, "alice", task["id"])
    env = {"DRASILL_AGENT": "alice"}
    _, answer, _ = hook(mesh, "codex", "stop", payload("codex", "stop", work), env)
    assert f"mesh task done {task['id']}" in stop_reason("codex", answer)
    assert hook(mesh, "codex", "stop", payload("codex", "stop", work), env) == (0, None, "")


# ---- session, identity, failures ----------------------------------------------------------


@pytest.mark.parametrize("cli_name", ["claude", "codex", "gemini"])
def test_session_start_registers_the_agent_and_gives_the_prompt(
    cli: MeshRunner, mesh: Mesh, work: Path, cli_name: str
) -> None:
    code, answer, _ = hook(mesh, cli_name, "session-start", payload(cli_name, "session-start",
                           work), {"DRASILL_AGENT": "carol"})  # fmt: skip
    assert code == 0
    assert "You are agent carol" in context(cli_name, "session-start", answer)
    record = agents.get(mesh, "carol")
    assert record.tool == cli_name and record.cwd == str(work)
    proc = identity.cli_process(identity.ancestors())
    assert record.pid == (proc.pid if proc else None)


def test_no_identity_has_no_effect(cli: MeshRunner, mesh: Mesh, work: Path) -> None:
    two_agents(mesh)
    messages.send(mesh, "alice", "hello", sender="bob")
    before = cli.snapshot()
    for env in ({}, {"DRASILL_AGENT": "nobody"}):
        for cli_name in CLIS:
            for event in ("pre-tool", "post-tool", "prompt", "stop"):
                stdin = payload(cli_name, event, work)
                assert hook(mesh, cli_name, event, stdin, env) == (0, None, ""), (cli_name, event)
    assert cli.snapshot() == before


def test_identity_from_an_ancestor_process(cli: MeshRunner, mesh: Mesh, work: Path) -> None:
    two_agents(mesh)
    agents.register(mesh, "dave", pid=os.getppid(), replace=True)
    messages.send(mesh, "dave", "found you", sender="bob")
    _, answer, _ = hook(mesh, "gemini", "post-tool", payload("gemini", "post-tool", work), {})
    assert "found you" in context("gemini", "post-tool", answer)


def test_a_recycled_pid_lends_no_identity() -> None:
    from drasill_cli import liveness

    assert identity.this_host() == liveness.hostname()
    chain = identity.ancestors(os.getpid())
    me = chain[0]
    assert me.pid == os.getpid()
    recorded = identity.Registered("dave", me.pid, me.started, "h")
    assert identity.agent_among(chain, [recorded], "h") == "dave"
    assert identity.agent_among(chain, [recorded], "other-host") is None
    recycled = identity.Registered("dave", me.pid, me.started - 3600, "h")
    assert identity.agent_among(chain, [recycled], "h") is None


def test_an_error_inside_the_hook_lets_the_edit_go_ahead_and_says_so(
    cli: MeshRunner, mesh: Mesh, work: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents.register(mesh, "alice")

    def broken(*_args: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(decide.HANDLERS, "pre-tool", broken)
    code, answer, err = hook(mesh, "claude", "pre-tool", payload("claude", "pre-tool", work),
                             {"DRASILL_AGENT": "alice"})  # fmt: skip
    assert code == 0 and answer is not None and "hookSpecificOutput" not in answer
    assert "disk on fire" in answer["systemMessage"] and "goes ahead" in err
    assert "Traceback" not in err


def test_an_unreachable_mesh_lets_the_action_go_ahead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DRASILL_MESH_DIR", raising=False)
    monkeypatch.setenv("DRASILL_MESH_URL", "postgresql://mesh@127.0.0.1:1/none")
    out, err = io.StringIO(), io.StringIO()
    stdin = io.StringIO(payload("codex", "pre-tool", Path("/tmp")))
    assert run.main("codex", "pre-tool", stdin, out, err, {"DRASILL_AGENT": "alice"}) == 0
    answer = json.loads(out.getvalue())
    assert "hookSpecificOutput" not in answer and "mesh unreachable" in answer["systemMessage"]


def test_an_unknown_cli_or_event_answers_nothing_and_exits_0() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run.main("aider", "stop", io.StringIO("{}"), out, err, {}) == 0
    assert out.getvalue() == "" and "unknown CLI or event" in err.getvalue()


def test_the_hook_path_imports_no_command_layer_nor_heavy_module(tmp_path: Path) -> None:
    code = (
        "import io, sys; from drasill_cli.hooks import run; "
        "run.main('claude', 'post-tool', io.StringIO('{}'), io.StringIO(), io.StringIO(), "
        "{'DRASILL_AGENT': 'alice'}); print(' '.join(sys.modules))"
    )
    env = {**os.environ, "DRASILL_MESH_DIR": str(tmp_path / "mesh")}
    env.pop("DRASILL_MESH_URL", None)
    loaded = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    heavy = {"typer", "rich", "pydantic", "psutil", "psycopg", "click", "drasill_cli.cli"}
    assert heavy.isdisjoint(name.split(".")[0] for name in loaded)
    assert "drasill_cli.cli" not in loaded


# ---- pure parts ---------------------------------------------------------------------------


def test_patch_paths_every_header_once() -> None:
    patch = (
        "*** Begin Patch\n*** Add File: a/new.py\n+x\n*** Update File: b.py\n"
        "*** Move to: c/b.py\n@@\n-x\n+y\n*** Delete File: /abs/old.py\n"
        "*** Update File: b.py\n@@\n-y\n+z\n*** End Patch"
    )
    assert patch_paths(patch) == ["a/new.py", "b.py", "c/b.py", "/abs/old.py"]
    assert patch_paths("echo '*** Add File is not a header'") == []


@pytest.mark.parametrize("cli_name", CLIS)
def test_settings_install_is_idempotent_keeps_others_and_uninstalls_exactly(
    cli_name: str,
) -> None:
    if cli_name == "copilot":
        theirs: dict[str, Any] = {"version": 1, "hooks": {"preToolUse": [
            {"type": "command", "bash": "./guard.sh", "timeoutSec": 5}]}}  # fmt: skip
    else:
        native = "BeforeTool" if cli_name == "gemini" else "PreToolUse"
        theirs = {
            "model": "keep-me",
            "hooks": {
                native: [{"matcher": "Bash", "hooks": [{"type": "command", "command": "guard"}]}],
                "Notification": [],
            },
        }
    original = json.dumps(theirs)
    once = settings.install(cli_name, original)
    assert settings.install(cli_name, once) == once
    assert settings.status(cli_name, once)["installed"] is True
    assert settings.status(cli_name, original)["installed"] is False
    kept = json.loads(once)
    for key, value in theirs.items():
        if key != "hooks":
            assert kept[key] == value
    for name, groups in theirs["hooks"].items():
        assert kept["hooks"][name][: len(groups)] == groups
    assert json.loads(settings.uninstall(cli_name, once) or "null") == theirs
    assert settings.uninstall(cli_name, settings.install(cli_name, None)) is None
    # Every installed entry runs `mesh hook CLI EVENT`, events that CLI has.
    text = json.dumps(kept)
    assert f"mesh hook {cli_name} pre-tool" in text and f"mesh hook {cli_name} stop" in text


def test_settings_refuse_a_file_that_is_not_an_object() -> None:
    with pytest.raises(settings.SettingsError, match="not valid JSON"):
        settings.install("claude", "{nope")
    with pytest.raises(settings.SettingsError, match='"hooks" is not an object'):
        settings.install("gemini", '{"hooks": []}')


def test_codex_trust_is_detected_per_entry() -> None:
    path = "/home/u/.codex/hooks.json"
    hooks = settings.install("codex", None)
    untrusted = settings.codex_trust(path, hooks, "")
    assert untrusted["trusted"] is False
    assert f"{path}:pre_tool_use:0:0" in untrusted["untrusted"]
    config = "".join(
        f'[hooks.state."{key}"]\ntrusted_hash = "sha256:00"\n' for key in untrusted["entries"]
    )
    assert settings.codex_trust(path, hooks, config) == {
        "trusted": True, "entries": untrusted["entries"], "untrusted": []}  # fmt: skip


# ---- the real process: `python -m drasill_cli hook CLI EVENT` ----------------------------


def module_hook(cli: MeshRunner, cli_name: str, event: str, stdin: str, **env: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "drasill_cli", "hook", cli_name, event],
        input=stdin,
        env={**cli.env, **env},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stderr) == (0, "")
    return json.loads(done.stdout) if done.stdout else None


def test_the_module_entry_refuses_a_held_file_as_a_process(
    cli: MeshRunner, mesh: Mesh, work: Path
) -> None:
    two_agents(mesh)
    locks.acquire(mesh, [str(work / "src" / "app.py")], "bob")
    answer = module_hook(cli, "claude", "pre-tool", payload("claude", "pre-tool", work),
                         DRASILL_AGENT="alice")  # fmt: skip
    assert "bob holds a write lock" in denial("claude", answer)


def test_the_module_entry_finds_its_agent_among_its_ancestors(
    cli: MeshRunner, mesh: Mesh, work: Path
) -> None:
    """Gemini may give hooks a cleaned environment: no $DRASILL_AGENT. The test process is the
    hook's parent, registered as the agent (pid and start time, as `mesh register --pid`)."""
    two_agents(mesh)
    agents.register(mesh, "erin", pid=os.getpid())
    messages.send(mesh, "erin", "mail for the ancestor", sender="bob")
    answer = module_hook(cli, "gemini", "post-tool", payload("gemini", "post-tool", work))
    assert "mail for the ancestor" in context("gemini", "post-tool", answer)
