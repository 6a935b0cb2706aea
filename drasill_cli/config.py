"""Configuration: where the mesh lives and every timing, limit and budget, each with a default.

Resolution (the contract's "Where the mesh lives"): the config file is `$DRASILL_CONFIG`, else
`$XDG_CONFIG_HOME/drasill/config.toml`; it is optional. The mesh directory is `--mesh-dir` >
`$DRASILL_MESH_DIR` > `mesh_dir` in the file > `$XDG_DATA_HOME/drasill/mesh`. A PostgreSQL mesh
is `--mesh-url` > `$DRASILL_MESH_URL` > `url` under `[store]`, level by level with the
directory: a flag beats a variable, a variable beats the config, and a URL and a directory at the
same level are refused (`resolve_mesh_location`).

The file is validated by pydantic models (`config_schema.py`: strict types, ranges, messages
that name the file, the key, the problem and the fix), but pydantic's import and model build
cost about 120 ms, more than a whole `mesh send`, and every `mesh` call reads the config. So
the first run after the file changed validates it and memoizes the normalized values in the
user's cache (`memo_path`); later runs build the dataclasses below from the memo without
importing pydantic. Without a config file neither happens.
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

from drasill_cli import __version__
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


# ---- From validated data to the dataclasses, and the memo of it ------------------------------

_SECTIONS: dict[str, type[Any]] = {
    "lifecycle": LifecycleConfig,
    "messages": MessagesConfig,
    "locks": LocksConfig,
    "budgets": BudgetsConfig,
    "wake": WakeConfig,
    "watch": WatchConfig,
    "audit": AuditConfig,
    "bridge": BridgeConfig,
    "store": StoreConfig,
}
_TYPE_WORDS: dict[str, type] = {
    "float": float, "int": int, "bool": bool, "str": str, "None": type(None),
}  # fmt: skip


def _scalar_types(cls: type[Any]) -> dict[str, tuple[type, ...]]:
    """The exact types each plain field of a dataclass may hold (`float | None` and the like)."""
    found = {}
    for field in dataclasses.fields(cls):
        words = str(field.type).replace(" ", "").split("|")
        if all(word in _TYPE_WORDS for word in words):
            found[field.name] = tuple(_TYPE_WORDS[word] for word in words)
    return found


def _from_plain(data: Any, source: str) -> Config | None:  # noqa: PLR0911 -- one per misfit
    """A Config from validated, normalized plain data (`config_schema.validate`'s result, or a
    memo of it). None when the data is not exactly that shape: every key known, every value of
    its field's exact type (floats finite), each section a table, each tool a table."""
    if type(data) is not dict:
        return None
    top = _scalar_types(Config)
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SECTIONS:
            if type(value) is not dict:
                return None
            types = _scalar_types(_SECTIONS[key])
            for name, item in value.items():
                if type(item) not in types.get(name, ()):
                    return None
                if type(item) is float and not math.isfinite(item):
                    return None
            values[key] = _SECTIONS[key](**value)
        elif key == "tools":
            if type(value) is not dict or not all(type(t) is dict for t in value.values()):
                return None
            values[key] = {str(name): dict(table) for name, table in value.items()}
        elif key in ("mesh_dir", "group_shared") and type(value) in top[key]:
            values[key] = value
        else:
            return None
    return Config(**values, source=source)


# The memo: every command reads the config, and validating it with pydantic costs about 120 ms
# (more than a whole `mesh send`), so the first run after the file changed validates it and
# keeps the result in the user's cache; later runs compare the file's text with the memo's and
# build the dataclasses from it without pydantic. A memo is a cache, never an authority: one
# that cannot be read, is a link, is not this user's own 0600 file, does not parse, was made for
# other text or another release, or holds a value of the wrong shape is ignored (and rewritten).
# What it holds goes through the same plain checks downstream as values read from the file
# (`resolve_mesh_dir`, `_check_mesh_url`, `tools`), and never names a path by itself.
MEMO_FORMAT = 1
MAX_MEMO_BYTES = 8 * MAX_CONFIG_BYTES  # the file's text, JSON-escaped, plus its values


def memo_path(path: Path) -> Path:
    """Where the validated config of the file at `path` is memoized: one memo per file, in
    `$XDG_CACHE_HOME/drasill/config/` (an absolute XDG_CACHE_HOME only), else `~/.cache/...`."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path("~/.cache").expanduser()
    import zlib  # loaded by every command already

    name = zlib.crc32(os.fsencode(os.path.abspath(path)))
    return root / "drasill" / "config" / f"{name:08x}.json"


def _memo_key(raw: bytes) -> dict[str, Any] | None:
    """What a memo must have been made for: this text of the file, this release."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None  # not a config: the validation says why
    return {"format": MEMO_FORMAT, "version": __version__, "text": text}


def _read_memo(  # noqa: PLR0911 -- one return per reason to ignore a memo
    memo: Path, key: dict[str, Any], source: str
) -> Config | None:
    try:
        fd = os.open(memo, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            return None
        chunks = []
        size = 0
        while chunk := os.read(fd, MAX_MEMO_BYTES + 1 - size):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_MEMO_BYTES:
                return None
    except OSError:
        return None
    finally:
        os.close(fd)
    import json

    try:
        loaded = json.loads(b"".join(chunks), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if type(loaded) is not dict or loaded.get("key") != key:
        return None
    return _from_plain(loaded.get("config"), source)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a config value")


def _write_memo(memo: Path, key: dict[str, Any], values: dict[str, Any]) -> None:
    """Best effort, atomic, 0600: a memo that cannot be written costs the next run a
    validation, nothing else."""
    import json

    try:
        data = json.dumps({"key": key, "config": values}, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return  # e.g. a [tools] table holding a TOML date: not JSON, so validated every time
    from drasill_cli import atomicfile

    try:
        memo.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        folder = os.open(memo.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return
    try:
        # No fsync: a memo lost to a crash costs the next run one validation.
        atomicfile.replace(
            folder,
            memo.name,
            data.encode("utf-8"),
            0o600,
            temp=f".{memo.name}.{os.urandom(6).hex()}.tmp",
            fsync=False,
        )
    except OSError:
        pass  # best effort (above)
    finally:
        os.close(folder)


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
    source = str(path)
    if not raw:
        return Config(source=source)  # an empty file (or /dev/null): the defaults
    key = _memo_key(raw)
    memo = memo_path(path)
    if key is not None:
        known = _read_memo(memo, key, source)
        if known is not None:
            return known
    values = _validate(raw, path)
    config = _from_plain(values, source)
    if config is None:  # the schema and the dataclasses disagree: a bug, not bad input
        raise AssertionError(f"validated config does not fit the dataclasses: {values!r}")
    if key is not None:
        _write_memo(memo, key, values)
    return config


def _validate(raw: bytes, path: Path) -> dict[str, Any]:
    """The file's values, parsed and validated by `config_schema` (pydantic: the slow path)."""
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
    from drasill_cli.config_schema import validate

    return validate(table, path)


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
