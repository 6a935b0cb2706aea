"""`python -m drasill_cli` runs `mesh` (the console script's entry: `mesh hook CLI EVENT`
answers without loading the command layer, see drasill_cli/cli/entry.py)."""

from drasill_cli.cli.entry import main

main()
