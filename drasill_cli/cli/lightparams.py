"""Plain parameter coercion for Typer, so that `mesh send` and `mesh inbox` never load pydantic.

Recent Typer releases coerce every parameter through a pydantic TypeAdapter: importing pydantic
and building the adapters costs about 50 ms on every `mesh` call, a quarter of a `mesh send`.
The values of this CLI are plain str, int, float, bool and list[str]; those are converted here
directly. Anything else, including a value these rules cannot convert, goes to Typer's own
coercion, so behaviour and error messages stay Typer's.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from typer._click import Context
    from typer._coercion import RuntimeParam, TypeDescriptor
    from typer.core import _TyperParameter


def install() -> None:
    """Route simple annotations around pydantic (no-op on a Typer without adapters)."""
    try:
        from typer import core as typer_core
        from typer._coercion import RuntimeParam
    except ImportError:
        return
    found: Callable[[TypeDescriptor], RuntimeParam] | None = getattr(
        typer_core, "build_runtime_param", None
    )
    if found is None or getattr(found, "_drasill_light", False):
        return
    original = found

    @dataclasses.dataclass(frozen=True)
    class PlainParam(RuntimeParam):
        """str, int, float, bool, list[str] converted without pydantic."""

        descriptor: Any = None

        def _coerce_value(self, value: Any, param: _TyperParameter, ctx: Context) -> Any:
            kind = self.annotation
            if kind in (str, bool) and isinstance(value, kind):
                return value
            if kind in (int, float) and type(value) in (int, float):  # a default, never a bool
                return kind(value)
            if kind in (int, float) and isinstance(value, str):
                try:
                    return kind(value)
                except ValueError:
                    pass  # Typer's coercion below words the error
            if kind == list[str] and all(isinstance(item, str) for item in value):
                return list(value)
            fallback = original(self.descriptor)
            return fallback._coerce_value(value, param=param, ctx=ctx)

    def build(descriptor: TypeDescriptor) -> RuntimeParam:
        simple = descriptor.annotation in (str, int, float, bool, list[str])
        plain = (
            simple
            and descriptor.file_annotation is None
            and descriptor.parameter_info.min is None
            and descriptor.parameter_info.max is None
            and descriptor.parameter_info.parser is None
            and getattr(descriptor.parameter_info, "click_type", None) is None
        )
        if not plain:
            return original(descriptor)
        return PlainParam(
            parameter_info=descriptor.parameter_info,
            annotation=descriptor.annotation,
            descriptor=descriptor,
        )

    build._drasill_light = True  # type: ignore[attr-defined]
    typer_core.build_runtime_param = build  # type: ignore[attr-defined]
