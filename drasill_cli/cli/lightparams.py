"""Plain parameter coercion for Typer, so that `mesh send` and `mesh inbox` never load pydantic.

Typer 0.29 coerces every parameter through a pydantic TypeAdapter: importing pydantic and
building the adapters costs about 50 ms on every `mesh` call, a quarter of a `mesh send`. The
values of this CLI are plain str, int, float, bool and list[str]; those are converted here
directly. Anything else, including a value these rules do not accept as plainly valid, goes to
Typer's own coercion, so results and error messages stay Typer's.

This leans on Typer's private API (there is no public hook for coercion): it subclasses
`typer._coercion.RuntimeParam`, overrides `_coerce_value` and replaces
`typer.core.build_runtime_param`. pyproject.toml pins typer to the versions where this is
proven, and tests/test_private_apis.py fails when those names or signatures change, checks the
fast path is active in a real `mesh` run and that it coerces exactly like Typer. On a Typer
without `_coercion` (0.26 to 0.28, which never load pydantic) `install` does nothing.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from typer._click import Context
    from typer._coercion import RuntimeParam, TypeDescriptor
    from typer.core import _TyperParameter

    Builder = Callable[[TypeDescriptor], RuntimeParam]

SIMPLE = (str, int, float, bool, list[str])


def install() -> None:
    """Route simple annotations around pydantic (no-op on a Typer without adapters)."""
    try:
        from typer import core as typer_core
        from typer._coercion import RuntimeParam  # noqa: F401 (probe: the hook exists)
    except ImportError:
        return
    found: Builder | None = getattr(typer_core, "build_runtime_param", None)
    if found is None or getattr(found, "_drasill_light", False):
        return
    setattr(typer_core, "build_runtime_param", plain_builder(found))  # noqa: B010 (private name)


def _plain_number(kind: type[int] | type[float], value: Any) -> Any:
    """`value` as int/float when it plainly is one (as Typer would convert it), else None."""
    if type(value) is kind or (kind is float and type(value) is int):
        return kind(value)
    if isinstance(value, str) and value.isascii():  # Python reads '١٢' as 12, Typer refuses
        try:
            return kind(value)
        except ValueError:
            return None  # Typer's coercion words the error
    return None


def plain_builder(original: Builder) -> Builder:
    """A `build_runtime_param` that converts SIMPLE annotations itself, the rest via `original`."""
    from typer._coercion import RuntimeParam

    @dataclasses.dataclass(frozen=True)
    class PlainParam(RuntimeParam):
        """str, int, float, bool, list[str] converted without pydantic."""

        descriptor: Any = None

        def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
            kind = self.annotation
            if kind in (str, bool) and type(value) is kind:
                return value
            if kind in (int, float):
                number = _plain_number(kind, value)
                if number is not None:
                    return number
            if (
                kind == list[str]
                and isinstance(value, (list, tuple))
                and all(type(item) is str for item in value)
            ):
                return list(value)
            fallback = original(self.descriptor)
            return fallback._coerce_value(value, param=param, ctx=ctx)

    def build(descriptor: TypeDescriptor) -> RuntimeParam:
        info = descriptor.parameter_info
        plain = (
            descriptor.annotation in SIMPLE
            and descriptor.file_annotation is None
            and info.min is None
            and info.max is None
            and info.parser is None
            and getattr(info, "click_type", None) is None
        )
        if not plain:
            return original(descriptor)
        annotation = descriptor.annotation
        return PlainParam(parameter_info=info, annotation=annotation, descriptor=descriptor)

    build._drasill_light = True  # type: ignore[attr-defined]
    return build
