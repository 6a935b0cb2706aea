"""Shell completion set-up: the scripts for bash, zsh and fish, and installing them.

`mesh --install-completion zsh` installs for zsh, whatever shell runs the command; without a
shell name, the shell is the one in $SHELL. The scripts are Typer's; they call `mesh` back with
`_MESH_COMPLETE` set, and the values come from `drasill_cli.cli.complete`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from drasill_cli.errors import InvalidInput, MeshError

SHELLS = ("bash", "zsh", "fish")
PROG = "mesh"
COMPLETE_VAR = "_MESH_COMPLETE"


def current() -> str | None:
    """The user's shell, from $SHELL (a login shell's name), when it is one mesh supports."""
    name = os.path.basename(os.environ.get("SHELL", ""))
    return name if name in SHELLS else None


def check(shell: str) -> str:
    """`shell` when supported; `""` (no name given) means the current shell."""
    chosen = shell or current()
    if chosen not in SHELLS:
        given = f"unsupported shell {shell!r}" if shell else "could not tell the shell from $SHELL"
        raise InvalidInput(
            f"{given}; name one of {', '.join(SHELLS)}: mesh --install-completion zsh",
            code="invalid-shell",
        )
    return chosen


def _zsh_quote(text: str) -> str:
    return (
        text.replace('"', '""')
        .replace("'", "''")
        .replace("$", "\\$")
        .replace("`", "\\`")
        .replace(":", r"\\:")
    )


def enable() -> None:
    """Register the bash, zsh and fish completion classes (for `_MESH_COMPLETE` calls).

    They are Typer's, except that zsh and fish show each value's help as it is: Typer renders
    it through rich to strip markup, which mesh's help never holds, and importing rich would
    double the time of every TAB.
    """
    from typer._click.shell_completion import CompletionItem, add_completion_class
    from typer._completion_classes import (  # Typer has no public names for these
        BashComplete,
        FishComplete,
        ZshComplete,
    )

    class Zsh(ZshComplete):
        def format_completion(self, item: CompletionItem) -> str:
            value = _zsh_quote(item.value)
            if item.help:
                return f'"{value}":"{_zsh_quote(item.help)}"'
            return f'"{value}"'

    class Fish(FishComplete):
        def format_completion(self, item: CompletionItem) -> str:
            if item.help:
                return f"{item.value}\t{' '.join(item.help.split())}"
            return f"{item.value}"

    add_completion_class(BashComplete, "bash")
    add_completion_class(Zsh, "zsh")
    add_completion_class(Fish, "fish")


def script(shell: str) -> str:
    """The completion script for `shell`, as shipped in completions/."""
    from typer._completion_shared import get_completion_script  # (private: no public name)

    return get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=check(shell))


ZSH_LOADER = "fpath+=~/.zfunc; autoload -Uz compinit; compinit"


def _install_zsh() -> Path:
    """`~/.zfunc/_mesh`, loaded by one line added to `~/.zshrc` when missing. Unlike Typer's
    installer, it sets no global completion style (`zstyle ':completion:*' menu select` would
    change how every command completes)."""
    home = Path.home()
    zshrc = home / ".zshrc"
    text = zshrc.read_text() if zshrc.is_file() else ""
    if ZSH_LOADER not in text:
        sep = "" if not text or text.endswith("\n") else "\n"
        zshrc.write_text(f"{text}{sep}{ZSH_LOADER}\n")
    path = home / ".zfunc" / f"_{PROG}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(script("zsh"))
    return path


def install(shell: str) -> None:
    """Install completion for `shell` in the user's home, then say where and how to use it."""
    from typer._completion_shared import install as typer_install  # (private: no public name)

    chosen = check(shell)
    if chosen == "zsh":
        path = _install_zsh()
    else:
        _shell, path = typer_install(shell=chosen, prog_name=PROG, complete_var=COMPLETE_VAR)
    sys.stdout.write(f"{chosen} completion installed in {path}\n")
    sys.stderr.write(f"open a new {chosen} (or source its rc file) to use it\n")


def render_failure(exc: MeshError) -> typer.Exit:
    """A bad shell name: one `error:` line and exit 2, as for any invalid input."""
    from drasill_cli.cli.common import render_error

    render_error(exc, json_out=False)
    return typer.Exit(exc.exit_code)
