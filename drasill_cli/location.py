"""`Location`: where a mesh lives, as `config.resolve_mesh_location` finds it, before anything
is opened: a directory, or a URL whose scheme names the backend.

A small frozen value of the foundation layer: it knows no backend. Which backend serves a
location, what it shows and what it may do is the registry's business
(`drasill_cli.backends`), reached through `drasill_cli.mesh`; an unknown scheme is refused there.
"""

from __future__ import annotations

from pathlib import Path


class Location:
    """A directory (`path`) or a URL (`url`), never both; `source` says where it was given
    (`--mesh-url`, `DRASILL_MESH_URL`, ...) for error messages, and is not part of its value.
    Frozen; a plain class with slots rather than a dataclass, whose build would cost every
    `mesh` call about a millisecond."""

    __slots__ = ("path", "source", "url")

    path: Path | None
    url: str | None
    source: str

    def __init__(self, path: Path | None = None, url: str | None = None, source: str = "") -> None:
        if (path is None) == (url is None):
            raise ValueError("a Location is a directory or a URL, exactly one of them")
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "url", url)
        object.__setattr__(self, "source", source)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"a Location is frozen: cannot set {name}")

    def __reduce__(self) -> tuple[type[Location], tuple[Path | None, str | None, str]]:
        # Pickled to child processes (multiprocessing): rebuilt through __init__, as the
        # slots' default restore would go through the frozen __setattr__.
        return (Location, (self.path, self.url, self.source))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Location):
            return NotImplemented
        return (self.path, self.url) == (other.path, other.url)

    def __hash__(self) -> int:
        return hash((self.path, self.url))

    @classmethod
    def directory(cls, path: Path, source: str = "") -> Location:
        return cls(path=path, source=source)

    @classmethod
    def of_url(cls, url: str, source: str = "") -> Location:
        return cls(url=url, source=source)

    @property
    def scheme(self) -> str:
        """A URL's scheme in lower case, which picks its backend ("" for a directory, or a URL
        without one)."""
        if self.url is None:
            return ""
        scheme, sep, _rest = self.url.partition("://")
        return scheme.lower() if sep else ""

    def __repr__(self) -> str:  # never the URL itself: it may carry a password
        if self.path is not None:
            return f"Location(path={str(self.path)!r})"
        return f"Location(url=<{self.scheme[:20] or 'no scheme'}://...>)"
