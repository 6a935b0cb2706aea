"""`python -m drasill_cli` runs `mesh`; `python -m drasill_cli hook CLI EVENT` answers a hook
without loading the command layer (no typer: the hook path stays fast)."""

import os
import sys

if len(sys.argv) == 4 and sys.argv[1] == "hook":
    from drasill_cli.hooks.run import main as hook

    sys.exit(hook(sys.argv[2], sys.argv[3], sys.stdin, sys.stdout, sys.stderr, os.environ))

from drasill_cli.cli.app import main

main()
