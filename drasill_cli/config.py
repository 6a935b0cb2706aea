"""Configuration: where the mesh lives and every timing, limit and budget, each with a default.

Resolution (the contract's "Where the mesh lives"): the config file is `$DRASILL_CONFIG`, else
`$XDG_CONFIG_HOME/drasill/config.toml`; it is optional. The mesh directory is `--mesh-dir` >
`$DRASILL_MESH_DIR` > `mesh_dir` in the file > `$XDG_DATA_HOME/drasill/mesh`. A PostgreSQL mesh
is `--mesh-url` > `$DRASILL_MESH_URL` > `url` under `[store]`, level by level with the
directory: a flag beats a variable, a variable beats the config, and a URL and a directory at the
same level are refused (`resolve_mesh_location`).

Validation is hand-written over dataclasses rather than pydantic: the config is read by every
`mesh` call, and pydantic's import and model build would double the start-up of `mesh send`.
The dataclasses are neither frozen nor repr'd (building frozen ones costs about 5 ms on every
call); treat a loaded Config as read-only.
"""

from __future__ import annotations

import dataclasses
import math
import os
import stat
from pathlib import Path
from typing import Any

from drasill_cli.errors import InvalidInput
from drasill_cli.location import Location

BUDGET_POLICIES = ("warn", "pause", "kill")


@dataclasses.dataclass(repr=False)  # not frozen or repr'd: built on every start-up
class LifecycleConfig:
    """Seconds without a heartbeat before idle and dead, after death before removal."""

    idle_after: float = 120.0
    dead_after: float = 600.0
    remove_after: float = 3600.0
    max_attempts: int = 3
    stale_tmp_after: float = 3600.0


@dataclasses.dataclass(repr=False)  # not frozen or repr'd: built on every start-up
class MessagesConfig:
    """Size limits for bodies and attachments, and how long `prune` keeps read and sent mail."""

    max_body_bytes: int = 256 * 1024
    max_attachment_bytes: int = 16 * 1024 * 1024
    max_attachments: int = 8
    history_days: float = 30.0


@dataclasses.dataclass(repr=False)  # not frozen or repr'd: built on every start-up
class LocksConfig:
    """Lease length of a lock: it binds while its holder ran a mesh command within the lease."""

    default_ttl: float = 600.0


@dataclasses.dataclass(repr=False)  # not frozen or repr'd: built on every start-up
class BudgetsConfig:
    """Global RAM/VRAM limits (None: what the machine has) and the enforcement policy."""

    ram_gb: float | None = None
    vram_gb: float | None = None
    reserve_ram_gb: float = 0.0
    policy: str = "warn"
    kill_grace: float = 10.0


@dataclasses.dataclass(repr=False)  # not frozen or repr'd: built on every start-up
class WakeConfig:
    """How idle sessions are recognised and woken."""

    idle_ms: int = 3000
    heimdall_socket_dir: str | None = None
    retry_max: int = 5
    retry_base_s: float = 1.0
    enter_delay_ms: int = 200


@dataclasses.dataclass(repr=False)  # not frozen or repr'd: built on every start-up
class WatchConfig:
    """How often `mesh watch` applies the lifecycle and samples hardware."""

    lifecycle_every: float = 30.0
    hardware_every: float = 10.0


@dataclasses.dataclass(repr=False)  # not frozen or repr'd: built on every start-up
class AuditConfig:
    """Size at which the audit log rotates, and how many rotated files are kept."""

    max_bytes: int = 16 * 1024 * 1024
    keep: int = 5


@dataclasses.dataclass(repr=False)  # not frozen or repr'd: built on every start-up
class BridgeConfig:
    """Limits for `mesh bridge`."""

    timeout: float = 3600.0
    output_tail_bytes: int = 4000


@dataclasses.dataclass(repr=False)  # not frozen or repr'd: built on every start-up
class StoreConfig:
    """Durability of the store's writes.

    `fsync = false` skips every flush to disk: writes stay atomic (a killed process never
    leaves a half record), but a power loss or kernel crash may lose the last writes, the
    guarantee of SQLite in WAL mode with `synchronous = NORMAL`.
    """

    fsync: bool = True
    url: str | None = None
    # A PostgreSQL mesh: how long one statement may run, and a transaction sit idle, before the
    # server ends it (0: no limit), and how long a waiting command (inbox --wait, watch, ...)
    # tries to reconnect after losing the server before it gives up.
    statement_timeout: float = 5.0
    idle_timeout: float = 10.0
    reconnect_timeout: float = 60.0


@dataclasses.dataclass(repr=False)  # not frozen or repr'd: built on every start-up
class Config:
    """The whole configuration. Sections mirror the TOML tables."""

    mesh_dir: str | None = None
    group_shared: bool = False
    lifecycle: LifecycleConfig = dataclasses.field(default_factory=LifecycleConfig)
    messages: MessagesConfig = dataclasses.field(default_factory=MessagesConfig)
    locks: LocksConfig = dataclasses.field(default_factory=LocksConfig)
    budgets: BudgetsConfig = dataclasses.field(default_factory=BudgetsConfig)
    wake: WakeConfig = dataclasses.field(default_factory=WakeConfig)
    watch: WatchConfig = dataclasses.field(default_factory=WatchConfig)
    audit: AuditConfig = dataclasses.field(default_factory=AuditConfig)
    bridge: BridgeConfig = dataclasses.field(default_factory=BridgeConfig)
    store: StoreConfig = dataclasses.field(default_factory=StoreConfig)
    tools: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    source: str | None = None

    def heimdall_socket_dir(self) -> Path:
        """heimdall's session directory: the configured one, else heimdall's own default."""
        if self.wake.heimdall_socket_dir:
            return Path(self.wake.heimdall_socket_dir).expanduser()
        home = os.environ.get("HOME")
        if not home:
            return Path("/tmp")  # noqa: S108 -- heimdall's documented fallback without HOME
        return Path(home) / ".local/share/heimdall/sessions"


_CHECKS: dict[str, tuple[type, ...]] = {
    "float": (int, float),
    "int": (int,),
    "bool": (bool,),
    "str": (str,),
}


# How a config type reads in an error message, for people who write TOML, not Python.
_KIND_WORDS = {
    "float": "a number (e.g. 2.5)",
    "int": "a whole number (e.g. 3)",
    "bool": "true or false",
    "str": 'a quoted string (e.g. "text")',
}


def _check_value(where: str, annotation: str, value: Any) -> Any:
    allowed = annotation.replace(" ", "").split("|")
    for kind in allowed:
        if kind == "None":
            continue
        types = _CHECKS[kind]
        if not isinstance(value, types) or (kind != "bool" and isinstance(value, bool)):
            continue
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise InvalidInput(
                    f"config key {where} must be a finite number (got {value!r}); "
                    "fix the config file",
                    code="invalid-config",
                )
            if value < 0:
                raise InvalidInput(
                    f"config key {where} must not be negative (got {value!r}); fix the config file",
                    code="invalid-config",
                )
            return float(value) if kind == "float" else value
        return value
    wanted = " or ".join(dict.fromkeys(_KIND_WORDS[k] for k in allowed if k != "None"))
    raise InvalidInput(
        f"config key {where} must be {wanted}, got {value!r}; fix it in the config file",
        code="invalid-config",
    )


def _build(cls: type[Any], table: dict[str, Any], prefix: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{prefix}{key}"
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise InvalidInput(
                f"unknown config key {where!r}; known keys here: {known}", code="invalid-config"
            )
        annotation = str(fields[key].type)
        if annotation.endswith("Config"):
            if not isinstance(value, dict):
                raise InvalidInput(f"config key {where} must be a table", code="invalid-config")
            values[key] = _build(_SECTIONS[annotation], value, f"{where}.")
        elif key == "tools":
            values[key] = _tool_profiles(value)
        else:
            values[key] = _check_value(where, annotation, value)
    return cls(**values)


def _tool_profiles(value: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise InvalidInput(
            "config key tools must hold one table per tool, e.g. [tools.mycli]",
            code="invalid-config",
        )
    return {str(name): dict(profile) for name, profile in value.items()}


_SECTIONS: dict[str, type[Any]] = {
    cls.__name__: cls
    for cls in (
        LifecycleConfig,
        MessagesConfig,
        LocksConfig,
        BudgetsConfig,
        WakeConfig,
        WatchConfig,
        AuditConfig,
        BridgeConfig,
        StoreConfig,
    )
}


def config_path() -> Path:
    """Where the config file is looked for (it need not exist)."""
    explicit = os.environ.get("DRASILL_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "drasill" / "config.toml"


# A config file is a few hundred bytes; anything near this is not one.
MAX_CONFIG_BYTES = 1024 * 1024


def _read_config_file(path: Path) -> bytes:
    """The file's bytes; never blocks on a FIFO, never reads a device or an endless file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        info = os.fstat(fd)
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == os.stat(os.devnull).st_rdev:
            return b""  # DRASILL_CONFIG=/dev/null: no config, the defaults
        if not stat.S_ISREG(info.st_mode):
            what = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise InvalidInput(
                f"config file {path} is {what}; point DRASILL_CONFIG at a TOML file (or unset it)",
                code="invalid-config",
            )
        data = os.read(fd, MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise InvalidInput(
                f"config file {path} is over {MAX_CONFIG_BYTES} bytes: not a mesh config; "
                "point DRASILL_CONFIG at the right file",
                code="invalid-config",
            )
        return data
    finally:
        os.close(fd)


def load_config(path: Path | None = None) -> Config:
    """Read and validate the config file; a missing file gives the defaults."""
    path = path or config_path()
    try:
        raw = _read_config_file(path)
    except FileNotFoundError:
        return Config()
    except IsADirectoryError:
        raise InvalidInput(
            f"config file {path} is a directory, not a file; point DRASILL_CONFIG at a TOML "
            "file, or unset it",
            code="invalid-config",
        ) from None
    except OSError as exc:
        raise InvalidInput(
            f"cannot read config file {path}: {exc.strerror}; "
            "fix its permissions or unset DRASILL_CONFIG",
            code="invalid-config",
        ) from exc
    import tomllib

    try:
        table = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(
            f"config file {path} is not valid TOML ({exc}); fix the syntax", code="invalid-config"
        ) from exc
    except RecursionError:
        raise InvalidInput(
            f"config file {path} nests too deep to be a mesh config; fix the file",
            code="invalid-config",
        ) from None
    config: Config = _build(Config, table, "")
    _check_consistency(config, path)
    if config.budgets.policy not in BUDGET_POLICIES:
        raise InvalidInput(
            f"config key budgets.policy must be one of {', '.join(BUDGET_POLICIES)}, "
            f"got {config.budgets.policy!r}",
            code="invalid-config",
        )
    return dataclasses.replace(config, source=str(path))


def _check_consistency(config: Config, path: Path) -> None:
    """Values that are each valid but make no sense together, or at zero."""
    problems = []
    lifecycle = config.lifecycle
    if not lifecycle.idle_after < lifecycle.dead_after:
        problems.append("lifecycle.idle_after must be less than lifecycle.dead_after")
    if lifecycle.max_attempts < 1:
        problems.append("lifecycle.max_attempts must be at least 1")
    if config.locks.default_ttl <= 0:
        problems.append("locks.default_ttl must be more than 0 seconds")
    if config.messages.max_body_bytes < 1:
        problems.append("messages.max_body_bytes must be at least 1")
    if config.audit.max_bytes < 1024:
        problems.append("audit.max_bytes must be at least 1024")
    for key, limit in (("ram_gb", config.budgets.ram_gb), ("vram_gb", config.budgets.vram_gb)):
        if limit is not None and limit <= 0:
            problems.append(f"budgets.{key} must be more than 0 (or left out for the machine's)")
    if problems:
        raise InvalidInput(
            f"config file {path}: " + "; ".join(problems) + "; fix the config file",
            code="invalid-config",
        )


def resolve_mesh_location(
    mesh_dir: str | os.PathLike[str] | None, mesh_url: str | None, config: Config
) -> Location:
    """Where the mesh lives by the contract's precedence: a directory or a URL (a `Location`;
    which backend serves it, and whether its URL can be used, the backend registry decides
    when it is opened or shown: `drasill_cli.mesh`).

    Level by level: the flags (`--mesh-dir`, `--mesh-url`), then the variables
    ($DRASILL_MESH_DIR, $DRASILL_MESH_URL), then the config (`mesh_dir`, `[store] url`), then
    the default directory. A URL and a directory at the same level: exit 2, nothing opened.
    """
    levels = (
        ("--mesh-dir", mesh_dir, "--mesh-url", mesh_url),
        (
            "DRASILL_MESH_DIR",
            os.environ.get("DRASILL_MESH_DIR"),
            "DRASILL_MESH_URL",
            os.environ.get("DRASILL_MESH_URL"),
        ),
        (
            f"mesh_dir in {config.source}",
            config.mesh_dir,
            f"[store] url in {config.source}",
            config.store.url,
        ),
    )
    for dir_where, directory, url_where, url in levels:
        if directory and url:
            raise InvalidInput(
                f"both {dir_where} and {url_where} are given: a mesh lives in a directory or "
                "in a database, not both; keep one of them",
                code="mesh-location-conflict",
            )
        if url:
            return Location.of_url(url, url_where)
        if directory:
            break
    return Location.directory(resolve_mesh_dir(mesh_dir, config))


def resolve_mesh_dir(explicit: str | os.PathLike[str] | None, config: Config) -> Path:
    """The mesh directory by the contract's precedence, as an absolute path.

    `--mesh-dir` may be relative (to the working directory, as typed). $DRASILL_MESH_DIR and
    the config's mesh_dir must be absolute (or start with ~): set once and read from every
    directory, a relative one would silently make a new mesh in each.
    """
    chosen: str | os.PathLike[str] | None = explicit
    if not chosen:
        chosen = os.environ.get("DRASILL_MESH_DIR")
        _require_absolute(chosen, "DRASILL_MESH_DIR", 'export DRASILL_MESH_DIR="$PWD/{value}"')
    if not chosen:
        chosen = config.mesh_dir
        _require_absolute(chosen, f"mesh_dir in {config.source}", 'mesh_dir = "~/{value}"')
    if not chosen:
        base = os.environ.get("XDG_DATA_HOME") or str(Path("~/.local/share").expanduser())
        chosen = Path(base) / "drasill" / "mesh"
    return Path(chosen).expanduser().absolute()


def _require_absolute(value: str | None, where: str, example: str) -> None:
    """Refuse (exit 2) a relative mesh directory from the environment or the config."""
    if value and not os.path.isabs(os.path.expanduser(value)):
        raise InvalidInput(
            f"{where} is a relative path ({value!r}): every working directory would get its "
            f"own mesh; give an absolute path, e.g. {example.format(value=value)}",
            code="relative-mesh-dir",
        )
