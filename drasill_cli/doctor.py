"""`mesh doctor`: what is installed, whether the mesh directory is safe, what to do about each.

Required (exit 1 when one fails): a usable Python environment, a config file that parses, and a
mesh directory that is safe and writable. Everything else (heimdall, tmux, git, the AI CLIs,
NVML, a local file system) is optional and only warned about, with the fix.

Doctor never creates or changes the mesh: it inspects what is there, so it can be run on a
broken setup to learn why other commands refuse it.
"""

from __future__ import annotations

import errno
import importlib.util
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from drasill_cli import tools
from drasill_cli.backends.directory.store import (
    LOCK_DIR,
    QUARANTINE_DIR,
    STAGING_DIR,
    TMP_PREFIX,
    FileStore,
    UnusableRecord,
    decode_record,
)
from drasill_cli.config import Config, config_path, load_config, resolve_mesh_dir
from drasill_cli.errors import MeshError
from drasill_cli.onboarding import HEIMDALL_GET

PYTHON_MIN = (3, 11)
DEPENDENCIES = ("typer", "rich", "pydantic", "watchfiles", "psutil")
MOUNTS = Path("/proc/mounts")
# File systems where an OS lock taken on one client does not exclude another client.
NETWORK_FS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb3",
        "smbfs",
        "9p",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "davfs",
        "fuse.sshfs",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.glusterfs",
    }
)


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


def _nearest_existing(path: Path) -> Path:
    current = path
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current


def check_mesh_dir(root: Path, config: Config) -> dict[str, Any]:
    """The mesh directory is ours, not writable by others, and writable by us."""
    if not os.path.lexists(root):
        parent = _nearest_existing(root.parent)
        if os.access(parent, os.W_OK | os.X_OK):
            return _check(
                "mesh-dir",
                "ok",
                f"{root} does not exist yet; the first command that writes creates it (0700)",
                required=True,
            )
        return _check(
            "mesh-dir",
            "fail",
            f"{root} does not exist and {parent} is not writable",
            "choose a mesh directory you can create: --mesh-dir DIR or DRASILL_MESH_DIR",
            required=True,
        )
    try:
        FileStore.open(root, group_shared=config.group_shared)
    except MeshError as exc:
        return _check(
            "mesh-dir", "fail", f"{root}: refused ({exc.code})", exc.message, required=True
        )
    problem = _write_problem(root)
    if problem is not None:
        return _check("mesh-dir", "fail", *problem, required=True)
    mode = "group-shared" if config.group_shared else "private"
    return _check("mesh-dir", "ok", f"{root} is safe and writable ({mode})", required=True)


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def filesystem_of(path: Path, mounts_text: str) -> tuple[str, str] | None:
    """(mount point, file system type) of the mount holding `path`, from /proc/mounts text."""
    target = str(path)
    best: tuple[str, str] | None = None
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point, fstype = _unescape(fields[1]), fields[2]
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and (best is None or len(point) >= len(best[0])):
            best = (point, fstype)
    return best


def check_filesystem(root: Path) -> dict[str, Any]:
    """Warn when the mesh lives on a network file system, where OS locks do not exclude."""
    where = Path(os.path.realpath(_nearest_existing(root)))
    try:
        mounts = MOUNTS.read_text()
    except OSError:
        return _check("filesystem", "warn", "cannot read /proc/mounts to tell the file system")
    found = filesystem_of(where, mounts)
    if found is None:
        return _check("filesystem", "warn", f"no mount found for {where}")
    point, fstype = found
    if fstype in NETWORK_FS or fstype.split(".")[0] in NETWORK_FS:
        return _check(
            "filesystem",
            "warn",
            f"{root} is on {fstype} (mounted at {point}): file locks taken on one machine do "
            "not exclude processes on another, so claims and locks are only safe when every "
            "agent runs on this one machine",
            "put the mesh on a local disk (--mesh-dir or DRASILL_MESH_DIR), e.g. under "
            "~/.local/share or /tmp",
        )
    return _check("filesystem", "ok", f"{root} is on {fstype} (mounted at {point})")


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


# Record folders and the kind of record each holds (a path prefix inside the mesh).
_RECORD_KINDS: tuple[tuple[str, str], ...] = (
    ("agents/", "agent"),
    ("tasks/", "task"),
    ("locks/", "lock"),
    ("inbox/", "message"),
    ("sent/", "message"),
    ("archive/", "message"),
)
_SHOWN = 8


def _record_problem(store: FileStore, rel: str) -> str | None:
    """Why the record file `rel` cannot be used, or None when it can."""
    from drasill_cli import models

    try:
        record = decode_record(store.read_bytes(rel))
    except UnusableRecord as exc:
        return exc.reason
    except (MeshError, OSError) as exc:
        return f"cannot be read ({exc})"
    kind = next((k for prefix, k in _RECORD_KINDS if rel.startswith(prefix)), None)
    schema: type[models.Record] | None = {
        "agent": models.AgentRecord,
        "task": models.Task,
        "lock": models.LockRecord,
        "message": models.MessageRecord,
    }.get(kind or "")
    if schema is None or rel.startswith(("tasks/queued/", "tasks/held/")):
        return None
    try:
        schema.check(record)
    except models.RecordError as exc:
        return f"is not a valid {kind} record: it {exc.reason}"
    return None


def walk_mesh(root: Path, max_bytes: int) -> list[tuple[str, str, str]]:
    """Every bad entry of the mesh, at any depth: (path, what is wrong, the fix).

    Nothing is followed through a link and nothing is opened but regular `.json` files.
    """
    import stat

    store = FileStore(root, max_record_bytes=max_bytes).read_only_view()  # reads only
    bad: list[tuple[str, str, str]] = []
    pending = [(str(root), "")]
    while pending:
        folder, rel_folder = pending.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            bad.append((folder, f"cannot be listed ({exc.strerror})", "check its owner and mode"))
            continue
        for entry in entries:
            rel = f"{rel_folder}{entry.name}"
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISLNK(mode):
                target = os.readlink(entry.path)
                bad.append(
                    (
                        entry.path,
                        f"is a symlink (to {target}); the mesh never follows it",
                        f"remove the link: rm {entry.path}",
                    )
                )
            elif stat.S_ISDIR(mode):
                if rel != QUARANTINE_DIR:
                    pending.append((entry.path, f"{rel}/"))
            elif not stat.S_ISREG(mode):
                bad.append(
                    (entry.path, "is a FIFO, socket or device", f"remove it: rm {entry.path}")
                )
            elif rel.startswith((f"{LOCK_DIR}/", "audit/", "heartbeats/", f"{STAGING_DIR}/")):
                continue  # sidecars, logs, heartbeats and files being written are not records
            elif entry.name.startswith(TMP_PREFIX):
                continue  # a temp file of an older version, never read as a record
            elif entry.name.endswith(".json"):
                problem = _record_problem(store, rel)
                if problem is not None:
                    bad.append(
                        (
                            entry.path,
                            problem,
                            f"move it into {root / QUARANTINE_DIR} (any mesh command that reads "
                            "it does so itself)",
                        )
                    )
    return bad


def check_mesh_entries(root: Path, config: Config) -> dict[str, Any]:
    """Every entry of the mesh, at every depth: no symlinks or special files, every record
    usable; quarantined files are pointed out."""
    if os.path.lexists(root) and not root.is_dir():
        return _check(
            "mesh-entries",
            "fail",
            f"{root} is not a directory: nothing can be stored there",
            "choose another mesh directory (--mesh-dir DIR or DRASILL_MESH_DIR), or move it",
            required=True,
        )
    if not root.is_dir() or root.is_symlink():
        return _check("mesh-entries", "ok", "nothing stored yet", required=True)
    from drasill_cli.backends.directory.store import MAX_RECORD_BYTES

    bad = walk_mesh(root, max(MAX_RECORD_BYTES, 8 * config.messages.max_body_bytes))
    if bad:
        shown = "; ".join(f"{path} {problem}" for path, problem, _ in bad[:_SHOWN])
        more = f" (and {len(bad) - _SHOWN} more)" if len(bad) > _SHOWN else ""
        fixes = "; ".join(dict.fromkeys(fix for _, _, fix in bad[:_SHOWN]))
        return _check(
            "mesh-entries",
            "fail",
            f"{len(bad)} bad entr{'y' if len(bad) == 1 else 'ies'} in the mesh: {shown}{more}",
            fixes,
            required=True,
        )
    quarantine = root / QUARANTINE_DIR
    damaged = sum(1 for _ in quarantine.iterdir()) if quarantine.is_dir() else 0
    if damaged:
        return _check(
            "mesh-entries",
            "warn",
            f"{damaged} damaged file(s) kept in {quarantine}",
            "inspect them, then delete them when they are not needed",
        )
    return _check(
        "mesh-entries", "ok", "every entry is a usable record or folder of the mesh", required=True
    )


def _write_problem(root: Path) -> tuple[str, str] | None:
    """Why the mesh cannot be written (read-only mount, immutable, full, mode), with the fix."""
    try:
        flags = os.statvfs(root)
    except OSError as exc:
        return f"cannot inspect {root}: {exc.strerror}", "check the path and its permissions"
    if flags.f_flag & os.ST_RDONLY:
        return (
            f"{root} is on a read-only file system: no message, claim or lock can be written",
            "remount it read-write, or choose another --mesh-dir",
        )
    if flags.f_bavail * flags.f_frsize < 1024 * 1024:
        return f"the file system of {root} has less than 1 MiB free", "free disk space"
    probe = root / f"{TMP_PREFIX}doctor-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            return (
                f"cannot create a file in {root}: {exc.strerror} (the folder is immutable?)",
                f"check with `lsattr -d {root}` and clear the flag with `chattr -i {root}`",
            )
        return f"cannot create a file in {root}: {exc.strerror}", f"chmod u+rwx {root}"
    return None


def run(mesh_dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Every check, and whether all required ones passed."""
    checks = [check_python()]
    config, config_check = _load_config()
    checks.append(config_check)
    try:
        root = resolve_mesh_dir(mesh_dir, config)
    except MeshError as exc:
        checks.append(
            _check(
                "mesh-dir",
                "fail",
                exc.message,
                "give an absolute path in DRASILL_MESH_DIR or the config's mesh_dir",
                required=True,
            )
        )
        return {"ok": False, "mesh_dir": None, "checks": checks}
    checks.append(check_mesh_dir(root, config))
    checks.append(check_mesh_entries(root, config))
    checks.append(check_filesystem(root))
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
    checks.append(check_nvml())
    ok = all(c["status"] != "fail" for c in checks if c["required"])
    return {"ok": ok, "mesh_dir": str(root), "checks": checks}
