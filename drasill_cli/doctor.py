"""`mesh doctor`: what is installed, whether the mesh (directory or database) is sound, what to
do about each.

Required (exit 1 when one fails): a usable Python environment, a config file that parses, and a
mesh directory that is safe and writable, or a mesh database that is reachable and that the
role may use. Everything else (heimdall, tmux, git, the AI CLIs,
NVML, a local file system) is optional and only warned about, with the fix.

Doctor never creates or changes the mesh: it inspects what is there, so it can be run on a
broken setup to learn why other commands refuse it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from typing import TYPE_CHECKING, Any

from drasill_cli import tools
from drasill_cli.config import Config, config_path, load_config, resolve_mesh_location
from drasill_cli.errors import MeshError
from drasill_cli.mesh import diagnose, shown_location
from drasill_cli.onboarding import HEIMDALL_GET

if TYPE_CHECKING:
    from drasill_cli.location import Location
    from drasill_cli.storage.maintenance import Finding

PYTHON_MIN = (3, 11)
DEPENDENCIES = ("typer", "rich", "pydantic", "watchfiles", "psutil")


def _check(
    name: str, status: str, detail: str, fix: str | None = None, *, required: bool = False
) -> dict[str, Any]:
    return {"name": name, "status": status, "required": required, "detail": detail, "fix": fix}


def check_python() -> dict[str, Any]:
    """The interpreter is new enough and every runtime dependency can be imported."""
    version = ".".join(str(part) for part in sys.version_info[:3])
    if sys.version_info[:2] < PYTHON_MIN:
        return _check(
            "python",
            "fail",
            f"Python {version} at {sys.executable}",
            f"install Python {'.'.join(map(str, PYTHON_MIN))} or newer and reinstall drasill-cli",
            required=True,
        )
    missing = [name for name in DEPENDENCIES if importlib.util.find_spec(name) is None]
    if missing:
        return _check(
            "python",
            "fail",
            f"Python {version}; missing packages: {', '.join(missing)}",
            f"{sys.executable} -m pip install drasill-cli (or: pip install {' '.join(missing)})",
            required=True,
        )
    return _check("python", "ok", f"Python {version} at {sys.executable}", required=True)


def _load_config() -> tuple[Config, dict[str, Any]]:
    try:
        config = load_config()
        tools.profiles(config)  # a bad [tools.NAME] table makes `bridge` and `tools` exit 2
    except MeshError as exc:
        return Config(), _check(
            "config", "fail", exc.message, "fix the file, or unset DRASILL_CONFIG", required=True
        )
    named = os.environ.get("DRASILL_CONFIG")
    if not config.source and named:
        return config, _check(
            "config",
            "warn",
            f"DRASILL_CONFIG names {named}, which does not exist: the defaults are used",
            "create that file, or unset DRASILL_CONFIG",
        )
    where = config.source or f"none at {config_path()}, so the defaults are used"
    return config, _check("config", "ok", f"config file: {where}", required=True)


def check_program(
    name: str, program: str, why: str, fix: str, version_args: tuple[str, ...] = ("--version",)
) -> dict[str, Any]:
    """An optional program on PATH, with its version."""
    path = shutil.which(program)
    if path is None:
        return _check(name, "warn", f"`{program}` not found on PATH: {why}", fix)
    version = tools.version_of((path, *version_args)) or "version unknown"
    return _check(name, "ok", f"{path}: {version}")


def check_ai_clis(config: Config) -> dict[str, Any]:
    """At least one AI coding CLI is installed."""
    found = [row for row in tools.detect(config) if row["installed"]]
    if not found:
        known = ", ".join(tools.profiles(config))
        return _check(
            "ai-clis",
            "warn",
            f"no AI coding CLI found on PATH (looked for {known})",
            "install one (e.g. Claude Code: npm install -g @anthropic-ai/claude-code), or add "
            'yours to the config file: [tools.NAME] command = ["mycli", "{prompt}"]',
        )
    names = ", ".join(f"{row['name']} ({row['version'] or 'version unknown'})" for row in found)
    return _check("ai-clis", "ok", names)


def check_hooks(cwd: str | None = None) -> dict[str, Any]:
    """The mesh's hooks in the agent CLIs installed here: missing, partial, or (Codex) not yet
    trusted. Optional: an agent without them must remember to read mail and lock files."""
    from drasill_cli.hooks import install
    from drasill_cli.hooks.protocols import CLIS

    present = {cli for cli in CLIS if shutil.which(cli) is not None}
    try:
        report = install.status(cwd)
    except MeshError as exc:
        return _check("hooks", "warn", f"cannot read the hooks' settings: {exc.message}", None)
    problems = install.missing(report, present)
    installed = sorted(
        {f"{row['cli']} ({row['scope']})" for row in report["entries"] if row["installed"]}
    )
    if problems:
        return _check(
            "hooks",
            "warn",
            "; ".join(problems),
            "do what each item says in parentheses (docs/howto-hooks-claude.md and the other "
            "hook how-tos)",
        )
    detail = f"installed: {', '.join(installed)}" if installed else "no agent CLI with hooks here"
    return _check("hooks", "ok", detail)


def check_nvml() -> dict[str, Any]:
    """GPU memory can be measured (only needed for --vram-gb budgets)."""
    from drasill_cli import hardware_probes

    gpu = hardware_probes.gpu_probe()
    if gpu is None:
        return _check(
            "nvml",
            "warn",
            "no NVIDIA GPU visible through NVML: GPU budgets (--vram-gb) cannot be measured",
            "ignore this on machines without a GPU; else install the NVIDIA driver "
            "(nvidia-smi must work)",
        )
    names = ", ".join(device["name"] for device in gpu["devices"])
    return _check("nvml", "ok", f"{len(gpu['devices'])} GPU(s): {names}")


def _from(finding: Finding) -> dict[str, Any]:
    return _check(*finding[:4], required=finding.required)


def check_store(location: Location, config: Config) -> list[dict[str, Any]]:
    """The store's own diagnosis (the backend's `Maintenance.check`, each backend's own checks
    included: a directory mesh is safe, writable and on a local file system; a database mesh
    is reachable, its role may use it, its clock agrees, ...), the URL always masked."""
    return [_from(finding) for finding in diagnose(location, config)]


def run(
    mesh_dir: str | os.PathLike[str] | None = None, mesh_url: str | None = None
) -> dict[str, Any]:
    """Every check, and whether all required ones passed."""
    checks = [check_python()]
    config, config_check = _load_config()
    checks.append(config_check)
    try:
        location = resolve_mesh_location(mesh_dir, mesh_url, config)
        shown = shown_location(location)  # refuses a location no backend serves or can use
    except MeshError as exc:
        checks.append(
            _check(
                "mesh-dir",
                "fail",
                exc.message,
                "give an absolute path in DRASILL_MESH_DIR or the config's mesh_dir, or one "
                "URL (DRASILL_MESH_URL or [store] url) and no directory beside it",
                required=True,
            )
        )
        return {"ok": False, "mesh_dir": None, "checks": checks}
    checks.extend(check_store(location, config))
    checks.append(
        check_program(
            "heimdall",
            "hm",
            "agents cannot run in heimdall sessions (wake-ups then need tmux)",
            f"install heimdall (the `hm` pty supervisor): {HEIMDALL_GET}; "
            "or launch agents with --backend tmux",
        )
    )
    checks.append(
        check_program(
            "tmux",
            "tmux",
            "tmux-backed agents cannot be launched or woken",
            "install tmux (e.g. apt install tmux), or use heimdall",
            ("-V",),
        )
    )
    checks.append(
        check_program(
            "git",
            "git",
            "agents usually need git to work on a repository",
            "install git (e.g. apt install git)",
        )
    )
    checks.append(check_ai_clis(config))
    checks.append(check_hooks())
    checks.append(check_nvml())
    ok = all(c["status"] != "fail" for c in checks if c["required"])
    if location.url is not None:
        return {"ok": ok, "mesh_dir": None, "mesh_url": shown, "checks": checks}
    return {"ok": ok, "mesh_dir": shown, "checks": checks}
