"""Help that reads like a manual: placeholders in capitals, examples, whole-sentence summaries.

Typer shows a parameter's Python type (`<str>`, `<list[str]>`) beside it and braces around
required arguments (`{name}`). Every parameter here has a human metavar (NAME, TEXT, ID, PATH,
SECONDS, MODE); `install` makes Typer show that metavar alone, as `NAME` when required and
`[NAME]` when optional (`PATH...` when repeated). The patch is on two methods of Typer's
argument class; on a Typer without them it does nothing and help keeps Typer's own form.
"""

from __future__ import annotations

from typing import Any


def install() -> None:
    """Show arguments by their metavar only (no Python type, no braces)."""
    try:
        from typer.core import TyperArgument
    except ImportError:
        return
    if getattr(TyperArgument, "_drasill_manual", False):
        return
    if not hasattr(TyperArgument, "_usage_display_name") or not hasattr(
        TyperArgument, "display_type_rich"
    ):
        return
    original_type = TyperArgument.display_type_rich
    original_usage = TyperArgument._usage_display_name

    def display_type_rich(self: Any, ctx: Any) -> str | None:
        if self.metavar is not None:
            return None
        return original_type(self, ctx)

    def usage_display_name(self: Any) -> str:
        if self.metavar is None:
            return original_usage(self)
        name = str(self.metavar) + ("..." if self.nargs != 1 else "")
        return name if self.required else f"[{name}]"

    TyperArgument.display_type_rich = display_type_rich  # type: ignore[method-assign]
    TyperArgument._usage_display_name = usage_display_name  # type: ignore[method-assign]
    TyperArgument._drasill_manual = True  # type: ignore[attr-defined]


def examples(*lines: str) -> str:
    """A help epilog: `Examples:` then one command per line, kept as written (not re-wrapped).

    Each line is `mesh ...` optionally followed by `  # what it does`.
    """
    return "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
