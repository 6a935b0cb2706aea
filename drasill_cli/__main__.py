"""`python -m drasill_cli` runs `mesh`."""

from drasill_cli.cli.app import main

main()
